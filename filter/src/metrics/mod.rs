//! RED metrics (rate, errors, duration) counted from every request, sampled or not, and
//! exported as OTLP metrics next to the spans.
//!
//! The collector's `spanmetrics` connector sees only exported spans, so at 1 % sampling its
//! counts are a 1 % estimate. The filter sees every request: it counts them in the VM
//! ([`red::Red`]) and exports the interval's aggregate on the flush interval
//! ([`encode`]), with the `spanmetrics` connector's names so dashboards can switch source:
//!
//! - `traces.span.metrics.calls`: a monotonic delta `Sum` of int points, unit `{call}`;
//! - `traces.span.metrics.duration`: a delta explicit-bucket `Histogram` with count, sum, min
//!   and max, unit `ms` (or `s` with `metrics.unit: "s"`), bounds the connector's defaults
//!   2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000 ms; bucket
//!   `i` counts durations in `(bounds[i-1], bounds[i]]`.
//!
//! Every point carries the dimensions of one series (all bounded, never raw request text):
//!
//! | attribute | value |
//! |---|---|
//! | `span.name` | `{method} {route}` for a configured `routes` template, else `{method}` (`HTTP` for unknown methods); `grpc` for gRPC calls. The templater's guesses and gRPC method names are left out: they are bounded per span only after the response, and a series must not depend on whether the request was sampled. |
//! | `span.kind` | `SPAN_KIND_SERVER` / `SPAN_KIND_CLIENT` |
//! | `status.code` | `STATUS_CODE_ERROR` by the span's rules, else `STATUS_CODE_UNSET` |
//! | `mesh.release` | from the first matching `traffic` rule that sets a release (subset, route, header or cookie); on SERVER series without one, the workload's own `app.kubernetes.io/version` or `version` label |
//! | `http.response.status_class` | `1xx` … `5xx`; absent when no response was sent |
//! | `rpc.response.status_code` | gRPC calls: the status name, as on the span |
//! | `meshtrace.worker` | a random id per VM (see below) |
//!
//! `service.name` and the rest of the resource are the spans' resource.
//!
//! **Cardinality.** At most `metrics.max_series` series per interval (default 1000); requests
//! of further combinations go to one overflow series with the attribute
//! `otel.metric.overflow = true`, as the OpenTelemetry SDK's cardinality limit does (plus
//! `meshtrace.worker`: it too has one writer per VM), and are
//! counted in `meshtrace.metrics.series_overflow`. The table is emptied at each export (delta),
//! so the limit applies per interval.
//!
//! **Temporality.** Delta: each export covers `(previous export, now]` of its VM; the first
//! starts when the VM was configured. An export that fails is counted
//! (`meshtrace.metrics.export_requests.failed`), logged at most every 5 s, and not retried: the next interval starts
//! afresh.
//!
//! **One writer per series.** Envoy runs one VM per worker thread, each with its own table. Two
//! workers sending delta points with identical attributes would break the data model's
//! single-writer rule (a backend would keep one and drop the other). Each VM therefore adds
//! `meshtrace.worker`, a random 64-bit id drawn when the VM starts: sums across it are exact
//! totals, and the cardinality grows by the worker count. Merging the workers' tables through
//! shared data would save that factor but costs a compare-and-swap loop over a serialized
//! table per worker per interval and a leader to export it; the attribute is the data model's
//! own answer and needs no coordination.
//!
//! **Cost per request** (see the glue's module doc for the exact host calls): recording is a
//! route-template match at request time and a hash-table update at the end, no allocation once
//! the series exist. An unsampled request has to learn its status and duration from the host:
//! `response.code` and `request.duration` in `on_log` (already read when `sampling.always_keep`
//! has `error` and `slow`), a gRPC call's `grpc-status`, and `xds.cluster_name` only when
//! subset rules or `direction: auto` need it. A sampled request reads nothing more than its
//! span does.

pub mod encode;
pub mod red;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::export::otlp::BatchHeader;
use crate::headers::RequestHeaders;
use crate::span::grpc;
use crate::span::http::KNOWN_METHODS;
use crate::span::mesh::cluster;
use crate::span::mesh::traffic::RuleHits;
use crate::span::{SpanKind, Tables};
use red::{method, release, Call, NameKey, Red};

/// The `spanmetrics` connector's default histogram bounds, in milliseconds.
pub const DEFAULT_BOUNDS_MS: [u64; red::BOUNDS] = [
    2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000,
];

/// The OTLP/HTTP path metrics are posted to by default.
pub const DEFAULT_PATH: &str = "/v1/metrics";

/// The OTLP/gRPC method of metrics export.
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// The unit of the duration histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Milliseconds (`ms`), the connector's default.
    #[default]
    Ms,
    /// Seconds (`s`), as the HTTP semantic conventions' `http.server.request.duration`.
    S,
}

impl Unit {
    /// The UCUM unit string.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::S => "s",
        }
    }

    /// Nanoseconds per unit.
    pub fn ns(self) -> f64 {
        match self {
            Unit::Ms => 1e6,
            Unit::S => 1e9,
        }
    }
}

/// `metrics` in the configuration: `{"enabled": true, "path": "/v1/metrics", "unit": "ms",
/// "max_series": 1000}`. Off by default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Count requests and export RED metrics.
    pub enabled: bool,
    /// The OTLP/HTTP path (ignored with `collector.protocol: grpc`).
    pub path: String,
    /// The duration histogram's unit, `ms` or `s`.
    pub unit: Unit,
    /// Series per interval before the overflow series takes the rest, 1..=100000.
    pub max_series: u32,
}
crate::config::section::object_section!(MetricsConfig);

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: DEFAULT_PATH.to_string(),
            unit: Unit::Ms,
            max_series: 1000,
        }
    }
}

/// The largest `metrics.max_series`: a table of this many series is about 18 MB per VM.
pub const MAX_SERIES_LIMIT: u32 = 100_000;

impl MetricsConfig {
    /// Checks the values serde cannot.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::export::config::check_http_path("metrics.path", &self.path)?;
        if !(1..=MAX_SERIES_LIMIT).contains(&self.max_series) {
            return Err(ConfigError::new(
                "metrics.max_series",
                format!(
                    "must be between 1 and {MAX_SERIES_LIMIT}, got {}",
                    self.max_series
                ),
            ));
        }
        Ok(())
    }
}

/// What the adapter knows when a request is over, for [`Metrics::record`]: plain data it read
/// for the span or the always-keep rules, or (unsampled requests) for the metrics alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ended<'a> {
    /// The name decided from the request headers ([`Metrics::name`]).
    pub name: NameKey,
    /// SERVER or CLIENT, as the span would be.
    pub kind: SpanKind,
    /// Header and cookie traffic rules that matched at request time.
    pub hits: RuleHits,
    /// `xds.cluster_name`, when read (subset rules need it).
    pub cluster_name: Option<&'a [u8]>,
    /// `xds.route_name`, when read (route rules need it).
    pub route_name: Option<&'a [u8]>,
    /// `response.code`.
    pub status: Option<i64>,
    /// `response.flags`, when read (0 otherwise).
    pub response_flags: u64,
    /// A gRPC call's framing and the `grpc-status` it carried.
    pub grpc: Option<(grpc::Protocol, Option<grpc::Code>)>,
    /// The request's duration, ns.
    pub duration_ns: u64,
}

/// A VM's metrics: the aggregator, the text its ids stand for, and export buffers.
#[derive(Debug)]
pub struct Metrics {
    /// The interval's series.
    pub red: Red,
    /// The text behind the ids.
    pub labels: encode::Labels,
    scratch: encode::Scratch,
    /// Requests ended and counted since the VM started.
    pub recorded: u64,
}

impl Metrics {
    /// The VM's metrics from the compiled tables. `workload_release` is the proxy's own
    /// version label (SERVER series without a rule's release get it), `worker` this VM's id.
    pub fn new(
        config: &MetricsConfig,
        tables: &Tables,
        workload_release: Option<&str>,
        worker: u64,
    ) -> Self {
        let traffic = &tables.traffic;
        let labels = encode::Labels {
            routes: tables.routes.templates().map(Box::from).collect(),
            releases: (0..traffic.rule_count())
                .map(|i| traffic.rule_release(i).map(Box::from))
                .collect(),
            workload_release: workload_release
                .filter(|v| !v.is_empty())
                .map(|v| v.as_bytes().into()),
            worker: format!("{worker:016x}").into_bytes().into(),
            unit: config.unit,
        };
        let bounds = DEFAULT_BOUNDS_MS.map(|b| b * 1_000_000);
        Self {
            red: Red::new(bounds, config.max_series as usize, 0),
            labels,
            scratch: encode::Scratch::default(),
            recorded: 0,
        }
    }

    /// The series name of a request, from its headers: the method, and the configured
    /// `routes` template its path matches; `grpc` for gRPC calls. No templater guess, no
    /// gRPC method: they are bounded only once a response admits them, which a series that
    /// must not depend on sampling cannot wait for.
    pub fn name(tables: &Tables, h: &RequestHeaders<'_>) -> NameKey {
        if h.content_type.and_then(grpc::protocol).is_some() {
            return NameKey {
                method: method::GRPC,
                route: 0,
            };
        }
        let m = h.method.unwrap_or(b"GET");
        let method = KNOWN_METHODS
            .iter()
            .position(|k| *k == m)
            .map_or(method::OTHER, |i| i as u8);
        let path = h.path.unwrap_or(b"/");
        let path = match path.iter().position(|&b| b == b'?') {
            Some(i) => &path[..i],
            None => path,
        };
        let route = tables
            .routes
            .matching_index(path)
            .and_then(|i| u16::try_from(i + 1).ok())
            .unwrap_or(0);
        NameKey { method, route }
    }

    /// Counts one finished request, judging its status by the span's rules.
    pub fn record(&mut self, tables: &Tables, e: &Ended<'_>) {
        let rpc = e
            .grpc
            .and_then(|(p, sent)| grpc::call_status(p, sent, e.status, e.response_flags));
        let error = match rpc {
            Some(c) => c.is_error(e.kind),
            None => crate::span::http::is_error(e.kind, e.status, e.response_flags),
        };
        let subset = e
            .cluster_name
            .and_then(cluster::parse)
            .map(|c| c.subset)
            .filter(|s| !s.is_empty());
        let rel = match tables.traffic.release_rule(e.hits, subset, e.route_name) {
            Some(i) if i < 254 => release::rule(i),
            _ if e.kind == SpanKind::Server && self.labels.workload_release.is_some() => {
                release::WORKLOAD
            }
            _ => release::NONE,
        };
        self.recorded += 1;
        self.red.record(&Call {
            name: e.name,
            kind: e.kind,
            error,
            release: rel,
            http_status: e.status.filter(|s| *s > 0),
            grpc: rpc,
            duration_ns: e.duration_ns,
        });
    }

    /// Ends the interval at `end_ns`: writes it as `ExportMetricsServiceRequest`s into
    /// `out[..n]`, each holding at most `max_bytes` of points
    /// ([`encode::encode_requests`]), returns `n` (0, and `out` untouched, when nothing was
    /// recorded) and starts the next interval. A wall clock stepped back before the interval's
    /// start ends it at its start: a point's time never precedes its start time (OTLP data
    /// model), and intervals never overlap.
    pub fn collect(
        &mut self,
        header: &BatchHeader,
        end_ns: u64,
        max_bytes: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> usize {
        let end_ns = end_ns.max(self.red.start_ns);
        let n = if self.red.is_empty() {
            0
        } else {
            encode::encode_requests(
                header,
                &self.red,
                &self.labels,
                end_ns,
                max_bytes,
                &mut self.scratch,
                out,
            )
        };
        self.red.reset(end_ns);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::ResourceValue;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use prost::Message;

    fn one_request(m: &mut Metrics, tables: &Tables) {
        m.record(
            tables,
            &Ended {
                kind: SpanKind::Server,
                status: Some(200),
                duration_ns: 1_000,
                ..Ended::default()
            },
        );
    }

    /// `(start, time)` of the calls points of one export.
    fn times(out: &[u8]) -> Vec<(u64, u64)> {
        let req = ExportMetricsServiceRequest::decode(out).expect("prost decodes");
        let Some(Data::Sum(sum)) = &req.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("calls is a Sum")
        };
        sum.data_points
            .iter()
            .map(|p| (p.start_time_unix_nano, p.time_unix_nano))
            .collect()
    }

    #[test]
    fn intervals_follow_each_other_even_when_the_clock_steps_back() {
        let tables = Tables::default();
        let header = BatchHeader::new(&[("service.name", ResourceValue::Str("s".into()))]);
        let config = MetricsConfig {
            enabled: true,
            ..MetricsConfig::default()
        };
        let mut m = Metrics::new(&config, &tables, None, 1);
        m.red.start_ns = 5_000;
        let mut out = Vec::new();
        one_request(&mut m, &tables);
        assert_eq!(m.collect(&header, 9_000, usize::MAX, &mut out), 1);
        assert_eq!(times(&out[0]), [(5_000, 9_000)]);
        // An empty interval sends nothing, and the next one starts where it ended.
        assert_eq!(m.collect(&header, 10_000, usize::MAX, &mut out), 0);
        one_request(&mut m, &tables);
        // The wall clock stepped back to 7 000: the interval ends at its start, not before.
        assert_eq!(m.collect(&header, 7_000, usize::MAX, &mut out), 1);
        assert_eq!(times(&out[0]), [(10_000, 10_000)]);
        one_request(&mut m, &tables);
        assert_eq!(m.collect(&header, 12_000, usize::MAX, &mut out), 1);
        assert_eq!(times(&out[0]), [(10_000, 12_000)]);
    }
}
