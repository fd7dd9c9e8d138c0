//! `make demo` end to end: runs the demo's mesh (four real Envoy sidecars with the compiled
//! filter) and checks what it prints and writes against the spans the collector received:
//! every trace's parent links, the trees as printed, the per-release counts against the
//! requests the frontend sent, each sidecar's accounting, and the HTML file.

use std::collections::{BTreeMap, HashMap};

use meshtrace_host_test::demo::mesh::{FRONTEND_SPIFFE, SPLIT};
use meshtrace_host_test::demo::tree::{hex, ServiceSpan, Trace};
use meshtrace_host_test::demo::{binaries, run, Options, Outcome};

const SPLIT_REQUESTS: u32 = 100;

fn find<'a>(t: &'a Trace, service: &str, kind: i32, name: &str) -> &'a ServiceSpan {
    t.spans
        .iter()
        .find(|s| s.service_label() == service && s.span.kind == kind && s.span.name == name)
        .unwrap_or_else(|| panic!("no {service} kind {kind} {name:?} in {t:#?}"))
}

fn attr(s: &ServiceSpan, key: &str) -> String {
    s.attr(key)
        .unwrap_or_else(|| panic!("{key} missing on {:?}", s.span.name))
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// A product page: frontend SERVER → frontend CLIENT (tagged with the subset's release) →
/// backend SERVER of that subset (with the frontend as its mTLS peer). Returns the release.
fn check_product(t: &Trace) -> String {
    assert_eq!(t.spans.len(), 3, "{t:#?}");
    let name = "GET /api/products/{id}";
    let root = find(t, "frontend v1", SERVER, name);
    assert!(
        root.span.parent_span_id.is_empty(),
        "the user sent no context"
    );
    let client = find(t, "frontend v1", CLIENT, name);
    assert_eq!(client.span.parent_span_id, root.span.span_id);
    let release = attr(client, "mesh.release");
    let subset = match release.as_str() {
        "stable" => "v1",
        "canary" => "v2",
        other => panic!("release {other}"),
    };
    assert_eq!(attr(client, "mesh.upstream.subset"), subset);
    assert_eq!(
        attr(client, "mesh.upstream.cluster"),
        format!("outbound|80|{subset}|backend.demo.svc.cluster.local")
    );
    assert_eq!(attr(client, "mesh.canary"), (subset == "v2").to_string());
    let weight = SPLIT.iter().find(|(s, _)| *s == subset).unwrap().1;
    assert_eq!(attr(client, "mesh.traffic.weight"), weight.to_string());
    let server = find(t, &format!("backend {subset}"), SERVER, name);
    assert_eq!(server.span.parent_span_id, client.span.span_id);
    assert_eq!(attr(server, "mesh.peer.spiffe_id"), FRONTEND_SPIFFE);
    assert_eq!(attr(server, "connection.mtls"), "true");
    let status = attr(server, "http.response.status_code");
    assert_eq!(attr(client, "http.response.status_code"), status);
    assert_eq!(attr(root, "http.response.status_code"), status);
    assert_eq!(client.is_error(), status == "500");
    for s in &t.spans {
        assert_eq!(s.span.trace_id, t.trace_id);
    }
    release
}

/// The checkout: under the frontend's SERVER span, a gRPC CLIENT span with the greeter's SERVER
/// span under it, then a backend call as in [`check_product`].
fn check_checkout(t: &Trace) {
    assert_eq!(t.spans.len(), 5, "{t:#?}");
    let root = find(t, "frontend v1", SERVER, "GET /api/checkout");
    assert!(root.span.parent_span_id.is_empty());
    let method = "pkg.v1.Greeter/SayHello";
    let grpc = find(t, "frontend v1", CLIENT, method);
    assert_eq!(grpc.span.parent_span_id, root.span.span_id);
    assert_eq!(attr(grpc, "rpc.system.name"), "grpc");
    assert_eq!(attr(grpc, "rpc.method"), method);
    assert_eq!(attr(grpc, "rpc.response.status_code"), "OK");
    assert_eq!(
        attr(grpc, "mesh.upstream.cluster"),
        "outbound|50051||greeter.demo.svc.cluster.local"
    );
    let greeter = find(t, "greeter v1", SERVER, method);
    assert_eq!(greeter.span.parent_span_id, grpc.span.span_id);
    assert_eq!(attr(greeter, "rpc.response.status_code"), "OK");
    assert_eq!(attr(greeter, "mesh.peer.spiffe_id"), FRONTEND_SPIFFE);
    let backend_call = t
        .spans
        .iter()
        .find(|s| s.span.kind == CLIENT && s.span.name == "GET /api/products/{id}")
        .expect("the checkout's backend call");
    assert_eq!(backend_call.span.parent_span_id, root.span.span_id);
    assert!(
        grpc.span.end_time_unix_nano <= backend_call.span.start_time_unix_nano,
        "the backend is called after the greeter answered"
    );
    let backend = t
        .spans
        .iter()
        .find(|s| s.service == "backend")
        .expect("backend SERVER span");
    assert_eq!(backend.span.kind, SERVER);
    assert_eq!(backend.span.parent_span_id, backend_call.span.span_id);
}

/// The home page: the frontend answers 200 although its recommendations call was aborted by
/// Envoy's fault filter (CLIENT span: 503, fault abort, flag FI), which no sidecar received.
fn check_home(t: &Trace) {
    assert_eq!(t.spans.len(), 2, "{t:#?}");
    let root = find(t, "frontend v1", SERVER, "GET /api/home");
    assert_eq!(attr(root, "http.response.status_code"), "200");
    assert!(!root.is_error());
    let client = find(t, "frontend v1", CLIENT, "GET /api/recommendations");
    assert_eq!(client.span.parent_span_id, root.span.span_id);
    assert_eq!(attr(client, "http.response.status_code"), "503");
    assert_eq!(attr(client, "mesh.fault.injected"), "true");
    assert_eq!(attr(client, "mesh.fault.type"), "abort");
    assert_eq!(attr(client, "envoy.response_flags"), "FI");
    assert_eq!(attr(client, "error.type"), "fault_injected");
    assert!(client.is_error());
}

/// The printed tree of `t`: the lines after its `trace <id>` header, each parsed to
/// (depth, service label, kind, name) by the layout `tree::render` documents.
fn printed_tree(text: &str, t: &Trace) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let header = format!("trace {}", hex(&t.trace_id));
    let at = lines
        .iter()
        .position(|l| l.starts_with(&header))
        .unwrap_or_else(|| panic!("{header} not printed:\n{text}"));
    lines[at + 1..at + 1 + t.spans.len()]
        .iter()
        .map(|l| {
            let body = l.strip_prefix("  ").expect("indented");
            // A child's branch (`├─ ` or `└─ `) follows three columns per ancestor below the
            // root (`│  ` or blanks).
            let branch = ["├─ ", "└─ "]
                .into_iter()
                .filter_map(|b| body.find(b))
                .min();
            let (depth, rest) = match branch {
                None => (0, body),
                Some(i) => (body[..i].chars().count() / 3 + 1, &body[i + "└─ ".len()..]),
            };
            // `<service> <version>  <KIND>  <name...>`: split at the kind column.
            let kind = ["SERVER", "CLIENT"]
                .into_iter()
                .find(|k| rest.contains(&format!("  {k}  ")))
                .unwrap_or_else(|| panic!("no kind in {l:?}"));
            let (who, after) = rest.split_once(&format!("  {kind}  ")).unwrap();
            let name = after.split("  ").next().unwrap().trim().to_string();
            (
                depth,
                format!("{} {kind} {name}", who.trim()),
                name.to_string(),
            )
        })
        .collect()
}

/// Every printed line sits one level below the nearest line above it at the level above,
/// and that line is its parent span; roots are spans without a parent.
fn check_printed_links(text: &str, t: &Trace) {
    let printed = printed_tree(text, t);
    let key = |s: &ServiceSpan| format!("{} {} {}", s.service_label(), s.kind(), s.span.name);
    let by_key: HashMap<String, &ServiceSpan> = t.spans.iter().map(|s| (key(s), s)).collect();
    assert_eq!(by_key.len(), t.spans.len(), "line keys are unique here");
    let mut stack: Vec<&ServiceSpan> = Vec::new();
    for (depth, k, _) in &printed {
        let span = by_key
            .get(k)
            .unwrap_or_else(|| panic!("printed {k:?} is no span of {t:#?}"));
        assert!(*depth <= stack.len(), "{k} jumps a level");
        stack.truncate(*depth);
        match stack.last() {
            None => assert!(span.span.parent_span_id.is_empty(), "{k} printed as root"),
            Some(parent) => assert_eq!(
                span.span.parent_span_id,
                parent.span.span_id,
                "{k} printed under {}",
                key(parent)
            ),
        }
        stack.push(span);
    }
    assert_eq!(printed.len(), t.spans.len());
}

fn red_line<'a>(text: &'a str, release: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.trim_start().starts_with(release) && l.contains("frontend app observed"))
        .unwrap_or_else(|| panic!("no RED block for {release}:\n{text}"));
    (lines[i], lines[i + 1])
}

fn metrics_line(text: &str, release: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.trim_start().starts_with(release) && l.contains("frontend app observed"))
        .unwrap();
    lines[i + 2].to_string()
}

fn numbers(line: &str, after: &str) -> Vec<u64> {
    line.split_once(after)
        .unwrap()
        .1
        .split_whitespace()
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn the_demo_prints_trees_red_and_stats_that_match_the_collector() {
    let dir = std::env::temp_dir().join(format!("meshtrace-demo-test-{}", std::process::id()));
    let html = dir.join("demo.html");
    let opts = Options {
        binaries: binaries(None, None).expect("Envoy and dist/meshtrace.wasm"),
        html: html.clone(),
        split_requests: SPLIT_REQUESTS,
    };
    let mut printed = Vec::new();
    let out: Outcome = run(&opts, &mut printed).expect("the demo runs");
    let text = String::from_utf8(printed).unwrap();

    // The user's requests: the split ones answered by backend (200, or 500 from the canary),
    // the checkout and the home page 200.
    assert_eq!(out.sent.len(), SPLIT_REQUESTS as usize + 2);
    for (path, status) in &out.sent {
        let ok = match path.as_str() {
            "/api/checkout" | "/api/home" => *status == 200,
            _ => *status == 200 || *status == 500,
        };
        assert!(ok, "{path} → {status}\n{text}");
    }

    // Every trace the collector received has the shape its request calls for.
    assert_eq!(out.traces.len(), SPLIT_REQUESTS as usize + 2, "{text}");
    assert_eq!(
        out.spans.len(),
        3 * SPLIT_REQUESTS as usize + 5 + 2,
        "{text}"
    );
    let mut releases: BTreeMap<String, u64> = BTreeMap::new();
    for t in &out.traces {
        let root = t.root().expect("a root");
        match root.attr("url.path").as_deref() {
            Some("/api/checkout") => check_checkout(t),
            Some("/api/home") => check_home(t),
            Some(p) if p.starts_with("/api/products/") => {
                *releases.entry(check_product(t)).or_default() += 1
            }
            other => panic!("unexpected root {other:?}"),
        }
    }

    // The printed traces: the four representatives, each tree as the spans link up.
    let captions: Vec<&str> = out.shown.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(out.shown.len(), 4, "{captions:?}");
    assert!(captions[0].contains("stable"));
    assert!(captions[1].contains("canary"));
    assert!(captions[2].contains("/api/checkout"));
    assert!(captions[3].contains("/api/home"));
    assert_eq!(check_product(&out.shown[0].1), "stable");
    assert_eq!(check_product(&out.shown[1].1), "canary");
    for (caption, t) in &out.shown {
        assert!(text.contains(caption.as_str()));
        check_printed_links(&text, t);
    }
    let checkout = printed_tree(&text, &out.shown[2].1);
    let depths: Vec<usize> = checkout.iter().map(|(d, _, _)| *d).collect();
    assert_eq!(depths, [0, 1, 2, 1, 2], "{checkout:?}");
    assert!(checkout[1].1.contains("CLIENT pkg.v1.Greeter/SayHello"));
    assert!(checkout[2].1.starts_with("greeter v1 SERVER"));

    // Per release: the frontend's calls (one per product page, one per checkout), as it saw
    // them, equal the CLIENT spans by `mesh.release`, and the printed table says so.
    assert_eq!(out.backend_calls, u64::from(SPLIT_REQUESTS) + 1);
    let observed_calls: u64 = out.observed.values().map(|r| r.calls).sum();
    assert_eq!(observed_calls, out.backend_calls);
    let span_calls: u64 = out.from_spans.values().map(|r| r.calls).sum();
    assert_eq!(span_calls, out.backend_calls);
    for (release, red) in &out.observed {
        let from_spans = &out.from_spans[release];
        assert_eq!(
            (from_spans.calls, from_spans.errors),
            (red.calls, red.errors),
            "{release}"
        );
        // The product pages by release, plus the checkout's call.
        let pages = releases.get(release).copied().unwrap_or(0);
        assert!(red.calls == pages || red.calls == pages + 1, "{release}");
        let (observed_line, spans_line) = red_line(&text, release);
        assert_eq!(
            numbers(observed_line, "frontend app observed"),
            [red.calls, red.errors]
        );
        assert_eq!(
            numbers(spans_line, "collector: CLIENT spans"),
            [red.calls, red.errors]
        );
        // The span metrics count every request, with the same release and error rules.
        let from_metrics = &out.from_metrics[release];
        assert_eq!(
            (from_metrics.calls, from_metrics.errors),
            (red.calls, red.errors),
            "{release}"
        );
        assert!(from_metrics.p50_ms.is_some() && from_metrics.p99_ms.is_some());
        assert_eq!(
            numbers(&metrics_line(&text, release), "collector: span metrics"),
            [red.calls, red.errors]
        );
    }
    assert_eq!(
        out.from_metrics.len(),
        out.observed.len(),
        "no other release in the metrics"
    );
    // Envoy picks the subset at random, 90/10: the canary serves none of the 101 calls once
    // in about 40,000 runs (0.9^101), and then this test fails rather than passing unchecked.
    assert_eq!(out.observed["stable"].errors, 0, "v1 never fails");
    let canary = &out.observed["canary"];
    assert_eq!(
        canary.errors,
        canary.calls.div_ceil(4),
        "v2 fails 1 call in 4"
    );

    // Each sidecar's accounting balances, and the exported spans are what the collector got.
    let stats: BTreeMap<&str, _> = out.stats.iter().map(|s| (s.workload.as_str(), s)).collect();
    for s in stats.values() {
        assert!(s.balanced(), "{s:?}");
        assert_eq!((s.dropped, s.queued, s.kept), (0, 0, 0), "{s:?}");
        assert_eq!(s.started, s.sampled, "everything is sampled: {s:?}");
        assert_eq!(s.red_counted, s.started, "every request counted: {s:?}");
        assert!(s.metric_exports > 0, "{s:?}");
    }
    assert_eq!(
        stats["frontend"].exported,
        2 * u64::from(SPLIT_REQUESTS) + 3 + 2
    );
    assert_eq!(
        stats["backend-v1"].exported + stats["backend-v2"].exported,
        out.backend_calls
    );
    assert_eq!(stats["greeter"].exported, 1);
    let exported: u64 = out.stats.iter().map(|s| s.exported).sum();
    assert_eq!(exported, out.spans.len() as u64);
    assert!(text.contains("sampled + kept = exported + dropped + queued"));
    assert!(!text.contains("NOT BALANCED"));

    // The HTML: there, self-contained, every printed trace in it.
    assert!(text.contains(&html.display().to_string()));
    let page = std::fs::read_to_string(&html).expect("the HTML waterfall");
    assert!(page.starts_with("<!DOCTYPE html>"));
    for needle in [
        "http://", "https://", "<script", "<link", "src=", "url(", "@import",
    ] {
        assert!(!page.contains(needle), "{needle} in the HTML");
    }
    assert!(page.contains("RED metrics per release"));
    assert!(page.contains("Each sidecar&#39;s /stats"));
    for (caption, t) in &out.shown {
        assert!(page.contains(&caption.replace('\'', "&#39;")), "{caption}");
        assert!(page.contains(&hex(&t.trace_id)));
        for s in &t.spans {
            assert!(page.contains(&hex(&s.span.span_id)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
