//! x86_64: SSE2, which is part of the x86_64 baseline, so no run-time detection is needed;
//! and SSSE3 for the whole `traceparent` fast path where the build enables it.
//!
//! An AVX2 version of the `traceparent` shape check was measured (`make bench`) and removed:
//! at 55 bytes it did not beat SSE2, and a `#[target_feature]` function behind run-time
//! detection cannot be inlined into its caller the way the baseline SSE2 kernels are. A
//! delimiter-search kernel was removed too: no parser on the request path used it.
//!
//! SSSE3 (`pmaddubsw` joining the 48 nibble pairs) is used only where the build enables it
//! (`-C target-cpu=x86-64-v2` or later), so that it inlines. Chosen at run time it lost:
//! behind a function pointer, the call (saved registers, results copied out of its buffers)
//! cost more instructions than it saved (134 per parse against 112 for inlined SSE2); as
//! the whole parse compiled for SSSE3 and reached by a tail call after a cached CPU-bit test,
//! it took fewer instructions (103) but more time (criterion, same machine, interleaved:
//! 20-22 ns against 13-16 ns for SSE2).

pub(crate) mod sse2;
mod ssse3;

use crate::simd::{Dispatched, Kernels};

/// The kernels `simd` calls on x86_64 outside [`dispatch`]: all SSE2.
pub(crate) mod kernels {
    pub(crate) use super::sse2::{
        decode16, decode32, encode16, encode8, find_non_ascii, find_non_tracestate_value,
        traceparent00, traceparent_shape,
    };

    /// Which `traceparent` kernel [`super::dispatch`] runs, for benchmark reports.
    pub(crate) fn traceparent_kernel() -> &'static str {
        if cfg!(target_feature = "ssse3") {
            "ssse3"
        } else {
            "sse2"
        }
    }
}

/// The SSE2 kernels, which every x86_64 CPU runs.
struct Sse2;

impl Kernels for Sse2 {
    #[inline(always)]
    fn traceparent00(v: &[u8; 55], trace: &mut [u8; 16], span: &mut [u8; 8]) -> Option<u8> {
        sse2::traceparent00(v, trace, span)
    }
}

/// The SSSE3 kernels. Private to this module, and only used by [`dispatch`] when the build
/// enables SSSE3 (and by the tests, on a CPU that has it).
struct Ssse3;

impl Kernels for Ssse3 {
    #[inline(always)]
    fn traceparent00(v: &[u8; 55], trace: &mut [u8; 16], span: &mut [u8; 8]) -> Option<u8> {
        // SAFETY: this type is named only in `dispatch`, which uses it when the build enables
        // SSSE3, and in the tests, which check the CPU first.
        unsafe { ssse3::traceparent00(v, trace, span) }
    }
}

/// See [`crate::simd::dispatch`]: SSSE3 where the build enables it, else SSE2; both inline.
#[inline(always)]
pub(crate) fn dispatch<D: Dispatched>(d: D) -> D::Output {
    if cfg!(target_feature = "ssse3") {
        d.run::<Ssse3>()
    } else {
        d.run::<Sse2>()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    type Boxed<'a> = Box<crate::simd::tests::Kernel<'a>>;

    /// Both x86_64 `traceparent00` kernels, for the differential tests in `simd`: SSE2 always,
    /// SSSE3 when this CPU has it (a test machine without SSSE3 says so on stderr).
    pub(crate) fn traceparent00_kernels(v: &[u8; 55]) -> Vec<Boxed<'_>> {
        let mut k: Vec<Boxed<'_>> = vec![Box::new(move |t, s| Sse2::traceparent00(v, t, s))];
        if std::is_x86_feature_detected!("ssse3") {
            k.push(Box::new(move |t, s| Ssse3::traceparent00(v, t, s)));
        } else {
            eprintln!("this CPU has no SSSE3: only the SSE2 traceparent kernel is tested");
        }
        k
    }
}
