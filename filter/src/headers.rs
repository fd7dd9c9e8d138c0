//! The request headers the core looks at, found in one pass over whatever the adapter has.
//!
//! The adapter hands over borrowed `(name, value)` slices (from the proxy-wasm pairs buffer, or a
//! hyper `HeaderMap`); nothing is copied. Names are matched case-insensitively although Envoy and
//! hyper both lowercase them, because a third adapter may not.

use smallvec::SmallVec;

/// Longest header name we bother lowercasing; longer names are none of ours.
const MAX_NAME: usize = 64;

/// Borrowed slices of every request header the core may use.
#[derive(Debug, Default, Clone)]
pub struct RequestHeaders<'a> {
    pub method: Option<&'a [u8]>,
    pub path: Option<&'a [u8]>,
    pub authority: Option<&'a [u8]>,
    pub scheme: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub x_forwarded_for: Option<&'a [u8]>,
    pub x_forwarded_proto: Option<&'a [u8]>,
    pub x_request_id: Option<&'a [u8]>,
    /// The first `traceparent`; `traceparent_count` > 1 makes it invalid per W3C.
    pub traceparent: Option<&'a [u8]>,
    pub traceparent_count: u8,
    /// Every `tracestate` field, in order; W3C says to combine them with commas.
    pub tracestate: SmallVec<[&'a [u8]; 2]>,
    /// Every `baggage` field, in order.
    pub baggage: SmallVec<[&'a [u8]; 2]>,
    pub b3: Option<&'a [u8]>,
    pub x_b3_traceid: Option<&'a [u8]>,
    pub x_b3_spanid: Option<&'a [u8]>,
    pub x_b3_parentspanid: Option<&'a [u8]>,
    pub x_b3_sampled: Option<&'a [u8]>,
    pub x_b3_flags: Option<&'a [u8]>,
    pub l5d_ctx_trace: Option<&'a [u8]>,
    pub l5d_reqid: Option<&'a [u8]>,
    pub l5d_sample: Option<&'a [u8]>,
    pub x_amzn_trace_id: Option<&'a [u8]>,
    pub x_cloud_trace_context: Option<&'a [u8]>,
    pub grpc_trace_bin: Option<&'a [u8]>,
    pub x_envoy_attempt_count: Option<&'a [u8]>,
    pub x_envoy_fault_abort_request: Option<&'a [u8]>,
    pub x_envoy_fault_delay_request: Option<&'a [u8]>,
    pub cookie: Option<&'a [u8]>,
    /// How many header fields were seen (for limits and diagnostics).
    pub count: u32,
}

impl<'a> RequestHeaders<'a> {
    /// Indexes headers from any iterator of `(name, value)` pairs in one pass.
    pub fn from_pairs<I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut h = Self::default();
        for (name, value) in pairs {
            h.count = h.count.saturating_add(1);
            h.add(name, value);
        }
        h
    }

    /// Files one header under its known name, if it is one of ours.
    pub fn add(&mut self, name: &[u8], value: &'a [u8]) {
        let mut lower = [0u8; MAX_NAME];
        let name = if name.iter().any(u8::is_ascii_uppercase) {
            if name.len() > MAX_NAME {
                return;
            }
            let buf = &mut lower[..name.len()];
            buf.copy_from_slice(name);
            buf.make_ascii_lowercase();
            &*buf
        } else {
            name
        };
        // First value wins for single-valued headers (B3 says so; Envoy returns the first too).
        fn first<'v>(slot: &mut Option<&'v [u8]>, v: &'v [u8]) {
            if slot.is_none() {
                *slot = Some(v);
            }
        }
        match name {
            b":method" => first(&mut self.method, value),
            b":path" => first(&mut self.path, value),
            b":authority" | b"host" => first(&mut self.authority, value),
            b":scheme" => first(&mut self.scheme, value),
            b"user-agent" => first(&mut self.user_agent, value),
            b"x-forwarded-for" => first(&mut self.x_forwarded_for, value),
            b"x-forwarded-proto" => first(&mut self.x_forwarded_proto, value),
            b"x-request-id" => first(&mut self.x_request_id, value),
            b"traceparent" => {
                first(&mut self.traceparent, value);
                self.traceparent_count = self.traceparent_count.saturating_add(1);
            }
            b"tracestate" => push_capped(&mut self.tracestate, value),
            b"baggage" => push_capped(&mut self.baggage, value),
            b"b3" => first(&mut self.b3, value),
            b"x-b3-traceid" => first(&mut self.x_b3_traceid, value),
            b"x-b3-spanid" => first(&mut self.x_b3_spanid, value),
            b"x-b3-parentspanid" => first(&mut self.x_b3_parentspanid, value),
            b"x-b3-sampled" => first(&mut self.x_b3_sampled, value),
            b"x-b3-flags" => first(&mut self.x_b3_flags, value),
            b"l5d-ctx-trace" => first(&mut self.l5d_ctx_trace, value),
            b"l5d-reqid" => first(&mut self.l5d_reqid, value),
            b"l5d-sample" => first(&mut self.l5d_sample, value),
            b"x-amzn-trace-id" => first(&mut self.x_amzn_trace_id, value),
            b"x-cloud-trace-context" => first(&mut self.x_cloud_trace_context, value),
            b"grpc-trace-bin" => first(&mut self.grpc_trace_bin, value),
            b"x-envoy-attempt-count" => first(&mut self.x_envoy_attempt_count, value),
            b"x-envoy-fault-abort-request" => first(&mut self.x_envoy_fault_abort_request, value),
            b"x-envoy-fault-delay-request" => first(&mut self.x_envoy_fault_delay_request, value),
            b"cookie" => first(&mut self.cookie, value),
            _ => {}
        }
    }
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

/// Keeps at most 64 fields of a multi-valued header: more is an attack, not a trace.
fn push_capped<'a>(v: &mut SmallVec<[&'a [u8]; 2]>, value: &'a [u8]) {
    if v.len() < 64 {
        v.push(value);
    }
}

/// Iterates a proxy-wasm serialized header map (`u32 n`, `n × (klen, vlen)`, then
/// `key\0value\0` each) in place. A truncated or inconsistent buffer simply ends the iteration:
/// the host is trusted to be well-formed, but a bad one must not panic the VM.
pub fn pairs(buf: &[u8]) -> PairsIter<'_> {
    let n = read_u32(buf, 0).unwrap_or(0) as usize;
    // Each pair needs 8 bytes of lengths: cap n by what the buffer can hold.
    let n = n.min(buf.len().saturating_sub(4) / 8);
    PairsIter {
        buf,
        n,
        i: 0,
        data: 4 + n * 8,
    }
}

/// Iterator returned by [`pairs`]; cloning it restarts nothing, it copies the position.
#[derive(Clone)]
pub struct PairsIter<'a> {
    buf: &'a [u8],
    n: usize,
    i: usize,
    data: usize,
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl<'a> Iterator for PairsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.i >= self.n {
            return None;
        }
        let klen = read_u32(self.buf, 4 + self.i * 8)? as usize;
        let vlen = read_u32(self.buf, 8 + self.i * 8)? as usize;
        let k_end = self.data.checked_add(klen)?;
        let v_start = k_end.checked_add(1)?;
        let v_end = v_start.checked_add(vlen)?;
        let key = self.buf.get(self.data..k_end)?;
        let value = self.buf.get(v_start..v_end)?;
        self.data = v_end.checked_add(1)?;
        self.i += 1;
        Some((key, value))
    }
}

/// Serializes pairs in the proxy-wasm map format (for the adapter's `set_header_map_pairs`
/// and for tests).
pub fn serialize_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    out: &mut Vec<u8>,
) {
    out.clear();
    let n = pairs.clone().into_iter().count() as u32;
    out.extend_from_slice(&n.to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_index() {
        let src: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b"TraceParent", b"00-x"),
            (b"tracestate", b"a=1"),
            (b"tracestate", b"b=2"),
            (b"traceparent", b"00-y"),
        ];
        let mut buf = Vec::new();
        serialize_pairs(src.iter().copied(), &mut buf);
        let back: Vec<_> = pairs(&buf).collect();
        assert_eq!(back, src);
        let h = RequestHeaders::from_pairs(pairs(&buf));
        assert_eq!(h.method, Some(&b"GET"[..]));
        assert_eq!(h.traceparent, Some(&b"00-x"[..]));
        assert_eq!(h.traceparent_count, 2);
        assert_eq!(h.tracestate.as_slice(), &[&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(h.count, 5);
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

    #[test]
    fn truncated_buffers_never_panic() {
        let mut buf = Vec::new();
        serialize_pairs([(&b"a"[..], &b"1"[..]), (&b"bb"[..], &b"22"[..])], &mut buf);
        for cut in 0..buf.len() {
            let _ = pairs(&buf[..cut]).count();
        }
        assert_eq!(pairs(&[0xff, 0xff, 0xff, 0xff]).count(), 0);
    }
}
