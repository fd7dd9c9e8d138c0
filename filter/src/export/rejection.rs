//! Why a collector refused an export request, for the log line an operator needs to fix it.
//!
//! A collector that refuses a batch (an error status, final or retryable) says why:
//! OTLP/HTTP puts a `google.rpc.Status` in the body (protobuf for protobuf requests; some
//! collectors and proxies answer plain text), gRPC a percent-encoded `grpc-message`
//! ([gRPC over HTTP/2](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md)). When
//! the request ends on it (a final status, or a retryable one on the last attempt), the exporter
//! counts the refusal (`export_requests.rejected`) and logs the first reason of each log
//! interval. The text is the remote party's, so it is cut to [`MAX_REASON_BYTES`] and made
//! printable before it reaches a log.

use super::reply::{ExportResult, Failure, Reply};
use crate::protobuf::{fields, Wire};

/// The most of a collector's reason that is logged, in bytes of its text.
pub const MAX_REASON_BYTES: usize = 200;

/// When `result` is the collector answering the request with an error status (an HTTP status
/// outside 2xx, or a gRPC status other than `OK`), final or retryable, what it said: at most
/// [`MAX_REASON_BYTES`] bytes of printable UTF-8, empty when it gave no reason. `None` for
/// every other result (success, no reply, a gRPC reply without a status). The exporter counts
/// the refusal, and logs the reason, only when the request ends on it
/// ([`crate::export::span_processor::BatchSpanProcessor::note_rejection`]): a retryable one on its last attempt.
pub fn reason(result: &ExportResult, reply: &Reply<'_>) -> Option<String> {
    let failure = match result {
        ExportResult::Fail(f) | ExportResult::Retry { failure: f, .. } => f,
        ExportResult::Ok { .. } => return None,
    };
    let raw = match failure {
        Failure::Http(_) => status_message(reply.body).unwrap_or(reply.body).to_vec(),
        Failure::Grpc(_) => match reply.grpc_message {
            Some(m) => decode_grpc_message(m),
            None => Vec::new(),
        },
        _ => return None,
    };
    Some(crate::text::printable(&raw, MAX_REASON_BYTES))
}

/// `google.rpc.Status.message` (field 2) when `body` reads as a `Status`: a `code` (field 1)
/// and a message, and no field a `Status` does not have. A plain-text body fails this.
fn status_message(body: &[u8]) -> Option<&[u8]> {
    let (mut code, mut message) = (false, None);
    for (n, f) in fields(body) {
        match (n, f) {
            (1, Wire::Varint(_)) => code = true,
            (2, Wire::Bytes(m)) => message = Some(m),
            (3, Wire::Bytes(_)) => {}
            _ => return None,
        }
    }
    message.filter(|_| code)
}

/// `grpc-message` is percent-encoded UTF-8; a malformed escape is kept as it is. At most
/// four times [`MAX_REASON_BYTES`] are decoded: more cannot survive the cut.
fn decode_grpc_message(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0; v.len().min(4 * MAX_REASON_BYTES)];
    let n = crate::text::percent_decode(v, &mut out);
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u32, body: &[u8]) -> Option<String> {
        let reply = Reply {
            status: Some(status),
            body,
            ..Reply::default()
        };
        let r = crate::export::reply::classify(crate::export::config::Protocol::Http, &reply, 0);
        reason(&r, &reply)
    }

    #[test]
    fn http_bodies() {
        // What the OpenTelemetry Collector answers a protobuf request with invalid UTF-8: a
        // `google.rpc.Status` with code 3 (INVALID_ARGUMENT).
        let status = crate::export::reply::google_rpc::status(
            3,
            "proto: ExportTraceServiceRequest: not UTF-8 encoded",
        );
        assert_eq!(
            http(400, &status).as_deref(),
            Some("proto: ExportTraceServiceRequest: not UTF-8 encoded")
        );
        // Plain text, cut to 200 bytes, made printable.
        assert_eq!(
            http(400, b"bad request\r\n\xff").as_deref(),
            Some("bad request\\r\\n\u{FFFD}")
        );
        let long = [b'a'; 500];
        assert_eq!(http(413, &long).unwrap().len(), MAX_REASON_BYTES);
        assert_eq!(http(401, b"").as_deref(), Some(""));
        // A server error and a retryable status are answers too (counted only when final).
        assert_eq!(http(500, b"boom").as_deref(), Some("boom"));
        assert_eq!(http(503, b"busy").as_deref(), Some("busy"));
        assert_eq!(http(429, b"slow down").as_deref(), Some("slow down"));
        // A success is no refusal.
        assert_eq!(http(200, b""), None);
    }

    #[test]
    fn grpc_messages() {
        let reply = |msg: Option<&'static [u8]>, code: &'static [u8]| Reply {
            status: Some(200),
            grpc_status: Some(code),
            grpc_message: msg,
            ..Reply::default()
        };
        let of = |r: &Reply<'_>| {
            let c = crate::export::reply::classify(crate::export::config::Protocol::Grpc, r, 0);
            reason(&c, r)
        };
        assert_eq!(
            of(&reply(
                Some(b"grpc: error unmarshalling request: string field contains invalid UTF-8"),
                b"13"
            ))
            .as_deref(),
            Some("grpc: error unmarshalling request: string field contains invalid UTF-8")
        );
        assert_eq!(
            of(&reply(Some(b"caf%C3%A9 %E2%82 100%"), b"3")).as_deref(),
            Some("café \u{FFFD} 100%")
        );
        assert_eq!(of(&reply(None, b"3")).as_deref(), Some(""));
        // UNAVAILABLE is retried; its reason counts if the last attempt ends on it.
        assert_eq!(of(&reply(Some(b"down"), b"14")).as_deref(), Some("down"));
        assert_eq!(of(&reply(Some(b"fine"), b"0")), None);
    }
}
