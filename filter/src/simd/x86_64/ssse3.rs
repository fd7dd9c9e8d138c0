//! SSSE3 kernels: the SSE2 vector with `pmaddubsw` joining hex nibble pairs. SSSE3 is not in
//! the x86_64 baseline, so these run only where the build enables it (see `x86_64/mod.rs`).

use core::arch::x86_64::*;

use super::sse2::V as Sse2;
use crate::simd::vector::{self, Vector, Vector128};

/// The SSE2 vector; only [`Vector128::pack_nibbles`] differs.
#[derive(Clone, Copy)]
pub(crate) struct V(Sse2);

impl Vector for V {
    const BYTES: usize = 16;
    #[inline(always)]
    unsafe fn splat(b: u8) -> Self {
        V(Sse2::splat(b))
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        V(Sse2::load(p))
    }
    #[inline(always)]
    unsafe fn eq(self, o: Self) -> Self {
        V(self.0.eq(o.0))
    }
    #[inline(always)]
    unsafe fn le(self, o: Self) -> Self {
        V(self.0.le(o.0))
    }
    #[inline(always)]
    unsafe fn and(self, o: Self) -> Self {
        V(self.0.and(o.0))
    }
    #[inline(always)]
    unsafe fn or(self, o: Self) -> Self {
        V(self.0.or(o.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V(self.0.add(o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V(self.0.sub(o.0))
    }
    #[inline(always)]
    unsafe fn select(self, a: Self, b: Self) -> Self {
        V(self.0.select(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn any(self) -> bool {
        self.0.any()
    }
    #[inline(always)]
    unsafe fn first(self) -> Option<usize> {
        self.0.first()
    }
}

impl Vector128 for V {
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        self.0.store(p)
    }
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> Self {
        V(Sse2::load8(p))
    }
    #[inline(always)]
    unsafe fn store8(self, p: *mut u8) {
        self.0.store8(p)
    }
    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        V(self.0.shr4())
    }
    #[inline(always)]
    unsafe fn zip_lo(self, b: Self) -> Self {
        V(self.0.zip_lo(b.0))
    }
    #[inline(always)]
    unsafe fn zip_hi(self, b: Self) -> Self {
        V(self.0.zip_hi(b.0))
    }
    #[inline(always)]
    unsafe fn pack_nibbles(self, b: Self) -> Self {
        // `pmaddubsw` multiplies adjacent byte pairs and adds them into a 16-bit lane: with
        // weights 16 and 1 that is `hi << 4 | lo` (at most 255), one instruction where SSE2
        // needs two shifts, a mask and an OR per vector.
        let weights = _mm_set1_epi16(0x0110);
        V(Sse2(_mm_packus_epi16(
            _mm_maddubs_epi16(self.0 .0, weights),
            _mm_maddubs_epi16(b.0 .0, weights),
        )))
    }
}

/// [`vector::traceparent00`] with SSSE3.
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
#[inline]
pub(crate) unsafe fn traceparent00(
    v: &[u8; 55],
    trace: &mut [u8; 16],
    span: &mut [u8; 8],
) -> Option<u8> {
    // SAFETY: the fixed-size arrays are exactly what `traceparent00` reads and writes, and the
    // caller guarantees SSSE3.
    unsafe { vector::traceparent00::<V>(v.as_ptr(), trace.as_mut_ptr(), span.as_mut_ptr()) }
}
