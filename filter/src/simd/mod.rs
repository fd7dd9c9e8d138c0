//! SIMD kernels for the byte work on the request path, with one portable algorithm per kernel
//! ([`vector`]) instantiated per architecture, and a scalar twin for each ([`scalar`]).
//!
//! - x86_64: SSE2, part of the baseline, so chosen at compile time (AVX2 was measured and removed,
//!   see `x86_64/mod.rs`); the `traceparent` fast path uses SSSE3 where the build enables it.
//! - wasm32: SIMD128 when the module is built with `+simd128` (ours is); otherwise scalar.
//! - aarch64: NEON, which every aarch64 target has.
//! - anything else: the scalar twins.
//!
//! The public functions take fixed-size arrays where the wire format fixes the size, so a kernel
//! can never read or write out of bounds whatever the input.

pub mod scalar;
mod vector;

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod aarch64;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm32;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
use aarch64::neon as k;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use wasm32::simd128 as k;
#[cfg(target_arch = "x86_64")]
use x86_64::kernels as k;

/// The scalar twins under the kernels' names, for targets without a kernel.
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
)))]
mod k {
    pub(crate) use super::scalar::{
        decode_hex16 as decode16, decode_hex32 as decode32, encode_hex16 as encode16,
        encode_hex8 as encode8, find_non_ascii, find_non_tracestate_value, traceparent00,
        traceparent_shape,
    };
}

/// Which kernels this build and CPU use, for benchmark reports.
pub fn active() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        match k::traceparent_kernel() {
            "ssse3" => "sse2 (traceparent: ssse3)",
            _ => "sse2",
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        "simd128"
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        "neon"
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128"),
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    {
        "scalar"
    }
}

/// A trace id's 16 bytes as 32 lowercase hex digits.
#[inline]
pub fn encode_hex16(src: &[u8; 16], out: &mut [u8; 32]) {
    k::encode16(src, out)
}

/// A span id's 8 bytes as 16 lowercase hex digits.
#[inline]
pub fn encode_hex8(src: &[u8; 8], out: &mut [u8; 16]) {
    k::encode8(src, out)
}

/// 32 lowercase hex digits to 16 bytes. False on any other byte (uppercase included); `out` is
/// then unspecified.
#[inline]
pub fn decode_hex32(src: &[u8; 32], out: &mut [u8; 16]) -> bool {
    k::decode32(src, out)
}

/// 16 lowercase hex digits to 8 bytes. False on any other byte; `out` is then unspecified.
#[inline]
pub fn decode_hex16(src: &[u8; 16], out: &mut [u8; 8]) -> bool {
    k::decode16(src, out)
}

/// True when a 55-byte value has the shape of a version-00 `traceparent`: `-` at offsets 2, 35
/// and 52 and lowercase hex everywhere else. Values (`ff`, all-zero ids) are not judged here.
#[inline]
pub fn traceparent_shape(v: &[u8; 55]) -> bool {
    k::traceparent_shape(v)
}

/// The kernels a [`Dispatched`] computation calls: [`dispatch`] picks the type, so that the
/// computation is compiled with that kernel's target features and the kernel inlines into it.
/// Only `simd` names these types; everything else reaches them through [`dispatch`].
pub(crate) trait Kernels {
    /// See [`traceparent00`].
    fn traceparent00(v: &[u8; 55], trace: &mut [u8; 16], span: &mut [u8; 8]) -> Option<u8>;
}

/// A computation written once against [`Kernels`], run by [`dispatch`] with the best kernels
/// this build may use. `run` should be `#[inline(always)]`: it is compiled inside the kernel's
/// `#[target_feature]` function.
pub(crate) trait Dispatched {
    type Output;
    fn run<K: Kernels>(self) -> Self::Output;
}

/// Runs `d` with the best kernels this build may use (on x86_64, SSSE3 where the build enables
/// it, else SSE2). The choice is made at compile time and `d` inlines here.
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_64::dispatch;

/// Runs `d` with the best kernels this build may use (on x86_64, SSSE3 where the build enables
/// it, else SSE2). The choice is made at compile time and `d` inlines here.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn dispatch<D: Dispatched>(d: D) -> D::Output {
    d.run::<Baseline>()
}

/// The kernels chosen at compile time (SSE2 on x86_64), as [`Kernels`]: what [`dispatch`] runs
/// on targets that choose nothing at run time, and for cold paths not worth a dispatch.
pub(crate) struct Baseline;

impl Kernels for Baseline {
    #[inline(always)]
    fn traceparent00(v: &[u8; 55], trace: &mut [u8; 16], span: &mut [u8; 8]) -> Option<u8> {
        k::traceparent00(v, trace, span)
    }
}

/// The fast path of a `traceparent`: a version-00 value (`00-`, 32 lowercase hex digits, `-`,
/// 16, `-`, 2) whose ids are not all zero. Returns the flags byte as sent, with the trace id
/// decoded into `trace` and the span id into `span`; `None` (outputs unspecified) for any
/// other value, valid or not, which the caller judges by the full rules.
#[inline]
pub fn traceparent00(v: &[u8; 55], trace: &mut [u8; 16], span: &mut [u8; 8]) -> Option<u8> {
    k::traceparent00(v, trace, span)
}

/// The index of the first byte of `hay` that is not ASCII (`>= 0x80`): `None` when `hay` is
/// ASCII, and so already valid UTF-8.
#[inline]
pub fn find_non_ascii(hay: &[u8]) -> Option<usize> {
    if hay.len() >= 16 {
        return k::find_non_ascii(hay);
    }
    // Shorter than one vector (methods, ports, most hosts): the high bits of two overlapping
    // words say "all ASCII" without a byte loop; only a value that is not looks for where.
    if !short_has_non_ascii(hay) {
        return None;
    }
    hay.iter().position(|&b| b >= 0x80)
}

/// The index of the first byte of `hay` that a W3C `tracestate` value cannot hold (anything
/// but printable ASCII `0x21..=0x7e`, and `,` and `=`): where a value in a plain list ends.
/// Sixteen bytes at a time from 16 bytes on; shorter input is the scalar twin's.
#[inline]
pub fn find_non_tracestate_value(hay: &[u8]) -> Option<usize> {
    if hay.len() >= 16 {
        return k::find_non_tracestate_value(hay);
    }
    scalar::find_non_tracestate_value(hay)
}

/// Whether any byte of `h` (shorter than 16 bytes) has its high bit set, from overlapping
/// loads that cover every byte: two 8-byte words, two 4-byte words, or the first, middle and
/// last byte.
#[inline(always)]
fn short_has_non_ascii(h: &[u8]) -> bool {
    let n = h.len();
    let word = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
    let half = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap_or([0; 4]));
    let bits = match n {
        0 => 0,
        1..=3 => u64::from(h[0] | h[n / 2] | h[n - 1]),
        4..=7 => u64::from(half(0) | half(n - 4)),
        _ => word(0) | word(n - 8),
    };
    bits & 0x8080_8080_8080_8080 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that are mostly hex digits, with the near misses a validator must reject.
    fn hexish() -> impl Strategy<Value = u8> {
        prop_oneof![
            8 => prop::sample::select(&b"0123456789abcdef"[..]),
            1 => prop::sample::select(&b"ABCDEFG/:`g-\x00\x80\xff"[..]),
            1 => any::<u8>(),
        ]
    }

    /// A valid `traceparent` shape with zero to two bytes replaced.
    fn traceparentish() -> impl Strategy<Value = [u8; 55]> {
        (
            prop::collection::vec(prop::sample::select(&b"0123456789abcdef"[..]), 55),
            prop::collection::vec((0usize..55, hexish()), 0..3),
        )
            .prop_map(|(hex, edits)| {
                let mut v = [0u8; 55];
                v.copy_from_slice(&hex);
                for at in [2, 35, 52] {
                    v[at] = b'-';
                }
                for (at, b) in edits {
                    v[at] = b;
                }
                v
            })
    }

    /// A valid version-00 `traceparent` (ids sometimes all zero) with zero to three bytes
    /// replaced.
    fn traceparent00ish() -> impl Strategy<Value = [u8; 55]> {
        (
            prop::collection::vec(prop::sample::select(&b"0123456789abcdef"[..]), 55),
            any::<[bool; 2]>(),
            prop::collection::vec((0usize..55, hexish()), 0..4),
        )
            .prop_map(|(hex, zero, edits)| {
                let mut v = [0u8; 55];
                v.copy_from_slice(&hex);
                v[..3].copy_from_slice(b"00-");
                for at in [35, 52] {
                    v[at] = b'-';
                }
                // Rarely all zero: a quarter of the cases for each id.
                if zero[0] && zero[1] {
                    v[3..35].fill(b'0');
                }
                if zero[0] && !zero[1] && hex[0] < b'4' {
                    v[36..52].fill(b'0');
                }
                for (at, b) in edits {
                    v[at] = b;
                }
                v
            })
    }

    /// What `traceparent00` gives: the ids and flags, or `None`.
    type Fields = Option<([u8; 16], [u8; 8], u8)>;
    /// One `traceparent00` kernel applied to a fixed value, writing the ids it is given.
    pub(super) type Kernel<'a> = dyn Fn(&mut [u8; 16], &mut [u8; 8]) -> Option<u8> + 'a;

    /// The `traceparent00` result of every kernel this CPU can run, scalar twin first.
    fn traceparent00_all(v: &[u8; 55]) -> Vec<Fields> {
        let run = |f: &Kernel<'_>| {
            let (mut t, mut s) = ([0u8; 16], [0u8; 8]);
            f(&mut t, &mut s).map(|flags| (t, s, flags))
        };
        let all = vec![
            run(&|t, s| scalar::traceparent00(v, t, s)),
            run(&|t, s| traceparent00(v, t, s)),
        ];
        #[cfg(target_arch = "x86_64")]
        let all = {
            let mut all = all;
            let kernels = x86_64::tests::traceparent00_kernels(v);
            all.extend(kernels.iter().map(|f| run(&**f)));
            all
        };
        all
    }

    proptest! {
        #[test]
        fn traceparent00_matches_scalar(v in traceparent00ish()) {
            let all = traceparent00_all(&v);
            for r in &all[1..] {
                prop_assert_eq!(r, &all[0]);
            }
        }

        #[test]
        fn traceparent00_matches_scalar_on_any_bytes(v in prop::collection::vec(hexish(), 55)) {
            // A vec, not an array strategy: array value trees this large overflow wasm's stack.
            let v: [u8; 55] = v.try_into().unwrap();
            let r = traceparent00_all(&v);
            for k in &r[1..] {
                prop_assert_eq!(k, &r[0]);
            }
        }

        #[test]
        fn encode_matches_scalar(src in prop::array::uniform16(any::<u8>())) {
            let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
            encode_hex16(&src, &mut a);
            scalar::encode_hex16(&src, &mut b);
            prop_assert_eq!(a, b);
            let half: [u8; 8] = src[..8].try_into().unwrap();
            let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
            encode_hex8(&half, &mut a);
            scalar::encode_hex8(&half, &mut b);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn decode_matches_scalar(
            hex in prop::array::uniform32(prop::sample::select(&b"0123456789abcdef"[..])),
            edits in prop::collection::vec((0usize..32, hexish()), 0..3),
        ) {
            // Valid digits with zero to two bytes replaced: both outcomes stay common.
            let mut src = hex;
            for (at, b) in edits {
                src[at] = b;
            }
            let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
            let ok = decode_hex32(&src, &mut a);
            prop_assert_eq!(ok, scalar::decode_hex32(&src, &mut b));
            if ok {
                prop_assert_eq!(a, b);
            }
            let half: [u8; 16] = src[..16].try_into().unwrap();
            let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
            let ok = decode_hex16(&half, &mut a);
            prop_assert_eq!(ok, scalar::decode_hex16(&half, &mut b));
            if ok {
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn traceparent_shape_matches_scalar(v in traceparentish()) {
            prop_assert_eq!(traceparent_shape(&v), scalar::traceparent_shape(&v));
        }

        #[test]
        fn find_non_ascii_matches_scalar(
            h in prop::collection::vec(prop_oneof![30 => 0u8..0x80, 1 => 0x80u8..=0xff], 0..200),
            start in 0usize..200,
        ) {
            let h = &h[start.min(h.len())..];
            prop_assert_eq!(find_non_ascii(h), scalar::find_non_ascii(h));
        }

        #[test]
        fn find_non_tracestate_value_matches_scalar(
            h in prop::collection::vec(
                prop_oneof![40 => 0x21u8..0x7f, 1 => any::<u8>(), 1 => prop::sample::select(&b",= \x7f\x20\x21\x7e"[..])],
                0..200,
            ),
            start in 0usize..200,
        ) {
            let h = &h[start.min(h.len())..];
            prop_assert_eq!(find_non_tracestate_value(h), scalar::find_non_tracestate_value(h));
        }
    }

    /// Every single-byte change of a valid `traceparent`, every byte value at every offset:
    /// each kernel agrees with the scalar twin, and only the changes that keep the value
    /// valid (another hex digit in an id or the flags) are accepted.
    #[test]
    fn traceparent00_every_single_byte_mutation() {
        let valid: [u8; 55] = *b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ok = traceparent00_all(&valid);
        assert!(ok.iter().all(|r| r.is_some() && *r == ok[0]), "{ok:?}");
        let mut accepted = 0;
        for at in 0..55 {
            for b in 0..=255u8 {
                let mut v = valid;
                v[at] = b;
                let all = traceparent00_all(&v);
                for r in &all[1..] {
                    assert_eq!(r, &all[0], "byte {b:#x} at {at}");
                }
                let hex = scalar::DECODE[usize::from(b)] != 0xff;
                let keeps = match at {
                    0..=2 | 35 | 52 => b == valid[at],
                    _ => hex,
                };
                assert_eq!(all[0].is_some(), keeps, "byte {b:#x} at {at}");
                accepted += usize::from(all[0].is_some());
            }
        }
        // 50 hex offsets take 16 digits each; the 5 fixed bytes keep only themselves.
        assert_eq!(accepted, 50 * 16 + 5);
        // All-zero ids are refused whatever the rest.
        let mut v = valid;
        v[3..35].fill(b'0');
        assert!(traceparent00_all(&v).iter().all(Option::is_none));
        let mut v = valid;
        v[36..52].fill(b'0');
        assert!(traceparent00_all(&v).iter().all(Option::is_none));
    }

    #[test]
    fn every_byte_value_through_hex() {
        let mut out = [0u8; 32];
        let mut back = [0u8; 16];
        for chunk in (0..=255u8).collect::<Vec<_>>().chunks_exact(16) {
            let src: [u8; 16] = chunk.try_into().unwrap();
            encode_hex16(&src, &mut out);
            assert!(decode_hex32(&out, &mut back));
            assert_eq!(back, src);
        }
        // Every byte that is not lowercase hex is rejected in every lane.
        for bad in (0..=255u8).filter(|b| scalar::DECODE[*b as usize] == 0xff) {
            for lane in 0..32 {
                let mut s = *b"0123456789abcdef0123456789abcdef";
                s[lane] = bad;
                assert!(!decode_hex32(&s, &mut back), "byte {bad:#x} in lane {lane}");
            }
        }
    }

    #[test]
    fn find_non_tracestate_value_edges() {
        let mut h = vec![b'x'; 100];
        assert_eq!(find_non_tracestate_value(&h), None);
        // Every byte value, in every position of a vector and of the tail.
        for b in 0..=0xffu8 {
            let stops = !(0x21..=0x7e).contains(&b) || b == b',' || b == b'=';
            for at in [0, 1, 15, 16, 17, 31, 50, 83, 84, 98, 99] {
                h[at] = b;
                let want = stops.then_some(at);
                assert_eq!(find_non_tracestate_value(&h), want, "byte {b:#x} at {at}");
                assert_eq!(find_non_tracestate_value(&h[at..]), want.map(|_| 0));
                h[at] = b'x';
            }
        }
    }

    #[test]
    fn find_non_ascii_edges() {
        let mut h = vec![b'x'; 100];
        // Every non-ASCII byte value, in every position of a vector and of the tail.
        assert_eq!(find_non_ascii(&h), None);
        for bad in 0x80..=0xffu8 {
            for at in [0, 1, 15, 16, 17, 31, 50, 83, 84, 98, 99] {
                h[at] = bad;
                assert_eq!(find_non_ascii(&h), Some(at), "byte {bad:#x} at {at}");
                assert_eq!(find_non_ascii(&h[at..]), Some(0));
                h[at] = b'x';
            }
        }
        assert_eq!(find_non_ascii(&[0x7f; 40]), None);
        // Shorter than a vector: every length, every position.
        for len in 0..16 {
            let mut v = vec![0x7fu8; len];
            assert_eq!(find_non_ascii(&v), None);
            for at in 0..len {
                v[at] = 0x80;
                assert_eq!(find_non_ascii(&v), Some(at), "len {len} at {at}");
                v[at] = 0x7f;
            }
        }
    }
}
