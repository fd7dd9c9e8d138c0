//! SIMD128 kernels.

use core::arch::wasm32::*;

use crate::simd::vector::{self, Vector, Vector128};

#[derive(Clone, Copy)]
pub(crate) struct V(v128);

impl Vector for V {
    const BYTES: usize = 16;
    #[inline(always)]
    unsafe fn splat(b: u8) -> Self {
        V(u8x16_splat(b))
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 16 readable bytes at `p` (the trait's contract);
        // `v128.load` has no alignment requirement.
        V(unsafe { v128_load(p.cast()) })
    }
    #[inline(always)]
    unsafe fn eq(self, o: Self) -> Self {
        V(u8x16_eq(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn le(self, o: Self) -> Self {
        V(u8x16_le(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn and(self, o: Self) -> Self {
        V(v128_and(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn or(self, o: Self) -> Self {
        V(v128_or(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V(u8x16_add(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V(u8x16_sub(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn select(self, a: Self, b: Self) -> Self {
        V(v128_bitselect(a.0, b.0, self.0))
    }
    #[inline(always)]
    unsafe fn any(self) -> bool {
        v128_any_true(self.0)
    }
    #[inline(always)]
    unsafe fn first(self) -> Option<usize> {
        let m = u8x16_bitmask(self.0);
        (m != 0).then(|| m.trailing_zeros() as usize)
    }
}

impl Vector128 for V {
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the caller guarantees 16 writable bytes at `p`; no alignment is required.
        unsafe { v128_store(p.cast(), self.0) }
    }
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 8 readable bytes at `p`; no alignment is required.
        V(unsafe { v128_load64_zero(p.cast()) })
    }
    #[inline(always)]
    unsafe fn store8(self, p: *mut u8) {
        // SAFETY: the caller guarantees 8 writable bytes at `p`; no alignment is required.
        unsafe { v128_store64_lane::<0>(self.0, p.cast()) }
    }
    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        V(u8x16_shr(self.0, 4))
    }
    #[inline(always)]
    unsafe fn zip_lo(self, b: Self) -> Self {
        V(u8x16_shuffle::<
            0,
            16,
            1,
            17,
            2,
            18,
            3,
            19,
            4,
            20,
            5,
            21,
            6,
            22,
            7,
            23,
        >(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn zip_hi(self, b: Self) -> Self {
        V(u8x16_shuffle::<
            8,
            24,
            9,
            25,
            10,
            26,
            11,
            27,
            12,
            28,
            13,
            29,
            14,
            30,
            15,
            31,
        >(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn pack_nibbles(self, b: Self) -> Self {
        // Even lanes hold the high nibble, odd lanes the low one.
        let even =
            u8x16_shuffle::<0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30>(self.0, b.0);
        let odd =
            u8x16_shuffle::<1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31>(self.0, b.0);
        V(v128_or(u8x16_shl(even, 4), odd))
    }
    #[inline(always)]
    unsafe fn nibble_to_hex(self) -> Self {
        // `i8x16.swizzle` is a 16-entry table lookup: one instruction instead of four.
        V(u8x16_swizzle(
            u8x16(
                b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', b'9', b'a', b'b', b'c', b'd',
                b'e', b'f',
            ),
            self.0,
        ))
    }
}

// SAFETY for every wrapper below: SIMD128 is enabled for the whole module at compile time, and
// the pointer arguments come from references of the stated sizes.

vector::safe_kernels!(V);
