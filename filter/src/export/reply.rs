//! What an OTLP collector's reply means, host-independent: success (maybe partial), a failure
//! worth retrying (maybe with the delay the collector asked for), or a failure that drops the
//! batch. The rules are OTLP's (see the exporter README section); the adapter only reads the
//! reply's status, a few headers and the body, and hands them over as [`Reply`].
//!
//! Everything here reads untrusted bytes: any malformed input yields a classification, never a
//! panic.

use super::config::Protocol;
use crate::protobuf::{fields, Wire};
use crate::text::parse_u64;

/// `:path` of OTLP/gRPC trace export.
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The parts of a collector's reply that decide its meaning. `None` status: no reply at all
/// (reset, refused, or the host gave up).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reply<'a> {
    /// The HTTP status; `None` when no reply came.
    pub status: Option<u32>,
    /// `Retry-After`, as the collector sent it.
    pub retry_after: Option<&'a [u8]>,
    /// `grpc-status`, from the trailers or (trailers-only replies) the headers.
    pub grpc_status: Option<&'a [u8]>,
    /// `grpc-status-details-bin`: a base64 `google.rpc.Status`.
    pub grpc_details: Option<&'a [u8]>,
    /// `grpc-message`: the status message, percent-encoded.
    pub grpc_message: Option<&'a [u8]>,
    /// The reply body (OTLP/HTTP: an `ExportTraceServiceResponse`; gRPC: its frame).
    pub body: &'a [u8],
}

/// Why an export attempt failed, as logged and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A non-2xx HTTP status.
    Http(u32),
    /// A non-OK gRPC status code.
    Grpc(u32),
    /// No reply: reset, refused, or timed out before headers.
    NoResponse,
    /// The host refused to send the request (unknown cluster, bad header).
    DispatchFailed,
    /// A gRPC reply without a status.
    NoGrpcStatus,
    /// The request was still unanswered long after its timeout; the host lost it.
    Lost,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::Http(s) => write!(f, "HTTP {s}"),
            Failure::Grpc(c) => write!(f, "gRPC status {c} ({})", grpc_code_name(*c)),
            Failure::NoResponse => f.write_str("no response (reset, refused or timed out)"),
            Failure::DispatchFailed => {
                f.write_str("the host refused the call; is collector.cluster a defined cluster?")
            }
            Failure::NoGrpcStatus => f.write_str("gRPC reply without grpc-status"),
            Failure::Lost => f.write_str("no callback long after the timeout"),
        }
    }
}

/// The canonical name of a gRPC status code, as logs show it.
fn grpc_code_name(code: u32) -> &'static str {
    crate::span::grpc::code_name(code).unwrap_or("unknown code")
}

/// How one export attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportResult {
    /// Accepted; `rejected` spans of it were refused by a partial success (not retried).
    Ok {
        /// Spans the collector refused.
        rejected: u64,
    },
    /// Worth sending again, after `delay_ms` when the collector said so.
    Retry {
        /// Why the attempt failed.
        failure: Failure,
        /// The delay the collector asked for, in ms.
        delay_ms: Option<u64>,
    },
    /// Final: the batch is dropped.
    Fail(Failure),
}

/// Classifies a reply. `now_unix_ms` resolves an HTTP-date `Retry-After`.
pub fn classify(protocol: Protocol, reply: &Reply<'_>, now_unix_ms: u64) -> ExportResult {
    let Some(status) = reply.status else {
        return ExportResult::Retry {
            failure: Failure::NoResponse,
            delay_ms: None,
        };
    };
    if !(200..300).contains(&status) {
        // gRPC maps these HTTP statuses to UNAVAILABLE, so one rule serves both protocols.
        let failure = Failure::Http(status);
        return match status {
            429 | 502 | 503 | 504 => ExportResult::Retry {
                failure,
                delay_ms: reply
                    .retry_after
                    .and_then(|v| retry_after_ms(v, now_unix_ms)),
            },
            _ => ExportResult::Fail(failure),
        };
    }
    match protocol {
        Protocol::Http => ExportResult::Ok {
            rejected: partial_success(reply.body).rejected,
        },
        Protocol::Grpc => classify_grpc(reply),
    }
}

fn classify_grpc(reply: &Reply<'_>) -> ExportResult {
    let Some(code) = reply.grpc_status.and_then(parse_u64) else {
        return ExportResult::Fail(Failure::NoGrpcStatus);
    };
    let code = code.min(u32::MAX as u64) as u32;
    let delay_ms = reply.grpc_details.and_then(retry_info_ms);
    let failure = Failure::Grpc(code);
    match code {
        0 => ExportResult::Ok {
            rejected: partial_success(response_message(Protocol::Grpc, reply.body)).rejected,
        },
        // CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS.
        1 | 4 | 10 | 11 | 14 | 15 => ExportResult::Retry { failure, delay_ms },
        // RESOURCE_EXHAUSTED is a throttle only when the server says when to come back.
        8 if delay_ms.is_some() => ExportResult::Retry { failure, delay_ms },
        _ => ExportResult::Fail(failure),
    }
}

/// `Retry-After` as a delay: delta-seconds, or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37
/// GMT`) relative to now. Other date forms are obsolete and fall back to backoff.
pub fn retry_after_ms(v: &[u8], now_unix_ms: u64) -> Option<u64> {
    if let Some(s) = parse_u64(v) {
        return Some(s.saturating_mul(1000));
    }
    let at = imf_fixdate_unix_s(v.trim_ascii())?;
    Some(at.saturating_mul(1000).saturating_sub(now_unix_ms))
}

fn imf_fixdate_unix_s(v: &[u8]) -> Option<u64> {
    let s = core::str::from_utf8(v).ok()?;
    let mut it = s.split(' ');
    let (_wday, day, mon, year, time, gmt) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    if gmt != "GMT" || it.next().is_some() || day.len() != 2 || year.len() != 4 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == mon)? as u64 + 1;
    let day = parse_u64(day.as_bytes())?;
    let year = parse_u64(year.as_bytes())?;
    let mut t = time.split(':');
    let (h, m, sec) = (
        parse_u64(t.next()?.as_bytes())?,
        parse_u64(t.next()?.as_bytes())?,
        parse_u64(t.next()?.as_bytes())?,
    );
    if t.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    if year < 1970 {
        return Some(0);
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year >= 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    // Count years from March so the leap day is the last day of the counted year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// An OTLP export response's `partial_success`. Every signal's response has the same shape
/// (`opentelemetry/proto/collector/*/v1/*_service.proto`): field 1 of the response is the
/// partial success, whose field 1 counts what was refused (`rejected_spans`,
/// `rejected_data_points`, `rejected_log_records`) and field 2 is `error_message`. So one
/// reader serves the span and the metrics exporters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartialSuccess<'a> {
    /// Spans or data points the collector refused (0: none, or no partial success).
    pub rejected: u64,
    /// The collector's `error_message`, as sent (untrusted: make it printable to log it).
    pub error_message: &'a [u8],
}

/// The `partial_success` of an export response message (for gRPC, the frame's message:
/// [`response_message`]); all zero when absent or unreadable. The last occurrence of each
/// field wins, as protobuf merges them.
pub fn partial_success(message: &[u8]) -> PartialSuccess<'_> {
    let mut out = PartialSuccess::default();
    let partials = fields(message).filter_map(|(n, f)| match (n, f) {
        (1, Wire::Bytes(partial)) => Some(partial),
        _ => None,
    });
    for (n, f) in partials.flat_map(fields) {
        match (n, f) {
            (1, Wire::Varint(v)) => out.rejected = v,
            (2, Wire::Bytes(m)) => out.error_message = m,
            _ => {}
        }
    }
    out
}

/// `ExportTraceServiceResponse.partial_success.rejected_spans`; 0 when absent or unreadable.
pub fn rejected_spans(body: &[u8]) -> u64 {
    partial_success(body).rejected
}

/// The export response message of a successful reply's body: the body itself for OTLP/HTTP,
/// the message of its single uncompressed frame for gRPC (empty when it has none).
pub fn response_message(protocol: Protocol, body: &[u8]) -> &[u8] {
    match protocol {
        Protocol::Http => body,
        Protocol::Grpc => grpc_message(body).unwrap_or_default(),
    }
}

/// The message of a single uncompressed gRPC frame.
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0).then_some(())?;
    rest.get(4..4 + len)
}

/// The delay of a `google.rpc.RetryInfo` inside a base64 `google.rpc.Status`, in ms; `None`
/// when the details carry no `RetryInfo`. Read with [`crate::protobuf`]'s field walker rather
/// than the prost types of [`google_rpc`]: the generated decoder would add about 15 KB to the
/// wasm module for one optional delay on a cold path.
pub fn retry_info_ms(details_b64: &[u8]) -> Option<u64> {
    let status = base64_decode(details_b64)?;
    for (n, f) in fields(&status) {
        let (3, Wire::Bytes(any)) = (n, f) else {
            continue;
        };
        let mut type_url: &[u8] = &[];
        let mut value: &[u8] = &[];
        for (n, f) in fields(any) {
            match (n, f) {
                (1, Wire::Bytes(b)) => type_url = b,
                (2, Wire::Bytes(b)) => value = b,
                _ => {}
            }
        }
        if type_url != google_rpc::RETRY_INFO.as_bytes() {
            continue;
        }
        let mut ms = 0u64;
        for (n, f) in fields(value) {
            let (1, Wire::Bytes(duration)) = (n, f) else {
                continue;
            };
            for (n, f) in fields(duration) {
                match (n, f) {
                    // Negative durations arrive as huge varints; the exporter caps delays.
                    (1, Wire::Varint(s)) => ms = ms.saturating_add(s.saturating_mul(1000)),
                    (2, Wire::Varint(nanos)) => {
                        ms = ms.saturating_add((nanos & 0xffff_ffff) / 1_000_000)
                    }
                    _ => {}
                }
            }
        }
        return Some(ms);
    }
    None
}

/// `grpc-status-details-bin`: standard base64, padded or not (gRPC sends it unpadded); the
/// URL-safe symbols some servers use are read as their standard twins. A failed export is the
/// cold path, so the copy and the `Vec` cost nothing that matters.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let standard: Vec<u8> = s
        .trim_ascii()
        .iter()
        .map(|&c| match c {
            b'-' => b'+',
            b'_' => b'/',
            c => c,
        })
        .collect();
    let mut out = vec![0; standard.len() / 4 * 3 + 3];
    let n = crate::base64::decode(&standard, &mut out)?;
    out.truncate(n);
    Some(out)
}

/// `google.rpc.Status` and `google.rpc.RetryInfo` as prost messages: what a collector sends in
/// `grpc-status-details-bin` to ask for a delay. Collectors and test sinks encode with them;
/// [`retry_info_ms`] reads the same bytes without them (see there why).
pub mod google_rpc {
    /// `google.protobuf.Duration`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        /// Whole seconds.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// Nanoseconds past `seconds`.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        /// `type.googleapis.com/<message name>`.
        #[prost(string, tag = "1")]
        pub type_url: String,
        /// The encoded message.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.rpc.RetryInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        /// How long the client should wait before retrying.
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }

    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// The gRPC status code.
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// A developer-facing message.
        #[prost(string, tag = "2")]
        pub message: String,
        /// Error details, such as a `RetryInfo`.
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    /// `Any.type_url` of a `RetryInfo`.
    pub const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

    /// The encoded `Status{code, message}`: how a collector refuses a request and says why.
    pub fn status(code: i32, message: &str) -> Vec<u8> {
        use prost::Message;
        Status {
            code,
            message: message.into(),
            details: Vec::new(),
        }
        .encode_to_vec()
    }

    /// The encoded `Status{code, details: [RetryInfo{retry_delay}]}`.
    pub fn status_with_retry_info(code: i32, seconds: i64, nanos: i32) -> Vec<u8> {
        use prost::Message;
        let info = RetryInfo {
            retry_delay: Some(Duration { seconds, nanos }),
        };
        Status {
            code,
            message: String::new(),
            details: vec![Any {
                type_url: RETRY_INFO.into(),
                value: info.encode_to_vec(),
            }],
        }
        .encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn http(status: u32) -> Reply<'static> {
        Reply {
            status: Some(status),
            ..Reply::default()
        }
    }

    fn retry(failure: Failure, delay_ms: Option<u64>) -> ExportResult {
        ExportResult::Retry { failure, delay_ms }
    }

    #[test]
    fn http_statuses() {
        let c = |r: &Reply<'_>| classify(Protocol::Http, r, 0);
        assert_eq!(c(&http(200)), ExportResult::Ok { rejected: 0 });
        for s in [429, 502, 503, 504] {
            assert_eq!(c(&http(s)), retry(Failure::Http(s), None));
        }
        for s in [400, 401, 404, 413, 500, 501, 0, 999] {
            assert_eq!(c(&http(s)), ExportResult::Fail(Failure::Http(s)));
        }
        assert_eq!(
            c(&Reply::default()),
            retry(Failure::NoResponse, None),
            "no reply is retried"
        );
        let r = Reply {
            retry_after: Some(b" 7 "),
            ..http(503)
        };
        assert_eq!(c(&r), retry(Failure::Http(503), Some(7000)));
        let r = Reply {
            retry_after: Some(b"soon"),
            ..http(429)
        };
        assert_eq!(c(&r), retry(Failure::Http(429), None));
    }

    #[test]
    fn retry_after_dates() {
        // 1994-11-06T08:49:37Z is 784111777.
        let now = 784_111_770_000;
        assert_eq!(
            retry_after_ms(b"Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(7000)
        );
        assert_eq!(
            retry_after_ms(b"Sun, 06 Nov 1994 08:49:37 GMT", now + 60_000),
            Some(0),
            "a date in the past means now"
        );
        assert_eq!(
            retry_after_ms(b"Thu, 29 Feb 2024 00:00:00 GMT", 0),
            Some(1_709_164_800_000)
        );
        for bad in [
            &b"Sunday, 06-Nov-94 08:49:37 GMT"[..],
            b"Sun Nov  6 08:49:37 1994",
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 25:49:37 GMT",
            b"",
            b"-1",
            b"\xff\xfe",
            b"99999999999999999999999",
        ] {
            assert_eq!(retry_after_ms(bad, now), None, "{bad:?}");
        }
    }

    fn partial(rejected: i64) -> Vec<u8> {
        use opentelemetry_proto::tonic::collector::trace::v1::*;
        ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec()
    }

    #[test]
    fn partial_success_is_ok_and_counted() {
        let body = partial(3);
        let r = Reply {
            body: &body,
            ..http(200)
        };
        assert_eq!(
            classify(Protocol::Http, &r, 0),
            ExportResult::Ok { rejected: 3 }
        );
        assert_eq!(
            rejected_spans(b"\xff\xff\xff"),
            0,
            "garbage is no rejection"
        );
        assert_eq!(rejected_spans(&body[..body.len() - 2]), 0);
    }

    #[test]
    fn a_metrics_partial_success_reads_as_the_spans_one() {
        use opentelemetry_proto::tonic::collector::metrics::v1::*;
        let body = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 7,
                error_message: "histogram buckets out of order".into(),
            }),
        }
        .encode_to_vec();
        let expected = PartialSuccess {
            rejected: 7,
            error_message: b"histogram buckets out of order",
        };
        assert_eq!(
            partial_success(response_message(Protocol::Http, &body)),
            expected
        );
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
        assert_eq!(
            partial_success(response_message(Protocol::Grpc, &framed)),
            expected
        );
        let r = Reply {
            body: &body,
            ..http(200)
        };
        assert_eq!(
            classify(Protocol::Http, &r, 0),
            ExportResult::Ok { rejected: 7 }
        );
        // A message without a count (a warning only), an empty reply, and garbage.
        let warning = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 0,
                error_message: "deprecated unit".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            partial_success(&warning),
            PartialSuccess {
                rejected: 0,
                error_message: b"deprecated unit"
            }
        );
        assert_eq!(partial_success(b""), PartialSuccess::default());
        assert_eq!(partial_success(b"\xff\xff\xff"), PartialSuccess::default());
        assert_eq!(response_message(Protocol::Grpc, b"\x00\x00\x00"), b"");
        assert_eq!(
            response_message(Protocol::Grpc, &framed[..framed.len() - 1]),
            b""
        );
    }

    fn grpc<'a>(code: &'a [u8], details: Option<&'a [u8]>, body: &'a [u8]) -> Reply<'a> {
        Reply {
            status: Some(200),
            grpc_status: Some(code),
            grpc_details: details,
            body,
            ..Reply::default()
        }
    }

    fn status_with_retry_info(seconds: i64, nanos: i32) -> String {
        b64(&google_rpc::status_with_retry_info(8, seconds, nanos))
    }

    fn b64(data: &[u8]) -> String {
        let mut out = vec![0; crate::base64::encoded_len(data.len())];
        let n = crate::base64::encode(data, &mut out, false).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn grpc_codes() {
        let c = |r: &Reply<'_>| classify(Protocol::Grpc, r, 0);
        let mut framed = vec![0, 0, 0, 0, 0];
        let msg = partial(2);
        framed[1..5].copy_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(&msg);
        assert_eq!(
            c(&grpc(b"0", None, &framed)),
            ExportResult::Ok { rejected: 2 }
        );
        assert_eq!(c(&grpc(b"0", None, b"")), ExportResult::Ok { rejected: 0 });
        for code in [1u32, 4, 10, 11, 14, 15] {
            let s = code.to_string();
            assert_eq!(
                c(&grpc(s.as_bytes(), None, b"")),
                retry(Failure::Grpc(code), None)
            );
        }
        for code in [2u32, 3, 5, 6, 7, 8, 9, 12, 13, 16, 17] {
            let s = code.to_string();
            assert_eq!(
                c(&grpc(s.as_bytes(), None, b"")),
                ExportResult::Fail(Failure::Grpc(code))
            );
        }
        let details = status_with_retry_info(2, 500_000_000);
        assert_eq!(
            c(&grpc(b"8", Some(details.as_bytes()), b"")),
            retry(Failure::Grpc(8), Some(2500)),
            "RESOURCE_EXHAUSTED with RetryInfo is a throttle"
        );
        assert_eq!(
            c(&grpc(b"14", Some(details.as_bytes()), b"")),
            retry(Failure::Grpc(14), Some(2500))
        );
        assert_eq!(
            c(&grpc(b"8", Some(b"!!not base64"), b"")),
            ExportResult::Fail(Failure::Grpc(8))
        );
        assert_eq!(
            c(&Reply {
                status: Some(200),
                ..Reply::default()
            }),
            ExportResult::Fail(Failure::NoGrpcStatus)
        );
        assert_eq!(
            c(&grpc(b"x", None, b"")),
            ExportResult::Fail(Failure::NoGrpcStatus)
        );
        assert_eq!(c(&http(503)), retry(Failure::Http(503), None));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(body: Vec<u8>, details: Vec<u8>, ra: Vec<u8>, st: Vec<u8>) {
            for p in [Protocol::Http, Protocol::Grpc] {
                let r = Reply {
                    status: Some(200),
                    retry_after: Some(&ra),
                    grpc_status: Some(&st),
                    grpc_details: Some(&details),
                    grpc_message: Some(&ra),
                    body: &body,
                };
                let _ = classify(p, &r, u64::MAX);
                let _ = classify(p, &Reply { status: Some(503), ..r }, 0);
                // The reason of a refusal is printable text whatever the reply held.
                for status in [400, 200] {
                    let r = Reply { status: Some(status), ..r };
                    if let Some(why) = crate::export::rejection::reason(&classify(p, &r, 0), &r) {
                        proptest::prop_assert!(!why.chars().any(char::is_control));
                    }
                }
            }
            let _ = retry_info_ms(&details);
        }
    }
}
