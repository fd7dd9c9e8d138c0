//! x86_64: SSE2, which is part of the x86_64 baseline, so no run-time detection is needed.
//!
//! An AVX2 version of the `traceparent` shape check was measured (`make bench`) and removed:
//! at 55 bytes it did not beat SSE2, and a `#[target_feature]` function behind run-time
//! detection cannot be inlined into its caller the way the baseline SSE2 kernels are. A
//! delimiter-search kernel was removed too: no parser on the request path used it.

pub(crate) mod sse2;
