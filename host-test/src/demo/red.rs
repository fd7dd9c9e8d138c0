//! RED (rate, errors, duration) per release of the frontend's calls to `backend`, from three
//! places that must agree: what the frontend app observed (the `x-served-by` header of each
//! answer), the CLIENT spans the collector received (`mesh.release`), and the span metrics the
//! sidecars export (`traces.span.metrics.calls` and `.duration`, spanmetrics-connector shape).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

use super::apps::Observed;
use super::mesh::{RELEASES, SPLIT};
use super::tree::{value_text, ServiceSpan};

/// The metric counting calls (a Sum of ints).
pub const CALLS_METRIC: &str = "traces.span.metrics.calls";
/// The metric of call durations (an explicit-bucket Histogram, `ms` or `s`).
pub const DURATION_METRIC: &str = "traces.span.metrics.duration";

/// One release's calls from one source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Red {
    /// Calls.
    pub calls: u64,
    /// Of those, failed: a 5xx seen by the app, a span with status Error, or `status.code`
    /// `STATUS_CODE_ERROR` in the metrics.
    pub errors: u64,
    /// Median duration, ms (exact from samples, estimated from buckets for metrics).
    pub p50_ms: Option<f64>,
    /// 99th percentile duration, ms.
    pub p99_ms: Option<f64>,
}

impl Red {
    /// errors / calls, in percent.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 * 100.0 / self.calls as f64
        }
    }
}

/// The release a subset is (`v1` → `stable`), or the subset itself when no rule names it.
pub fn release_of(subset: &str) -> String {
    RELEASES
        .iter()
        .find(|(s, _, _)| *s == subset)
        .map(|(_, r, _)| r.to_string())
        .unwrap_or_else(|| subset.to_string())
}

/// The nearest-rank quantile of `samples` (unsorted), if any.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// What the frontend app observed, by release (calls no backend answered are left out).
pub fn from_observed(o: &Observed) -> BTreeMap<String, Red> {
    o.by_version
        .iter()
        .filter(|(v, _)| v.as_str() != "-")
        .map(|(version, c)| {
            (
                release_of(version),
                Red {
                    calls: c.calls,
                    errors: c.errors,
                    p50_ms: quantile(&c.durations_ms, 0.5),
                    p99_ms: quantile(&c.durations_ms, 0.99),
                },
            )
        })
        .collect()
}

/// The CLIENT spans that carry `mesh.release`, by release.
pub fn from_spans(spans: &[ServiceSpan]) -> BTreeMap<String, Red> {
    let mut durations: BTreeMap<String, (Red, Vec<f64>)> = BTreeMap::new();
    for s in spans.iter().filter(|s| s.span.kind == 3) {
        let Some(release) = s.attr("mesh.release") else {
            continue;
        };
        let (red, d) = durations.entry(release).or_default();
        red.calls += 1;
        red.errors += u64::from(s.is_error());
        d.push(s.duration_ns() as f64 / 1e6);
    }
    durations
        .into_iter()
        .map(|(k, (mut red, d))| {
            red.p50_ms = quantile(&d, 0.5);
            red.p99_ms = quantile(&d, 0.99);
            (k, red)
        })
        .collect()
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .map(value_text)
}

/// A span-metrics data point of a CLIENT span that carries `mesh.release`: its release and
/// whether its status is Error (`status.code: STATUS_CODE_ERROR`, or the newer
/// `otel.status_code: ERROR`).
fn client_release(attrs: &[KeyValue]) -> Option<(String, bool)> {
    let kind = attr(attrs, "span.kind")?;
    if kind != "SPAN_KIND_CLIENT" {
        return None;
    }
    let release = attr(attrs, "mesh.release")?;
    let error = attr(attrs, "status.code").as_deref() == Some("STATUS_CODE_ERROR")
        || attr(attrs, "otel.status_code").as_deref() == Some("ERROR");
    Some((release, error))
}

/// A series: the resource's attributes and the point's, as text, to tell cumulative points of
/// the same series apart.
fn series_key(resource: &[KeyValue], point: &[KeyValue]) -> String {
    let mut parts: Vec<String> = resource
        .iter()
        .chain(point)
        .map(|a| {
            format!(
                "{}={}",
                a.key,
                a.value.as_ref().map(value_text).unwrap_or_default()
            )
        })
        .collect();
    parts.sort();
    parts.join("\u{1f}")
}

/// Merged explicit-bucket histogram of one release.
#[derive(Clone, Debug, Default)]
struct Buckets {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    min: Option<f64>,
    max: Option<f64>,
}

impl Buckets {
    fn add(&mut self, bounds: &[f64], counts: &[u64], (min, max): (Option<f64>, Option<f64>)) {
        if self.counts.is_empty() {
            self.bounds = bounds.to_vec();
            self.counts = vec![0; counts.len()];
        }
        // Points with other bounds cannot be merged bucket by bucket; span metrics of one
        // exporter share one set.
        if self.bounds.as_slice() != bounds || self.counts.len() != counts.len() {
            return;
        }
        for (c, n) in self.counts.iter_mut().zip(counts) {
            *c += n;
        }
        self.min = match (self.min, min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// The `q` quantile, linearly interpolated inside its bucket (lower edge 0 for the first
    /// bucket; the overflow bucket ends at `max`, or at its lower edge without one), and kept
    /// within the points' `min` and `max` when they carry them: a bucket as wide as (10, 50] ms
    /// says little, the recorded extremes bound it.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let upper = match self.bounds.get(i) {
                    Some(&b) => b,
                    None => self.max.unwrap_or(lower).max(lower),
                };
                let within = (rank - seen as f64) / n as f64;
                let estimate = lower + (upper - lower) * within.clamp(0.0, 1.0);
                let estimate = self.max.map_or(estimate, |m| estimate.min(m));
                return Some(self.min.map_or(estimate, |m| estimate.max(m)));
            }
            seen += n;
        }
        None
    }
}

/// The span metrics the collector received, by release: calls and errors from
/// [`CALLS_METRIC`], p50/p99 estimated from the buckets of [`DURATION_METRIC`] (converted to
/// ms when its unit is `s`). Only CLIENT-span series with `mesh.release` count. Delta points are
/// added up; of cumulative points, the last of each series is taken.
pub fn from_metrics(requests: &[ExportMetricsServiceRequest]) -> BTreeMap<String, Red> {
    // (release, error) → calls; cumulative series keep their latest value.
    let mut delta_calls: BTreeMap<(String, bool), u64> = BTreeMap::new();
    let mut cumulative_calls: BTreeMap<String, ((String, bool), u64)> = BTreeMap::new();
    let mut buckets: BTreeMap<String, Buckets> = BTreeMap::new();
    // Series → (release, its latest buckets).
    let mut cumulative_hist: BTreeMap<String, (String, Buckets)> = BTreeMap::new();
    for req in requests {
        for rm in &req.resource_metrics {
            let res: &[KeyValue] = rm
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            for m in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                match (&m.data, m.name.as_str()) {
                    (Some(Data::Sum(sum)), CALLS_METRIC) => {
                        for p in &sum.data_points {
                            let Some(key) = client_release(&p.attributes) else {
                                continue;
                            };
                            use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
                            let n = match p.value {
                                Some(N::AsInt(i)) => i.max(0) as u64,
                                Some(N::AsDouble(d)) => d.max(0.0) as u64,
                                None => 0,
                            };
                            if sum.aggregation_temporality == 2 {
                                cumulative_calls.insert(series_key(res, &p.attributes), (key, n));
                            } else {
                                *delta_calls.entry(key).or_default() += n;
                            }
                        }
                    }
                    (Some(Data::Histogram(h)), DURATION_METRIC) => {
                        let scale = if m.unit == "s" { 1000.0 } else { 1.0 };
                        for p in &h.data_points {
                            let Some((release, _)) = client_release(&p.attributes) else {
                                continue;
                            };
                            let bounds: Vec<f64> =
                                p.explicit_bounds.iter().map(|b| b * scale).collect();
                            let extremes = (p.min.map(|m| m * scale), p.max.map(|m| m * scale));
                            if h.aggregation_temporality == 2 {
                                let mut latest = Buckets::default();
                                latest.add(&bounds, &p.bucket_counts, extremes);
                                cumulative_hist
                                    .insert(series_key(res, &p.attributes), (release, latest));
                            } else {
                                buckets.entry(release).or_default().add(
                                    &bounds,
                                    &p.bucket_counts,
                                    extremes,
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for (key, n) in cumulative_calls.into_values() {
        *delta_calls.entry(key).or_default() += n;
    }
    for (release, latest) in cumulative_hist.into_values() {
        buckets.entry(release).or_default().add(
            &latest.bounds,
            &latest.counts,
            (latest.min, latest.max),
        );
    }
    let mut out: BTreeMap<String, Red> = BTreeMap::new();
    for ((release, error), n) in delta_calls {
        let red = out.entry(release).or_default();
        red.calls += n;
        if error {
            red.errors += n;
        }
    }
    for (release, b) in buckets {
        let red = out.entry(release).or_default();
        red.p50_ms = b.quantile(0.5);
        red.p99_ms = b.quantile(0.99);
    }
    out
}

fn ms(v: Option<f64>, approx: bool) -> String {
    match v {
        Some(v) if approx => format!("≈{v:.1} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => "-".into(),
    }
}

/// The RED table: one block per release of the split (weight from the VirtualService), one
/// line per source. `metrics` is `None` while the sidecars export no span metrics.
pub fn render(
    observed: &BTreeMap<String, Red>,
    spans: &BTreeMap<String, Red>,
    metrics: Option<&BTreeMap<String, Red>>,
) -> String {
    let mut out = format!(
        "  {:<8} {:<6} {:>6}   {:<26} {:>6} {:>6} {:>7} {:>10} {:>10}\n",
        "release", "subset", "weight", "source", "calls", "errors", "rate", "p50", "p99"
    );
    for (subset, weight) in SPLIT {
        let release = release_of(subset);
        let mut sources: Vec<(&str, Option<&Red>, bool)> = vec![
            ("frontend app observed", observed.get(&release), false),
            ("collector: CLIENT spans", spans.get(&release), false),
        ];
        if let Some(m) = metrics {
            sources.push(("collector: span metrics", m.get(&release), true));
        }
        for (i, (source, red, approx)) in sources.into_iter().enumerate() {
            let zero = Red::default();
            let red = red.unwrap_or(&zero);
            let (r, s, w) = if i == 0 {
                (release.as_str(), subset, format!("{weight}%"))
            } else {
                ("", "", String::new())
            };
            out.push_str(&format!(
                "  {r:<8} {s:<6} {w:>6}   {source:<26} {:>6} {:>6} {:>6.1}% {:>10} {:>10}\n",
                red.calls,
                red.errors,
                red.error_rate(),
                ms(red.p50_ms, approx),
                ms(red.p99_ms, approx),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        number_data_point, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum,
    };

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn attrs(kind: &str, status: &str, release: Option<&str>) -> Vec<KeyValue> {
        let mut a = vec![
            kv("span.name", "GET /api/products/{id}"),
            kv("span.kind", kind),
            kv("status.code", status),
        ];
        if let Some(r) = release {
            a.push(kv("mesh.release", r));
        }
        a
    }

    fn calls(points: Vec<(Vec<KeyValue>, i64)>) -> Metric {
        Metric {
            name: CALLS_METRIC.into(),
            data: Some(Data::Sum(Sum {
                data_points: points
                    .into_iter()
                    .map(|(attributes, n)| NumberDataPoint {
                        attributes,
                        value: Some(number_data_point::Value::AsInt(n)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 1,
                is_monotonic: true,
            })),
            ..Default::default()
        }
    }

    fn hist(attributes: Vec<KeyValue>, counts: Vec<u64>) -> Metric {
        Metric {
            name: DURATION_METRIC.into(),
            unit: "ms".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes,
                    count: counts.iter().sum(),
                    bucket_counts: counts,
                    explicit_bounds: vec![2.0, 4.0, 6.0, 8.0, 10.0],
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            })),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn delta_points_add_up_per_release_client_spans_only() {
        let reqs = [
            request(vec![
                calls(vec![
                    (
                        attrs("SPAN_KIND_CLIENT", "STATUS_CODE_UNSET", Some("stable")),
                        50,
                    ),
                    (
                        attrs("SPAN_KIND_CLIENT", "STATUS_CODE_ERROR", Some("canary")),
                        1,
                    ),
                    (attrs("SPAN_KIND_SERVER", "STATUS_CODE_UNSET", None), 70),
                ]),
                hist(
                    attrs("SPAN_KIND_CLIENT", "STATUS_CODE_UNSET", Some("stable")),
                    vec![0, 40, 10, 0, 0, 0],
                ),
            ]),
            request(vec![calls(vec![
                (
                    attrs("SPAN_KIND_CLIENT", "STATUS_CODE_UNSET", Some("stable")),
                    40,
                ),
                (
                    attrs("SPAN_KIND_CLIENT", "STATUS_CODE_UNSET", Some("canary")),
                    9,
                ),
            ])]),
        ];
        let red = from_metrics(&reqs);
        assert_eq!(red.len(), 2);
        assert_eq!((red["stable"].calls, red["stable"].errors), (90, 0));
        assert_eq!((red["canary"].calls, red["canary"].errors), (10, 1));
        // 50 in the buckets: rank 25 of 40 in (2, 4] → 2 + 2 * 25/40.
        assert_eq!(red["stable"].p50_ms, Some(3.25));
        // rank 49.5: 9.5 of 10 in (4, 6].
        assert_eq!(red["stable"].p99_ms, Some(5.9));
        assert_eq!(red["canary"].p50_ms, None);
    }

    #[test]
    fn bucket_estimates_stay_within_the_recorded_min_and_max() {
        let mut m = hist(
            attrs("SPAN_KIND_CLIENT", "STATUS_CODE_UNSET", Some("canary")),
            vec![0, 0, 0, 0, 0, 4],
        );
        if let Some(Data::Histogram(h)) = &mut m.data {
            h.data_points[0].min = Some(11.0);
            h.data_points[0].max = Some(13.0);
        }
        // The overflow bucket (10, ∞) ends at max 13: rank 2 of 4 → 11.5.
        let red = from_metrics(&[request(vec![m.clone()])]);
        assert_eq!(red["canary"].p50_ms, Some(11.5));
        // rank 3.96 of 4: 10 + 3 * 0.99.
        assert!((red["canary"].p99_ms.unwrap() - 12.97).abs() < 1e-9);
        let mut bounded = m;
        if let Some(Data::Histogram(h)) = &mut bounded.data {
            h.data_points[0].explicit_bounds.push(50.0);
            h.data_points[0].bucket_counts = vec![0, 0, 0, 0, 0, 4, 0];
        }
        // (10, 50] without the extremes would give 30 and 49.6.
        let red = from_metrics(&[request(vec![bounded])]);
        assert_eq!(red["canary"].p50_ms, Some(13.0));
        assert_eq!(red["canary"].p99_ms, Some(13.0));
    }

    #[test]
    fn quantiles_and_releases() {
        assert_eq!(quantile(&[5.0, 1.0, 3.0], 0.5), Some(3.0));
        assert_eq!(quantile(&[5.0, 1.0, 3.0], 0.99), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(release_of("v2"), "canary");
        assert_eq!(release_of("v9"), "v9");
    }
}
