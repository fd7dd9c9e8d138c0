//! gzip (RFC 1952) around miniz_oxide's raw deflate, pure Rust so it builds for wasm32.
//!
//! Only what export needs: one member, no file name, no extra fields. The CRC-32 is computed
//! here with a table built at compile time, so no other crate is needed.

/// Deflate level: export runs off the request path but still on a shared thread, so favour
/// speed; spans are repetitive enough that a fast level already shrinks them several times.
const LEVEL: u8 = 2;

/// Appends `input` gzip-compressed to `out`.
pub fn compress(input: &[u8], out: &mut Vec<u8>) {
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown): a reproducible header.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(input, LEVEL));
    out.extend_from_slice(&crc32(input).to_le_bytes());
    // ISIZE is the length modulo 2^32 by definition.
    out.extend_from_slice(&(input.len() as u32).to_le_bytes());
}

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE, reflected), as gzip's trailer wants it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn known_crc() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trips_through_a_standard_decoder() {
        for input in [&b""[..], b"a", &[7u8; 100_000][..], b"The quick brown fox"] {
            let mut out = b"prefix".to_vec();
            compress(input, &mut out);
            assert_eq!(&out[..6], b"prefix");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[6..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input);
        }
    }
}
