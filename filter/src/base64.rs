//! Standard-alphabet base64 (RFC 4648 §4) into caller-provided buffers, never allocating.
//!
//! Trace headers carrying binary contexts (`grpc-trace-bin`, Linkerd 1 `l5d-ctx-trace`) are a
//! few dozen bytes, so a table-driven loop into a stack array beats pulling in a general crate.
//! Decoding accepts both padded and unpadded input because gRPC says binary headers may arrive
//! either way; it ignores the unused low bits of the last symbol, which every encoder we meet
//! leaves at zero, so refusing non-zero ones would buy nothing but failed traces.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marks bytes outside the alphabet in [`DECODE`].
const INVALID: u8 = 0xff;

const fn build_decode_table() -> [u8; 256] {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
}

static DECODE: [u8; 256] = build_decode_table();

/// Length of the padded encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Length of the unpadded encoding of `n` bytes.
pub const fn encoded_len_unpadded(n: usize) -> usize {
    (n * 8).div_ceil(6)
}

/// Encodes `src` into `out` and returns the length written, or `None` when `out` is too short.
/// With `pad`, the output is a multiple of four characters ending in `=` as needed.
pub fn encode(src: &[u8], out: &mut [u8], pad: bool) -> Option<usize> {
    let needed = if pad {
        encoded_len(src.len())
    } else {
        encoded_len_unpadded(src.len())
    };
    let out = out.get_mut(..needed)?;
    let mut o = 0;
    for chunk in src.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let sextets = [
            b[0] >> 2,
            ((b[0] & 0x03) << 4) | (b[1] >> 4),
            ((b[1] & 0x0f) << 2) | (b[2] >> 6),
            b[2] & 0x3f,
        ];
        // One input byte yields two symbols, two yield three, three yield four.
        let symbols = chunk.len() + 1;
        for (i, s) in sextets.iter().enumerate() {
            if i < symbols {
                out[o] = ALPHABET[*s as usize];
                o += 1;
            } else if pad {
                out[o] = b'=';
                o += 1;
            }
        }
    }
    Some(o)
}

/// Decodes padded or unpadded standard base64 from `src` into `out` and returns the number of
/// bytes written. `None` on a byte outside the alphabet, misplaced or excess padding, an
/// impossible length (one symbol left over), or an `out` too short.
pub fn decode(src: &[u8], out: &mut [u8]) -> Option<usize> {
    let body = strip_padding(src)?;
    if body.len() % 4 == 1 {
        return None;
    }
    let needed = body.len() * 6 / 8;
    let out = out.get_mut(..needed)?;
    let mut o = 0;
    for chunk in body.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            let v = DECODE[c as usize];
            if v == INVALID {
                return None;
            }
            acc = (acc << 6) | v as u32;
        }
        // Left-align a short final group as if it were a full 24-bit one.
        acc <<= 6 * (4 - chunk.len()) as u32;
        let bytes = acc.to_be_bytes();
        for &b in bytes.get(1..chunk.len()).unwrap_or(&[]) {
            out[o] = b;
            o += 1;
        }
    }
    Some(o)
}

/// The input without its padding, when that padding is well placed: padded input must be a
/// multiple of four with at most two `=`, and `=` may appear nowhere else.
fn strip_padding(src: &[u8]) -> Option<&[u8]> {
    let pads = src.iter().rev().take_while(|&&c| c == b'=').count();
    if pads == 0 {
        return Some(src);
    }
    if pads > 2 || !src.len().is_multiple_of(4) {
        return None;
    }
    src.get(..src.len() - pads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(src: &[u8], pad: bool) -> String {
        let mut out = [0u8; 64];
        let n = encode(src, &mut out, pad).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    fn dec(src: &str) -> Option<Vec<u8>> {
        let mut out = [0u8; 64];
        decode(src.as_bytes(), &mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in vectors {
            assert_eq!(enc(plain.as_bytes(), true), coded);
            assert_eq!(enc(plain.as_bytes(), false), coded.trim_end_matches('='));
            assert_eq!(dec(coded).unwrap(), plain.as_bytes());
            assert_eq!(dec(coded.trim_end_matches('=')).unwrap(), plain.as_bytes());
        }
        assert_eq!(enc(&[0xfb, 0xff], true), "+/8=");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "Zg=", "Z", "Zm9vY", "Zg===", "Z=g=", "Zm-v", "Zm9v\n", "====",
        ] {
            assert_eq!(dec(bad), None, "{bad}");
        }
        let mut small = [0u8; 2];
        assert_eq!(decode(b"Zm9v", &mut small), None);
        assert_eq!(encode(b"foo", &mut small, true), None);
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..48), pad: bool) {
            let mut coded = [0u8; 64];
            let n = encode(&data, &mut coded, pad).unwrap();
            let mut back = [0u8; 48];
            let m = decode(&coded[..n], &mut back).unwrap();
            prop_assert_eq!(&back[..m], &data[..]);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut out = [0u8; 64];
            let _ = decode(&data, &mut out);
        }
    }
}
