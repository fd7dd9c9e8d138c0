//! Byte-string helpers shared by the pipeline: HTTP whitespace, decimal numbers, `host:port`.
//!
//! Everything here reads bytes a client or host controls, so every function is total: a value
//! that does not fit gives `None` (or the input back), never a panic.

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

/// Splits `host:port`, `[v6]:port` or a bare host.
pub fn split_host_port(s: &[u8]) -> (&[u8], Option<u16>) {
    let parse_port = |p: &[u8]| -> Option<u16> {
        if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        p.iter()
            .try_fold(0u32, |acc, &d| Some(acc * 10 + (d - b'0') as u32))
            .and_then(|v| u16::try_from(v).ok())
    };
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
    match s.iter().rposition(|&b| b == b':') {
        // A second colon means a bare IPv6 address, not host:port.
        Some(i) if !s[..i].contains(&b':') => match parse_port(&s[i + 1..]) {
            Some(p) => (&s[..i], Some(p)),
            None => (s, None),
        },
        _ => (s, None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port(b"a:80"), (&b"a"[..], Some(80)));
        assert_eq!(split_host_port(b"[::1]:80"), (&b"::1"[..], Some(80)));
        assert_eq!(split_host_port(b"::1"), (&b"::1"[..], None));
        assert_eq!(split_host_port(b"a:99999"), (&b"a:99999"[..], None));
        let mut b = [0u8; 20];
        assert_eq!(itoa(-120, &mut b), b"-120");
    }
}
