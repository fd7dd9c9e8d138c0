//! The core request path, host-independent: the sequence both adapters call.
//!
//! An adapter calls [`Tracer::start`] with the request headers it fetched once: it extracts
//! the incoming context ([`crate::propagation`]), applies the sampler ([`crate::sampling`]) and
//! fills the [`Injection`] the adapter applies upstream. When the request is recorded it fills a
//! pooled [`SpanRecord`] with [`Tracer::begin_span`] and [`Tracer::record_request`], and at the
//! end calls [`Tracer::finish_span`] with what the host knows then ([`crate::span`]). An
//! unsampled request that the always-keep rules may still export keeps only its [`SpanIds`];
//! if [`Tracer::keep`] says yes at the end, [`Tracer::begin_kept_span`] builds its span from the
//! headers as they were logged. The finished record goes to the
//! [`BatchSpanProcessor`](crate::export::span_processor::BatchSpanProcessor).

use crate::config::{Compiled, Config};
use crate::correlation::Correlation;
use crate::export::otlp::{BatchHeader, ResourceValue};
use crate::headers::RequestHeaders;
use crate::ids::IdGenerator;
use crate::propagation::config::Propagation;
use crate::propagation::context::{self, SpanIds, SpanStart};
use crate::propagation::inject::{self, Injection};
use crate::propagation::FLAG_SAMPLED;
use crate::resource::NodeInfo;
use crate::sampling::{self, KeepReason, Sampler};
use crate::span::capture::Side;
use crate::span::grpc;
use crate::span::mesh::{flags, RequestFacts};
use crate::span::name::SpanNames;
use crate::span::{http, Finish, SpanRecord, Tables};

/// Per-VM tracing state built from a loaded configuration ([`crate::config::load`]).
#[derive(Debug)]
pub struct Tracer {
    /// The configuration as loaded, for the adapters' own settings (collector, direction, ...).
    pub config: Config,
    ids: IdGenerator,
    /// The resource and scope, encoded once for every export request.
    pub batch_header: BatchHeader,
    /// Extraction order, inject formats and trust, compiled.
    propagation: Propagation,
    /// The sampler (root ratio, rate limit, always-keep rules).
    pub sampler: Sampler,
    /// Traffic rules, route templates, capture lists and limits, compiled.
    pub span: Tables,
    /// What is written for access logs and returned to the client (`access_log`, `response`).
    pub correlation: Correlation,
    /// Span names: their cap and the per-VM bound on how many distinct ones are handed out.
    pub names: SpanNames,
    /// The proxy is an Istio ambient waypoint ([`NodeInfo::is_waypoint`]): with
    /// `direction: auto` its spans are SERVER spans, and the caller's identity is the one
    /// the HBONE tunnel carried, not the waypoint's own internal connection's.
    pub waypoint: bool,
    /// RED metrics, when `metrics.enabled` ([`crate::metrics`]).
    pub metrics: Option<crate::metrics::Metrics>,
}

impl Tracer {
    /// Builds the per-VM state; `seed` comes from the host's entropy.
    pub fn new(config: Compiled, seed: u64) -> Self {
        Self::with_node(config, seed, &NodeInfo::default())
    }

    /// Builds the per-VM state with the resource taken from the proxy's node (decoded once
    /// from `xds.node`); configured `service_name` and `resource` override it.
    pub fn with_node(config: Compiled, seed: u64, node: &NodeInfo) -> Self {
        let Compiled {
            config,
            propagation,
            sampler,
            span,
            correlation,
        } = config;
        let resource = node.resource_with(
            config.service_name.as_deref(),
            &config.resource,
            config.faas.as_ref(),
        );
        let mut span = span;
        span.faas = span.faas.for_node(node.is_knative());
        // Node metadata and configured values are capped like span attributes; keys are
        // conventional names or configured ones, which validation bounds.
        let cap = config.limits.max_attribute_value_bytes as usize;
        let resource: Vec<(&str, ResourceValue)> = resource
            .iter()
            .map(|(k, v)| match v {
                ResourceValue::Str(s) => {
                    let kept = crate::limits::cut_at_char_boundary(s.as_bytes(), cap).len();
                    (k.as_str(), ResourceValue::Str(s[..kept].to_owned()))
                }
                other => (k.as_str(), other.clone()),
            })
            .collect();
        let batch_header = BatchHeader::new(&resource);
        let limits = &config.limits;
        let names = SpanNames::new(
            config.span_name,
            limits.max_span_name_bytes,
            limits.max_attribute_value_bytes,
            limits.max_span_names,
            // Keyed apart from the id generator's stream.
            seed ^ 0x6e61_6d65_7365_6564,
        );
        let metrics = config.metrics.enabled.then(|| {
            crate::metrics::Metrics::new(
                &config.metrics,
                &span,
                node.workload_version(),
                // Keyed apart from the other streams of the seed.
                seed ^ 0x6d65_7472_6963_7321,
            )
        });
        Self {
            names,
            metrics,
            waypoint: node.is_waypoint(),
            sampler,
            span,
            correlation,
            propagation,
            config,
            ids: IdGenerator::from_seed(seed),
            batch_header,
        }
    }

    /// The request path's first three stages in one call: extract the incoming context and
    /// decide whether to continue it ([`Tracer::extract`]), apply the sampler
    /// ([`Tracer::sample`]; `now`, in nanoseconds, is read only if the rate limit is consulted),
    /// and, when `out` is given, fill it with the headers to send upstream ([`Tracer::inject`]).
    /// A request answered before it went upstream passes `None`: nothing is injected.
    pub fn start<'a>(
        &mut self,
        headers: &RequestHeaders<'a>,
        now: impl FnOnce() -> u64,
        out: Option<&mut Injection>,
    ) -> SpanStart<'a> {
        let mut s = self.extract(headers);
        self.sample(&mut s, now);
        if let Some(out) = out {
            self.inject(&s, headers, out);
        }
        s
    }

    /// Extracts the incoming context and decides: continue it, or start a new trace. The
    /// sampled bit is provisional until [`Tracer::sample`].
    pub fn extract<'a>(&mut self, headers: &RequestHeaders<'a>) -> SpanStart<'a> {
        context::start(
            headers,
            &self.propagation.extract,
            self.propagation.trust,
            &mut self.ids,
        )
    }

    /// Fills `out` with the headers the upstream must receive: every configured inject format
    /// and the arrival format, written for the new span. Headers of other known context formats
    /// the request carried are removed: they name the caller's span, never ours, so the upstream
    /// would see two contradicting parents.
    /// A request to a serverless upstream (`faas.upstreams`, by host) also gets the format
    /// its platform reads, unless the filter is configured `direction: inbound`.
    pub fn inject(&self, d: &SpanStart<'_>, h: &RequestHeaders<'_>, out: &mut Injection) {
        let platform = match self.config.direction {
            crate::config::Direction::Inbound => 0,
            _ => self.span.faas_upstreams.inject_bits(h),
        };
        inject::inject(
            d,
            h,
            self.propagation.inject | platform,
            self.propagation.known,
            out,
        );
    }

    /// Appends to `out` what a recorded request to a Lambda upstream sends besides the trace
    /// context ([`crate::span::faas::lambda`]): `X-Amzn-Trace-Id` for the new span, even when
    /// `xray` is not an inject format (with `Sampled=1` when sampled, so a function with
    /// PassThrough tracing continues the trace; the aws_lambda filter leaves this header out
    /// of the SigV4 signature), unless `out` already has it; and `X-Amz-Log-Type: Tail` with
    /// `faas.lambda_log_tail`.
    pub fn inject_lambda(&self, d: &SpanStart<'_>, out: &mut Injection) {
        use crate::propagation::xray;
        if out.get(xray::HEADER).is_none() {
            xray::inject(d, out);
        }
        if let Some((name, value)) = self.span.lambda.request_headers() {
            out.put(name, |b| b.extend_from_slice(value));
        }
    }

    /// Applies the sampler to a [`SpanStart`] from [`Tracer::extract`]: parent-based, with the
    /// configured root sampler and rate limit. `now` is read only if the rate limit is consulted.
    pub fn sample(&mut self, d: &mut SpanStart<'_>, now: impl FnOnce() -> u64) {
        let none = crate::propagation::tracecontext::TraceState::default();
        // A caller that decided is followed; a new trace or a deferred decision is ours.
        let parent = (!d.ours).then(|| {
            let ts = d.incoming.as_ref().map_or(&none, |i| &i.tracestate);
            (d.sampled(), ts)
        });
        let v = self.sampler.decide(&d.trace_id, parent, now);
        if v.sampled {
            d.flags |= FLAG_SAMPLED;
        } else {
            d.flags &= !FLAG_SAMPLED;
            d.debug = false;
        }
        d.record = v.record;
        d.ot = v.ot;
    }

    /// Records what the request carried into `rec` (called only for recorded requests).
    pub fn begin_span(
        &mut self,
        d: &SpanStart<'_>,
        h: &RequestHeaders<'_>,
        start_ns: u64,
        rec: &mut SpanRecord,
    ) {
        http::begin(&self.span, &mut self.names, d, h, start_ns, rec);
    }

    /// Starts the span of an unsampled request the always-keep rules export, from the request
    /// headers as they were logged (they carry the `tracestate` this hop sent). The span keeps
    /// its unsampled flags: that is what the trace carried downstream.
    pub fn begin_kept_span(
        &mut self,
        ids: &SpanIds,
        h: &RequestHeaders<'_>,
        start_ns: u64,
        reason: KeepReason,
        rec: &mut SpanRecord,
    ) {
        http::begin_kept(&self.span, &mut self.names, ids, h, start_ns, reason, rec);
    }

    /// Records the request-time mesh facts: captured headers, traffic rules matched by header
    /// or cookie, fault and attempt headers. `all` is every request header (the adapter's
    /// buffer); it is scanned only when capture or header rules are configured.
    pub fn record_request<'h>(
        &self,
        h: &RequestHeaders<'_>,
        all: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
        rec: &mut SpanRecord,
    ) -> RequestFacts {
        http::record_request(&self.span, h, all, rec)
    }

    /// Records allowlisted response headers (the adapter fetches them only when
    /// [`Tracer::captures_response_headers`]).
    pub fn record_response_headers<'h>(
        &self,
        all: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
        rec: &mut SpanRecord,
    ) {
        self.span.capture.record(Side::Response, all, rec);
    }

    /// Whether response headers are captured at all.
    pub fn captures_response_headers(&self) -> bool {
        self.span.capture.any(Side::Response)
    }

    /// Whether an unsampled request must keep its [`SpanIds`] for the always-keep rules.
    pub fn may_keep(&self) -> bool {
        self.sampler.keep.enabled()
    }

    /// The always-keep verdict for an unsampled request, taking a rate-limit token when it is
    /// kept. Inputs the rules do not use may be `None`.
    pub fn keep(
        &mut self,
        status: Option<i64>,
        response_flags: u64,
        duration_ns: Option<u64>,
        now: impl FnOnce() -> u64,
    ) -> Option<KeepReason> {
        self.keep_call(status, response_flags, duration_ns, None, now)
    }

    /// [`Tracer::keep`] for a request that may be a gRPC call: with `grpc` set, "error" means
    /// what it means on the span ([`grpc::Code::is_error`] for the call's status, see
    /// [`grpc::call_status`]), since a failed call is usually an HTTP 200.
    pub fn keep_call(
        &mut self,
        status: Option<i64>,
        response_flags: u64,
        duration_ns: Option<u64>,
        grpc: Option<grpc::GrpcEnd>,
        now: impl FnOnce() -> u64,
    ) -> Option<KeepReason> {
        let error = match grpc {
            Some(g) => grpc::call_status(g.protocol, g.sent, status, response_flags)
                .is_some_and(|c| c.is_error(g.kind)),
            None => sampling::is_keep_error(status),
        };
        self.keep_if(error, response_flags, duration_ns, now)
    }

    /// [`Tracer::keep`] for a Lambda invocation ([`crate::span::faas::lambda`]): "error"
    /// also means an `X-Amz-Function-Error` behind a 2xx, as on the span. The adapter reads
    /// that header only when the status alone does not already say error.
    pub fn keep_invocation(
        &mut self,
        status: Option<i64>,
        function_error: bool,
        response_flags: u64,
        duration_ns: Option<u64>,
        now: impl FnOnce() -> u64,
    ) -> Option<KeepReason> {
        let error = function_error || sampling::is_keep_error(status);
        self.keep_if(error, response_flags, duration_ns, now)
    }

    fn keep_if(
        &mut self,
        error: bool,
        response_flags: u64,
        duration_ns: Option<u64>,
        now: impl FnOnce() -> u64,
    ) -> Option<KeepReason> {
        let fault = response_flags & (flags::FAULT_INJECTED | flags::DELAY_INJECTED) != 0;
        let reason = self.sampler.keep.check_error(error, fault, duration_ns)?;
        self.sampler.take(now).then_some(reason)
    }

    /// Completes `rec` with what is known at the end of the request, and settles a name
    /// guessed from the request: kept (and admitted into the per-VM set) only when the response
    /// shows that the route or gRPC method exists (see [`crate::span::name`]).
    pub fn finish_span(&mut self, rec: &mut SpanRecord, f: &Finish<'_>) {
        http::finish(&self.span, &mut self.names, rec, f);
    }

    /// Counts a finished request in the RED metrics, when they are on.
    pub fn record_metrics(&mut self, e: &crate::metrics::Ended<'_>) {
        if let Some(m) = &mut self.metrics {
            m.record(&self.span, e);
        }
    }

    /// The RED metrics' name of a request (see [`crate::metrics::Metrics::name`]), when they
    /// are on.
    pub fn metric_name(&self, h: &RequestHeaders<'_>) -> Option<crate::metrics::red::NameKey> {
        self.metrics
            .as_ref()
            .map(|_| crate::metrics::Metrics::name(&self.span, h))
    }

    /// Generates a fresh id (for adapters that need one outside a request, e.g. tests).
    pub fn ids(&mut self) -> &mut IdGenerator {
        &mut self.ids
    }
}

#[cfg(test)]
mod propagation_tests;

#[cfg(test)]
mod grpc_tests;

#[cfg(test)]
mod naming_tests;

#[cfg(test)]
mod faas_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::Value;
    #[allow(unused_imports)]
    use crate::{
        ids::{SpanId, TraceId},
        propagation::{baggage, Propagator, SamplingState},
        span::{mesh, SpanKind, StatusCode},
    };

    fn tracer() -> Tracer {
        crate::test_support::tracer("", 7)
    }

    use crate::test_support::headers;

    #[test]
    fn continues_valid_parent() {
        let mut t = tracer();
        let pairs = [
            (":method", "GET"),
            (":path", "/api/x?q=1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ];
        let h = headers(&pairs);
        let d = t.extract(&h);
        assert_eq!(d.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(d.parent.unwrap().to_string(), "00f067aa0ba902b7");
        assert!(d.sampled());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", d.span_id);
        assert_eq!(inj.get("traceparent"), Some(tp.as_bytes()));
        // Forwarded unchanged: already on the request, so not rewritten.
        assert_eq!(inj.get("tracestate"), None);
        assert!(inj.remove.is_empty());
        let mut rec = SpanRecord::default();
        t.begin_span(&d, &h, 10, &mut rec);
        assert_eq!(rec.name(), b"GET /api/x");
        assert_eq!(rec.trace_state(), b"congo=t61rcWkgMzE");
    }

    #[test]
    fn an_invalid_tracestate_is_dropped_and_counted_as_malformed() {
        let mut t = tracer();
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        let too_many = members.join(",");
        let bad_byte = "a=\u{ff}".to_string();
        for ts in [bad_byte.as_str(), "a=1,=2", too_many.as_str()] {
            let pairs = [
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", ts),
            ];
            let h = headers(&pairs);
            let d = t.extract(&h);
            // The context is continued; only the `tracestate` is dropped.
            assert_eq!(d.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(d.malformed, Propagator::TraceContext.bit(), "{ts}");
            let mut inj = Injection::default();
            t.inject(&d, &h, &mut inj);
            assert_eq!(inj.get("tracestate"), None);
        }
        // 32 members are valid: nothing is counted.
        let pairs = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", &too_many[..too_many.rfind(',').unwrap()]),
        ];
        assert_eq!(t.extract(&headers(&pairs)).malformed, 0);
    }

    #[test]
    fn restarts_on_invalid_and_drops_tracestate() {
        let mut t = tracer();
        let pairs = [
            (
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ];
        let h = headers(&pairs);
        let d = t.extract(&h);
        assert!(d.parent.is_none());
        assert_ne!(d.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(d.flags, 0x03);
        assert_eq!(d.malformed, 1 << Propagator::TraceContext as usize);
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert_eq!(inj.get("tracestate"), None);
        assert_eq!(inj.remove.as_slice(), &["tracestate"]);
    }

    #[test]
    fn unsampled_parent_keeps_flag() {
        let mut t = tracer();
        let pairs = [(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )];
        let h = headers(&pairs);
        let d = t.extract(&h);
        assert!(!d.sampled());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert!(inj.get("traceparent").unwrap().ends_with(b"-00"));
    }

    #[test]
    fn attributes_and_status() {
        let mut t = tracer();
        let pairs = [
            (":method", "PURGE"),
            (":path", "/cache/1"),
            (":authority", "shop.example:8443"),
            (":scheme", "https"),
            ("user-agent", "curl/8"),
            ("x-forwarded-for", " 203.0.113.9 , 10.0.0.1"),
        ];
        let h = headers(&pairs);
        let d = t.extract(&h);
        let mut rec = SpanRecord::default();
        t.begin_span(&d, &h, 10, &mut rec);
        t.finish_span(
            &mut rec,
            &Finish {
                end_ns: 20,
                status_code: Some(404),
                protocol: Some(b"HTTP/2"),
                source_address: Some(b"10.0.0.1:5555"),
                kind: SpanKind::Client,
                ..Default::default()
            },
        );
        let s = |k: &str| match rec.get(k) {
            Some(Value::Str(r)) => String::from_utf8(rec.text(r).to_vec()).unwrap(),
            other => format!("{other:?}"),
        };
        // A 404 says the guessed route does not exist: the name is the method's alone.
        assert_eq!(rec.name(), b"HTTP");
        assert_eq!(rec.get("url.template"), None);
        assert_eq!(s("url.path"), "/cache/1");
        assert_eq!(s("http.request.method"), "_OTHER");
        assert_eq!(s("http.request.method_original"), "PURGE");
        assert_eq!(s("server.address"), "shop.example");
        assert_eq!(rec.get("server.port"), Some(&Value::Int(8443)));
        assert_eq!(s("url.scheme"), "https");
        assert_eq!(s("client.address"), "203.0.113.9");
        assert_eq!(s("network.protocol.version"), "2");
        assert_eq!(rec.get("http.response.status_code"), Some(&Value::Int(404)));
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(s("error.type"), "404");
    }
}

/// Scenario tests for the mesh semantics: one request each, from headers to finished span.
#[cfg(test)]
mod mesh_tests {
    use super::*;
    use crate::span::mesh::identity::TlsFacts;
    use crate::span::mesh::EndFacts;
    use crate::span::Value;
    #[allow(unused_imports)]
    use crate::{
        ids::{SpanId, TraceId},
        propagation::{baggage, Propagator, SamplingState},
        span::{mesh, SpanKind, StatusCode},
    };

    fn tracer(extra: &str) -> Tracer {
        crate::test_support::tracer(extra, 7)
    }

    fn pairs_of<'a>(
        p: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        p.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))
    }

    /// Runs one request through every step and returns its finished span.
    fn run(t: &mut Tracer, req: &[(&str, &str)], f: Finish<'_>) -> SpanRecord {
        let h = RequestHeaders::from_pairs(pairs_of(req));
        let mut d = t.extract(&h);
        t.sample(&mut d, || 1_000);
        assert!(d.record, "the scenario expects a recorded span");
        let mut rec = SpanRecord::default();
        t.begin_span(&d, &h, 1_000, &mut rec);
        let request = t.record_request(&h, pairs_of(req), &mut rec);
        t.finish_span(
            &mut rec,
            &Finish {
                request: &request,
                ..f
            },
        );
        rec
    }

    use crate::test_support::str_attr as s;

    use crate::test_support::str_array_attr as arr;

    const GET: [(&str, &str); 3] = [
        (":method", "GET"),
        (":path", "/reviews/42?x=1"),
        (":authority", "reviews:9080"),
    ];

    #[test]
    fn root_sampling_writes_the_threshold() {
        let mut t = tracer(r#","sampling":{"ratio":0.5}"#);
        let h = RequestHeaders::default();
        // Sampled at 50%: the trace id's low 56 bits are at least the threshold 0x80...
        let mut d = t.extract(&h);
        d.trace_id = TraceId::from_u64s(1, 0x00c0_0000_0000_0000);
        t.sample(&mut d, || 0);
        assert!(d.sampled() && d.record);
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert_eq!(inj.get("tracestate"), Some(&b"ot=th:8"[..]));
        let mut rec = SpanRecord::default();
        t.begin_span(&d, &h, 0, &mut rec);
        assert_eq!(rec.trace_state(), b"ot=th:8");
    }

    #[test]
    fn sampling_everything_writes_no_threshold() {
        let mut t = tracer(r#","sampling":{"ratio":1.0}"#);
        let pairs = [("tracestate", "congo=t61")];
        let h = RequestHeaders::from_pairs(pairs_of(&pairs));
        let mut d = t.extract(&h);
        t.sample(&mut d, || 0);
        assert!(d.sampled() && d.record);
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        // A new trace: the caller's stale tracestate goes, and nothing replaces it.
        assert_eq!(inj.get("tracestate"), None);
        assert_eq!(inj.remove.as_slice(), &["tracestate"]);
    }

    #[test]
    fn unsampled_root_sends_unsampled_and_no_tracestate() {
        let mut t = tracer(r#","sampling":{"ratio":0}"#);
        let h = RequestHeaders::default();
        let mut d = t.extract(&h);
        let mut clock_read = false;
        t.sample(&mut d, || {
            clock_read = true;
            0
        });
        assert!(!d.sampled() && !d.record);
        assert!(!clock_read, "an unsampled decision reads no clock");
        assert!(!t.may_keep());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert!(inj.get("traceparent").unwrap().ends_with(b"-02"));
        assert_eq!(inj.get("tracestate"), None);
        assert!(inj.remove.is_empty());
    }

    #[test]
    fn parent_threshold_inconsistent_with_its_flag_is_erased() {
        let mut t = tracer("");
        let req = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            // rv below th: a sampled flag contradicts it.
            ("tracestate", "congo=t61,ot=th:f;rv:00000000000001"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.extract(&h);
        t.sample(&mut d, || 0);
        assert!(d.sampled());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert_eq!(
            inj.get("tracestate"),
            Some(&b"ot=rv:00000000000001,congo=t61"[..])
        );
    }

    #[test]
    fn canary_subset_on_an_outbound_cluster() {
        let mut t = tracer(
            r#","traffic":{"rules":[
                {"match":"subset","value":"v2","release":"canary","canary":true},
                {"match":"subset","value":"v1","release":"stable","canary":false}],
               "weights":{"v1":90,"v2":10}}"#,
        );
        let rec = run(
            &mut t,
            &GET,
            Finish {
                end_ns: 5_000,
                status_code: Some(200),
                kind: SpanKind::Client,
                mesh: EndFacts {
                    cluster_name: Some(b"outbound|9080|v2|reviews.default.svc.cluster.local"),
                    route_name: Some(b"reviews.default.svc.cluster.local:9080"),
                    upstream_address: Some(b"10.1.2.3:9080"),
                    upstream_attempts: Some(1),
                    backend_latency_ns: Some(2_500_000),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(
            s(&rec, "mesh.upstream.cluster").as_deref(),
            Some("outbound|9080|v2|reviews.default.svc.cluster.local")
        );
        assert_eq!(s(&rec, "mesh.upstream.subset").as_deref(), Some("v2"));
        assert_eq!(
            s(&rec, "mesh.upstream.service").as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(
            s(&rec, "mesh.destination.service.name").as_deref(),
            Some("reviews")
        );
        assert_eq!(
            s(&rec, "mesh.destination.service.namespace").as_deref(),
            Some("default")
        );
        assert_eq!(s(&rec, "mesh.release").as_deref(), Some("canary"));
        assert_eq!(rec.get("mesh.canary"), Some(&Value::Bool(true)));
        assert_eq!(rec.get("mesh.traffic.weight"), Some(&Value::Int(10)));
        assert_eq!(
            s(&rec, "mesh.route.name").as_deref(),
            Some("reviews.default.svc.cluster.local:9080")
        );
        assert_eq!(s(&rec, "network.peer.address").as_deref(), Some("10.1.2.3"));
        assert_eq!(rec.get("network.peer.port"), Some(&Value::Int(9080)));
        assert_eq!(
            rec.get("mesh.upstream.service_time_ms"),
            Some(&Value::Double(2.5))
        );
        assert_eq!(rec.get("http.request.resend_count"), None);
        assert_eq!(rec.status, StatusCode::Unset);
        assert_eq!(rec.get("error.type"), None);
        assert_eq!(rec.get("envoy.response_flags"), None);
        assert_eq!(rec.name(), b"GET /reviews/{id}");
        // A client span's template is `url.template`, not `http.route`.
        assert_eq!(s(&rec, "url.template").as_deref(), Some("/reviews/{id}"));
        assert_eq!(rec.get("http.route"), None);
        assert_eq!(rec.get("url.query"), None);
    }

    #[test]
    fn header_ab_group_and_inbound_cluster() {
        let mut t = tracer(
            r#","traffic":{"rules":[
                {"match":"header","name":"x-ab","value":"b","ab_group":"B"},
                {"match":"cookie","name":"ab","value":"a","ab_group":"A"}]}"#,
        );
        let mut req = GET.to_vec();
        req.push(("x-ab", "b"));
        req.push(("cookie", "ab=a"));
        let rec = run(
            &mut t,
            &req,
            Finish {
                end_ns: 5_000,
                status_code: Some(200),
                kind: SpanKind::Server,
                source_address: Some(b"10.9.9.9:41000"),
                mesh: EndFacts {
                    cluster_name: Some(b"inbound|9080||"),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        // The header rule comes first.
        assert_eq!(s(&rec, "mesh.ab_group").as_deref(), Some("B"));
        assert_eq!(
            s(&rec, "mesh.upstream.cluster").as_deref(),
            Some("inbound|9080||")
        );
        assert_eq!(rec.get("mesh.upstream.subset"), None);
        assert_eq!(rec.get("mesh.upstream.service"), None);
        assert_eq!(rec.get("mesh.destination.service.name"), None);
        // A server span's peer is the caller.
        assert_eq!(s(&rec, "network.peer.address").as_deref(), Some("10.9.9.9"));
        assert_eq!(rec.get("network.peer.port"), Some(&Value::Int(41000)));
    }

    /// A waypoint's SERVER span for the Service it fronts: the destination from its
    /// `inbound-vip` cluster (protocol, subset, Service), the source from the HBONE peer, and
    /// the subset traffic rules and weights as on a sidecar's client span.
    #[test]
    fn waypoint_span_for_the_fronted_service() {
        let mut t = tracer(
            r#","traffic":{"rules":[
                {"match":"subset","value":"v2","release":"canary","canary":true},
                {"match":"subset","value":"v1","release":"stable","canary":false}],
                "weights":{"v1":90,"v2":10}}"#,
        );
        let rec = run(
            &mut t,
            &GET,
            Finish {
                end_ns: 5_000,
                status_code: Some(200),
                kind: SpanKind::Server,
                source_address: Some(b"envoy://internal_client_address/"),
                mesh: EndFacts {
                    cluster_name: Some(
                        b"inbound-vip|9080|http/v2|reviews.default.svc.cluster.local",
                    ),
                    route_name: Some(b"default"),
                    tls: TlsFacts {
                        mtls: Some(true),
                        peer_uri_san: Some(b"spiffe://cluster.local/ns/shop/sa/productpage"),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.name(), b"GET /reviews/{id}");
        assert_eq!(s(&rec, "http.route").as_deref(), Some("/reviews/{id}"));
        assert_eq!(s(&rec, "mesh.upstream.subset").as_deref(), Some("v2"));
        assert_eq!(
            s(&rec, "mesh.upstream.service").as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(
            s(&rec, "mesh.destination.service.name").as_deref(),
            Some("reviews")
        );
        assert_eq!(
            s(&rec, "mesh.destination.service.namespace").as_deref(),
            Some("default")
        );
        assert_eq!(s(&rec, "mesh.release").as_deref(), Some("canary"));
        assert_eq!(rec.get("mesh.canary"), Some(&Value::Bool(true)));
        assert_eq!(rec.get("mesh.traffic.weight"), Some(&Value::Int(10)));
        assert_eq!(
            s(&rec, "mesh.peer.spiffe_id").as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/productpage")
        );
        assert_eq!(s(&rec, "mesh.peer.namespace").as_deref(), Some("shop"));
        assert_eq!(
            s(&rec, "mesh.peer.service_account").as_deref(),
            Some("productpage")
        );
        assert_eq!(rec.get("connection.mtls"), Some(&Value::Bool(true)));
        // The whole Service (`http`, no subset): no subset, no release.
        let rec = run(
            &mut t,
            &GET,
            Finish {
                status_code: Some(200),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    cluster_name: Some(b"inbound-vip|9080|http|reviews.default.svc.cluster.local"),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.get("mesh.upstream.subset"), None);
        assert_eq!(rec.get("mesh.release"), None);
        assert_eq!(
            s(&rec, "mesh.destination.service.name").as_deref(),
            Some("reviews")
        );
    }

    #[test]
    fn injected_abort_is_fault_injected_not_a_real_failure() {
        let mut t = tracer("");
        let mut req = GET.to_vec();
        req.push(("x-envoy-fault-abort-request", "503"));
        let rec = run(
            &mut t,
            &req,
            Finish {
                end_ns: 5_000,
                status_code: Some(503),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    response_flags: flags::FAULT_INJECTED,
                    code_details: Some(b"fault_filter_abort"),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(s(&rec, "error.type").as_deref(), Some("fault_injected"));
        assert_eq!(
            arr(&rec, "envoy.response_flags"),
            Some(vec!["FI".to_string()])
        );
        assert_eq!(
            s(&rec, "envoy.response.code_details").as_deref(),
            Some("fault_filter_abort")
        );
        assert_eq!(rec.get("mesh.fault.injected"), Some(&Value::Bool(true)));
        assert_eq!(s(&rec, "mesh.fault.type").as_deref(), Some("abort"));
        assert_eq!(rec.events.len(), 1);
        assert_eq!(rec.events[0].name, "fault.injected");
        assert_eq!(rec.events[0].time_ns, 5_000);
    }

    #[test]
    fn injected_delay_is_not_an_error() {
        let mut t = tracer("");
        let mut req = GET.to_vec();
        req.push(("x-envoy-fault-delay-request", "300"));
        let rec = run(
            &mut t,
            &req,
            Finish {
                end_ns: 400_000_000,
                status_code: Some(200),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    response_flags: flags::DELAY_INJECTED,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Unset);
        assert_eq!(rec.get("error.type"), None);
        assert_eq!(
            arr(&rec, "envoy.response_flags"),
            Some(vec!["DI".to_string()])
        );
        assert_eq!(s(&rec, "mesh.fault.type").as_deref(), Some("delay"));
        assert_eq!(rec.get("mesh.fault.delay_ms"), Some(&Value::Int(300)));
        assert_eq!(rec.events[0].time_ns, 1_000);
    }

    #[test]
    fn retried_upstream_failure() {
        let mut t = tracer("");
        let rec = run(
            &mut t,
            &GET,
            Finish {
                end_ns: 9_000,
                status_code: Some(503),
                kind: SpanKind::Client,
                mesh: EndFacts {
                    response_flags: 0x20 | 0x8000,
                    code_details: Some(
                        b"upstream_reset_before_response_started{connection_failure}",
                    ),
                    cluster_name: Some(b"outbound|9080|v1|ratings.default.svc.cluster.local"),
                    upstream_attempts: Some(3),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(
            s(&rec, "error.type").as_deref(),
            Some("upstream_connect_failure")
        );
        assert_eq!(
            arr(&rec, "envoy.response_flags"),
            Some(vec!["UF".to_string(), "URX".to_string()])
        );
        assert_eq!(rec.get("http.request.resend_count"), Some(&Value::Int(2)));
    }

    #[test]
    fn server_span_resend_count_comes_from_the_attempt_header() {
        let mut t = tracer("");
        let mut req = GET.to_vec();
        req.push(("x-envoy-attempt-count", "2"));
        let rec = run(
            &mut t,
            &req,
            Finish {
                status_code: Some(200),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    // Ignored on a server span: those are this proxy's upstream attempts.
                    upstream_attempts: Some(5),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.get("http.request.resend_count"), Some(&Value::Int(1)));
    }

    #[test]
    fn caller_going_away_is_not_a_server_error() {
        let mut t = tracer("");
        let rec = run(
            &mut t,
            &GET,
            Finish {
                status_code: None,
                kind: SpanKind::Server,
                mesh: EndFacts {
                    response_flags: flags::DOWNSTREAM_DISCONNECT,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Unset);
        assert_eq!(
            s(&rec, "error.type").as_deref(),
            Some("downstream_disconnect")
        );
        // No response and an upstream failure: an error without a status code.
        let rec = run(
            &mut t,
            &GET,
            Finish {
                status_code: Some(0),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    response_flags: 0x10,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.status, StatusCode::Error);
        assert_eq!(rec.get("http.response.status_code"), None);
        assert_eq!(s(&rec, "error.type").as_deref(), Some("upstream_reset"));
    }

    #[test]
    fn inbound_mtls_identity() {
        let mut t = tracer("");
        let rec = run(
            &mut t,
            &GET,
            Finish {
                status_code: Some(200),
                kind: SpanKind::Server,
                mesh: EndFacts {
                    tls: TlsFacts {
                        mtls: Some(true),
                        version: Some(b"TLSv1.3"),
                        peer_uri_san: Some(b"spiffe://cluster.local/ns/default/sa/productpage"),
                        peer_subject: Some(b"O=cluster.local"),
                    },
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(rec.get("connection.mtls"), Some(&Value::Bool(true)));
        assert_eq!(s(&rec, "mesh.peer.namespace").as_deref(), Some("default"));
        assert_eq!(
            s(&rec, "mesh.peer.service_account").as_deref(),
            Some("productpage")
        );
        assert_eq!(s(&rec, "tls.protocol.version").as_deref(), Some("1.3"));
        assert_eq!(
            s(&rec, "tls.client.subject").as_deref(),
            Some("O=cluster.local")
        );
    }

    #[test]
    fn privacy_allowlist_redaction_query_and_caps() {
        let mut t = tracer(
            r#","capture":{"request_headers":["x-tenant","authorization","x-session"],
                           "redact":["x-session"],"query":true},
               "limits":{"max_attribute_value_bytes":16,"max_attributes":12}"#,
        );
        let req = [
            (":method", "GET"),
            (":path", "/search?q=shoes&page=2"),
            ("x-tenant", "acme-corporation-international"),
            ("authorization", "Bearer abc"),
            ("x-session", "s-1"),
            ("x-other", "nope"),
            ("user-agent", "curl/8"),
        ];
        let rec = run(
            &mut t,
            &req,
            Finish {
                status_code: Some(200),
                kind: SpanKind::Server,
                source_address: Some(b"10.0.0.1:1234"),
                protocol: Some(b"HTTP/1.1"),
                mesh: EndFacts {
                    cluster_name: Some(b"inbound|8080||"),
                    route_name: Some(b"default"),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(s(&rec, "url.query").as_deref(), Some("q=shoes&page=2"));
        assert_eq!(
            arr(&rec, "http.request.header.x-tenant"),
            Some(vec!["acme-corporation".to_string()])
        );
        assert_eq!(
            arr(&rec, "http.request.header.authorization"),
            Some(vec!["REDACTED".to_string()])
        );
        assert_eq!(
            arr(&rec, "http.request.header.x-session"),
            Some(vec!["REDACTED".to_string()])
        );
        assert_eq!(rec.get("http.request.header.x-other"), None);
        assert_eq!(rec.attrs.len(), 12);
        assert!(rec.dropped_attributes > 0);
        // Without `capture.query` the query never leaves the proxy.
        let mut t = tracer("");
        let rec = run(&mut t, &req, Finish::default());
        assert_eq!(rec.get("url.query"), None);
        assert_eq!(s(&rec, "url.path").as_deref(), Some("/search"));
    }

    #[test]
    fn configured_route_and_legacy_span_name() {
        let mut t = tracer(r#","routes":["/reviews/{review_id}"],"span_name":"legacy""#);
        let rec = run(&mut t, &GET, Finish::default());
        assert_eq!(rec.name(), b"HTTP GET /reviews/{review_id}");
        assert_eq!(
            s(&rec, "http.route").as_deref(),
            Some("/reviews/{review_id}")
        );
    }

    #[test]
    fn kept_error_span_keeps_its_unsampled_flag() {
        let mut t =
            tracer(r#","sampling":{"ratio":0,"always_keep":["error","slow"],"slow_ms":100}"#);
        assert!(t.may_keep());
        let req = [
            (":method", "POST"),
            (":path", "/orders"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.extract(&h);
        t.sample(&mut d, || 0);
        assert!(!d.record);
        let ids = d.ids();
        assert_eq!(t.keep(Some(200), 0, Some(1_000_000), || 0), None);
        assert_eq!(
            t.keep(Some(502), 0, Some(1_000_000), || 0),
            Some(KeepReason::Error)
        );
        assert_eq!(
            t.keep(Some(200), 0, Some(200_000_000), || 0),
            Some(KeepReason::Slow)
        );
        // The logged headers carry what this hop sent.
        let logged = [
            (":method", "POST"),
            (":path", "/orders"),
            ("tracestate", "congo=t61"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&logged));
        let mut rec = SpanRecord::default();
        t.begin_kept_span(&ids, &h, 10, KeepReason::Error, &mut rec);
        t.finish_span(
            &mut rec,
            &Finish {
                end_ns: 20,
                status_code: Some(502),
                ..Default::default()
            },
        );
        assert_eq!(s(&rec, "mesh.sampling.kept_by").as_deref(), Some("error"));
        assert_eq!(rec.flags & FLAG_SAMPLED, 0);
        assert_eq!(rec.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(rec.parent_span_id.unwrap().to_string(), "00f067aa0ba902b7");
        assert_eq!(rec.trace_state(), b"congo=t61");
        assert_eq!(rec.status, StatusCode::Error);
    }

    #[test]
    fn kept_spans_respect_the_rate_limit() {
        let mut t = tracer(r#","sampling":{"ratio":0,"max_per_second":1,"always_keep":["fault"]}"#);
        assert_eq!(
            t.keep(Some(503), flags::FAULT_INJECTED, None, || 0),
            Some(KeepReason::Fault)
        );
        assert_eq!(t.keep(Some(503), flags::FAULT_INJECTED, None, || 1), None);
        assert_eq!(
            t.keep(Some(200), flags::DELAY_INJECTED, None, || 2_000_000_000),
            Some(KeepReason::Fault)
        );
        // Errors are not kept unless asked for.
        assert_eq!(t.keep(Some(500), 0, None, || 4_000_000_000), None);
    }

    #[test]
    fn resource_comes_from_the_node_once() {
        use crate::test_support::protobuf::{node, string_value};
        let n = NodeInfo::from_node_proto(&node(
            "sidecar~10.1.2.3~reviews-v2-7f9c.default~default.svc.cluster.local",
            &[
                ("WORKLOAD_NAME", string_value("reviews-v2")),
                ("NAMESPACE", string_value("default")),
                ("ISTIO_VERSION", string_value("1.28.0")),
            ],
        ));
        let config = crate::config::load(
            br#"{"collector":{"cluster":"c"},"resource":{"service.version":"7"}}"#,
        )
        .unwrap();
        let t = Tracer::with_node(config, 1, &n);
        let get = |k: &str| crate::test_support::resource_attr(&t, k);
        assert_eq!(get("service.name").as_deref(), Some("reviews-v2"));
        assert_eq!(get("service.version").as_deref(), Some("7"));
        assert_eq!(get("k8s.namespace.name").as_deref(), Some("default"));
        assert_eq!(get("k8s.pod.name").as_deref(), Some("reviews-v2-7f9c"));
        assert_eq!(get("k8s.deployment.name").as_deref(), Some("reviews-v2"));
        assert_eq!(get("service.mesh").as_deref(), Some("istio"));
        assert_eq!(get("telemetry.sdk.name").as_deref(), Some("meshtrace"));
    }

    #[test]
    fn a_deferred_caller_leaves_the_decision_to_the_root_sampler() {
        let mut t = tracer(r#","sampling":{"ratio":0}"#);
        // B3 with no sampling state: the caller defers, so the 0% root sampler decides.
        let req = [
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.extract(&h);
        assert!(d.ours);
        t.sample(&mut d, || 0);
        assert!(!d.sampled() && !d.record);
        // The same caller saying "sampled" is followed whatever the ratio.
        let req = [
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.extract(&h);
        assert!(!d.ours);
        t.sample(&mut d, || 0);
        assert!(d.sampled() && d.record);
        assert_eq!(d.ot, crate::propagation::ot::OtUpdate::Forward);
    }

    #[test]
    fn a_deferred_caller_sampled_by_us_gets_the_threshold() {
        // The trace id's low 56 bits (0xce92...) pass the 50% threshold (0x80...).
        let mut t = tracer(r#","sampling":{"ratio":0.5}"#);
        let req = [
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ];
        let h = RequestHeaders::from_pairs(pairs_of(&req));
        let mut d = t.extract(&h);
        t.sample(&mut d, || 0);
        assert!(d.sampled());
        let mut inj = Injection::default();
        t.inject(&d, &h, &mut inj);
        assert_eq!(inj.get("tracestate"), Some(&b"ot=th:8"[..]));
    }

    #[test]
    fn istio_cluster_gives_the_span_kind() {
        assert_eq!(
            mesh::kind_from_cluster(b"outbound|80||a.b.svc.cluster.local"),
            Some(SpanKind::Client)
        );
        assert_eq!(
            mesh::kind_from_cluster(b"inbound|80||"),
            Some(SpanKind::Server)
        );
        assert_eq!(
            mesh::kind_from_cluster(b"inbound-vip|9080|http/v2|reviews.default.svc.cluster.local"),
            Some(SpanKind::Server)
        );
        assert_eq!(mesh::kind_from_cluster(b"otel_collector"), None);
    }
}
