//! x86_64: SSE2, which is part of the x86_64 baseline, so no run-time detection is needed.
//!
//! AVX2 versions of the `traceparent` shape check and of the delimiter search were measured
//! (`make bench`) and removed: at these input sizes (55 bytes, 80 to 400 bytes) neither beat
//! SSE2, and a `#[target_feature]` function behind run-time detection cannot be inlined into
//! its caller the way the baseline SSE2 kernels are.

pub(crate) mod sse2;
