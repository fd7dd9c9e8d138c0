//! Text from the wire: where request bytes become OTLP text, and the small byte-string helpers
//! the pipeline shares (HTTP whitespace, decimal numbers, `host:port`, integers as digits).
//!
//! Protobuf `string` fields must hold valid UTF-8, and collectors decode strictly: one invalid
//! byte in one attribute makes the collector refuse the whole export request (HTTP 400, gRPC
//! `INVALID_ARGUMENT`), losing every span of the batch. Header values may carry any octet
//! (RFC 9110 §5.5 allows obs-text), and paths, queries and authorities arrive as the client sent
//! them, so every byte string a span stores goes through [`append`] on its way into the span's
//! arena (a span record has no other way in).
//!
//! - Invalid sequences become U+FFFD, one per maximal invalid subpart (the substitution of
//!   Unicode §3.9 and WHATWG's decoder, the same as `String::from_utf8_lossy`).
//! - A cap cuts on a character boundary, counting the replacement's three bytes, so the result
//!   is at most `cap` bytes and never ends inside a character.
//! - ASCII, nearly every value, is found with one SIMD scan ([`crate::simd::find_non_ascii`])
//!   and copied as is. Nothing allocates beyond `out`'s own growth.
//!
//! Everything here reads bytes a client or host controls, so every function is total: a value
//! that does not fit gives `None` (or the input back), never a panic.

/// U+FFFD REPLACEMENT CHARACTER.
pub const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// What [`append`] had to do to the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Invalid sequences were replaced with U+FFFD.
    pub replaced: bool,
    /// The value was longer than the cap and was cut.
    pub cut: bool,
}

/// Appends `src` to `out` as valid UTF-8 of at most `cap` bytes (`usize::MAX`: no cap).
///
/// `out` itself is never inspected: it may hold anything before the appended bytes.
#[inline]
pub fn append(src: &[u8], cap: usize, out: &mut Vec<u8>) -> Appended {
    let n = src.len();
    if n <= cap {
        // Nearly always: short ASCII within the cap. It is copied into the spare room and
        // proven ASCII by the words that move it; only then does the length cover it.
        out.reserve(n);
        let len = out.len();
        // SAFETY: `reserve(n)` left room for `n` bytes past the length, and `src` is not in
        // `out`'s spare room (`out` is borrowed mutably).
        unsafe {
            if crate::copy::write_ascii(src, out.as_mut_ptr().add(len)) {
                out.set_len(len + n);
                return Appended::default();
            }
        }
    }
    append_general(src, cap, out)
}

/// [`append`] for input that is not ASCII or is longer than the cap.
#[inline(never)]
fn append_general(src: &[u8], cap: usize, out: &mut Vec<u8>) -> Appended {
    let ascii = crate::simd::find_non_ascii(src).unwrap_or(src.len());
    if ascii == src.len() || ascii >= cap {
        // All ASCII (or the cap falls within the ASCII prefix): a straight copy, cut anywhere.
        let n = ascii.min(cap);
        crate::copy::append(&src[..n], out);
        return Appended {
            replaced: false,
            cut: n < src.len(),
        };
    }
    crate::copy::append(&src[..ascii], out);
    append_slow(&src[ascii..], cap - ascii, out)
}

/// The rest of [`append`] from the first non-ASCII byte, with `budget` bytes left.
#[cold]
#[inline(never)]
fn append_slow(src: &[u8], mut budget: usize, out: &mut Vec<u8>) -> Appended {
    let mut done = Appended::default();
    for chunk in src.utf8_chunks() {
        let valid = chunk.valid();
        if valid.len() > budget {
            // Back off to the last character boundary within the budget.
            let mut cut = budget;
            while !valid.is_char_boundary(cut) {
                cut -= 1;
            }
            out.extend_from_slice(&valid.as_bytes()[..cut]);
            done.cut = true;
            return done;
        }
        out.extend_from_slice(valid.as_bytes());
        budget -= valid.len();
        if chunk.invalid().is_empty() {
            continue;
        }
        done.replaced = true;
        if budget < REPLACEMENT.len() {
            done.cut = true;
            return done;
        }
        out.extend_from_slice(REPLACEMENT);
        budget -= REPLACEMENT.len();
    }
    done
}

/// Makes `buf[start..]` valid UTF-8 in place, for text written by a callback rather than
/// copied through [`append`]. `scratch` holds the raw bytes meanwhile (and keeps its capacity
/// for the next time); it is touched only when the text is not valid already.
pub fn repair_tail(buf: &mut Vec<u8>, start: usize, scratch: &mut Vec<u8>) -> Appended {
    let tail = &buf[start..];
    if crate::simd::find_non_ascii(tail).is_none() || core::str::from_utf8(tail).is_ok() {
        return Appended::default();
    }
    scratch.clear();
    scratch.extend_from_slice(tail);
    buf.truncate(start);
    let done = append(scratch, usize::MAX, buf);
    scratch.clear();
    done
}

/// Up to `max` bytes of `raw` as one printable line for a log: invalid UTF-8 replaced, control
/// characters (line breaks included) escaped, cut on a character boundary. For text a remote
/// party controls, such as a collector's error message.
pub fn printable(raw: &[u8], max: usize) -> String {
    let mut valid = Vec::with_capacity(max.min(raw.len()));
    append(raw, max, &mut valid);
    // `append` wrote valid UTF-8 only.
    let s = String::from_utf8(valid).unwrap_or_default();
    let mut line = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// Strips optional whitespace (space, tab) from both ends, as HTTP field values allow.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A numeric header value (`x-envoy-attempt-count`, `x-envoy-fault-delay-request`): a plain
/// non-negative decimal, surrounding whitespace allowed, at most 18 digits so it cannot overflow.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

/// Splits `host:port`, `[v6]:port` or a bare host. The port is 1 to 5 digits up to 65535
/// after the last colon; any other suffix, or a second colon (a bare IPv6 address), leaves
/// the whole input as the host.
pub fn split_host_port(s: &[u8]) -> (&[u8], Option<u16>) {
    if let Some(rest) = s.strip_prefix(b"[") {
        if let Some(end) = rest.iter().position(|&b| b == b']') {
            let host = &rest[..end];
            let port = rest
                .get(end + 1..)
                .and_then(|r| r.strip_prefix(b":"))
                .and_then(parse_port);
            return (host, port);
        }
        return (s, None);
    }
    // Called on every recorded request (authority, peer addresses): the first colon, found a
    // word at a time, must be followed by the port alone. A port is digits only, so that
    // colon is also the last one and the host holds none: one pass instead of a walk back
    // over the digits and a second search of the host.
    match find_byte(s, b':') {
        Some(i) => match port_at_end(s, s.len() - i - 1) {
            Some(port) => (&s[..i], Some(port)),
            None => (s, None),
        },
        None => (s, None),
    }
}

/// The port that the last `digits` bytes of `s` spell ([`parse_port`]). When `s` has eight
/// bytes, they are read as one word and checked and converted together, without a loop whose
/// length (four digits, five digits) changes from one address to the next and costs a
/// mispredicted branch; shorter input takes [`parse_port`].
#[inline]
fn port_at_end(s: &[u8], digits: usize) -> Option<u16> {
    let Some(last) = s.last_chunk::<8>() else {
        return parse_port(s.get(s.len().checked_sub(digits)?..)?);
    };
    if !(1..=5).contains(&digits) {
        return None;
    }
    const ONES: u64 = 0x0101_0101_0101_0101;
    // The port's bytes are the word's top `digits` bytes (little-endian: the string's last).
    let keep = u64::MAX << (8 * (8 - digits));
    let w = u64::from_le_bytes(*last) & keep;
    // Each kept byte is `0x30..=0x39`: high nibble 3, and low nibble + 6 does not reach 16.
    let low = w & (0x0f * ONES);
    let high_is_3 = w & (0xf0 * ONES) == (0x30 * ONES) & keep;
    let low_under_10 = (low + 6 * ONES) & (0x10 * ONES) & keep == 0;
    if !(high_is_3 && low_under_10) {
        return None;
    }
    // The digits as an eight-digit number whose leading digits are the zeros below the port:
    // pairs, then fours, then the eight (the usual SWAR decimal parse).
    let v = low.wrapping_mul(10 * 256 + 1) >> 8;
    let v = (v & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 * 65536 + 1) >> 16;
    let v = (v & 0x0000_ffff_0000_ffff).wrapping_mul((10000 << 32) + 1) >> 32;
    u16::try_from(v).ok()
}

/// A port: 1 to 5 ASCII digits, at most 65535.
#[inline]
pub fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let mut v = 0u32;
    for &b in p {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u32::from(d);
    }
    u16::try_from(v).ok()
}

/// The first `needle` in `hay`, eight bytes at a time (SWAR zero-byte test on `word ^ needle`)
/// then byte by byte: for the short scans of the span path (host names, cluster names), where
/// a byte loop costs several instructions a byte and `memchr`'s setup outweighs the scan.
#[inline]
pub fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(w) = hay.get(at..).and_then(|t| t.first_chunk::<8>()) {
        let x = u64::from_le_bytes(*w) ^ (LO * u64::from(needle));
        // Exact per byte: a zero byte of `x` sets its high bit here; bytes below a zero may be
        // flagged too by the borrow, but never one before the first zero.
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if at < hay.len() && hay.len() >= 8 {
        // The tail as the last eight bytes, overlapping what was searched: those bytes hold
        // no `needle`, so the first one found is in the tail.
        let w = hay.last_chunk::<8>()?;
        let x = u64::from_le_bytes(*w) ^ (LO * u64::from(needle));
        let zero = x.wrapping_sub(LO) & !x & HI;
        return (zero != 0).then(|| hay.len() - 8 + (zero.trailing_zeros() / 8) as usize);
    }
    hay.get(at..)?
        .iter()
        .position(|&b| b == needle)
        .map(|i| at + i)
}

/// Formats an integer without allocating.
pub fn itoa(mut v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let neg = v < 0;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10).unsigned_abs() as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg && i > 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `v` into `out` and returns the bytes written; a `%` not followed by two hex
/// digits is kept literally. Stops when `out` is full. The result may be invalid UTF-8.
pub fn percent_decode(v: &[u8], out: &mut [u8]) -> usize {
    let (mut i, mut o) = (0, 0);
    while let (Some(&c), Some(slot)) = (v.get(i), out.get_mut(o)) {
        let escaped = match (c, v.get(i + 1), v.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(b) => {
                *slot = b;
                i += 3;
            }
            None => {
                *slot = c;
                i += 1;
            }
        }
        o += 1;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(src: &[u8], cap: usize) -> (Vec<u8>, Appended) {
        let mut out = b"prefix".to_vec();
        let a = append(src, cap, &mut out);
        assert_eq!(&out[..6], b"prefix");
        (out[6..].to_vec(), a)
    }

    /// The reference: std's lossy decoding, then the longest prefix within `cap` that ends on a
    /// character boundary.
    fn reference(src: &[u8], cap: usize) -> Vec<u8> {
        let lossy = String::from_utf8_lossy(src);
        let mut cut = cap.min(lossy.len());
        while !lossy.is_char_boundary(cut) {
            cut -= 1;
        }
        lossy.as_bytes()[..cut].to_vec()
    }

    /// Bytes that are mostly ASCII, with the UTF-8 lead and continuation bytes that make valid
    /// characters, truncated ones, overlongs and surrogates.
    fn texty() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                20 => 0x20u8..0x7f,
                2 => prop::sample::select(&[0xc3u8, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80][..]),
                2 => prop::sample::select(&[0x80u8, 0xbf, 0xc0, 0xc1, 0xed, 0xa0, 0xf5, 0xfe, 0xff][..]),
                1 => any::<u8>(),
            ],
            0..120,
        )
    }

    proptest! {
        #[test]
        fn matches_lossy_decoding_then_a_boundary_cut(src in texty(), cap in 0usize..140) {
            let (out, a) = run(&src, cap);
            prop_assert!(core::str::from_utf8(&out).is_ok());
            prop_assert!(out.len() <= cap);
            prop_assert_eq!(&out, &reference(&src, cap));
            prop_assert_eq!(a.cut, reference(&src, usize::MAX).len() > cap);
            let uncapped = run(&src, usize::MAX).0;
            prop_assert_eq!(&uncapped, &reference(&src, usize::MAX));
            prop_assert_eq!(a.replaced && !a.cut, uncapped != src && !a.cut);
        }

        #[test]
        fn valid_text_is_unchanged(s in "\\PC{0,60}") {
            let (out, a) = run(s.as_bytes(), usize::MAX);
            prop_assert_eq!(out, s.as_bytes());
            prop_assert_eq!(a, Appended::default());
        }

        #[test]
        fn repair_tail_is_append(head in "[a-z]{0,5}", src in texty()) {
            let mut buf = head.as_bytes().to_vec();
            buf.extend_from_slice(&src);
            let mut scratch = Vec::new();
            repair_tail(&mut buf, head.len(), &mut scratch);
            let mut want = head.as_bytes().to_vec();
            want.extend_from_slice(&reference(&src, usize::MAX));
            prop_assert_eq!(buf, want);
        }
    }

    #[test]
    fn examples() {
        let r = |s: &[u8], cap| String::from_utf8(run(s, cap).0).unwrap();
        assert_eq!(
            r(b"probe/1.0 \xff\xfe", usize::MAX),
            "probe/1.0 \u{FFFD}\u{FFFD}"
        );
        // A truncated 3-byte sequence is one maximal subpart: one replacement.
        assert_eq!(r(b"a\xe2\x82b", usize::MAX), "a\u{FFFD}b");
        // A replacement that does not fit the cap is left out whole.
        assert_eq!(r(b"abcd\xff", 6), "abcd");
        assert_eq!(r(b"abcd\xff", 7), "abcd\u{FFFD}");
        // "é" is two bytes: a cut between them backs off to before it.
        assert_eq!(r("abcé".as_bytes(), 4), "abc");
        assert_eq!(r(b"abcdef", 3), "abc");
        assert_eq!(
            run(b"abc", 3).1,
            Appended {
                replaced: false,
                cut: false
            }
        );
        assert_eq!(
            run(b"\xffabc", 2).1,
            Appended {
                replaced: true,
                cut: true
            }
        );
    }

    #[test]
    fn printable_lines() {
        assert_eq!(printable(b"not UTF-8 \xff\n", 200), "not UTF-8 \u{FFFD}\\n");
        assert_eq!(printable(&[b'x'; 300], 200).len(), 200);
        assert_eq!(printable("éé".as_bytes(), 3), "é");
    }

    #[test]
    fn numeric_values() {
        assert_eq!(parse_u64(b"3"), Some(3));
        assert_eq!(parse_u64(b" 12 "), Some(12));
        assert_eq!(
            parse_u64(b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b" ",
            b"-1",
            b"+1",
            b"1.5",
            b"0x10",
            b"1 2",
            b"9999999999999999999",
        ] {
            assert_eq!(parse_u64(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The plain reading of `host:port`: the last colon, no colon before it, a valid port.
    fn split_host_port_reference(s: &[u8]) -> (&[u8], Option<u16>) {
        if s.starts_with(b"[") {
            return split_host_port(s);
        }
        match s.iter().rposition(|&b| b == b':') {
            Some(i) if !s[..i].contains(&b':') => match parse_port(&s[i + 1..]) {
                Some(p) => (&s[..i], Some(p)),
                None => (s, None),
            },
            _ => (s, None),
        }
    }

    proptest! {
        #[test]
        fn host_port_matches_the_plain_reading(
            s in proptest::collection::vec(
                prop_oneof![Just(b':'), Just(b'0'), Just(b'9'), Just(b'6'), Just(b'a'), any::<u8>()],
                0..24,
            )
        ) {
            prop_assert_eq!(split_host_port(&s), split_host_port_reference(&s));
        }
    }

    proptest! {
        #[test]
        fn port_at_end_is_parse_port(
            s in proptest::collection::vec(
                prop_oneof![
                    6 => b'0'..=b'9',
                    1 => Just(b':'),
                    1 => Just(b'/'),
                    1 => Just(b'\x3a'),
                    1 => Just(b'\x40'),
                    1 => Just(b'\xb5'),
                    1 => any::<u8>(),
                ],
                0..14,
            ),
            digits in 0usize..8,
        ) {
            // The word-at-a-time port against the byte loop, at every length and digit count.
            let want = s.len().checked_sub(digits).and_then(|i| parse_port(&s[i..]));
            prop_assert_eq!(port_at_end(&s, digits), want);
        }

        #[test]
        fn long_host_port_matches_the_plain_reading(
            s in proptest::collection::vec(
                prop_oneof![
                    8 => Just(b'a'),
                    2 => Just(b':'),
                    2 => Just(b'0'),
                    2 => Just(b'9'),
                    1 => Just(b'['),
                    1 => Just(b']'),
                    1 => any::<u8>(),
                ],
                0..64,
            ),
            port in proptest::option::of(0u32..70000),
        ) {
            // Hosts long enough for the word-at-a-time search, with and without a port.
            let mut s = s;
            if let Some(p) = port {
                s.extend_from_slice(format!(":{p}").as_bytes());
            }
            prop_assert_eq!(split_host_port(&s), split_host_port_reference(&s));
        }

        #[test]
        fn find_byte_is_position(
            hay in proptest::collection::vec(prop_oneof![Just(b':'), Just(0u8), Just(0x80u8), any::<u8>()], 0..40),
            needle in prop_oneof![Just(b':'), Just(0u8), Just(0x80u8), any::<u8>()],
        ) {
            prop_assert_eq!(find_byte(&hay, needle), hay.iter().position(|&b| b == needle));
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port(b"a:65535"), (&b"a"[..], Some(65535)));
        assert_eq!(split_host_port(b"a:65536"), (&b"a:65536"[..], None));
        assert_eq!(split_host_port(b"a:080"), (&b"a"[..], Some(80)));
        assert_eq!(split_host_port(b"a:000080"), (&b"a:000080"[..], None));
        assert_eq!(split_host_port(b"a:"), (&b"a:"[..], None));
        assert_eq!(split_host_port(b":80"), (&b""[..], Some(80)));
        assert_eq!(split_host_port(b"80"), (&b"80"[..], None));
        assert_eq!(
            split_host_port(b"reviews.default.svc.cluster.local:9080"),
            (&b"reviews.default.svc.cluster.local"[..], Some(9080))
        );
        assert_eq!(
            split_host_port(b"fe80:0000:0000:0000:0000:0000:0000:1:80"),
            (&b"fe80:0000:0000:0000:0000:0000:0000:1:80"[..], None)
        );
        assert_eq!(split_host_port(b"a:80"), (&b"a"[..], Some(80)));
        assert_eq!(split_host_port(b"[::1]:80"), (&b"::1"[..], Some(80)));
        assert_eq!(split_host_port(b"::1"), (&b"::1"[..], None));
        assert_eq!(split_host_port(b"a:99999"), (&b"a:99999"[..], None));
        let mut b = [0u8; 20];
        assert_eq!(itoa(-120, &mut b), b"-120");
    }
}
