//! Traces as trees: the spans the collector received, grouped by trace id, each placed under
//! its parent span id, and printed one line per span (service, kind, name, a duration bar scaled
//! to the trace, the mesh tags that matter).

use std::collections::{BTreeMap, HashSet};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::sink::Received;

/// A span with the service that reported it (its resource's `service.name` and
/// `service.version`).
#[derive(Clone, Debug)]
pub struct ServiceSpan {
    /// `service.name` of the span's resource (`-` when absent).
    pub service: String,
    /// `service.version` of the span's resource (empty when absent).
    pub version: String,
    /// The span.
    pub span: Span,
}

impl ServiceSpan {
    /// `backend v2`, or just the name when the resource has no version.
    pub fn service_label(&self) -> String {
        if self.version.is_empty() {
            self.service.clone()
        } else {
            format!("{} {}", self.service, self.version)
        }
    }

    /// Duration in nanoseconds (0 when the end precedes the start).
    pub fn duration_ns(&self) -> u64 {
        self.span
            .end_time_unix_nano
            .saturating_sub(self.span.start_time_unix_nano)
    }

    /// `SERVER`, `CLIENT`, ... (OTLP `SpanKind` without its prefix).
    pub fn kind(&self) -> &'static str {
        match self.span.kind {
            1 => "INTERNAL",
            2 => "SERVER",
            3 => "CLIENT",
            4 => "PRODUCER",
            5 => "CONSUMER",
            _ => "UNSPECIFIED",
        }
    }

    /// True when the span's status is Error.
    pub fn is_error(&self) -> bool {
        self.span.status.as_ref().is_some_and(|s| s.code == 2)
    }

    /// The attribute `key` as text (arrays joined with `,`), if present.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(value_text)
    }
}

/// An attribute value as text: strings as they are, arrays joined with `,`.
pub fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(value_text)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::KvlistValue(l)) => l
            .values
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    kv.key,
                    kv.value.as_ref().map(value_text).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
        None => String::new(),
    }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every span of every export request, with its resource's service.
pub fn collect(received: &[Received]) -> Vec<ServiceSpan> {
    let mut out = Vec::new();
    for req in received {
        for rs in &req.request.resource_spans {
            let res_attr = |key: &str| {
                rs.resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                    .and_then(|a| a.value.as_ref())
                    .map(value_text)
            };
            let service = res_attr("service.name").unwrap_or_else(|| "-".into());
            let version = res_attr("service.version").unwrap_or_default();
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    out.push(ServiceSpan {
                        service: service.clone(),
                        version: version.clone(),
                        span: span.clone(),
                    });
                }
            }
        }
    }
    out
}

/// The spans of one trace.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The trace id.
    pub trace_id: Vec<u8>,
    /// Its spans, by start time.
    pub spans: Vec<ServiceSpan>,
}

/// One line of a trace's tree.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    /// 0 for a root (no parent, or a parent the collector never received).
    pub depth: usize,
    /// The span.
    pub span: &'a ServiceSpan,
}

/// Groups spans by trace id; traces ordered by their first span's start.
pub fn group(spans: Vec<ServiceSpan>) -> Vec<Trace> {
    let mut by_id: BTreeMap<Vec<u8>, Vec<ServiceSpan>> = BTreeMap::new();
    for s in spans {
        by_id.entry(s.span.trace_id.clone()).or_default().push(s);
    }
    let mut traces: Vec<Trace> = by_id
        .into_iter()
        .map(|(trace_id, mut spans)| {
            spans.sort_by_key(|s| (s.span.start_time_unix_nano, s.span.end_time_unix_nano));
            Trace { trace_id, spans }
        })
        .collect();
    traces.sort_by_key(|t| t.start());
    traces
}

impl Trace {
    /// The earliest start, in Unix nanoseconds.
    pub fn start(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.span.start_time_unix_nano)
            .min()
            .unwrap_or(0)
    }

    /// The latest end, in Unix nanoseconds.
    pub fn end(&self) -> u64 {
        self.spans
            .iter()
            .map(|s| s.span.end_time_unix_nano)
            .max()
            .unwrap_or(0)
    }

    /// The trace id in hex.
    pub fn id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The first root span (see [`Row::depth`]), if any.
    pub fn root(&self) -> Option<&ServiceSpan> {
        self.rows().into_iter().next().map(|r| r.span)
    }

    /// The spans in tree order: each root, then its children depth first, siblings by start
    /// time. A span whose parent is absent from the trace is a root; every span appears exactly
    /// once, even with repeated span ids or parent cycles (client-sent ids are not trusted).
    pub fn rows(&self) -> Vec<Row<'_>> {
        let ids: HashSet<&[u8]> = self
            .spans
            .iter()
            .map(|s| s.span.span_id.as_slice())
            .collect();
        let is_root = |s: &ServiceSpan| {
            s.span.parent_span_id.is_empty() || !ids.contains(s.span.parent_span_id.as_slice())
        };
        let mut placed = vec![false; self.spans.len()];
        let mut rows = Vec::with_capacity(self.spans.len());
        let mut stack: Vec<(usize, usize)> = Vec::new();
        let roots: Vec<usize> = (0..self.spans.len())
            .filter(|&i| is_root(&self.spans[i]))
            .collect();
        // Roots first; then whatever a cycle left unplaced, as a root of its own.
        for start in roots.into_iter().chain(0..self.spans.len()) {
            if placed[start] {
                continue;
            }
            stack.push((start, 0));
            while let Some((i, depth)) = stack.pop() {
                if placed[i] {
                    continue;
                }
                placed[i] = true;
                let span = &self.spans[i];
                rows.push(Row { depth, span });
                // Children in reverse start order, so the earliest pops first.
                for (j, child) in self.spans.iter().enumerate().rev() {
                    if !placed[j] && j != i && child.span.parent_span_id == span.span.span_id {
                        stack.push((j, depth + 1));
                    }
                }
            }
        }
        rows
    }
}

/// The mesh tags worth a glance, as `(label, value)`: the status (`http`, `grpc`), the
/// release a canary rule tagged, the subset, the mTLS peer, an injected fault, Envoy's response
/// flags, and `error.type`.
pub fn key_tags(s: &ServiceSpan) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut add = |label: &'static str, key: &str| {
        if let Some(v) = s.attr(key) {
            out.push((label, v));
        }
    };
    add("http", "http.response.status_code");
    add("grpc", "rpc.response.status_code");
    add("release", "mesh.release");
    add("canary", "mesh.canary");
    add("subset", "mesh.upstream.subset");
    add("weight", "mesh.traffic.weight");
    add("peer", "mesh.peer.spiffe_id");
    add("fault", "mesh.fault.type");
    add("flags", "envoy.response_flags");
    add("error", "error.type");
    out
}

/// Formats nanoseconds as `12.3 ms` (or `µs` below a millisecond).
pub fn duration(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{} µs", ns / 1_000)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// Characters of the duration bar.
pub const BAR_WIDTH: usize = 24;

/// Where a span sits within `[start, end]` of its trace, as percentages: (left, width).
pub fn bar_extent(s: &ServiceSpan, start: u64, end: u64) -> (f64, f64) {
    let total = end.saturating_sub(start).max(1) as f64;
    let from = s.span.start_time_unix_nano.saturating_sub(start) as f64 / total;
    let to = s.span.end_time_unix_nano.saturating_sub(start) as f64 / total;
    let from = from.clamp(0.0, 1.0);
    (from * 100.0, (to.clamp(from, 1.0) - from) * 100.0)
}

/// The bar of a span within `[start, end]` of its trace: `·` outside, `█` inside, at least one
/// `█`.
pub fn bar(s: &ServiceSpan, start: u64, end: u64, width: usize) -> String {
    let total = end.saturating_sub(start).max(1) as f64;
    let from = s.span.start_time_unix_nano.saturating_sub(start) as f64 / total;
    let to = s.span.end_time_unix_nano.saturating_sub(start) as f64 / total;
    let a = ((from * width as f64).floor() as usize).min(width.saturating_sub(1));
    let b = ((to * width as f64).ceil() as usize).clamp(a + 1, width);
    (0..width)
        .map(|i| if i >= a && i < b { '█' } else { '·' })
        .collect()
}

/// Makes a client-controlled string safe for one terminal line: control characters (escape
/// sequences included) become `?`, and it is cut to `max` characters with `…`.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > max {
        out.pop();
        out.push('…');
    }
    out
}

/// The branch drawing in front of each row of [`Trace::rows`]: `├─ ` for a span with a later
/// sibling, `└─ ` for the last one, and under each ancestor that has a later sibling a `│  `
/// carrying its branch down to that sibling (empty for roots).
pub fn tree_prefixes(rows: &[Row<'_>]) -> Vec<String> {
    // Whether row `i` has a later sibling: a row at its depth before any shallower row.
    let continues: Vec<bool> = (0..rows.len())
        .map(|i| {
            rows[i + 1..]
                .iter()
                .find(|r| r.depth <= rows[i].depth)
                .is_some_and(|r| r.depth == rows[i].depth)
        })
        .collect();
    // The row of the current ancestor at each depth, as the rows are walked in order.
    let mut path: Vec<usize> = Vec::new();
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            path.truncate(row.depth);
            let mut prefix = String::new();
            if row.depth > 0 {
                // Depths 1.. of the ancestors; depth 0 (the root) draws no column.
                for &a in path.iter().skip(1) {
                    prefix.push_str(if continues[a] { "│  " } else { "   " });
                }
                prefix.push_str(if continues[i] { "├─ " } else { "└─ " });
            }
            path.push(i);
            prefix
        })
        .collect()
}

/// The trace as text: a header line (trace id, root name, duration, span count), then one line
/// per span in [`Trace::rows`] order, indented by depth:
///
/// ```text
/// trace 4bf92f3577b34da6a3ce929d0e0e4736  GET /api/products/{id}  9.8 ms, 3 spans
///   frontend v1         SERVER  GET /api/products/{id}   ████████████████████████   9.8 ms  http=200
///   └─ frontend v1      CLIENT  GET /api/products/{id}   ·███████████████████████   9.1 ms  http=200 release=stable ...
///      └─ backend v1    SERVER  GET /api/products/{id}   ··█████████████████████·   7.9 ms  http=200 peer=spiffe://...
/// ```
pub fn render(t: &Trace) -> String {
    let (start, end) = (t.start(), t.end());
    let root = t
        .root()
        .map(|s| printable(&s.span.name, 60))
        .unwrap_or_default();
    let mut out = format!(
        "trace {}  {root}  {}, {} spans\n",
        t.id_hex(),
        duration(end.saturating_sub(start)),
        t.spans.len()
    );
    let rows = t.rows();
    for (row, indent) in rows.iter().zip(tree_prefixes(&rows)) {
        let who = format!("{indent}{}", printable(&row.span.service_label(), 24));
        let tags = key_tags(row.span)
            .into_iter()
            .map(|(k, v)| format!("{k}={}", printable(&v, 64)))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "  {who:<22}  {:<6}  {:<26}  {}  {:>8}  {tags}\n",
            row.span.kind(),
            printable(&row.span.span.name, 26),
            bar(row.span, start, end, BAR_WIDTH),
            duration(row.span.duration_ns()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValue;

    fn span(id: u8, parent: Option<u8>, start: u64, end: u64, name: &str) -> ServiceSpan {
        ServiceSpan {
            service: "svc".into(),
            version: String::new(),
            span: Span {
                trace_id: vec![7; 16],
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: name.into(),
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                kind: 2,
                ..Default::default()
            },
        }
    }

    fn depths(t: &Trace) -> Vec<(String, usize)> {
        t.rows()
            .iter()
            .map(|r| (r.span.span.name.clone(), r.depth))
            .collect()
    }

    #[test]
    fn children_under_parents_siblings_by_start() {
        let t = group(vec![
            span(3, Some(2), 30, 40, "c"),
            span(4, Some(1), 50, 60, "d"),
            span(1, None, 0, 100, "a"),
            span(2, Some(1), 10, 45, "b"),
        ])
        .remove(0);
        assert_eq!(
            depths(&t),
            [
                ("a".into(), 0),
                ("b".into(), 1),
                ("c".into(), 2),
                ("d".into(), 1)
            ]
        );
        let text = render(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("trace 07070707"), "{text}");
        assert!(lines[1].starts_with("  svc "), "{text}");
        // b has a later sibling (d): its branch continues past c.
        assert!(lines[2].starts_with("  ├─ svc "), "{text}");
        assert!(lines[3].starts_with("  │  └─ svc "), "{text}");
        assert!(lines[4].starts_with("  └─ svc "), "{text}");
    }

    #[test]
    fn branch_lines_follow_siblings_at_every_depth() {
        // a ─┬─ b ─┬─ c
        //    │     └─ e ── f
        //    └─ d
        let t = group(vec![
            span(1, None, 0, 100, "a"),
            span(2, Some(1), 10, 45, "b"),
            span(3, Some(2), 20, 25, "c"),
            span(5, Some(2), 30, 40, "e"),
            span(6, Some(5), 31, 39, "f"),
            span(4, Some(1), 50, 60, "d"),
        ])
        .remove(0);
        assert_eq!(
            tree_prefixes(&t.rows()),
            ["", "├─ ", "│  ├─ ", "│  └─ ", "│     └─ ", "└─ "]
        );
        // A second root starts its own tree.
        let t = group(vec![
            span(1, None, 0, 10, "a"),
            span(2, Some(1), 1, 2, "b"),
            span(9, None, 20, 30, "z"),
            span(8, Some(9), 21, 22, "y"),
        ])
        .remove(0);
        assert_eq!(tree_prefixes(&t.rows()), ["", "└─ ", "", "└─ "]);
    }

    #[test]
    fn orphans_and_cycles_each_appear_once() {
        // 5's parent was never received; 8 and 9 are each other's parent.
        let t = group(vec![
            span(5, Some(99), 0, 10, "orphan"),
            span(8, Some(9), 1, 2, "x"),
            span(9, Some(8), 2, 3, "y"),
        ])
        .remove(0);
        let d = depths(&t);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0], ("orphan".into(), 0));
        assert_eq!(d[1], ("x".into(), 0));
        assert_eq!(d[2], ("y".into(), 1));
    }

    #[test]
    fn bar_is_scaled_to_the_trace() {
        let s = span(1, None, 50, 100, "a");
        assert_eq!(bar(&s, 0, 100, 10), "·····█████");
        let tiny = span(1, None, 0, 0, "a");
        assert_eq!(bar(&tiny, 0, 100, 10), "█·········");
    }

    #[test]
    fn terminal_escapes_are_neutralised_and_tags_read() {
        let mut s = span(1, None, 0, 1, "GET \u{1b}[31mred");
        s.span.attributes.push(KeyValue {
            key: "envoy.response_flags".into(),
            value: Some(AnyValue {
                value: Some(Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(Value::StringValue("UF".into())),
                            },
                            AnyValue {
                                value: Some(Value::StringValue("URX".into())),
                            },
                        ],
                    },
                )),
            }),
            ..Default::default()
        });
        let t = Trace {
            trace_id: vec![1; 16],
            spans: vec![s],
        };
        let text = render(&t);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("GET ?[31mred"), "{text}");
        assert!(text.contains("flags=UF,URX"), "{text}");
    }
}
