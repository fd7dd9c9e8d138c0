//! Trace and span identifiers: fixed-size byte arrays with lowercase hex on the wire.
//!
//! Ids are generated from a per-VM PRNG (wyrand via `fastrand`) seeded once by the adapter
//! from the host's entropy (WASI `random_get` inside Envoy). A CSPRNG per id would be a host
//! call per request; W3C Level 2 only asks that the right-most 7 bytes be uniformly random.

use bytemuck::{Pod, Zeroable};

use crate::hex;

/// A 16-byte W3C / OTLP trace id. All-zero is invalid on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Pod, Zeroable)]
#[repr(transparent)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id. All-zero is invalid on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Pod, Zeroable)]
#[repr(transparent)]
pub struct SpanId(pub [u8; 8]);

macro_rules! id_impl {
    ($ty:ident, $n:literal) => {
        impl $ty {
            /// The invalid all-zero id.
            pub const INVALID: Self = Self([0; $n]);
            /// Length of the lowercase hex form.
            pub const HEX_LEN: usize = $n * 2;

            /// True unless every byte is zero.
            pub fn is_valid(&self) -> bool {
                // One comparison on the integer view instead of a byte loop.
                bytemuck::cast::<[u8; $n], [u64; $n / 8]>(self.0) != [0u64; $n / 8]
            }

            /// Parses exactly `HEX_LEN` lowercase hex digits; uppercase and all-zero are rejected.
            pub fn from_hex(s: &[u8]) -> Option<Self> {
                let mut out = [0u8; $n];
                if s.len() != Self::HEX_LEN || !hex::decode_lower(s, &mut out) {
                    return None;
                }
                let id = Self(out);
                id.is_valid().then_some(id)
            }

            /// Writes the lowercase hex form into `out`, which must be `HEX_LEN` long.
            pub fn write_hex(&self, out: &mut [u8]) {
                hex::encode_lower(&self.0, out);
            }

            /// The lowercase hex form on the stack.
            pub fn to_hex(&self) -> [u8; $n * 2] {
                let mut out = [0u8; $n * 2];
                self.write_hex(&mut out);
                out
            }
        }

        impl core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Display::fmt(self, f)
            }
        }

        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                let hex = self.to_hex();
                // Encoded hex is ASCII by construction.
                f.write_str(core::str::from_utf8(&hex).unwrap_or("?"))
            }
        }
    };
}

id_impl!(TraceId, 16);
id_impl!(SpanId, 8);

impl TraceId {
    /// The low 64 bits (bytes 8..16), big-endian: what 64-bit B3 and X-Ray-style systems carry.
    pub fn low_u64(&self) -> u64 {
        u64::from_be_bytes(bytemuck::cast::<[u8; 16], [[u8; 8]; 2]>(self.0)[1])
    }

    /// The high 64 bits, big-endian.
    pub fn high_u64(&self) -> u64 {
        u64::from_be_bytes(bytemuck::cast::<[u8; 16], [[u8; 8]; 2]>(self.0)[0])
    }

    /// Builds an id from its two big-endian halves.
    pub fn from_u64s(high: u64, low: u64) -> Self {
        Self(bytemuck::cast([high.to_be_bytes(), low.to_be_bytes()]))
    }
}

impl SpanId {
    /// The id as a big-endian integer (GCP and Finagle carry span ids as integers).
    pub fn as_u64(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// Builds an id from a big-endian integer.
    pub fn from_u64(v: u64) -> Self {
        Self(v.to_be_bytes())
    }
}

/// Generates ids from a PRNG seeded once per VM.
#[derive(Clone, Debug)]
pub struct IdGenerator {
    rng: fastrand::Rng,
}

impl IdGenerator {
    /// A generator seeded by the adapter (from `random_get` in wasm, the OS natively).
    pub fn from_seed(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A new trace id; every byte is random, so the W3C `random` flag may be set.
    pub fn trace_id(&mut self) -> TraceId {
        loop {
            let id = TraceId::from_u64s(self.rng.u64(..), self.rng.u64(..));
            if id.is_valid() {
                return id;
            }
        }
    }

    /// A new span id, never all-zero.
    pub fn span_id(&mut self) -> SpanId {
        loop {
            let id = SpanId::from_u64(self.rng.u64(..));
            if id.is_valid() {
                return id;
            }
        }
    }

    /// A uniformly random float in [0, 1) for jitter.
    pub fn unit_f64(&mut self) -> f64 {
        self.rng.f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_validation() {
        let t = TraceId::from_hex(b"4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(&t.to_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.high_u64(), 0x4bf92f3577b34da6);
        assert_eq!(t.low_u64(), 0xa3ce929d0e0e4736);
        assert!(TraceId::from_hex(b"4BF92F3577B34DA6A3CE929D0E0E4736").is_none());
        assert!(TraceId::from_hex(b"00000000000000000000000000000000").is_none());
        assert!(TraceId::from_hex(b"4bf92f3577b34da6a3ce929d0e0e473").is_none());
        assert!(SpanId::from_hex(b"00f067aa0ba902b7").is_some());
        assert!(SpanId::from_hex(b"0000000000000000").is_none());
        assert!(SpanId::from_hex(b"00f067aa0ba902bg").is_none());
        assert_eq!(format!("{}", SpanId::from_u64(0xab)), "00000000000000ab");
    }

    #[test]
    fn generator_never_yields_zero_and_differs() {
        let mut g = IdGenerator::from_seed(0);
        let a = g.trace_id();
        let b = g.trace_id();
        assert!(a.is_valid() && b.is_valid() && a != b);
        for _ in 0..1000 {
            assert!(g.span_id().is_valid());
        }
    }
}
