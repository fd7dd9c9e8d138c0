//! Lowercase hex encoding and strict decoding, the way trace-context formats need it.
//!
//! Decoding accepts only `0-9a-f`: W3C Trace Context and B3 both forbid uppercase, and a
//! lenient decoder would silently continue traces the spec says to restart.

const LOWER: &[u8; 16] = b"0123456789abcdef";

/// Maps an ASCII byte to its nibble, or 0xff when it is not lowercase hex.
const fn build_decode_table() -> [u8; 256] {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
}

static DECODE: [u8; 256] = build_decode_table();

/// Writes `src` as lowercase hex into `out[..2 * src.len()]`.
pub fn encode_lower(src: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(src) {
        pair[0] = LOWER[(b >> 4) as usize];
        pair[1] = LOWER[(b & 0x0f) as usize];
    }
}

/// Decodes `src` (even length, lowercase hex) into `out[..src.len() / 2]`.
/// Returns false, leaving `out` unspecified, on any other byte or an odd length.
pub fn decode_lower(src: &[u8], out: &mut [u8]) -> bool {
    if !src.len().is_multiple_of(2) || out.len() < src.len() / 2 {
        return false;
    }
    // Accumulate the validity check with OR instead of branching per byte.
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let hi = DECODE[pair[0] as usize];
        let lo = DECODE[pair[1] as usize];
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    bad & 0xf0 == 0
}

/// True when every byte is a lowercase hex digit.
pub fn is_lower_hex(src: &[u8]) -> bool {
    src.iter().all(|&b| DECODE[b as usize] != 0xff)
}

/// Parses 1 to 16 lowercase hex digits as an integer (B3 ids, X-Ray fields).
pub fn parse_u64(src: &[u8]) -> Option<u64> {
    if src.is_empty() || src.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &b in src {
        let d = DECODE[b as usize];
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
}
