//! Where operators meet the trace outside the trace backend: the trace id in Envoy's access log,
//! and the trace context handed back to the client in a `server-timing` response entry.
//!
//! The core decides what to write and formats it into fixed buffers; the adapter makes the host
//! calls. Both features cost host calls on the request path, so both are opt-in and, unless
//! configured otherwise, touch only requests this proxy records:
//!
//! - **Access log** (`access_log.filter_state`): the trace id, span id and sampled flag become
//!   three filter-state entries, [`TRACE_ID_KEY`], [`SPAN_ID_KEY`], [`SAMPLED_KEY`]. A wasm
//!   filter cannot write Envoy's dynamic metadata; `proxy_set_property` writes the filter-state
//!   key `wasm.<name>` (Envoy adds the prefix), which a stock format prints with
//!   `%FILTER_STATE(wasm.meshtrace.trace_id:PLAIN)%`. Envoy's `%TRACE_ID%` shows only Envoy's
//!   own tracer. Three host calls per written request.
//! - **`server-timing`** (`response.server_timing`): W3C Trace Context Level 3 (editor's draft)
//!   replaced the `traceresponse` header with the Server-Timing metric
//!   `trace;desc=00-<trace-id>-<span-id>-<flags>`; browser RUM agents of some vendors read
//!   `traceparent;desc="00-…"` instead. Written only on SERVER spans this proxy records, one
//!   host call (`proxy_add_header_map_value`, appended to any `server-timing` the upstream
//!   sent), and never at an untrusted edge (`propagators.trust_incoming: false`) unless
//!   `response.at_untrusted_edge` says so.

use serde::Deserialize;

use crate::error::ConfigError;
use crate::ids::{SpanId, TraceId};
use crate::propagation::{FLAG_RANDOM, FLAG_SAMPLED};
use crate::span::SpanKind;

/// Filter-state name of the trace id (32 lowercase hex); Envoy's key is `wasm.meshtrace.trace_id`.
pub const TRACE_ID_KEY: &str = "meshtrace.trace_id";
/// Filter-state name of the span id (16 lowercase hex); Envoy's key is `wasm.meshtrace.span_id`.
pub const SPAN_ID_KEY: &str = "meshtrace.span_id";
/// Filter-state name of the W3C sampled flag (`1` or `0`); Envoy's key is `wasm.meshtrace.sampled`.
pub const SAMPLED_KEY: &str = "meshtrace.sampled";

/// Which requests write their ids to filter state (`access_log.filter_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FilterStateMode {
    /// Nothing is written (the default: no host call).
    #[default]
    Off,
    /// Requests whose span is recorded: sampled ones at request time; kept ones
    /// (`sampling.always_keep`) and ones answered before this filter, when the span is decided
    /// in `on_log`. Three host calls per recorded request.
    Recorded,
    /// Every request, unsampled ones with `sampled` 0 and the span id this hop sent upstream
    /// as the parent: three host calls on every request, the unsampled path included.
    All,
}

/// The `access_log` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Which requests write `meshtrace.trace_id`, `meshtrace.span_id` and `meshtrace.sampled`.
    #[serde(default)]
    pub filter_state: FilterStateMode,
}
crate::config::section::object_section!(AccessLogConfig);

/// The spelling of the `server-timing` entry (`response.server_timing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServerTiming {
    /// No entry (the default).
    #[default]
    Off,
    /// W3C Trace Context Level 3 draft: `trace;desc=00-<trace-id>-<span-id>-<flags>`.
    W3c,
    /// The vendor form RUM agents read: `traceparent;desc="00-<trace-id>-<span-id>-<flags>"`.
    Traceparent,
}

/// The `response` section: trace context returned to the client.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct ResponseConfig {
    /// Which `server-timing` entry SERVER spans this proxy records add to the response.
    #[serde(default)]
    pub server_timing: ServerTiming,
    /// Also add `access-control-expose-headers: server-timing`, so that a browser page on
    /// another origin may read the entry (one more host call).
    #[serde(default)]
    pub expose_server_timing: bool,
    /// Write the entry even with `propagators.trust_incoming: false` (an internet edge), where
    /// it is suppressed by default: it tells any client the trace id of its request.
    #[serde(default)]
    pub at_untrusted_edge: bool,
}
crate::config::section::object_section!(ResponseConfig);

impl ResponseConfig {
    /// Validates the section against `trust_incoming` and compiles it: `None` when no entry is
    /// ever written.
    ///
    /// # Errors
    /// A [`ConfigError`] when an option has no effect because `server_timing` is `off`.
    pub fn compile(&self, trust_incoming: bool) -> Result<Option<ServerTimingPolicy>, ConfigError> {
        if self.server_timing == ServerTiming::Off {
            for (set, field) in [
                (self.expose_server_timing, "response.expose_server_timing"),
                (self.at_untrusted_edge, "response.at_untrusted_edge"),
            ] {
                if set {
                    return Err(ConfigError::new(
                        field,
                        "has no effect with response.server_timing \"off\"; set it to \"w3c\" or \"traceparent\"",
                    ));
                }
            }
            return Ok(None);
        }
        Ok(
            (trust_incoming || self.at_untrusted_edge).then_some(ServerTimingPolicy {
                style: self.server_timing,
                expose: self.expose_server_timing,
            }),
        )
    }
}

/// A `server-timing` entry this proxy writes, compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTimingPolicy {
    /// The spelling (never [`ServerTiming::Off`]).
    pub style: ServerTiming,
    /// Whether `access-control-expose-headers: server-timing` is added too.
    pub expose: bool,
}

/// The `access_log` and `response` sections, compiled once per VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Correlation {
    /// Which requests write filter state.
    pub filter_state: FilterStateMode,
    /// The `server-timing` entry, when one is written at all.
    pub server_timing: Option<ServerTimingPolicy>,
}

/// When the adapter learns what it writes to filter state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// In `on_http_request_headers`, once the sampler decided.
    Request {
        /// Whether the span is recorded.
        recorded: bool,
    },
    /// In `on_log`, for a span decided only then (kept by the always-keep rules, or a request
    /// answered before this filter saw it).
    Log {
        /// Whether the span was already written at request time.
        written: bool,
    },
}

impl Correlation {
    /// Compiles the two sections; `trust_incoming` is `propagators.trust_incoming`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field, as [`ResponseConfig::compile`].
    pub fn compile(
        access_log: &AccessLogConfig,
        response: &ResponseConfig,
        trust_incoming: bool,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            filter_state: access_log.filter_state,
            server_timing: response.compile(trust_incoming)?,
        })
    }

    /// Whether the ids are written to filter state now. At request time: recorded requests
    /// with `recorded`, every request with `all`. In `on_log` (a span recorded only then):
    /// unless the request already wrote them.
    pub fn writes_filter_state(&self, at: Moment) -> bool {
        match (self.filter_state, at) {
            (FilterStateMode::Off, _) => false,
            (FilterStateMode::All, Moment::Request { .. }) => true,
            (FilterStateMode::Recorded, Moment::Request { recorded }) => recorded,
            (_, Moment::Log { written }) => !written,
        }
    }

    /// The `server-timing` entry for a recorded span of `kind`: only SERVER spans, since only
    /// their response goes back to the client whose request this proxy received.
    pub fn server_timing_for(&self, kind: SpanKind) -> Option<ServerTimingPolicy> {
        self.server_timing.filter(|_| kind == SpanKind::Server)
    }
}

/// The filter-state values of one request, formatted on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterState {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    sampled: [u8; 1],
}

impl FilterState {
    /// The values for the span `span_id` of `trace_id` with W3C `flags`.
    pub fn new(trace_id: &TraceId, span_id: &SpanId, flags: u8) -> Self {
        Self {
            trace_id: trace_id.to_hex(),
            span_id: span_id.to_hex(),
            sampled: [if flags & FLAG_SAMPLED != 0 {
                b'1'
            } else {
                b'0'
            }],
        }
    }

    /// `(property name, value)` in the order they are written.
    pub fn entries(&self) -> [(&'static str, &[u8]); 3] {
        [
            (TRACE_ID_KEY, &self.trace_id),
            (SPAN_ID_KEY, &self.span_id),
            (SAMPLED_KEY, &self.sampled),
        ]
    }
}

/// The longest entry: `traceparent;desc="` + 55 + `"`.
const ENTRY_MAX: usize = 18 + 55 + 1;

/// A `server-timing` entry, formatted on the stack.
#[derive(Clone, Copy)]
pub struct ServerTimingEntry {
    buf: [u8; ENTRY_MAX],
    len: u8,
}

impl ServerTimingEntry {
    /// The entry for a recorded span: `style`'s spelling of version `00`, the ids and `flags`
    /// with `sampled` set (the draft: a server that records sets it even when the request did
    /// not) and `random-trace-id` kept; the other bits must be zero. `None` for
    /// [`ServerTiming::Off`].
    pub fn new(
        style: ServerTiming,
        trace_id: &TraceId,
        span_id: &SpanId,
        flags: u8,
    ) -> Option<Self> {
        let (prefix, suffix): (&[u8], &[u8]) = match style {
            ServerTiming::Off => return None,
            ServerTiming::W3c => (b"trace;desc=", b""),
            ServerTiming::Traceparent => (b"traceparent;desc=\"", b"\""),
        };
        let mut e = Self {
            buf: [0; ENTRY_MAX],
            len: 0,
        };
        let flags = (flags & FLAG_RANDOM) | FLAG_SAMPLED;
        let mut flags_hex = [0u8; 2];
        crate::hex::encode_lower(&[flags], &mut flags_hex);
        for part in [
            prefix,
            b"00-",
            &trace_id.to_hex(),
            b"-",
            &span_id.to_hex(),
            b"-",
            &flags_hex,
            suffix,
        ] {
            let at = e.len as usize;
            e.buf[at..at + part.len()].copy_from_slice(part);
            e.len += part.len() as u8;
        }
        Some(e)
    }

    /// The header value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl core::fmt::Debug for ServerTimingEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// `server-timing`, the header the entry is added to.
pub const SERVER_TIMING: &str = "server-timing";
/// `access-control-expose-headers`, and the value that exposes the entry to browser scripts.
pub const EXPOSE_HEADERS: (&str, &[u8]) = ("access-control-expose-headers", b"server-timing");

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SID: &str = "00f067aa0ba902b7";

    fn ids() -> (TraceId, SpanId) {
        (
            TraceId::from_hex(TID.as_bytes()).unwrap(),
            SpanId::from_hex(SID.as_bytes()).unwrap(),
        )
    }

    fn entry(style: ServerTiming, flags: u8) -> String {
        let (t, s) = ids();
        let e = ServerTimingEntry::new(style, &t, &s, flags).unwrap();
        String::from_utf8(e.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn server_timing_entries_follow_the_draft_and_the_vendor_form() {
        assert_eq!(
            entry(ServerTiming::W3c, 0x01),
            format!("trace;desc=00-{TID}-{SID}-01")
        );
        assert_eq!(
            entry(ServerTiming::Traceparent, 0x01),
            format!("traceparent;desc=\"00-{TID}-{SID}-01\"")
        );
        // The random-trace-id bit is kept, sampled is always set, unknown bits are cleared.
        assert_eq!(
            entry(ServerTiming::W3c, 0x02),
            format!("trace;desc=00-{TID}-{SID}-03")
        );
        assert_eq!(
            entry(ServerTiming::Traceparent, 0xff),
            format!("traceparent;desc=\"00-{TID}-{SID}-03\"")
        );
        assert_eq!(entry(ServerTiming::Traceparent, 0).len(), ENTRY_MAX);
        let (t, s) = ids();
        assert!(ServerTimingEntry::new(ServerTiming::Off, &t, &s, 1).is_none());
    }

    #[test]
    fn filter_state_values() {
        let (t, s) = ids();
        let f = FilterState::new(&t, &s, 0x03);
        assert_eq!(
            f.entries(),
            [
                ("meshtrace.trace_id", TID.as_bytes()),
                ("meshtrace.span_id", SID.as_bytes()),
                ("meshtrace.sampled", &b"1"[..]),
            ]
        );
        assert_eq!(FilterState::new(&t, &s, 0x02).entries()[2].1, b"0");
    }

    fn compile(json: &str) -> Result<Correlation, String> {
        let cfg = format!(r#"{{"collector":{{"cluster":"c"}}{json}}}"#);
        crate::config::load(cfg.as_bytes())
            .map(|c| c.correlation)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default() {
        let c = compile("").unwrap();
        assert_eq!(c, Correlation::default());
        for at in [
            Moment::Request { recorded: true },
            Moment::Request { recorded: false },
            Moment::Log { written: false },
        ] {
            assert!(!c.writes_filter_state(at));
        }
        assert_eq!(c.server_timing_for(SpanKind::Server), None);
    }

    #[test]
    fn filter_state_is_written_once_when_the_mode_asks() {
        let recorded = compile(r#","access_log":{"filter_state":"recorded"}"#).unwrap();
        assert!(recorded.writes_filter_state(Moment::Request { recorded: true }));
        assert!(!recorded.writes_filter_state(Moment::Request { recorded: false }));
        // A span recorded only in `on_log` (kept, or answered early) is written then.
        assert!(recorded.writes_filter_state(Moment::Log { written: false }));
        assert!(!recorded.writes_filter_state(Moment::Log { written: true }));
        let all = compile(r#","access_log":{"filter_state":"all"}"#).unwrap();
        assert!(all.writes_filter_state(Moment::Request { recorded: false }));
        assert!(all.writes_filter_state(Moment::Request { recorded: true }));
        assert!(!all.writes_filter_state(Moment::Log { written: true }));
        assert!(all.writes_filter_state(Moment::Log { written: false }));
    }

    #[test]
    fn server_timing_only_on_server_spans_and_not_at_an_untrusted_edge() {
        let c = compile(r#","response":{"server_timing":"w3c"}"#).unwrap();
        let want = ServerTimingPolicy {
            style: ServerTiming::W3c,
            expose: false,
        };
        assert_eq!(c.server_timing_for(SpanKind::Server), Some(want));
        assert_eq!(c.server_timing_for(SpanKind::Client), None);
        let edge = r#","propagators":{"trust_incoming":false}"#;
        let c = compile(&format!(r#"{edge},"response":{{"server_timing":"w3c"}}"#)).unwrap();
        assert_eq!(c.server_timing_for(SpanKind::Server), None);
        let c = compile(&format!(
            r#"{edge},"response":{{"server_timing":"traceparent","at_untrusted_edge":true,"expose_server_timing":true}}"#
        ))
        .unwrap();
        assert_eq!(
            c.server_timing_for(SpanKind::Server),
            Some(ServerTimingPolicy {
                style: ServerTiming::Traceparent,
                expose: true
            })
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            compile(r#","response":{"expose_server_timing":true}"#).unwrap_err(),
            "response.expose_server_timing: has no effect with response.server_timing \"off\"; set it to \"w3c\" or \"traceparent\""
        );
        assert_eq!(
            compile(r#","response":{"at_untrusted_edge":true}"#).unwrap_err(),
            "response.at_untrusted_edge: has no effect with response.server_timing \"off\"; set it to \"w3c\" or \"traceparent\""
        );
        assert!(compile(r#","response":{"server_timing":"traceresponse"}"#)
            .unwrap_err()
            .starts_with("response.server_timing: unknown variant `traceresponse`"));
        assert!(compile(r#","access_log":{"filter_state":"sampled"}"#)
            .unwrap_err()
            .starts_with("access_log.filter_state: unknown variant `sampled`"));
        assert!(compile(r#","access_log":{"keys":[]}"#)
            .unwrap_err()
            .starts_with("access_log.keys: unknown field `keys`"));
    }
}
