//! Lowercase hex encoding and strict decoding, the way trace-context formats need it.
//!
//! Decoding accepts only `0-9a-f`: W3C Trace Context and B3 both forbid uppercase, and a
//! lenient decoder would silently continue traces the spec says to restart.
//!
//! Ids (8 and 16 bytes) go through the SIMD kernels in [`crate::simd`]; other lengths, and the
//! tails of long inputs, use the scalar twins.

use crate::simd::{self, scalar};

/// Writes `src` as lowercase hex into `out[..2 * src.len()]` (stops early if `out` is short).
pub fn encode_lower(src: &[u8], out: &mut [u8]) {
    let mut src = src;
    let mut out = out;
    while let (Some((s, rest)), true) = (src.split_first_chunk::<16>(), out.len() >= 32) {
        let (o, orest) = out.split_at_mut(32);
        // The split above made `o` exactly 32 bytes.
        if let Ok(o) = <&mut [u8; 32]>::try_from(o) {
            simd::encode_hex16(s, o);
        }
        src = rest;
        out = orest;
    }
    if let (Some((s, rest)), true) = (src.split_first_chunk::<8>(), out.len() >= 16) {
        let (o, orest) = out.split_at_mut(16);
        if let Ok(o) = <&mut [u8; 16]>::try_from(o) {
            simd::encode_hex8(s, o);
        }
        src = rest;
        out = orest;
    }
    scalar::encode_hex(src, out);
}

/// Decodes `src` (even length, lowercase hex) into `out[..src.len() / 2]`.
/// Returns false, leaving `out` unspecified, on any other byte or an odd length.
pub fn decode_lower(src: &[u8], out: &mut [u8]) -> bool {
    if !src.len().is_multiple_of(2) || out.len() < src.len() / 2 {
        return false;
    }
    let mut src = src;
    let mut out = out;
    let mut ok = true;
    while let Some((s, rest)) = src.split_first_chunk::<32>() {
        let (o, orest) = out.split_at_mut(16);
        // `out` holds at least half of `src`, checked above, so `o` is exactly 16 bytes.
        if let Ok(o) = <&mut [u8; 16]>::try_from(o) {
            ok &= simd::decode_hex32(s, o);
        }
        src = rest;
        out = orest;
    }
    if let Some((s, rest)) = src.split_first_chunk::<16>() {
        let (o, orest) = out.split_at_mut(8);
        if let Ok(o) = <&mut [u8; 8]>::try_from(o) {
            ok &= simd::decode_hex16(s, o);
        }
        src = rest;
        out = orest;
    }
    ok & scalar::decode_hex(src, out)
}

/// True when every byte is a lowercase hex digit.
pub fn is_lower_hex(src: &[u8]) -> bool {
    src.iter().all(|&b| scalar::DECODE[b as usize] != 0xff)
}

/// Parses 1 to 16 lowercase hex digits as an integer (B3 ids, X-Ray fields).
pub fn parse_u64(src: &[u8]) -> Option<u64> {
    if src.is_empty() || src.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &b in src {
        let d = scalar::DECODE[b as usize];
        if d == 0xff {
            return None;
        }
        v = (v << 4) | d as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_all_bytes() {
        let src: Vec<u8> = (0..=255).collect();
        let mut hex = vec![0u8; 512];
        encode_lower(&src, &mut hex);
        let mut back = vec![0u8; 256];
        assert!(decode_lower(&hex, &mut back));
        assert_eq!(src, back);
    }

    #[test]
    fn rejects_upper_and_junk() {
        let mut out = [0u8; 1];
        assert!(!decode_lower(b"AB", &mut out));
        assert!(!decode_lower(b"g0", &mut out));
        assert!(!decode_lower(b"0", &mut out));
        assert!(decode_lower(b"af", &mut out) && out[0] == 0xaf);
        assert_eq!(parse_u64(b"ff"), Some(255));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"F"), None);
    }

    proptest! {
        /// Any length, split across kernel-sized chunks and a scalar tail, matches the scalar twin.
        #[test]
        fn chunked_paths_match_scalar(src in prop::collection::vec(any::<u8>(), 0..80), flip in any::<Option<(usize, u8)>>()) {
            let mut a = vec![0u8; src.len() * 2];
            let mut b = vec![0u8; src.len() * 2];
            encode_lower(&src, &mut a);
            scalar::encode_hex(&src, &mut b);
            prop_assert_eq!(&a, &b);
            if let Some((i, byte)) = flip.filter(|_| !a.is_empty()) {
                let i = i % a.len();
                a[i] = byte;
            }
            let mut x = vec![0u8; src.len()];
            let mut y = vec![0u8; src.len()];
            let ok = decode_lower(&a, &mut x);
            prop_assert_eq!(ok, scalar::decode_hex(&a, &mut y));
            if ok {
                prop_assert_eq!(x, y);
            }
        }
    }
}
