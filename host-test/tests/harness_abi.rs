//! The host's ABI semantics, checked with a hand-written probe module: each callback makes
//! hostcalls and logs every status (as the character `'0' + status`) and every returned buffer,
//! so the test can assert Envoy's answers one by one.

use meshtrace_host_test::host::{Host, HostError, Req, Resp};

const PROBE: &str = r#"(module
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 5)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 32) "\78\05\00\00\06\00\00\00")
  (data (i32.const 1024) "x-a")
  (data (i32.const 1040) "X-New")
  (data (i32.const 1056) "v")
  (data (i32.const 1072) "request\00path")
  (data (i32.const 1104) "xds\00listener_direction")
  (data (i32.const 1136) "missing")
  (data (i32.const 1152) "collector")
  (data (i32.const 1168) "\03\00\00\00\07\00\00\00\04\00\00\00\05\00\00\00\03\00\00\00\0a\00\00\00\01\00\00\00:method\00POST\00:path\00/v1\00:authority\00c\00")
  (data (i32.const 1280) "k")
  (data (i32.const 1284) "v1")
  (data (i32.const 1288) "v2")
  (data (i32.const 1296) "m")
  (data (i32.const 1304) "q")
  (data (i32.const 1312) "item")
  (data (i32.const 1320) ":status")
  (data (i32.const 1336) "plugin_name")
  (data (i32.const 1400) "hello\n")

  ;; A bump allocator that remembers the size asked for last.
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (i32.store (i32.const 96) (local.get $n))
    (local.get $p))
  (func $log (param $p i32) (param $n i32)
    (drop (call $proxy_log (i32.const 2) (local.get $p) (local.get $n))))
  ;; Logs a status as one character.
  (func $st (param $s i32)
    (i32.store8 (i32.const 0) (i32.add (i32.const 48) (local.get $s)))
    (call $log (i32.const 0) (i32.const 1)))
  ;; Logs the returned buffer (ptr at 8, len at 12); "!" if it was not allocated at exact size.
  (func $buf
    (call $log (i32.load (i32.const 8)) (i32.load (i32.const 12)))
    (if (i32.and (i32.ne (i32.load (i32.const 12)) (i32.const 0))
                 (i32.ne (i32.load (i32.const 12)) (i32.load (i32.const 96))))
      (then (call $log (i32.const 1040) (i32.const 1)))))

  (func (export "_initialize"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (call $st (call $get_buffer (i32.const 7) (i32.const 0) (i32.const -1) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $get_property (i32.const 1336) (i32.const 11) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $get_property (i32.const 1072) (i32.const 12) (i32.const 8) (i32.const 12)))
    (call $st (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))
    (call $st (call $fd_write (i32.const 5) (i32.const 32) (i32.const 1) (i32.const 40)))
    (call $st (call $random_get (i32.const 262144) (i32.const 65536)))
    (call $st (call $random_get (i32.const 262144) (i32.const 65537)))
    (call $st (call $clock (i32.const 1) (i64.const 0) (i32.const 24)))
    (call $st (call $clock (i32.const 2) (i64.const 0) (i32.const 24)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (call $st (call $get_value (i32.const 0) (i32.const 1024) (i32.const 3) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $replace (i32.const 0) (i32.const 1040) (i32.const 5) (i32.const 1056) (i32.const 1)))
    (call $st (call $get_property (i32.const 1072) (i32.const 12) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $get_property (i32.const 1104) (i32.const 22) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $get_buffer (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 8) (i32.const 12)))
    (call $st (call $tick (i32.const 5)))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param i32 i32) (result i32)
    (call $st (call $get_buffer (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $get_value (i32.const 0) (i32.const 1024) (i32.const 3) (i32.const 8) (i32.const 12)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param i32 i32) (result i32)
    (call $st (call $get_value (i32.const 0) (i32.const 1024) (i32.const 3) (i32.const 8) (i32.const 12)))
    (call $st (call $get_pairs (i32.const 0) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $get_property (i32.const 1072) (i32.const 12) (i32.const 8) (i32.const 12)))
    (call $st (call $get_value (i32.const 2) (i32.const 1320) (i32.const 7) (i32.const 8) (i32.const 12)))
    (call $buf)
    (i32.const 0))
  (func (export "proxy_on_log") (param $ctx i32)
    (call $st (call $get_value (i32.const 0) (i32.const 1024) (i32.const 3) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $get_value (i32.const 0) (i32.const 1136) (i32.const 7) (i32.const 8) (i32.const 12)))
    (call $st (call $replace (i32.const 0) (i32.const 1040) (i32.const 5) (i32.const 1056) (i32.const 1)))
    (call $st (call $get_value (i32.const 1) (i32.const 1024) (i32.const 3) (i32.const 8) (i32.const 12))))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
  (func (export "proxy_on_tick") (param $root i32)
    (call $st (call $http_call (i32.const 1152) (i32.const 9) (i32.const 1168) (i32.const 64)
                               (i32.const 1284) (i32.const 2) (i32.const 0) (i32.const 0)
                               (i32.const 100) (i32.const 16)))
    (call $st (call $http_call (i32.const 1136) (i32.const 7) (i32.const 1168) (i32.const 64)
                               (i32.const 1284) (i32.const 2) (i32.const 0) (i32.const 0)
                               (i32.const 100) (i32.const 16)))
    (call $st (call $set_shared (i32.const 1280) (i32.const 1) (i32.const 1284) (i32.const 2) (i32.const 0)))
    (call $st (call $get_shared (i32.const 1280) (i32.const 1) (i32.const 8) (i32.const 12) (i32.const 16)))
    (call $buf)
    (call $st (call $set_shared (i32.const 1280) (i32.const 1) (i32.const 1288) (i32.const 2) (i32.const 999)))
    (call $st (call $define (i32.const 0) (i32.const 1296) (i32.const 1) (i32.const 20)))
    (call $st (call $increment (i32.load (i32.const 20)) (i64.const 0)))
    (call $st (call $increment (i32.load (i32.const 20)) (i64.const 5)))
    (call $st (call $register (i32.const 1304) (i32.const 1) (i32.const 16)))
    (call $st (call $enqueue (i32.load (i32.const 16)) (i32.const 1312) (i32.const 4)))
    (call $st (call $tick (i32.const 0))))
  (func (export "proxy_on_queue_ready") (param $root i32) (param $id i32)
    (call $st (call $dequeue (local.get $id) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $st (call $dequeue (local.get $id) (i32.const 8) (i32.const 12))))
  (func $clear (i32.store (i32.const 8) (i32.const 0)) (i32.store (i32.const 12) (i32.const 0)))
  (func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $nb i32) (param $nt i32)
    (call $st (local.get $nh))
    (call $clear)
    (call $st (call $get_value (i32.const 6) (i32.const 1320) (i32.const 7) (i32.const 8) (i32.const 12)))
    (call $buf)
    (call $clear)
    (call $st (call $get_buffer (i32.const 4) (i32.const 0) (i32.const -1) (i32.const 8) (i32.const 12)))
    (call $buf)
    (drop (call $get_status (i32.const 16) (i32.const 8) (i32.const 12)))
    (call $st (i32.load (i32.const 16)))
    (call $buf))
)"#;

fn messages(h: &mut Host) -> Vec<String> {
    h.take_logs().into_iter().map(|l| l.message).collect()
}

fn probe() -> Host {
    Host::load_bytes(PROBE.as_bytes())
        .unwrap()
        .clusters(&["collector"])
        .property("xds.listener_direction", 2i64)
        .plugin("probe", "probe_root", b"cfg-bytes".to_vec())
        .start()
        .unwrap()
}

#[test]
fn configure_buffers_properties_and_wasi() {
    let mut h = probe();
    assert_eq!(
        messages(&mut h),
        [
            "0",
            "cfg-bytes", // plugin configuration, allocated at exact size
            "0",
            "probe", // plugin_name
            "1",     // request.path: NotFound in a root context
            "hello",
            "0", // fd_write to stdout logs at info, newline stripped
            "8", // fd_write to another fd: BADF
            "0",
            "L", // random_get: 64 KiB is fine, one byte more is INVAL (28)
            "0",
            "j", // clock 1 (monotonic) ok, clock 2: NOTSUP (58)
        ]
    );
}

#[test]
fn header_maps_and_properties_follow_the_phase() {
    let mut h = probe();
    h.take_logs();
    let ex = h
        .request(
            Req::get("/p")
                .header("x-a", "1")
                .body("body")
                .response(Resp::status(201)),
        )
        .unwrap();
    assert_eq!(ex.upstream_header("x-new"), Some("v"));
    assert_eq!(ex.upstream.as_ref().unwrap().body, b"body");
    assert_eq!(
        messages(&mut h),
        [
            // request headers
            "0",
            "1", // x-a
            "0", // replace X-New (stored lower-cased)
            "0",
            "/p", // request.path derived from :path
            "0",
            "\u{2}\0\0\0\0\0\0\0", // xds.listener_direction: int64 little-endian
            "1",                   // request body buffer: not in the headers phase
            "0",                   // tick period set from a stream context
            // request body
            "0",
            "body",
            "2", // request headers are gone once they continued: BadArgument
            // response headers
            "2", // request header value: BadArgument
            "0",
            "",  // request header pairs: Ok and empty
            "1", // request.path: NotFound
            "0",
            "201",
            // access log: the access-log copies are readable, and read-only
            "0",
            "1",
            "1", // missing key: NotFound
            "2", // no writes in on_log
            "1", // request trailers in the log phase: NotFound
        ]
    );
    // The stream context set its root's timer.
    assert_eq!(h.tick_periods(0).unwrap(), vec![(1, 5)]);
}

#[test]
fn calls_shared_data_metrics_and_queues() {
    let mut h = probe();
    h.request(Req::get("/p")).unwrap();
    h.take_logs();
    h.advance(5).unwrap();
    assert_eq!(
        messages(&mut h),
        [
            "0", // http call to a known cluster
            "2", // unknown cluster: BadArgument
            "0", "0", "v1", // shared data set, get
            "8",  // stale CAS: CasMismatch
            "0",  // define metric
            "2",  // counter + 0: BadArgument
            "0",  // counter + 5
            "0", "0", // register, enqueue
            "0", // tick off
            // proxy_on_queue_ready, delivered after the tick returned
            "0", "item", "7", // Empty
        ]
    );
    assert_eq!(h.metric("m"), Some(5));
    assert_eq!(h.shared_data("meshtrace", b"k"), Some((b"v1".to_vec(), 1)));
    assert_eq!(h.queue_len("meshtrace", "q"), Some(0));
    let calls = h.pending_http_calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(
        (c.cluster.as_str(), c.root_context, c.timeout_ms),
        ("collector", 1, 100)
    );
    assert_eq!(c.header(":path"), Some("/v1"));
    assert_eq!(c.body, b"v1");

    h.answer(c.token, 202, b"ok").unwrap();
    assert_eq!(messages(&mut h), ["2", "0", "202", "0", "ok", "0", ""]);
    // Nothing ticks any more.
    h.advance(1000).unwrap();
    assert_eq!(messages(&mut h), Vec::<String>::new());
    assert!(matches!(
        h.answer(c.token, 200, b""),
        Err(HostError::Usage(_))
    ));
}

#[test]
fn a_failed_call_has_no_headers_and_a_broken_connection_status() {
    let mut h = probe();
    h.request(Req::get("/p")).unwrap();
    h.advance(5).unwrap();
    h.take_logs();
    let token = h.pending_http_calls()[0].token;
    h.fail(token).unwrap();
    // 0 headers; no call-response map (BadArgument) or body (NotFound); status 11
    // ('0' + 11 = ';') with the message "reset".
    assert_eq!(messages(&mut h), ["0", "2", "", "1", "", ";", "reset"]);
}

#[test]
fn restricted_hostcalls_during_initialize_trap() {
    let wat = r#"(module
      (import "env" "proxy_get_property" (func $p (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_initialize") (drop (call $p (i32.const 0) (i32.const 0) (i32.const 8) (i32.const 12)))))"#;
    match Host::load_bytes(wat.as_bytes()).unwrap().configure("{}") {
        Err(HostError::Trap {
            callback, message, ..
        }) => {
            assert_eq!(callback, "_initialize");
            assert!(
                message.starts_with("proxy_get_property called during _initialize"),
                "{message}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a restricted hostcall was allowed"),
    }
}

#[test]
fn grpc_calls_are_recorded_and_answered() {
    let wat = r#"(module
      (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
      (import "env" "proxy_grpc_call" (func $grpc (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
      (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
      (memory (export "memory") 2)
      (global $heap (mut i32) (i32.const 65536))
      (data (i32.const 1024) "collector")
      (data (i32.const 1040) "nowhere")
      (data (i32.const 1056) "pkg.Svc")
      (data (i32.const 1072) "Call")
      (data (i32.const 1088) "req")
      (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
        (local $p i32)
        (local.set $p (global.get $heap))
        (global.set $heap (i32.add (global.get $heap) (local.get $n)))
        (local.get $p))
      (func $st (param $s i32)
        (i32.store8 (i32.const 0) (i32.add (i32.const 48) (local.get $s)))
        (drop (call $proxy_log (i32.const 2) (i32.const 0) (i32.const 1))))
      (func $buf (drop (call $proxy_log (i32.const 2) (i32.load (i32.const 8)) (i32.load (i32.const 12)))))
      (func (export "_initialize"))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_configure") (param i32 i32) (result i32)
        (call $st (call $grpc (i32.const 1040) (i32.const 7) (i32.const 1056) (i32.const 7) (i32.const 1072) (i32.const 4)
                              (i32.const 0) (i32.const 0) (i32.const 1088) (i32.const 3) (i32.const 50) (i32.const 16)))
        (call $st (call $grpc (i32.const 1024) (i32.const 9) (i32.const 1056) (i32.const 7) (i32.const 1072) (i32.const 4)
                              (i32.const 0) (i32.const 0) (i32.const 1088) (i32.const 3) (i32.const 50) (i32.const 16)))
        (call $st (call $grpc (i32.const 1024) (i32.const 9) (i32.const 1056) (i32.const 7) (i32.const 1072) (i32.const 4)
                              (i32.const 0) (i32.const 0) (i32.const 1088) (i32.const 3) (i32.const 50) (i32.const 16)))
        (i32.const 1))
      (func (export "proxy_on_grpc_receive") (param $root i32) (param $token i32) (param $size i32)
        (call $st (call $get_buffer (i32.const 5) (i32.const 0) (i32.const -1) (i32.const 8) (i32.const 12)))
        (call $buf))
      (func (export "proxy_on_grpc_close") (param $root i32) (param $token i32) (param $code i32)
        (call $st (local.get $code))
        (drop (call $get_status (i32.const 16) (i32.const 8) (i32.const 12)))
        (call $buf)))"#;
    let mut h = Host::load_bytes(wat.as_bytes())
        .unwrap()
        .clusters(&["collector"])
        .configure("{}")
        .unwrap();
    // An unknown upstream is not a cluster, and not a parseable GrpcService either.
    assert_eq!(messages(&mut h), ["4", "0", "0"]);
    let calls = h.pending_grpc_calls();
    assert_eq!(calls.len(), 2);
    let c = &calls[0];
    assert_eq!(
        (
            c.upstream.as_slice(),
            c.service.as_str(),
            c.method.as_str(),
            c.message.as_slice(),
            c.root_context
        ),
        (&b"collector"[..], "pkg.Svc", "Call", &b"req"[..], 1)
    );
    h.answer_grpc(calls[0].token, b"resp").unwrap();
    assert_eq!(messages(&mut h), ["0", "resp"]);
    h.fail_grpc(calls[1].token, 14, "unavailable").unwrap();
    assert_eq!(messages(&mut h), [">", "unavailable"]);
    assert!(h.pending_grpc_calls().is_empty());
}

#[test]
fn workers_share_queues_data_and_stats() {
    let mut h = Host::load_bytes(PROBE.as_bytes())
        .unwrap()
        .workers(2)
        .clusters(&["collector"])
        .plugin("probe", "probe_root", b"cfg".to_vec())
        .start()
        .unwrap();
    h.request(Req::get("/p")).unwrap();
    h.request(Req::get("/p").on_worker(1)).unwrap();
    h.take_logs();
    h.advance(5).unwrap();
    let logs = h.take_logs();
    // Worker 0 registered "q" first, so both workers' items are delivered to worker 0.
    let items: Vec<usize> = logs
        .iter()
        .filter(|l| l.message == "item")
        .map(|l| l.worker)
        .collect();
    assert_eq!(items, vec![0, 0]);
    // One stat, incremented by both VMs; one shared-data entry, written twice.
    assert_eq!(h.metric("m"), Some(10));
    assert_eq!(h.shared_data("meshtrace", b"k"), Some((b"v1".to_vec(), 2)));
    let calls = h.pending_http_calls();
    assert_eq!(
        calls.iter().map(|c| c.worker).collect::<Vec<_>>(),
        vec![0, 1]
    );
}

#[test]
fn a_trap_mid_request_fails_the_vm() {
    let wat = r#"(module
      (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "panicked at src/glue/mod.rs:9:9: index out of bounds")
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
      (func (export "_initialize"))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (drop (call $log (i32.const 5) (i32.const 16) (i32.const 52)))
        unreachable))"#;
    let mut h = Host::load_bytes(wat.as_bytes())
        .unwrap()
        .configure("{}")
        .unwrap();
    match h.request(Req::get("/")) {
        Err(HostError::Trap {
            callback, message, ..
        }) => {
            assert_eq!(callback, "proxy_on_request_headers");
            assert_eq!(
                message,
                "panicked at src/glue/mod.rs:9:9: index out of bounds"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // Envoy never calls into a failed VM again.
    assert_eq!(
        h.request(Req::get("/")),
        Err(HostError::VmFailed {
            worker: 0,
            message: "panicked at src/glue/mod.rs:9:9: index out of bounds".into()
        })
    );
}

#[test]
fn environ_comes_from_the_vm_config_only() {
    let wat = r#"(module
      (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
      (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 2)
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 65536))
      (func (export "_initialize")
        (drop (call $sizes (i32.const 0) (i32.const 4)))
        (drop (call $get (i32.const 16) (i32.const 1024)))
        ;; The whole environment block, then the second entry through its pointer.
        (drop (call $log (i32.const 2) (i32.const 1024) (i32.load (i32.const 4))))
        (drop (call $log (i32.const 2) (i32.load (i32.const 20)) (i32.const 13))))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (drop (call $get_buffer (i32.const 6) (i32.const 0) (i32.const -1) (i32.const 8) (i32.const 12)))
        (drop (call $log (i32.const 2) (i32.load (i32.const 8)) (i32.load (i32.const 12))))
        (i32.const 1))
      (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1)))"#;
    let mut h = Host::load_bytes(wat.as_bytes())
        .unwrap()
        .env("OTEL_SERVICE_NAME", "mesh")
        .env("REGION", "eu-west1")
        .vm_config("vm-cfg")
        .configure("{}")
        .unwrap();
    assert_eq!(
        messages(&mut h),
        [
            "OTEL_SERVICE_NAME=mesh\0REGION=eu-west1\0",
            "REGION=eu-wes",
            "vm-cfg"
        ]
    );
}

/// A filter that replies locally to `/deny`, pauses `/hold`, and logs each callback it gets.
const GATE: &str = r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (data (i32.const 1024) ":path")
  (data (i32.const 1040) "denied")
  (data (i32.const 1056) "\01\00\00\00\06\00\00\00\02\00\00\00x-gate\00no\00")
  (data (i32.const 1100) "req")
  (data (i32.const 1104) "resp")
  (data (i32.const 1108) "log")
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func $say (param $p i32) (param $n i32) (drop (call $log (i32.const 2) (local.get $p) (local.get $n))))
  (func (export "_initialize"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $say (i32.const 1100) (i32.const 3))
    (drop (call $get_value (i32.const 0) (i32.const 1024) (i32.const 5) (i32.const 8) (i32.const 12)))
    ;; "/deny": a 403 with a body and a header; "/hold": pause; anything else continues.
    (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 8)) (i32.const 1))) (i32.const 100))
      (then (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 1040) (i32.const 6)
                               (i32.const 1056) (i32.const 24) (i32.const -1)))))
    (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 8)) (i32.const 1))) (i32.const 104)))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $say (i32.const 1104) (i32.const 4))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32) (call $say (i32.const 1108) (i32.const 3)))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))"#;

#[test]
fn local_replies_and_pauses() {
    let mut h = Host::load_bytes(GATE.as_bytes())
        .unwrap()
        .configure("{}")
        .unwrap();
    h.take_logs();

    let ex = h.request(Req::get("/deny")).unwrap();
    assert_eq!(ex.upstream, None);
    let local = ex.local_response.unwrap();
    assert_eq!(
        (local.status, local.body.as_slice(), local.grpc_status),
        (403, &b"denied"[..], -1)
    );
    assert_eq!(local.headers.get("x-gate"), Some("no"));
    // The local reply runs through the response path.
    assert_eq!(ex.downstream_headers.get(":status"), Some("403"));
    assert_eq!(
        ex.downstream_headers.get("content-type"),
        Some("text/plain")
    );
    assert_eq!(messages(&mut h), ["req", "resp", "log"]);

    let ex = h.request(Req::get("/hold")).unwrap();
    assert_eq!(
        (ex.upstream, ex.paused_in),
        (None, Some("proxy_on_request_headers"))
    );
    assert_eq!(messages(&mut h), ["req", "log"]);

    let ex = h.request(Req::get("/go")).unwrap();
    assert_eq!(ex.upstream_header(":path"), Some("/go"));
    assert_eq!(messages(&mut h), ["req", "resp", "log"]);
}
