//! The OTLP retry rules: which outcomes may be retried and how long to wait first.
//!
//! OTLP/HTTP retries 429, 502, 503 and 504 and a missing response; OTLP/gRPC retries
//! CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS. A server's
//! `Retry-After` is honoured; otherwise the wait doubles from [`INITIAL`] up to [`MAX`], with
//! full jitter so that pods restarted together do not retry together.

use std::time::Duration;

use meshtrace::exporter::ExportResult;

/// First backoff step.
pub const INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between attempts, also the cap on a server's `Retry-After`.
pub const MAX: Duration = Duration::from_secs(5);

/// How one attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Accepted (a partial success included: OTLP forbids retrying it).
    Ok,
    /// May be retried, after `after` when the server said so.
    Retry {
        result: ExportResult,
        after: Option<Duration>,
    },
    /// Must not be retried.
    Fail(ExportResult),
}

/// Classifies an OTLP/HTTP status.
pub fn http_status(status: u16, retry_after: Option<Duration>) -> Attempt {
    match status {
        200..=299 => Attempt::Ok,
        429 | 502 | 503 | 504 => Attempt::Retry {
            result: ExportResult::Status(status as u32),
            after: retry_after,
        },
        _ => Attempt::Fail(ExportResult::Status(status as u32)),
    }
}

/// Classifies a gRPC status code. Failures are reported to the core counters with the HTTP
/// status gRPC maps the code to, and transport-level trouble as "no response".
pub fn grpc_code(code: tonic::Code) -> Attempt {
    use tonic::Code::*;
    let result = match code {
        Ok => return Attempt::Ok,
        Unavailable | DeadlineExceeded | Cancelled => ExportResult::NoResponse,
        ResourceExhausted => ExportResult::Status(429),
        InvalidArgument | OutOfRange | FailedPrecondition => ExportResult::Status(400),
        Unauthenticated => ExportResult::Status(401),
        PermissionDenied => ExportResult::Status(403),
        NotFound => ExportResult::Status(404),
        Unimplemented => ExportResult::Status(501),
        _ => ExportResult::Status(500),
    };
    match code {
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss => {
            Attempt::Retry {
                result,
                after: None,
            }
        }
        // RESOURCE_EXHAUSTED is retryable only with RetryInfo, which this exporter does not
        // decode; dropping is the conservative reading.
        _ => Attempt::Fail(result),
    }
}

/// `Retry-After` in seconds; an HTTP-date falls back to exponential backoff.
pub fn parse_retry_after(v: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(v).ok()?.trim();
    s.parse::<u64>().ok().map(Duration::from_secs)
}

/// The wait before attempt number `attempt` (1 is the first retry). `unit` is a random number
/// in [0, 1).
pub fn delay(attempt: u32, after: Option<Duration>, unit: f64) -> Duration {
    if let Some(after) = after {
        return after.min(MAX);
    }
    let exp = INITIAL.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exp.min(MAX).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_rules() {
        assert_eq!(http_status(200, None), Attempt::Ok);
        assert_eq!(
            http_status(503, Some(Duration::from_secs(2))),
            Attempt::Retry {
                result: ExportResult::Status(503),
                after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(http_status(429, None), Attempt::Retry { .. }));
        assert_eq!(
            http_status(400, None),
            Attempt::Fail(ExportResult::Status(400))
        );
        assert_eq!(
            http_status(500, None),
            Attempt::Fail(ExportResult::Status(500))
        );
        assert_eq!(
            http_status(413, None),
            Attempt::Fail(ExportResult::Status(413))
        );
    }

    #[test]
    fn grpc_rules() {
        assert_eq!(grpc_code(tonic::Code::Ok), Attempt::Ok);
        assert_eq!(
            grpc_code(tonic::Code::Unavailable),
            Attempt::Retry {
                result: ExportResult::NoResponse,
                after: None
            }
        );
        assert!(matches!(
            grpc_code(tonic::Code::DataLoss),
            Attempt::Retry { .. }
        ));
        assert_eq!(
            grpc_code(tonic::Code::ResourceExhausted),
            Attempt::Fail(ExportResult::Status(429))
        );
        assert_eq!(
            grpc_code(tonic::Code::InvalidArgument),
            Attempt::Fail(ExportResult::Status(400))
        );
    }

    #[test]
    fn backoff() {
        assert_eq!(delay(1, None, 0.999_999).as_millis(), 99);
        assert_eq!(delay(3, None, 0.5), Duration::from_millis(200));
        assert_eq!(delay(30, None, 0.5), MAX / 2);
        assert_eq!(delay(1, Some(Duration::from_secs(60)), 0.1), MAX);
        assert_eq!(parse_retry_after(b" 3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
