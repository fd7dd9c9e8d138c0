//! The traces as one self-contained HTML waterfall: inline CSS, no script, no fonts, images or
//! anything else loaded from anywhere, so a browser opens the file straight from disk.
//!
//! Every string from a span (names, attribute keys and values, service names) is client
//! controlled and goes through [`escape`].

use super::tree::{bar_extent, duration, hex, key_tags, value_text, Trace};

/// HTML-escapes text for element content and double- or single-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; background: #fafbfc; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.lead { color: #5a6475; margin: 0 0 20px; }
section { background: #fff; border: 1px solid #dde2ea; border-radius: 6px; margin: 0 0 18px; padding: 10px 14px; }
section h2 { font-size: 15px; margin: 0 0 8px; font-weight: 600; }
section h2 code { font-weight: normal; color: #5a6475; }
p.caption { margin: 0 0 2px; color: #5a6475; font-size: 13px; }
pre { font: 12px/1.35 ui-monospace, monospace; overflow-x: auto; margin: 0; }
.row { display: grid; grid-template-columns: 380px 1fr 80px; align-items: center; gap: 10px; padding: 3px 0; border-top: 1px solid #f0f2f5; }
.name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.svc { display: inline-block; min-width: 92px; padding: 0 6px; margin-right: 6px; border-radius: 3px; color: #fff; font-size: 12px; }
.kind { font-size: 11px; color: #5a6475; margin-right: 6px; }
.track { position: relative; height: 14px; background: #f0f2f5; border-radius: 2px; }
.bar { position: absolute; top: 0; height: 14px; border-radius: 2px; min-width: 2px; }
.err .bar { outline: 2px solid #d62728; }
.dur { text-align: right; font-variant-numeric: tabular-nums; color: #5a6475; }
.tags { grid-column: 1 / span 3; font-size: 12px; color: #39414f; padding-left: 6px; }
.tags span { display: inline-block; background: #eef1f6; border-radius: 3px; padding: 0 5px; margin: 0 4px 2px 0; }
.tags span.bad { background: #fde3e3; }
details { grid-column: 1 / span 3; font-size: 12px; padding-left: 6px; }
details table { border-collapse: collapse; margin: 4px 0 6px; }
details td { padding: 1px 10px 1px 0; vertical-align: top; font-family: ui-monospace, monospace; word-break: break-all; }
.c0 { background: #1f77b4; } .c1 { background: #2ca02c; } .c2 { background: #ff7f0e; }
.c3 { background: #9467bd; } .c4 { background: #8c564b; } .c5 { background: #17becf; }
"#;

/// The page: a title, then one section per `(caption, trace)` with one row per span in tree
/// order (indented by depth), a bar placed and sized by the span's share of the trace, the key
/// mesh tags, and every attribute in a collapsed `<details>`; then each `(heading, text)` of
/// `notes` as preformatted text (the RED and `/stats` tables).
pub fn render(
    title: &str,
    lead: &str,
    traces: &[(String, Trace)],
    notes: &[(String, String)],
) -> String {
    let mut services: Vec<String> = Vec::new();
    let mut color = |svc: &str| {
        let i = services.iter().position(|s| s == svc).unwrap_or_else(|| {
            services.push(svc.to_string());
            services.len() - 1
        });
        i % 6
    };
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!("<title>{}</title>\n", escape(title)));
    out.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n"));
    out.push_str(&format!(
        "<h1>{}</h1>\n<p class=\"lead\">{}</p>\n",
        escape(title),
        escape(lead)
    ));
    for (caption, t) in traces {
        let (start, end) = (t.start(), t.end());
        let root = t.root().map(|s| s.span.name.clone()).unwrap_or_default();
        out.push_str(&format!(
            "<section>\n<p class=\"caption\">{}</p>\n<h2>{} <code>trace {}</code> {}, {} spans</h2>\n",
            escape(caption),
            escape(&root),
            t.id_hex(),
            duration(end.saturating_sub(start)),
            t.spans.len()
        ));
        for row in t.rows() {
            let s = row.span;
            let (left, width) = bar_extent(s, start, end);
            let err = if s.is_error() { " err" } else { "" };
            out.push_str(&format!(
                "<div class=\"row{err}\"><div class=\"name\" style=\"padding-left:{}px\"><span class=\"svc c{}\">{}</span><span class=\"kind\">{}</span>{}</div>",
                row.depth * 18,
                color(&s.service),
                escape(&s.service_label()),
                s.kind(),
                escape(&s.span.name),
            ));
            out.push_str(&format!(
                "<div class=\"track\"><div class=\"bar c{}\" style=\"left:{left:.2}%;width:{width:.2}%\"></div></div><div class=\"dur\">{}</div>\n",
                color(&s.service),
                duration(s.duration_ns())
            ));
            let tags: Vec<String> = key_tags(s)
                .into_iter()
                .map(|(k, v)| {
                    let bad = matches!(k, "error" | "fault" | "flags");
                    format!(
                        "<span{}>{}={}</span>",
                        if bad { " class=\"bad\"" } else { "" },
                        k,
                        escape(&v)
                    )
                })
                .collect();
            out.push_str(&format!("<div class=\"tags\">{}</div>\n", tags.join("")));
            out.push_str(&format!(
                "<details><summary>{} attributes, span {}</summary><table>\n",
                s.span.attributes.len(),
                hex(&s.span.span_id)
            ));
            for a in &s.span.attributes {
                out.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td></tr>\n",
                    escape(&a.key),
                    escape(&a.value.as_ref().map(value_text).unwrap_or_default())
                ));
            }
            out.push_str("</table></details></div>\n");
        }
        out.push_str("</section>\n");
    }
    for (heading, text) in notes {
        out.push_str(&format!(
            "<section>\n<h2>{}</h2>\n<pre>{}</pre>\n</section>\n",
            escape(heading),
            escape(text)
        ));
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::tree::ServiceSpan;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::Span;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape("<a href='x'>\"&\u{1b}"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;\u{FFFD}"
        );
    }

    #[test]
    fn span_data_cannot_inject_markup_or_loads() {
        let evil = "<script src=\"https://evil.example/x.js\"></script>";
        let s = ServiceSpan {
            service: "<b>svc</b>".into(),
            version: "v1".into(),
            span: Span {
                trace_id: vec![0xab; 16],
                span_id: vec![1; 8],
                name: evil.into(),
                start_time_unix_nano: 0,
                end_time_unix_nano: 1_000_000,
                kind: 2,
                attributes: vec![KeyValue {
                    key: "http.request.header.x-<i>".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(evil.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
        };
        let page = render(
            "t",
            "l",
            &[(
                "<u>caption</u>".into(),
                Trace {
                    trace_id: vec![0xab; 16],
                    spans: vec![s],
                },
            )],
            &[("<h1>".into(), "a < b".into())],
        );
        assert!(!page.contains("<u>"), "{page}");
        assert!(page.contains("&lt;u&gt;caption"), "{page}");
        assert!(page.contains("<pre>a &lt; b</pre>"), "{page}");
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(!page.contains("<i>"), "{page}");
        assert!(page.contains("&lt;script src=&quot;https://evil.example/x.js&quot;&gt;"));
        assert!(page.contains(&"ab".repeat(16)));
        assert!(!page.contains("src=\""), "{page}");
    }
}
