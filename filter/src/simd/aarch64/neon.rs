//! NEON kernels.

use core::arch::aarch64::*;

use crate::simd::vector::{self, Vector, Vector128};

#[derive(Clone, Copy)]
pub(crate) struct V(uint8x16_t);

impl Vector for V {
    const BYTES: usize = 16;
    #[inline(always)]
    unsafe fn splat(b: u8) -> Self {
        V(vdupq_n_u8(b))
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes at `p`; `ld1` needs no alignment.
        V(unsafe { vld1q_u8(p) })
    }
    #[inline(always)]
    unsafe fn eq(self, o: Self) -> Self {
        V(vceqq_u8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn le(self, o: Self) -> Self {
        V(vcleq_u8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn and(self, o: Self) -> Self {
        V(vandq_u8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn or(self, o: Self) -> Self {
        V(vorrq_u8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V(vaddq_u8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V(vsubq_u8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn select(self, a: Self, b: Self) -> Self {
        V(vbslq_u8(self.0, a.0, b.0))
    }
    #[inline(always)]
    unsafe fn any(self) -> bool {
        vmaxvq_u8(self.0) != 0
    }
    #[inline(always)]
    unsafe fn first(self) -> Option<usize> {
        // NEON has no movemask: narrowing each 16-bit lane by 4 bits leaves 4 mask bits per
        // byte in one 64-bit word.
        let m = vget_lane_u64::<0>(vreinterpret_u64_u8(vshrn_n_u16::<4>(vreinterpretq_u16_u8(
            self.0,
        ))));
        (m != 0).then(|| (m.trailing_zeros() / 4) as usize)
    }
}

impl Vector128 for V {
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the caller guarantees 16 writable bytes at `p`; `st1` needs no alignment.
        unsafe { vst1q_u8(p, self.0) }
    }
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 8 readable bytes at `p`; `ld1` needs no alignment.
        V(vcombine_u8(unsafe { vld1_u8(p) }, vdup_n_u8(0)))
    }
    #[inline(always)]
    unsafe fn store8(self, p: *mut u8) {
        // SAFETY: the caller guarantees 8 writable bytes at `p`; `st1` needs no alignment.
        unsafe { vst1_u8(p, vget_low_u8(self.0)) }
    }
    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        V(vshrq_n_u8::<4>(self.0))
    }
    #[inline(always)]
    unsafe fn zip_lo(self, b: Self) -> Self {
        V(vzip1q_u8(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn zip_hi(self, b: Self) -> Self {
        V(vzip2q_u8(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn pack_nibbles(self, b: Self) -> Self {
        let even = vuzp1q_u8(self.0, b.0);
        let odd = vuzp2q_u8(self.0, b.0);
        V(vorrq_u8(vshlq_n_u8::<4>(even), odd))
    }
    #[inline(always)]
    unsafe fn nibble_to_hex(self) -> Self {
        // `tbl` is a 16-entry table lookup: one instruction instead of four.
        V(vqtbl1q_u8(
            // SAFETY: the table literal is exactly the 16 bytes `ld1` reads.
            unsafe { vld1q_u8(b"0123456789abcdef".as_ptr()) },
            self.0,
        ))
    }
}

// SAFETY for every wrapper below: NEON is part of the aarch64 target, and the pointer arguments
// come from references of the stated sizes.

vector::safe_kernels!(V);
