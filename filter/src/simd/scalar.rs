//! The scalar twins of every kernel: the reference the differential tests compare against, and
//! what runs on targets without a kernel (or on inputs too short for one).

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

/// Nibble value of each byte, `0xff` for anything but `0-9a-f`.
pub static DECODE: [u8; 256] = build_decode_table();

/// Writes `src` as lowercase hex into `out[..2 * src.len()]` (stops early if `out` is short).
pub fn encode_hex(src: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(src) {
        pair[0] = LOWER[(b >> 4) as usize];
        pair[1] = LOWER[(b & 0x0f) as usize];
    }
}

/// Decodes `src` (lowercase hex) into `out`, one byte per digit pair; false if any byte of
/// `src` is not lowercase hex. The caller checks lengths.
pub fn decode_hex(src: &[u8], out: &mut [u8]) -> bool {
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

/// 16 bytes as 32 lowercase hex digits.
pub fn encode_hex16(src: &[u8; 16], out: &mut [u8; 32]) {
    encode_hex(src, out)
}

/// 8 bytes as 16 lowercase hex digits.
pub fn encode_hex8(src: &[u8; 8], out: &mut [u8; 16]) {
    encode_hex(src, out)
}

/// 32 lowercase hex digits into 16 bytes; false on any other byte.
pub fn decode_hex32(src: &[u8; 32], out: &mut [u8; 16]) -> bool {
    decode_hex(src, out)
}

/// 16 lowercase hex digits into 8 bytes; false on any other byte.
pub fn decode_hex16(src: &[u8; 16], out: &mut [u8; 8]) -> bool {
    decode_hex(src, out)
}

/// `-` at 2, 35 and 52, lowercase hex everywhere else.
pub fn traceparent_shape(v: &[u8; 55]) -> bool {
    v.iter().enumerate().all(|(i, &b)| {
        if matches!(i, 2 | 35 | 52) {
            b == b'-'
        } else {
            DECODE[b as usize] != 0xff
        }
    })
}

/// A version-00 `traceparent` with both ids non-zero: the flags byte, with the ids decoded
/// into `trace` and `span`; `None` (outputs unspecified) for anything else.
pub fn traceparent00(v: &[u8; 55], trace: &mut [u8; 16], span: &mut [u8; 8]) -> Option<u8> {
    let mut flags = [0u8; 1];
    let ok = v.starts_with(b"00-")
        && v[35] == b'-'
        && v[52] == b'-'
        && decode_hex(&v[3..35], trace)
        && decode_hex(&v[36..52], span)
        && decode_hex(&v[53..55], &mut flags)
        && trace.iter().any(|&b| b != 0)
        && span.iter().any(|&b| b != 0);
    ok.then_some(flags[0])
}

/// The index of the first byte of `hay` that is `>= 0x80`.
pub fn find_non_ascii(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b >= 0x80)
}

/// The index of the first byte of `hay` that a `tracestate` value cannot hold: outside
/// printable ASCII `0x21..=0x7e`, or `,` or `=`.
pub fn find_non_tracestate_value(hay: &[u8]) -> Option<usize> {
    hay.iter()
        .position(|&b| !(0x21..=0x7e).contains(&b) || b == b',' || b == b'=')
}
