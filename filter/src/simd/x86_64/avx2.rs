//! AVX2 kernels for the operations that span more than 16 bytes. Callers check
//! [`super::has_avx2`] first; each entry point is a `#[target_feature]` function.
//!
//! Only the `traceparent` shape check is here: an AVX2 delimiter search was measured and
//! removed, because it lost to SSE2 at every realistic header size (`make bench`, delims_*).

use core::arch::x86_64::*;

use crate::simd::vector::{self, Vector};

#[derive(Clone, Copy)]
pub(crate) struct V(__m256i);

impl Vector for V {
    const BYTES: usize = 32;
    #[inline(always)]
    unsafe fn splat(b: u8) -> Self {
        V(_mm256_set1_epi8(b as i8))
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        V(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn eq(self, o: Self) -> Self {
        V(_mm256_cmpeq_epi8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn le(self, o: Self) -> Self {
        V(_mm256_cmpeq_epi8(_mm256_min_epu8(self.0, o.0), self.0))
    }
    #[inline(always)]
    unsafe fn and(self, o: Self) -> Self {
        V(_mm256_and_si256(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn or(self, o: Self) -> Self {
        V(_mm256_or_si256(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        V(_mm256_add_epi8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        V(_mm256_sub_epi8(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn select(self, a: Self, b: Self) -> Self {
        V(_mm256_blendv_epi8(b.0, a.0, self.0))
    }
    #[inline(always)]
    unsafe fn any(self) -> bool {
        _mm256_movemask_epi8(self.0) != 0
    }
    #[inline(always)]
    unsafe fn first(self) -> Option<usize> {
        let m = _mm256_movemask_epi8(self.0) as u32;
        (m != 0).then(|| m.trailing_zeros() as usize)
    }
}

/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn traceparent_shape(v: &[u8; 55]) -> bool {
    unsafe { vector::traceparent_shape::<V>(v.as_ptr()) }
}
