//! SSE2 kernels. SSE2 is in the x86_64 baseline, so these need no detection and inline freely.

use core::arch::x86_64::*;

use crate::simd::vector::{self, Vector, Vector128};

#[derive(Clone, Copy)]
pub(crate) struct V(pub(crate) __m128i);

impl Vector for V {
    const BYTES: usize = 16;
    #[inline(always)]
    unsafe fn splat(b: u8) -> Self {
        V(_mm_set1_epi8(b as i8))
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        V(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn eq(self, o: Self) -> Self {
        V(_mm_cmpeq_epi8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn le(self, o: Self) -> Self {
        // SSE2 compares bytes as signed only; `min(a, b) == a` is the unsigned `a <= b`.
        V(_mm_cmpeq_epi8(_mm_min_epu8(self.0, o.0), self.0))
    }
    #[inline(always)]
    unsafe fn and(self, o: Self) -> Self {
        V(_mm_and_si128(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn or(self, o: Self) -> Self {
        V(_mm_or_si128(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V(_mm_add_epi8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V(_mm_sub_epi8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn select(self, a: Self, b: Self) -> Self {
        V(_mm_or_si128(
            _mm_and_si128(self.0, a.0),
            _mm_andnot_si128(self.0, b.0),
        ))
    }
    #[inline(always)]
    unsafe fn any(self) -> bool {
        _mm_movemask_epi8(self.0) != 0
    }
    #[inline(always)]
    unsafe fn first(self) -> Option<usize> {
        let m = _mm_movemask_epi8(self.0) as u32;
        (m != 0).then(|| m.trailing_zeros() as usize)
    }
}

impl Vector128 for V {
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        _mm_storeu_si128(p.cast(), self.0)
    }
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> Self {
        V(_mm_loadl_epi64(p.cast()))
    }
    #[inline(always)]
    unsafe fn store8(self, p: *mut u8) {
        _mm_storel_epi64(p.cast(), self.0)
    }
    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        // No byte shift in SSE2: shift 16-bit lanes and drop the bits that crossed bytes.
        V(_mm_and_si128(
            _mm_srli_epi16(self.0, 4),
            _mm_set1_epi8(0x0f),
        ))
    }
    #[inline(always)]
    unsafe fn zip_lo(self, b: Self) -> Self {
        V(_mm_unpacklo_epi8(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn zip_hi(self, b: Self) -> Self {
        V(_mm_unpackhi_epi8(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn pack_nibbles(self, b: Self) -> Self {
        // In each little-endian 16-bit lane the first digit is the low byte: move it up a
        // nibble, bring the second digit down, keep the low byte, then narrow both vectors.
        let join = |v: __m128i| {
            _mm_and_si128(
                _mm_or_si128(_mm_slli_epi16(v, 4), _mm_srli_epi16(v, 8)),
                _mm_set1_epi16(0x00ff),
            )
        };
        V(_mm_packus_epi16(join(self.0), join(b.0)))
    }
}

// SAFETY for every wrapper below: SSE2 is always available on x86_64, and the pointer
// arguments come from references of the stated sizes in `simd/mod.rs`.

vector::safe_kernels!(V);
