//! Fault injection: whether Envoy's fault filter aborted or delayed this request, so chaos
//! experiments are told apart from real failures.
//!
//! The response flags are the truth (FI abort, DI delay); `response.code_details` confirms an
//! abort on Envoys whose flags were lost (`fault_filter_abort`), and the `x-envoy-fault-*`
//! request headers say how long a requested delay was. A header alone proves nothing: the fault
//! filter may not honour headers, or the percentage may have skipped this request.

use crate::span::mesh::flags::{DELAY_INJECTED, FAULT_INJECTED};
use crate::span::SpanRecord;
use crate::text::parse_u64;

/// The `response.code_details` Envoy's fault filter sets when it aborts.
const ABORT_DETAILS: &[u8] = b"fault_filter_abort";

/// What the fault filter did to one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// An abort was injected.
    pub abort: bool,
    /// A delay was injected.
    pub delay: bool,
    /// The delay requested by `x-envoy-fault-delay-request`, when a delay was injected.
    pub delay_ms: Option<u64>,
    /// The status requested by `x-envoy-fault-abort-request`, when an abort was injected.
    pub abort_status: Option<u16>,
}

/// The fault-related request headers, read when the request arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultHeaders {
    /// The status `x-envoy-fault-abort-request` asks for.
    pub abort_status: Option<u16>,
    /// The delay `x-envoy-fault-delay-request` asks for, in ms.
    pub delay_ms: Option<u64>,
}

impl FaultHeaders {
    /// Parses `x-envoy-fault-abort-request` (an HTTP status) and
    /// `x-envoy-fault-delay-request` (milliseconds); malformed values are ignored.
    pub fn parse(abort: Option<&[u8]>, delay: Option<&[u8]>) -> Self {
        Self {
            abort_status: abort
                .and_then(parse_u64)
                .filter(|s| (200..600).contains(s))
                .map(|s| s as u16),
            delay_ms: delay.and_then(parse_u64),
        }
    }
}

impl Fault {
    /// Combines the end-of-request facts; `None` when no fault was injected.
    pub fn detect(flags: u64, code_details: Option<&[u8]>, headers: &FaultHeaders) -> Option<Self> {
        let abort = flags & FAULT_INJECTED != 0 || code_details == Some(ABORT_DETAILS);
        let delay = flags & DELAY_INJECTED != 0;
        if !abort && !delay {
            return None;
        }
        Some(Self {
            abort,
            delay,
            delay_ms: headers.delay_ms.filter(|_| delay),
            abort_status: headers.abort_status.filter(|_| abort),
        })
    }

    /// `mesh.fault.type`: an abort is what the caller saw, so it names a fault that did both.
    pub fn kind(&self) -> &'static str {
        if self.abort {
            "abort"
        } else {
            "delay"
        }
    }

    /// Writes the fault attributes and one `fault.injected` event per injected fault: the
    /// delay happens as the request arrives, the abort when the response is sent.
    pub fn record(&self, rec: &mut SpanRecord) {
        rec.bool("mesh.fault.injected", true);
        rec.str("mesh.fault.type", self.kind().as_bytes());
        if let Some(ms) = self.delay_ms {
            rec.int("mesh.fault.delay_ms", ms.min(i64::MAX as u64) as i64);
        }
        if self.delay {
            let delay_ms = self.delay_ms;
            rec.event("fault.injected", rec.start_ns, |e| {
                e.str("mesh.fault.type", b"delay");
                if let Some(ms) = delay_ms {
                    e.int("mesh.fault.delay_ms", ms.min(i64::MAX as u64) as i64);
                }
            });
        }
        if self.abort {
            let status = self.abort_status;
            rec.event("fault.injected", rec.end_ns, |e| {
                e.str("mesh.fault.type", b"abort");
                if let Some(s) = status {
                    e.int("http.response.status_code", i64::from(s));
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;

    #[test]
    fn headers_parse_and_ignore_garbage() {
        let h = FaultHeaders::parse(Some(b"503"), Some(b" 250 "));
        assert_eq!(h.abort_status, Some(503));
        assert_eq!(h.delay_ms, Some(250));
        let h = FaultHeaders::parse(Some(b"99"), Some(b"-1"));
        assert_eq!(h, FaultHeaders::default());
        let h = FaultHeaders::parse(Some(b"abc"), Some(b"1234567890123456789"));
        assert_eq!(h, FaultHeaders::default());
    }

    #[test]
    fn no_flags_no_fault_even_with_headers() {
        let h = FaultHeaders::parse(Some(b"503"), Some(b"100"));
        assert_eq!(Fault::detect(0, None, &h), None);
        assert_eq!(Fault::detect(0x20, Some(b"upstream_reset"), &h), None);
    }

    #[test]
    fn abort_from_flag_or_details() {
        let h = FaultHeaders::parse(Some(b"503"), None);
        let f = Fault::detect(FAULT_INJECTED, None, &h).unwrap();
        assert!(f.abort && !f.delay);
        assert_eq!(f.abort_status, Some(503));
        assert_eq!(f.kind(), "abort");
        let f = Fault::detect(0, Some(b"fault_filter_abort"), &FaultHeaders::default()).unwrap();
        assert!(f.abort);
        assert_eq!(f.abort_status, None);
    }

    #[test]
    fn delay_takes_its_length_from_the_header() {
        let h = FaultHeaders::parse(Some(b"503"), Some(b"1500"));
        let f = Fault::detect(DELAY_INJECTED, None, &h).unwrap();
        assert_eq!(f.kind(), "delay");
        assert_eq!(f.delay_ms, Some(1500));
        // The abort header was not honoured: no abort status is claimed.
        assert_eq!(f.abort_status, None);
        let f = Fault::detect(DELAY_INJECTED, None, &FaultHeaders::default()).unwrap();
        assert_eq!(f.delay_ms, None);
    }

    #[test]
    fn records_attributes_and_events() {
        let mut rec = SpanRecord::default();
        rec.start_ns = 100;
        rec.end_ns = 900;
        let f = Fault::detect(
            DELAY_INJECTED | FAULT_INJECTED,
            None,
            &FaultHeaders::parse(Some(b"503"), Some(b"200")),
        )
        .unwrap();
        f.record(&mut rec);
        assert_eq!(rec.get("mesh.fault.injected"), Some(&Value::Bool(true)));
        match rec.get("mesh.fault.type") {
            Some(Value::Str(r)) => assert_eq!(rec.text(r), b"abort"),
            other => panic!("{other:?}"),
        }
        assert_eq!(rec.get("mesh.fault.delay_ms"), Some(&Value::Int(200)));
        assert_eq!(rec.events.len(), 2);
        assert_eq!(rec.events[0].name, "fault.injected");
        assert_eq!(rec.events[0].time_ns, 100);
        assert_eq!(rec.events[1].time_ns, 900);
        let abort_attrs = &rec.event_attrs[rec.events[1].attrs.start as usize..];
        assert_eq!(abort_attrs[1].value, Value::Int(503));
    }
}
