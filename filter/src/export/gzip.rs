//! gzip (RFC 1952) around flate2's raw deflate (its pure-Rust miniz_oxide backend, so it
//! builds for wasm32 without threads) and crc32fast's CRC-32, through flate2.
//!
//! Only what export needs: one member, no file name, no extra fields.
//!
//! Compressing a body runs in one host callback on the Envoy worker thread, so its cost is a
//! stall for every request queued behind it. Two choices keep it small:
//! - deflate level 1: on a 64 KiB request of real spans it is about 2.5 times faster than
//!   level 2 and sends about 10 % more bytes (8.0 against 8.9 times smaller; level 6 is 9.1
//!   times smaller at four times the time of level 1), measured by the `export_gzip` benchmark;
//! - one compressor per exporter, reset per body: a deflate compressor holds a few hundred KiB
//!   of tables, and allocating and zeroing them per body cost as much as compressing it.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Deflate level: the fastest; spans are repetitive enough that it already shrinks them
/// about eight times.
pub const LEVEL: u32 = 1;

/// ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=4 (fastest) OS=255 (unknown): a reproducible header.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// A reusable gzip compressor: its deflate tables are allocated once, in [`GzipEncoder::new`].
pub struct GzipEncoder {
    deflate: Compress,
    crc: Crc,
}

impl std::fmt::Debug for GzipEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipEncoder").finish_non_exhaustive()
    }
}

impl Default for GzipEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl GzipEncoder {
    /// A compressor at [`LEVEL`], allocating its tables now.
    pub fn new() -> Self {
        Self {
            deflate: Compress::new(Compression::new(LEVEL), false),
            crc: Crc::new(),
        }
    }

    /// Appends `input` gzip-compressed to `out` as one gzip member. Grows `out` only when its
    /// spare capacity is short, so a reused body buffer stops allocating once warm.
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.deflate.reset();
        self.crc.reset();
        self.crc.update(input);
        out.extend_from_slice(&HEADER);
        // Spans shrink about eight times; start with room for four, grow if that is short.
        out.reserve(input.len() / 4 + 64);
        let mut rest = input;
        loop {
            let before = self.deflate.total_in();
            let status = self.deflate.compress_vec(rest, out, FlushCompress::Finish);
            rest = &rest[(self.deflate.total_in() - before) as usize..];
            match status {
                Ok(Status::StreamEnd) => break,
                Ok(Status::Ok | Status::BufError) => out.reserve(out.capacity().max(64)),
                // Raw deflate fails only on a call after its stream ended, and the reset above
                // starts a new one: unreachable, but never a panic or a loop on the worker.
                Err(_) => break,
            }
        }
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        // ISIZE is the length modulo 2^32 by definition.
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
    }
}

/// Appends `input` gzip-compressed to `out`, with a compressor made for this body: for cold
/// paths that compress rarely (a metrics interval, the bridge); an exporter keeps a
/// [`GzipEncoder`].
pub fn compress(input: &[u8], out: &mut Vec<u8>) {
    GzipEncoder::new().compress(input, out);
}

/// CRC-32 (IEEE, reflected), as gzip's trailer wants it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(data);
    crc.sum()
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

    #[test]
    fn a_reused_encoder_writes_each_body_whole_without_growing_a_warm_buffer() {
        let mut encoder = GzipEncoder::new();
        let large: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        for input in [&large[..], b"", b"span", &large[..1000], &large[..]] {
            out.clear();
            let capacity = out.capacity();
            encoder.compress(input, &mut out);
            // The same bytes as a compressor made for this body: nothing carried over.
            let mut fresh = Vec::new();
            compress(input, &mut fresh);
            assert_eq!(out, fresh);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, input);
            if input.len() <= 1000 {
                assert_eq!(out.capacity(), capacity, "a warm buffer is reused as it is");
            }
        }
    }
}
