//! `ExportMetricsServiceRequest` encoding of one interval of [`Red`]: hand-written like the
//! spans' ([`crate::export::otlp`]), reusing the spans' pre-encoded resource and scope, so the
//! module carries no second protobuf runtime. It runs once per flush interval, not per request.
//!
//! Field numbers follow `opentelemetry/proto/metrics/v1/metrics.proto`: `Metric` name 1,
//! description 2, unit 3, sum 7, histogram 9; `Sum` data_points 1, aggregation_temporality 2,
//! is_monotonic 3; `Histogram` data_points 1, aggregation_temporality 2; `NumberDataPoint`
//! start_time_unix_nano 2, time_unix_nano 3, as_int 6, attributes 7;
//! `HistogramDataPoint` start 2, time 3, count 4, sum 5, bucket_counts 6, explicit_bounds 7,
//! attributes 9, min 11, max 12.

use super::red::{method, release, Dims, Red, Series, BOUNDS};
use super::Unit;
use crate::export::otlp::{
    encode_key, len_field, put_bytes, put_fixed64, put_kv, put_len, put_varint, AnyValue,
    BatchHeader, WireType,
};
use crate::span::http::KNOWN_METHODS;
use crate::span::SpanKind;

/// `traces.span.metrics.calls`, as the `spanmetrics` connector names it.
pub const CALLS: &str = "traces.span.metrics.calls";
/// `traces.span.metrics.duration`, as the `spanmetrics` connector names it.
pub const DURATION: &str = "traces.span.metrics.duration";
/// `AGGREGATION_TEMPORALITY_DELTA`.
const DELTA: u64 = 1;

type Str<'a> = AnyValue<'a, core::iter::Empty<&'a [u8]>>;

/// The text behind a series' ids, from the configuration the VM runs with.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    /// The configured `routes` templates, in order.
    pub routes: Vec<Box<[u8]>>,
    /// The release each `traffic` rule sets, by rule index.
    pub releases: Vec<Option<Box<[u8]>>>,
    /// The workload's own release ([`release::WORKLOAD`]).
    pub workload_release: Option<Box<[u8]>>,
    /// `meshtrace.worker`: this VM's id.
    pub worker: Box<[u8]>,
    /// The histogram's unit.
    pub unit: Unit,
}

impl Labels {
    fn release(&self, id: u8) -> Option<&[u8]> {
        match id {
            release::NONE => None,
            release::WORKLOAD => self.workload_release.as_deref(),
            i => self.releases.get(usize::from(i) - 1)?.as_deref(),
        }
    }

    fn route(&self, id: u16) -> Option<&[u8]> {
        let i = usize::from(id).checked_sub(1)?;
        self.routes.get(i).map(|r| &**r)
    }

    /// Appends the `span.name` of a series to `out`.
    pub fn name(&self, d: &Dims, out: &mut Vec<u8>) {
        out.extend_from_slice(match d.name.method {
            method::GRPC => b"grpc",
            m => KNOWN_METHODS
                .get(usize::from(m))
                .copied()
                .unwrap_or(b"HTTP"),
        });
        if let Some(r) = self.route(d.name.route) {
            out.push(b' ');
            out.extend_from_slice(r);
        }
    }

    /// Writes a series' attributes as field `tag` entries.
    fn put_attributes(&self, key: Option<u64>, tag: u32, name: &mut Vec<u8>, out: &mut Vec<u8>) {
        let Some(key) = key else {
            // Each VM's overflow series is its own writer too: without the worker two VMs'
            // overflow points would share one attribute set and a backend would keep one.
            put_kv(tag, b"otel.metric.overflow", &Str::Bool(true), out);
            put_kv(tag, b"meshtrace.worker", &Str::Str(&self.worker), out);
            return;
        };
        let d = Dims::of(key);
        name.clear();
        self.name(&d, name);
        put_kv(tag, b"span.name", &Str::Str(name), out);
        let kind: &[u8] = match d.kind {
            SpanKind::Client => b"SPAN_KIND_CLIENT",
            SpanKind::Internal => b"SPAN_KIND_INTERNAL",
            SpanKind::Server => b"SPAN_KIND_SERVER",
        };
        put_kv(tag, b"span.kind", &Str::Str(kind), out);
        let status: &[u8] = if d.error {
            b"STATUS_CODE_ERROR"
        } else {
            b"STATUS_CODE_UNSET"
        };
        put_kv(tag, b"status.code", &Str::Str(status), out);
        if let Some(r) = self.release(d.release) {
            put_kv(tag, b"mesh.release", &Str::Str(r), out);
        }
        if d.status_class > 0 {
            let class = [b'0' + d.status_class, b'x', b'x'];
            put_kv(tag, b"http.response.status_class", &Str::Str(&class), out);
        }
        if let Some(c) = d.grpc {
            put_kv(
                tag,
                b"rpc.response.status_code",
                &Str::Str(c.name().as_bytes()),
                out,
            );
        }
        put_kv(tag, b"meshtrace.worker", &Str::Str(&self.worker), out);
    }
}

fn put_double(tag: u32, v: f64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, out);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Buffers reused from one export to the next.
#[derive(Debug, Default)]
pub struct Scratch {
    calls: Vec<u8>,
    duration: Vec<u8>,
    point: Vec<u8>,
    hpoint: Vec<u8>,
    name: Vec<u8>,
    metrics: Vec<u8>,
    body: Vec<u8>,
}

/// Writes the interval `(red.start_ns, end_ns]` as `ExportMetricsServiceRequest`s: one `calls`
/// point and one `duration` point per series, the overflow series last, cut into requests whose
/// points take at most `max_bytes` (a series alone may exceed it; it then goes alone), like the
/// span exports' `batch.max_export_bytes`, so no flush builds or sends one huge body on a
/// worker. Request `i` goes into `out[i]` (buffers are reused, never dropped, so a warm pool
/// allocates nothing); returns how many were written.
pub fn encode_requests(
    header: &BatchHeader,
    red: &Red,
    labels: &Labels,
    end_ns: u64,
    max_bytes: usize,
    scratch: &mut Scratch,
    out: &mut Vec<Vec<u8>>,
) -> usize {
    scratch.calls.clear();
    scratch.duration.clear();
    let mut n = 0;
    let bounds: [f64; BOUNDS] = red.bounds_ns().map(|b| b as f64 / labels.unit.ns());
    let series = red
        .series()
        .iter()
        .map(|(k, s)| (Some(*k), s))
        .chain(red.overflow().map(|s| (None, s)));
    for (key, s) in series {
        let Scratch {
            point,
            hpoint,
            name,
            ..
        } = scratch;
        // NumberDataPoint
        point.clear();
        labels.put_attributes(key, 7, name, point);
        put_fixed64(2, red.start_ns, point);
        put_fixed64(3, end_ns, point);
        encode_key(6, WireType::SixtyFourBit, point);
        point.extend_from_slice(&(s.count as i64).to_le_bytes());
        // HistogramDataPoint
        hpoint.clear();
        labels.put_attributes(key, 9, name, hpoint);
        histogram_point(s, &bounds, labels.unit, red.start_ns, end_ns, hpoint);
        let held = scratch.calls.len() + scratch.duration.len();
        let adds = len_field(1, point.len()) + len_field(1, hpoint.len());
        if held > 0 && held + adds > max_bytes {
            finish_request(header, labels, scratch, request_buffer(out, n));
            n += 1;
        }
        put_bytes(1, &scratch.point, &mut scratch.calls);
        put_bytes(1, &scratch.hpoint, &mut scratch.duration);
    }
    if !scratch.calls.is_empty() {
        finish_request(header, labels, scratch, request_buffer(out, n));
        n += 1;
    }
    n
}

/// `out[i]`, cleared, added when the pool is short.
fn request_buffer(out: &mut Vec<Vec<u8>>, i: usize) -> &mut Vec<u8> {
    if out.len() <= i {
        out.resize_with(i + 1, Vec::new);
    }
    let buf = &mut out[i];
    buf.clear();
    buf
}

/// Wraps the points held in `scratch` into one request in `out` and empties them.
fn finish_request(header: &BatchHeader, labels: &Labels, scratch: &mut Scratch, out: &mut Vec<u8>) {
    let Scratch {
        calls,
        duration,
        metrics,
        body,
        ..
    } = scratch;
    metrics.clear();
    // Metric{calls}: name, unit, sum{data_points, temporality, monotonic}
    body.clear();
    put_bytes(1, CALLS.as_bytes(), body);
    put_bytes(3, b"{call}", body);
    put_len(7, calls.len() + 4, body);
    body.extend_from_slice(calls);
    put_varint(2, DELTA, body);
    put_varint(3, 1, body);
    put_bytes(2, body, metrics);
    // Metric{duration}: name, unit, histogram{data_points, temporality}
    body.clear();
    put_bytes(1, DURATION.as_bytes(), body);
    put_bytes(3, labels.unit.as_str().as_bytes(), body);
    put_len(9, duration.len() + 2, body);
    body.extend_from_slice(duration);
    put_varint(2, DELTA, body);
    put_bytes(2, body, metrics);
    header.encode_request(metrics, out);
    calls.clear();
    duration.clear();
}

fn histogram_point(
    s: &Series,
    bounds: &[f64; BOUNDS],
    unit: Unit,
    start_ns: u64,
    end_ns: u64,
    out: &mut Vec<u8>,
) {
    put_fixed64(2, start_ns, out);
    put_fixed64(3, end_ns, out);
    put_fixed64(4, s.count, out);
    put_double(5, s.sum_ns as f64 / unit.ns(), out);
    put_len(6, 8 * s.buckets.len(), out);
    for c in s.buckets {
        out.extend_from_slice(&c.to_le_bytes());
    }
    put_len(7, 8 * BOUNDS, out);
    for b in bounds {
        out.extend_from_slice(&b.to_le_bytes());
    }
    put_double(11, s.min_ns as f64 / unit.ns(), out);
    put_double(12, s.max_ns as f64 / unit.ns(), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::ResourceValue;
    use crate::metrics::red::{Call, NameKey};
    use crate::span::grpc;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_proto::tonic::metrics::v1::number_data_point;
    use prost::Message;

    const MS: u64 = 1_000_000;

    fn labels(unit: Unit) -> Labels {
        Labels {
            routes: vec![b"/api/items/{id}".to_vec().into()],
            releases: vec![Some(b"stable".to_vec().into()), None],
            workload_release: Some(b"v9".to_vec().into()),
            worker: b"00000000000000aa".to_vec().into(),
            unit,
        }
    }

    fn attrs(kv: &[KeyValue]) -> Vec<(String, String)> {
        kv.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                    Some(V::StringValue(s)) => s,
                    Some(V::BoolValue(b)) => b.to_string(),
                    other => format!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect()
    }

    fn decode(unit: Unit, red: &Red, end: u64) -> ExportMetricsServiceRequest {
        let header = BatchHeader::new(&[("service.name", ResourceValue::Str("shop".into()))]);
        let mut out = Vec::new();
        let n = encode_requests(
            &header,
            red,
            &labels(unit),
            end,
            usize::MAX,
            &mut Scratch::default(),
            &mut out,
        );
        assert_eq!(n, 1);
        ExportMetricsServiceRequest::decode(&out[0][..]).expect("prost decodes the request")
    }

    #[test]
    fn decodes_with_prost_as_delta_sum_and_histogram() {
        let bounds = crate::metrics::DEFAULT_BOUNDS_MS.map(|b| b * MS);
        let mut red = Red::new(bounds, 1, 1_000);
        let http = Call {
            name: NameKey {
                method: 1,
                route: 1,
            },
            kind: SpanKind::Client,
            error: true,
            release: release::rule(0),
            http_status: Some(503),
            grpc: None,
            duration_ns: 4 * MS,
        };
        red.record(&http);
        red.record(&Call {
            duration_ns: 5 * MS,
            ..http
        });
        // The table holds one series: a gRPC call goes to the overflow series.
        red.record(&Call {
            name: NameKey {
                method: method::GRPC,
                route: 0,
            },
            kind: SpanKind::Server,
            error: false,
            release: release::WORKLOAD,
            http_status: Some(200),
            grpc: Some(grpc::Code::OK),
            duration_ns: 20_000 * MS,
        });
        let req = decode(Unit::Ms, &red, 9_000);
        assert_eq!(req.resource_metrics.len(), 1);
        let rm = &req.resource_metrics[0];
        let resource = rm.resource.as_ref().expect("resource");
        assert_eq!(
            attrs(&resource.attributes),
            [("service.name".to_string(), "shop".to_string())]
        );
        let sm = &rm.scope_metrics[0];
        assert_eq!(
            sm.scope.as_ref().map(|s| s.name.as_str()),
            Some("meshtrace")
        );
        assert_eq!(sm.metrics.len(), 2);
        let calls = &sm.metrics[0];
        assert_eq!(calls.name, CALLS);
        assert_eq!(calls.unit, "{call}");
        let Some(Data::Sum(sum)) = &calls.data else {
            panic!("calls is a Sum: {:?}", calls.data)
        };
        assert_eq!(sum.aggregation_temporality, 1);
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points.len(), 2);
        let p = &sum.data_points[0];
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (1_000, 9_000));
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
        assert_eq!(p.value, Some(N::AsInt(2)));
        assert_eq!(
            attrs(&p.attributes),
            [
                ("span.name", "POST /api/items/{id}"),
                ("span.kind", "SPAN_KIND_CLIENT"),
                ("status.code", "STATUS_CODE_ERROR"),
                ("mesh.release", "stable"),
                ("http.response.status_class", "5xx"),
                ("meshtrace.worker", "00000000000000aa"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let overflow = &sum.data_points[1];
        assert_eq!(overflow.value, Some(N::AsInt(1)));
        assert_eq!(
            attrs(&overflow.attributes),
            [
                ("otel.metric.overflow".to_string(), "true".to_string()),
                (
                    "meshtrace.worker".to_string(),
                    "00000000000000aa".to_string()
                ),
            ]
        );

        let duration = &sm.metrics[1];
        assert_eq!(duration.name, DURATION);
        assert_eq!(duration.unit, "ms");
        let Some(Data::Histogram(h)) = &duration.data else {
            panic!("duration is a Histogram: {:?}", duration.data)
        };
        assert_eq!(h.aggregation_temporality, 1);
        assert_eq!(h.data_points.len(), 2);
        let p = &h.data_points[0];
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (1_000, 9_000));
        assert_eq!(p.count, 2);
        assert_eq!(p.sum, Some(9.0));
        assert_eq!((p.min, p.max), (Some(4.0), Some(5.0)));
        assert_eq!(
            p.explicit_bounds,
            [
                2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0,
                5000.0, 10000.0, 15000.0
            ]
        );
        // 4 ms is exactly a bound: bucket (2, 4]; 5 ms: (4, 6].
        let mut want = vec![0u64; 17];
        want[1] = 1;
        want[2] = 1;
        assert_eq!(p.bucket_counts, want);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
        assert_eq!(p.attributes, sum.data_points[0].attributes);
        let o = &h.data_points[1];
        assert_eq!(o.count, 1);
        assert_eq!(o.bucket_counts[16], 1);
    }

    #[test]
    fn an_interval_is_cut_into_requests_of_at_most_max_bytes_of_points() {
        let bounds = crate::metrics::DEFAULT_BOUNDS_MS.map(|b| b * MS);
        let mut red = Red::new(bounds, 100, 1_000);
        // Ten series (methods 0..10), series i holding i + 1 calls.
        for m in 0..10u8 {
            for _ in 0..=m {
                red.record(&Call {
                    name: NameKey {
                        method: m,
                        route: 0,
                    },
                    kind: SpanKind::Server,
                    error: false,
                    release: release::NONE,
                    http_status: Some(200),
                    grpc: None,
                    duration_ns: 3 * MS,
                });
            }
        }
        let header = BatchHeader::new(&[("service.name", ResourceValue::Str("shop".into()))]);
        let encode = |max_bytes: usize, out: &mut Vec<Vec<u8>>| {
            let (l, mut scratch) = (labels(Unit::Ms), Scratch::default());
            encode_requests(&header, &red, &l, 9_000, max_bytes, &mut scratch, out)
        };
        let mut whole = Vec::new();
        assert_eq!(encode(usize::MAX, &mut whole), 1);
        // Every series' pair of points takes the same bytes here (same attribute shapes).
        let one = ExportMetricsServiceRequest::decode(&whole[0][..]).unwrap();
        let points = |r: &ExportMetricsServiceRequest| {
            let m = &r.resource_metrics[0].scope_metrics[0].metrics;
            let calls: Vec<i64> = match &m[0].data {
                Some(Data::Sum(s)) => s
                    .data_points
                    .iter()
                    .map(|p| match p.value {
                        Some(number_data_point::Value::AsInt(v)) => v,
                        other => panic!("{other:?}"),
                    })
                    .collect(),
                other => panic!("{other:?}"),
            };
            let counts: Vec<u64> = match &m[1].data {
                Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.count).collect(),
                other => panic!("{other:?}"),
            };
            assert_eq!(calls.len(), counts.len());
            calls
        };
        assert_eq!(points(&one), (1..=10).collect::<Vec<i64>>());
        let pair = (whole[0].len() - encode_requests_overhead(&header)) / 10;
        // Room for three pairs per request: 3 + 3 + 3 + 1, in order, nothing lost or repeated.
        let mut pool = vec![Vec::new(); 1];
        let n = encode(3 * pair + pair / 2, &mut pool);
        assert_eq!(n, 4);
        let got: Vec<Vec<i64>> = pool[..n]
            .iter()
            .map(|b| points(&ExportMetricsServiceRequest::decode(&b[..]).unwrap()))
            .collect();
        assert_eq!(got, [vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9], vec![10]]);
        // A bound below one series still sends each series, alone; the pool is reused.
        assert_eq!(encode(1, &mut pool), 10);
        assert_eq!(pool.len(), 10);
        // Nothing recorded since: an empty table writes nothing.
        let empty = Red::new(bounds, 100, 1_000);
        let (l, mut scratch) = (labels(Unit::Ms), Scratch::default());
        assert_eq!(
            encode_requests(&header, &empty, &l, 9_000, 1, &mut scratch, &mut pool),
            0
        );
    }

    /// The bytes of a request besides its points: resource, scope and the two metrics' heads
    /// (with one-byte lengths, as the small requests of these tests have).
    fn encode_requests_overhead(header: &BatchHeader) -> usize {
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        finish_request(header, &labels(Unit::Ms), &mut scratch, &mut out);
        out.len()
    }

    #[test]
    fn seconds_scale_bounds_sum_min_and_max() {
        let bounds = crate::metrics::DEFAULT_BOUNDS_MS.map(|b| b * MS);
        let mut red = Red::new(bounds, 10, 0);
        red.record(&Call {
            name: NameKey::default(),
            kind: SpanKind::Server,
            error: false,
            release: release::WORKLOAD,
            http_status: None,
            grpc: None,
            duration_ns: 1_500 * MS,
        });
        let req = decode(Unit::S, &red, 1);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics[1];
        assert_eq!(m.unit, "s");
        let Some(Data::Histogram(h)) = &m.data else {
            panic!("histogram")
        };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds[0], 0.002);
        assert_eq!(p.explicit_bounds[15], 15.0);
        assert_eq!(p.sum, Some(1.5));
        assert_eq!(p.bucket_counts[12], 1); // (1.4, 2]
        let names: Vec<_> = attrs(&p.attributes).into_iter().map(|(k, _)| k).collect();
        // No response: no status class.
        assert_eq!(
            names,
            [
                "span.name",
                "span.kind",
                "status.code",
                "mesh.release",
                "meshtrace.worker"
            ]
        );
        assert_eq!(attrs(&p.attributes)[0].1, "GET");
        assert_eq!(attrs(&p.attributes)[3].1, "v9");
    }
}
