//! x86_64: SSE2 (part of the x86_64 baseline, so always present) and AVX2 (detected at run time).

pub(crate) mod avx2;
pub(crate) mod sse2;

/// True when this CPU has AVX2. `is_x86_feature_detected!` runs CPUID once and caches the answer
/// in an atomic, so asking on every call costs a load and a bit test.
#[inline(always)]
pub(crate) fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}
