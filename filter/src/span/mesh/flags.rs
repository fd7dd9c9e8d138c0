//! Envoy's `response.flags` bit vector: short codes for the span, and the one failure reason
//! that best explains the request as `error.type`.
//!
//! Bit `n` is Envoy's `CoreResponseFlag` enum index `n`; the enum is append-only, so a bit this
//! table does not know (a newer Envoy) is skipped rather than misnamed.

/// One response flag: its short code and, for failures, a stable `error.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag {
    /// The bit in `response.flags`.
    pub bit: u8,
    /// Envoy's short code (`UF`, `URX`, ...).
    pub code: &'static str,
    /// `None` for flags that describe something other than a failure (an injected delay, a
    /// cache hit).
    pub error_type: Option<&'static str>,
}

const fn flag(bit: u8, code: &'static str, error_type: Option<&'static str>) -> Flag {
    Flag {
        bit,
        code,
        error_type,
    }
}

/// Every core flag, indexed by bit.
pub const FLAGS: [Flag; 30] = [
    flag(0, "LH", Some("failed_local_health_check")),
    flag(1, "UH", Some("no_healthy_upstream")),
    flag(2, "UT", Some("upstream_timeout")),
    flag(3, "LR", Some("local_reset")),
    flag(4, "UR", Some("upstream_reset")),
    flag(5, "UF", Some("upstream_connect_failure")),
    flag(6, "UC", Some("upstream_connection_termination")),
    flag(7, "UO", Some("upstream_overflow")),
    flag(8, "NR", Some("no_route")),
    flag(9, "DI", None),
    flag(10, "FI", Some("fault_injected")),
    flag(11, "RL", Some("rate_limited")),
    flag(12, "UAEX", Some("ext_authz_denied")),
    flag(13, "RLSE", Some("rate_limit_service_error")),
    flag(14, "DC", Some("downstream_disconnect")),
    flag(15, "URX", Some("retry_limit_exceeded")),
    flag(16, "SI", Some("stream_idle_timeout")),
    flag(17, "IH", Some("invalid_request_headers")),
    flag(18, "DPE", Some("downstream_protocol_error")),
    flag(19, "UMSDR", Some("upstream_max_stream_duration")),
    flag(20, "RFCF", None),
    flag(21, "NFCF", Some("no_filter_config")),
    flag(22, "DT", Some("duration_timeout")),
    flag(23, "UPE", Some("upstream_protocol_error")),
    flag(24, "NC", Some("no_cluster")),
    flag(25, "OM", Some("overload_manager")),
    flag(26, "DF", Some("dns_resolution_failed")),
    flag(27, "DO", Some("drop_overload")),
    flag(28, "DR", Some("downstream_reset")),
    flag(29, "UDO", Some("unconditional_drop_overload")),
];

/// Bits by name, for the rules other modules apply.
pub const DELAY_INJECTED: u64 = 1 << 9;
/// `FI`: the fault filter aborted the request.
pub const FAULT_INJECTED: u64 = 1 << 10;
/// `DC`: the downstream closed the connection.
pub const DOWNSTREAM_DISCONNECT: u64 = 1 << 14;
/// `DR`: the downstream reset the stream.
pub const DOWNSTREAM_RESET: u64 = 1 << 28;

/// When several failure flags are set, the first of these present names the error: the cause
/// a person acts on (an injected fault, a policy denial, a missing route) beats its symptoms
/// (a reset, an exhausted retry budget).
const PRIORITY: [u8; 12] = [10, 12, 11, 8, 24, 1, 7, 5, 2, 6, 4, 15];

/// The short codes of every known flag set in `bits`, in bit order.
pub fn codes(bits: u64) -> impl Iterator<Item = &'static str> + Clone {
    FLAGS
        .iter()
        .filter(move |f| bits & (1 << f.bit) != 0)
        .map(|f| f.code)
}

/// The failure reason for `error.type`, or `None` when no failure flag is set.
#[inline]
pub fn error_type(bits: u64) -> Option<&'static str> {
    // Nearly every request has no flag: skip the two table walks, and the call.
    if bits == 0 {
        return None;
    }
    flagged_error_type(bits)
}

/// [`error_type`] for a request with some flag set.
#[inline(never)]
fn flagged_error_type(bits: u64) -> Option<&'static str> {
    let prioritized = PRIORITY
        .iter()
        .find(|&&b| bits & (1 << b) != 0)
        .and_then(|&b| FLAGS[b as usize].error_type);
    prioritized.or_else(|| {
        FLAGS
            .iter()
            .find(|f| bits & (1 << f.bit) != 0 && f.error_type.is_some())
            .and_then(|f| f.error_type)
    })
}

/// True when the only failure is the downstream going away: the caller cancelled, which the
/// HTTP conventions say is not the server's error.
pub fn downstream_only(bits: u64) -> bool {
    let downstream = DOWNSTREAM_DISCONNECT | DOWNSTREAM_RESET;
    bits & downstream != 0 && error_type(bits & !downstream).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_bit_and_codes_are_unique() {
        for (i, f) in FLAGS.iter().enumerate() {
            assert_eq!(f.bit as usize, i);
            assert_eq!(FLAGS.iter().filter(|g| g.code == f.code).count(), 1);
        }
    }

    #[test]
    fn every_bit_decodes_to_its_code() {
        let expected = [
            "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
            "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF",
            "DO", "DR", "UDO",
        ];
        for (bit, code) in expected.iter().enumerate() {
            assert_eq!(codes(1 << bit).collect::<Vec<_>>(), vec![*code]);
        }
        assert_eq!(codes(0).count(), 0);
        // An unknown (newer) bit is skipped, not misnamed.
        assert_eq!(codes(1 << 40).count(), 0);
        assert_eq!(codes(0x20 | 0x8000).collect::<Vec<_>>(), vec!["UF", "URX"]);
    }

    #[test]
    fn error_types_named_in_the_issue() {
        assert_eq!(error_type(0x20), Some("upstream_connect_failure"));
        assert_eq!(error_type(0x4), Some("upstream_timeout"));
        assert_eq!(error_type(0x80), Some("upstream_overflow"));
        assert_eq!(error_type(0x100), Some("no_route"));
        assert_eq!(error_type(0x8000), Some("retry_limit_exceeded"));
        assert_eq!(error_type(0x800), Some("rate_limited"));
        assert_eq!(error_type(0x1000), Some("ext_authz_denied"));
        assert_eq!(error_type(0x4000), Some("downstream_disconnect"));
        assert_eq!(error_type(FAULT_INJECTED), Some("fault_injected"));
        assert_eq!(error_type(0x10000), Some("stream_idle_timeout"));
    }

    #[test]
    fn non_failures_have_no_error_type() {
        assert_eq!(error_type(0), None);
        assert_eq!(error_type(DELAY_INJECTED), None);
        assert_eq!(error_type(1 << 20), None);
        assert_eq!(error_type(1 << 45), None);
    }

    #[test]
    fn the_cause_beats_the_symptom() {
        // Retries exhausted on connect failures: the connect failure is what to fix.
        assert_eq!(error_type(0x20 | 0x8000), Some("upstream_connect_failure"));
        // An injected abort that also reset the upstream: the chaos experiment.
        assert_eq!(error_type(FAULT_INJECTED | 0x10), Some("fault_injected"));
        // A delay plus a timeout: the timeout.
        assert_eq!(error_type(DELAY_INJECTED | 0x4), Some("upstream_timeout"));
        // Flags outside the priority list fall back to bit order.
        assert_eq!(
            error_type((1 << 23) | (1 << 17)),
            Some("invalid_request_headers")
        );
    }

    #[test]
    fn downstream_only_failures() {
        assert!(downstream_only(DOWNSTREAM_DISCONNECT));
        assert!(downstream_only(DOWNSTREAM_RESET | DELAY_INJECTED));
        assert!(!downstream_only(DOWNSTREAM_DISCONNECT | 0x20));
        assert!(!downstream_only(0));
    }
}
