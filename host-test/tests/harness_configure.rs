//! Configuration through the real `proxy_on_configure`: valid configs start the filter and its
//! timer, each invalid field is rejected with an Error log that names it.

use meshtrace_host_test::host::{load_filter, Host, HostError, LogLevel};

fn rejected(config: &str) -> Vec<String> {
    match load_filter().configure(config) {
        Err(HostError::ConfigRejected { worker: 0, logs }) => logs,
        Err(other) => panic!("expected a rejection, got {other}"),
        Ok(_) => panic!("config was accepted: {config}"),
    }
}

#[test]
fn valid_configs_start_the_flush_timer() {
    let mut host = load_filter()
        .configure(r#"{"collector": {"cluster": "otel_collector"}}"#)
        .unwrap();
    // Root context 1 ticks at the default flush interval.
    assert_eq!(host.tick_periods(0).unwrap(), vec![(1, 1000)]);
    assert_eq!(host.log_messages(LogLevel::Warn), Vec::<String>::new());

    let mut host = load_filter()
        .workers(2)
        .configure(
            r#"{"service_name": "checkout", "direction": "outbound",
                "collector": {"cluster": "c", "authority": "otel:4318", "path": "/otlp/v1/traces", "timeout_ms": 250},
                "batch": {"max_queue": 16, "max_batch": 4, "flush_interval_ms": 200}}"#,
        )
        .unwrap();
    assert_eq!(host.workers(), 2);
    assert_eq!(host.tick_periods(0).unwrap(), vec![(1, 200)]);
    assert_eq!(host.tick_periods(1).unwrap(), vec![(1, 200)]);
}

#[test]
fn each_invalid_field_is_named() {
    let cases = [
        (
            r#"{"collector": {"cluster": ""}}"#,
            "collector.cluster: must be a non-empty string",
        ),
        (
            r#"{"collector": {"cluster": "c", "authority": " "}}"#,
            "collector.authority: must be a non-empty string when set",
        ),
        (
            r#"{"collector": {"cluster": "c", "path": "v1"}}"#,
            "collector.path: must start with '/', got \"v1\"",
        ),
        (
            r#"{"collector": {"cluster": "c", "timeout_ms": 0}}"#,
            "collector.timeout_ms: must be between 1 and 600000, got 0",
        ),
        (
            r#"{"service_name": "", "collector": {"cluster": "c"}}"#,
            "service_name: must be a non-empty string when set",
        ),
        (
            r#"{"collector": {"cluster": "c"}, "batch": {"max_queue": 0}}"#,
            "batch.max_queue: must be at least 1, got 0",
        ),
        (
            r#"{"collector": {"cluster": "c"}, "batch": {"max_queue": 10, "max_batch": 11}}"#,
            "batch.max_batch: must be between 1 and batch.max_queue (10), got 11",
        ),
        (
            r#"{"collector": {"cluster": "c"}, "batch": {"max_export_bytes": 1023}}"#,
            "batch.max_export_bytes: must be at least 1024, got 1023",
        ),
        (
            r#"{"collector": {"cluster": "c"}, "batch": {"flush_interval_ms": 0}}"#,
            "batch.flush_interval_ms: must be between 1 and 3600000, got 0",
        ),
        (
            r#"{"collector": {"cluster": 5}}"#,
            "collector.cluster: invalid type: integer `5`, expected a string",
        ),
        (r#"{}"#, "missing field `collector`"),
    ];
    for (config, message) in cases {
        assert_eq!(
            rejected(config),
            vec![format!("meshtrace: invalid configuration: {message}")],
            "config {config}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_json_are_named() {
    let prefixed = |config: &str, start: &str| {
        let logs = rejected(config);
        assert_eq!(logs.len(), 1, "{logs:?}");
        let expected = format!("meshtrace: invalid configuration: {start}");
        assert!(logs[0].starts_with(&expected), "{logs:?} for {config}");
    };
    prefixed(
        r#"{"collector": {"cluster": "c"}, "colector": 1}"#,
        "colector: unknown field `colector`",
    );
    prefixed(
        r#"{"collector": {"cluster": "c", "port": 1}}"#,
        "collector.port: unknown field `port`",
    );
    prefixed(
        r#"{"collector": {"cluster": "c"}, "direction": "sideways"}"#,
        "direction: unknown variant `sideways`",
    );
    prefixed("{", "invalid JSON");
    prefixed("", "configuration is empty");
}

#[test]
fn imports_outside_envoys_baseline_are_refused_by_name() {
    let wat = r#"(module
        (import "wasi_snapshot_preview1" "sched_yield" (func (result i32)))
        (memory (export "memory") 1))"#;
    match Host::load_bytes(wat.as_bytes()) {
        Err(HostError::ForbiddenImport { module, name, why }) => {
            assert_eq!(
                (module.as_str(), name.as_str()),
                ("wasi_snapshot_preview1", "sched_yield")
            );
            assert!(why.contains("std::thread::yield_now"), "{why}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a sched_yield import was accepted"),
    }
    let wat =
        r#"(module (import "env" "proxy_dispatch_http_call" (func)) (memory (export "memory") 1))"#;
    assert!(matches!(
        Host::load_bytes(wat.as_bytes()),
        Err(HostError::ForbiddenImport { name, .. }) if name == "proxy_dispatch_http_call"
    ));
}

#[test]
fn a_guest_panic_surfaces_with_its_message() {
    // What the SDK's panic hook does: log at Critical, then trap.
    let wat = r#"(module
        (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 16) "panicked at src/config.rs:1:1: boom")
        (func (export "_initialize"))
        (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
        (func (export "proxy_on_context_create") (param i32 i32))
        (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
        (func (export "proxy_on_configure") (param i32 i32) (result i32)
            (drop (call $log (i32.const 5) (i32.const 16) (i32.const 35)))
            unreachable))"#;
    match Host::load_bytes(wat.as_bytes()).unwrap().configure("{}") {
        Err(HostError::Trap {
            worker: 0,
            callback,
            message,
            trap,
        }) => {
            assert_eq!(callback, "proxy_on_configure");
            assert_eq!(message, "panicked at src/config.rs:1:1: boom");
            assert!(trap.contains("unreachable"), "{trap}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("the trap was swallowed"),
    }
}
