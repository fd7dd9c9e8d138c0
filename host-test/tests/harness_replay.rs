//! The `meshtrace-host replay` CLI, end to end: the binary, its output lines and exit codes.

use std::process::Command;

use meshtrace_host_test::host::wasm_path;
use serde_json::Value;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(config: &str, requests: &str) -> (i32, Vec<Value>, String) {
    let wasm = wasm_path();
    assert!(
        wasm.exists(),
        "{} is missing: run `make build-wasm` first",
        wasm.display()
    );
    let dir = std::env::temp_dir().join(format!(
        "meshtrace-replay-{}-{}",
        std::process::id(),
        config.len() + requests.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = write(&dir, "cfg.json", config);
    let reqs = write(&dir, "reqs.jsonl", requests);
    let out = dir.join("out.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_meshtrace-host"))
        .args(["replay", "--wasm"])
        .arg(&wasm)
        .arg("--config")
        .arg(&cfg)
        .arg("--requests")
        .arg(&reqs)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let lines = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (
        output.status.code().unwrap(),
        lines,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const CONFIG: &str = r#"{"service_name": "checkout", "collector": {"cluster": "otel_collector"}}"#;

#[test]
fn replays_requests_and_prints_exports_as_otlp_json() {
    let requests = r#"{"request_headers": [[":method", "GET"], [":path", "/cart"], [":authority", "shop.local"]], "properties": {"response.code": 200, "xds.listener_direction": 2}}

{"request_headers": [[":method", "POST"], [":path", "/pay"], [":authority", "shop.local"], ["traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]], "properties": {"response.code": 503}, "response_headers": [[":status", "503"]]}
"#;
    let (code, lines, stderr) = run(CONFIG, requests);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["request"], 1);
    assert_eq!(lines[1]["request"], 3);
    assert_eq!(lines[0]["local_response"], Value::Null);
    let upstream = lines[1]["upstream_request_headers"].as_array().unwrap();
    assert_eq!(upstream[0], serde_json::json!([":method", "POST"]));
    let tp = upstream[3][1].as_str().unwrap();
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{tp}"
    );

    let export = &lines[2]["export"];
    let spans = export["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    assert_eq!(spans.len(), 2);
    // OTLP/JSON: hex ids, int64 as strings, enums as numbers, lowerCamelCase names.
    assert_eq!(spans[0]["kind"], 3);
    assert_eq!(spans[0]["name"], "GET /cart");
    assert_eq!(spans[1]["traceId"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(spans[1]["parentSpanId"], "b7ad6b7169203331");
    assert_eq!(
        format!(
            "00-0af7651916cd43dd8448eb211c80319c-{}-01",
            spans[1]["spanId"].as_str().unwrap()
        ),
        tp
    );
    assert_eq!(spans[1]["startTimeUnixNano"], "1767225600000000000");
    assert_eq!(spans[1]["status"]["code"], 2);
    let code_attr = spans[1]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "http.response.status_code")
        .unwrap();
    assert_eq!(code_attr["value"]["intValue"], "503");
    assert!(
        stderr.contains("2 request(s), 1 export call(s)"),
        "{stderr}"
    );
}

#[test]
fn malformed_lines_are_reported_by_number_and_skipped() {
    let requests = r#"{"request_headers": [[":method", "GET"], [":path", "/"]]}
{"request_headers": [[":method", "GET"]], "propertie": {}}
not json
{"request_headers": [], "properties": {"response.code": null}}
{"request_headers": [], "response_headers": [["x", "1"]]}
"#;
    let (code, lines, stderr) = run(CONFIG, requests);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(lines[0]["request"], 1);
    assert!(
        stderr.contains("line 2: skipped: unknown field `propertie`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 3: skipped: expected ident (column 2)"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("line 4: skipped: property \"response.code\": null is not a property value"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: skipped: response_headers must include \":status\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("4 malformed line(s) skipped: 2, 3, 4, 5"),
        "{stderr}"
    );
}

#[test]
fn a_rejected_config_is_explained() {
    let (code, lines, stderr) = run(r#"{"collector": {"cluster": "c", "path": "v1"}}"#, "");
    assert_eq!(code, 2);
    assert!(lines.is_empty());
    assert_eq!(
        stderr.trim(),
        "meshtrace-host: the filter rejected the configuration:\n  meshtrace: invalid configuration: collector.path: must start with '/', got \"v1\""
    );
}

#[test]
fn help_documents_the_formats() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshtrace-host"))
        .args(["replay", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--wasm",
        "--config",
        "--requests",
        "--out",
        "request_headers",
        "\"export\"",
        "Exit status",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
