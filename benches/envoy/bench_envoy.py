#!/usr/bin/env python3
"""`make bench-envoy`: real Envoy in every mode, interleaved and repeated, in one run.

Modes (all up for the whole run, taking turns under load, so drift on a shared machine hits every
mode alike):
  none        no filter
  floor       a no-op wasm filter that reads every request and response header
              (benches/noop-filter): the floor of any wasm filter
  mt100       meshtrace, default config, every request sampled (a sampled traceparent on each)
  singleton   mt100 deployed with one exporter per Envoy (README, filter/envoy/singleton.yaml):
              the filter in `exporter.mode` shared_queue hands its spans to a shared queue, and
              an `envoy.bootstrap.wasm` singleton running the same .wasm (mode singleton)
              batches and exports them from Envoy's main thread
  mt1         meshtrace in production shape: `sampling.ratio` 0.01, requests carry no context
  tracer      Envoy's own OpenTelemetry tracer (OTLP/gRPC, its default flush every 5 spans)
  probe       the no-op filter configured to make exactly the host calls a sampled meshtrace
              request makes (request headers, inject `traceparent`, a clock read and three
              properties at request time, three properties and a clock read in `on_log`;
              not the amortized export call) and nothing else: the best req/s and CPU per
              request any filter recording these facts can get (`--probe` adds others)
  floor-mtls  the no-op filter on the Istio-like inbound sidecar below: the floor of `full`
  full        meshtrace with an Istio-like config on an Istio-like inbound sidecar: Istio node
              metadata, an mTLS listener requiring the caller's SPIFFE certificate (identity),
              Istio's route and cluster names, a real upstream, traffic rules, baggage and request
              and response header capture, and one request in four a gRPC call (Trailers-Only
              reply). Requests come through a caller sidecar (plain in, mTLS out) and go to an
              app, both served by a helper Envoy on the load core; compare `full` only with
              `floor-mtls`, which has the same path. On 2 cores the helper and wrk saturate
              the load core first, so the measured worker is not saturated in these two modes:
              read them by worker CPU per request (which also carries the per-wakeup cost of a
              worker that is not saturated), not by req/s.

Envoy runs with one worker, the whole process pinned to CPU 0, so the singleton exporter's main
thread shares the worker's CPU (`--worker-alone` leaves CPU 0 to the worker thread and moves
Envoy's other threads to CPU 1: a second data point, closer to a gateway with spare cores). wrk,
the OTLP sink (at nice 19 in the fixed-rate phase, so that decoding exports does not delay the
load generator: see `lowest_priority`) and the helper Envoy run on CPU 1. Latency percentiles
come from wrk's own histogram through its Lua `done()` hook (p50, p90, p99, p99.9; wrk measures
from the request's send, so under a closed loop of `-c` connections the tail is what a request
queued behind a stall sees). Per-round paired ratios (mode/floor and mode/tracer within a round)
are the steadier statistic on a shared machine: their median and range are printed beside the
medians. `--markdown` prints a ready-to-paste table for the README. Under `chrt -f` (a busy
machine), pass `--sink-nice 0`: the real-time load generator already comes first, and a sink at
nice 19 behind other work starves, so that exports time out and spans are dropped.

The saturated phase above is a closed loop: at saturation a request's latency is about
connections / throughput (Little's law), so its p99 against the floor mostly restates the
throughput ratio. The fixed-rate phase that follows drives every mode at the same offered rate
(`--rate`, by default `--rate-fraction` of the slowest mode's saturated req/s in each group, the
mTLS modes being their own group), open loop, from `bridge-load --target` (linkerd-bridge's
load generator, `--bridge-load`): a pacing thread sends each request at its due time, and a
request's latency is what a generator keeping that schedule would see (the wait for its
connection, still busy with the previous request, plus its own round trip), so a stall counts
for every request it delays (no coordinated omission). It sends the same requests as wrk. Its
table gives p50 to p99.9 at that rate with per-round paired p99 and p99.9 ratios against the
floor and the tracer; `--rate 0` skips it.

Each round also reads the worker thread's CPU time from /proc: CPU us per request does not
count time the worker waited for a CPU, so it is the steadier cost on a shared machine (the
whole process's is printed beside it: the singleton exports from the main thread). Exports are
counted from each meshtrace Envoy's own stats at the end (requests, mean body bytes, spans
dropped), so the export pattern behind a tail is visible in the same run, and checked once the
exporters have flushed: every meshtrace mode must have exported every span it recorded (in the
modes sampling every request, one per request Envoy served) and dropped none, and the sink must
have received exactly what the Envoys sent; the script fails otherwise, after its report.
`--loop-stats` adds Envoy's event-loop iteration times (a stall shows there whatever its
cause). `--variant`, `--variant-singleton`, `--variant-wasm` and `--variant-wasm-full` add A/B
modes (another config or build) to the run; `--probe` adds no-op filter modes making other host
calls (its configuration is in benches/noop-filter/src/lib.rs).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PERCENTILES = (50, 90, 99, 99.9)

# wrk's `done()` hook prints the percentiles wrk's `--latency` does not (p99.9) from the same
# histogram, in microseconds, one per line for the parser below.
DONE_LUA = """
done = function(summary, latency, requests)
  for _, p in ipairs({ 50, 90, 99, 99.9 }) do
    io.write(string.format("bench-latency %g %d\\n", p, latency:percentile(p)))
  end
  io.write(string.format("bench-summary %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout))
end
"""

# The Istio-like traffic: three plain requests, then one gRPC call. The call carries no message:
# the app answers from its route without reading a body, and over HTTP/1.1 an unread body would
# cost a new upstream connection per call. Built in `init`, once wrk has set the `Host` header.
MIXED_LUA = """
local plain, call
init = function(args)
  plain = wrk.format("GET", "/api/users/42", {
    ["Host"] = "reviews.bookinfo:9080",
    ["traceparent"] = "%s",
    ["baggage"] = "tenant=acme,session=s-1",
    ["x-canary"] = "true",
    ["x-tenant"] = "acme",
    ["user-agent"] = "bench/1.0 (wrk)",
  })
  call = wrk.format("POST", "/shop.v1.Cart/GetCart", {
    ["Host"] = "reviews.bookinfo:9080",
    ["traceparent"] = "%s",
    ["content-type"] = "application/grpc",
    ["te"] = "trailers",
    ["x-tenant"] = "acme",
  })
end
local n = 0
request = function()
  n = n + 1
  if n %% 4 == 0 then return call end
  return plain
end
""" % (TRACEPARENT, TRACEPARENT)

MESHTRACE_100 = {"collector": {"cluster": "otel_collector"}, "service_name": "bench"}
# The host calls a sampled meshtrace request makes with MESHTRACE_100 on a plain listener
# (host-test/tests/harness_host_calls.rs, REUSED_CONNECTION; filter/src/glue/mod.rs), on the
# no-op filter: it reads no response headers, as meshtrace does not by default.
PROBE_MESHTRACE = {
    "response_headers": False,
    "set_request_header": "traceparent",
    "request_properties": ["connection.id", "xds.cluster_name", "xds.route_name"],
    "request_clock_reads": 1,
    "log_properties": ["response.code", "response.flags", "response.backend_latency"],
    "log_clock_reads": 1,
}
MESHTRACE_1 = {**MESHTRACE_100, "sampling": {"ratio": 0.01}}
# One exporter per Envoy (README, filter/envoy/singleton.yaml): the filter hands its encoded spans
# to a shared queue, and a bootstrap singleton running the same .wasm on Envoy's main thread drains
# it, batches and exports. Both get the same config beside their `exporter.mode`.
SHARED_QUEUE = {"exporter": {"mode": "shared_queue"}}
SINGLETON = {"exporter": {"mode": "singleton"}}
# An Istio sidecar's config with every feature family that costs on the sampled path on: traffic
# rules, baggage attributes, header capture both ways, route templates; identity is on by
# default (the listener is mTLS); the service name comes from the Istio node metadata.
MESHTRACE_FULL = {
    "collector": {"cluster": "otel_collector"},
    "traffic": {
        "rules": [
            {"match": "header", "name": "x-canary", "value": "true", "release": "canary",
             "canary": True},
            {"match": "header", "name": "x-ab-group", "value": "b", "ab_group": "B"},
        ],
    },
    "baggage": {"attribute_keys": ["tenant"]},
    "capture": {"request_headers": ["x-tenant", "x-request-id"],
                "response_headers": ["x-app-version"]},
    "routes": ["/api/users/{id}"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wasm_filter(name, path, config):
    cfg = json.dumps(config, separators=(",", ":")).replace("'", "''")
    return f"""          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}
                failure_policy: FAIL_OPEN
                vm_config:
                  vm_id: {name}
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "{path}" }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{cfg}'"""


def singleton_service(path, config):
    """The `envoy.bootstrap.wasm` singleton of filter/envoy/singleton.yaml, exporting with `config`.

    Its vm_id is the filter's default `exporter.singleton_vm_id`."""
    cfg = json.dumps(config, separators=(",", ":")).replace("'", "''")
    return f"""bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      name: meshtrace_exporter
      root_id: meshtrace_exporter
      vm_config:
        vm_id: meshtrace_exporter
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: "{path}" }} }}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{cfg}'
"""


def otel_tracing():
    # Envoy's tracer as users deploy it (and as peers.md §6 measured it): OTLP/gRPC through
    # Envoy's own gRPC client, with its default flush of every 5 spans.
    return """          tracing:
            random_sampling: { value: 100 }
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: bench
                grpc_service:
                  envoy_grpc: { cluster_name: otel_collector_grpc }
                  timeout: 1s"""


def merged(base, extra):
    """`base` with `extra` merged in, objects key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Mode:
    """One Envoy under test: `mesh` modes use the Istio-like sidecar and the caller path.

    `bootstrap` is the config's `bootstrap_extensions` (the singleton exporter) or empty;
    `all_sampled`: a meshtrace mode that records every request it serves, so that the spans it
    exports must equal the requests Envoy counted."""

    def __init__(self, key, label, filters="", tracing="", mesh=False, traceparent=True,
                 meshtrace=False, bootstrap="", all_sampled=None):
        self.key, self.label = key, label
        self.filters, self.tracing, self.bootstrap = filters, tracing, bootstrap
        self.mesh, self.traceparent, self.meshtrace = mesh, traceparent, meshtrace
        self.all_sampled = meshtrace and traceparent if all_sampled is None else all_sampled
        self.floor = "floor-mtls" if mesh else "floor"


def singleton_mode(key, label, wasm, config):
    """meshtrace with `config` in shared_queue mode, and its singleton exporting with `config`."""
    return Mode(key, label, wasm_filter("meshtrace", wasm, merged(config, SHARED_QUEUE)),
                bootstrap=singleton_service(wasm, merged(config, SINGLETON)), meshtrace=True,
                all_sampled="sampling" not in config)


def modes(args):
    w = args.wasm
    all_modes = [
        Mode("none", "no filter"),
        Mode("floor", "no-op wasm (reads all headers)", wasm_filter("noop", args.noop, {})),
        Mode("mt100", "meshtrace 100% sampled", wasm_filter("meshtrace", w, MESHTRACE_100),
             meshtrace=True),
        singleton_mode("singleton", "meshtrace 100%, singleton exporter", w, MESHTRACE_100),
        Mode("mt1", "meshtrace 1%, no incoming context", wasm_filter("meshtrace", w, MESHTRACE_1),
             traceparent=False, meshtrace=True),
        Mode("tracer", "Envoy OpenTelemetry tracer", tracing=otel_tracing()),
        Mode("probe", "no-op + meshtrace's host calls",
             wasm_filter("noop", args.noop, PROBE_MESHTRACE)),
        Mode("floor-mtls", "no-op wasm, Istio-like mTLS sidecar", wasm_filter("noop", args.noop, {}),
             mesh=True),
        Mode("full", "meshtrace full-featured, mTLS sidecar",
             wasm_filter("meshtrace", w, MESHTRACE_FULL), mesh=True, meshtrace=True),
    ]
    for spec in args.variant:
        label, _, cfg = spec.partition("=")
        extra = json.loads(cfg)
        all_modes.append(Mode(f"v:{label}", f"meshtrace 100% {label}",
                              wasm_filter("meshtrace", w, merged(MESHTRACE_100, extra)),
                              meshtrace=True, all_sampled="sampling" not in extra))
    for spec in args.variant_singleton:
        label, _, cfg = spec.partition("=")
        all_modes.append(singleton_mode(f"s:{label}", f"meshtrace 100% singleton {label}", w,
                                        merged(MESHTRACE_100, json.loads(cfg))))
    for spec in args.variant_wasm:
        label, _, path = spec.partition("=")
        all_modes.append(Mode(f"w:{label}", f"meshtrace 100% {label}",
                              wasm_filter("meshtrace", os.path.abspath(path), MESHTRACE_100),
                              meshtrace=True))
    for spec in args.variant_wasm_full:
        label, _, path = spec.partition("=")
        all_modes.append(Mode(f"f:{label}", f"meshtrace full-featured {label}",
                              wasm_filter("meshtrace", os.path.abspath(path), MESHTRACE_FULL),
                              mesh=True, meshtrace=True))
    for spec in args.probe:
        label, _, cfg = spec.partition("=")
        all_modes.append(Mode(f"p:{label}", f"no-op + {label}",
                              wasm_filter("noop", args.noop, json.loads(cfg))))
    wanted = set(args.modes.split(",")) if args.modes else None
    if wanted is not None:
        # A misspelt key would otherwise leave only the floors and the tracer, silently.
        unknown = sorted(wanted - {m.key for m in all_modes})
        if unknown:
            raise SystemExit(f"--modes: unknown mode(s) {', '.join(unknown)}; "
                             f"known: {', '.join(m.key for m in all_modes)}")
        # The floors and the tracer are what the others are read against.
        if "full" in wanted or args.variant_wasm_full:
            wanted.add("floor-mtls")
        wanted |= {"floor", "tracer"}
        all_modes = [m for m in all_modes
                     if m.key in wanted or m.key[:2] in ("v:", "w:", "f:", "p:", "s:")]
    return all_modes


def lowest_priority(pid, nice):
    """Makes every thread of process `pid` an ordinary thread at `nice` (19: the lowest priority).

    For the OTLP sink in the fixed-rate phase: it shares the load core with the load generator
    only for want of cores (a real collector runs elsewhere), and decoding one 64 KiB export
    takes it hundreds of microseconds; at equal priority that time is taken from the generator,
    whose late reads then show as the traced modes' tail. At nice 19 (and never real-time,
    should the bench run under `chrt`) it runs when the generator waits, which at a fixed rate
    below saturation leaves it most of the core. Not in the saturated phase: there wrk and the
    mTLS modes' helper Envoy can fill the load core, and a starved sink would drop spans. On a
    machine busy with other work even the fixed-rate phase can starve it (Envoy's tracer, which
    flushes every 5 spans over one gRPC stream, then shows the sink's delays): `--sink-nice`."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except OSError as e:
            print(f"  warning: the sink's thread {tid} keeps its priority: {e}", file=sys.stderr)


def render(template, values):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", str(v))
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    if left:
        raise SystemExit(f"{template}: placeholders left unfilled: {left}")
    return text


class Envoy:
    def __init__(self, binary, name, config_text, cpu, workdir):
        self.name = name
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower())
        cfg = os.path.join(workdir, f"{slug}.yaml")
        with open(cfg, "w") as f:
            f.write(config_text)
        self.log = os.path.join(workdir, f"{slug}.log")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), binary, "-c", cfg, "--concurrency", "1",
             "--disable-hot-restart", "--base-id", str(free_port()), "-l", "warning",
             "--log-path", self.log],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name}: Envoy exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name}: Envoy not ready after {timeout}s:\n{self.tail()}")

    def stats(self, prefix):
        """Counter and gauge values whose names start with `prefix`."""
        url = f"http://127.0.0.1:{self.admin}/stats?filter=^{prefix}"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return {k: int(v) for k, v in re.findall(r"^(\S+): (\d+)$", text, re.M)}

    def threads(self):
        """(thread id, name) of every thread of this Envoy."""
        task = f"/proc/{self.proc.pid}/task"
        out = []
        for tid in os.listdir(task):
            try:
                with open(f"{task}/{tid}/comm") as f:
                    out.append((int(tid), f.read().strip()))
            except OSError:
                continue  # the thread has exited
        return out

    def worker_cpu_s(self):
        """CPU seconds the worker thread (`wrk:worker_0`) has used: user plus system."""
        for tid, name in self.threads():
            if name == "wrk:worker_0":
                try:
                    return cpu_s(f"/proc/{self.proc.pid}/task/{tid}/stat")
                except OSError:
                    break
        return float("nan")

    def process_cpu_s(self):
        """CPU seconds every thread of this Envoy has used (the main thread's exports included)."""
        return cpu_s(f"/proc/{self.proc.pid}/stat")

    def split_threads(self, worker_cpu, other_cpu, nice):
        """Pins the worker thread alone to `worker_cpu` and every other thread (main, with the
        singleton exporter; stats flush; file flush; ...) to `other_cpu`, as ordinary threads at
        `nice` (never real-time, like the sink: see `lowest_priority`). Called again before each
        phase, so that threads started later move too."""
        for tid, name in self.threads():
            try:
                if name == "wrk:worker_0":
                    os.sched_setaffinity(tid, {worker_cpu})
                else:
                    os.sched_setaffinity(tid, {other_cpu})
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError as e:
                print(f"  warning: {self.name}: thread {tid} ({name}) not moved: {e}",
                      file=sys.stderr)

    def loop_quantiles(self):
        """The worker's event-loop iteration time quantiles, cumulative over the run."""
        url = f"http://127.0.0.1:{self.admin}/stats?filter=worker_0.dispatcher.loop_duration_us"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return {p: float(v) for p, v in re.findall(r"(P[\d.]+)\([^,]+,([\d.e+]+)\)", text)}

    def tail(self, lines=20):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_s(stat_path):
    """User plus system CPU seconds from a /proc `stat` file (a process's or a thread's)."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_certs(workdir):
    """A CA, and server and client certificates with SPIFFE URI SANs (as Istio issues them)."""
    d = os.path.join(workdir, "certs")
    os.makedirs(d)

    def run(*cmd):
        subprocess.run(["openssl", *cmd], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench CA")
    for name, sa in (("server", "reviews"), ("client", "productpage")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName=DNS:localhost,URI:spiffe://cluster.local/ns/bookinfo/sa/{sa}\n")
        run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/O=cluster.local/CN={sa}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    return d


def helper_config(admin, app_port, callers, cert_dir):
    """The helper Envoy: the app and one caller-sidecar listener per mesh mode."""
    listeners, clusters = [], []
    for key, port, target in callers:
        name = "to_" + re.sub(r"[^a-z0-9]+", "_", key)
        listeners.append(f"""  - name: caller_{name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: caller_{name}
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: out
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {name}, timeout: 0s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router""")
        clusters.append(f"""  - name: {name}
    type: STATIC
    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.9080_._.reviews.bookinfo.svc.cluster.local
        common_tls_context:
          tls_params: {{ tls_maximum_protocol_version: TLSv1_3 }}
          tls_certificates:
          - certificate_chain: {{ filename: "{cert_dir}/client.crt" }}
            private_key: {{ filename: "{cert_dir}/client.key" }}
          validation_context:
            trusted_ca: {{ filename: "{cert_dir}/ca.crt" }}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {target} }} }} }}""")
    return render("bench-helper.yaml", {
        "ADMIN_PORT": admin, "APP_PORT": app_port,
        "CALLERS": "\n".join(listeners), "CALLER_CLUSTERS": "\n".join(clusters),
    })


def wrk(port, seconds, connections, cpu, mode, scripts):
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if mode.mesh:
        cmd += ["-s", scripts["mixed"]]
    else:
        cmd += ["-s", scripts["done"]]
        if mode.traceparent:
            cmd += ["-H", f"traceparent: {TRACEPARENT}"]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/api/users/42"],
                         capture_output=True, text=True, check=True).stdout
    lat = {float(p): int(v) for p, v in re.findall(r"^bench-latency (\S+) (\d+)$", out, re.M)}
    requests, duration_us, errors = map(int, re.search(r"^bench-summary (\d+) (\d+) (\d+)$", out,
                                                       re.M).groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or non2xx:
        print(f"  warning: {mode.label}: {errors} errors, "
              f"{non2xx.group(1) if non2xx else 0} non-2xx responses", file=sys.stderr)
    return {"rps": requests / (duration_us / 1e6), "requests": requests,
            **{p: lat.get(p) for p in PERCENTILES}}


def requests_json(mode, port):
    """The requests wrk sends to `mode`, as `bridge-load --requests` reads them."""
    if mode.mesh:
        host = "reviews.bookinfo:9080"
        plain = {"method": "GET", "path": "/api/users/42", "headers": [
            ["host", host], ["traceparent", TRACEPARENT], ["baggage", "tenant=acme,session=s-1"],
            ["x-canary", "true"], ["x-tenant", "acme"], ["user-agent", "bench/1.0 (wrk)"]]}
        call = {"method": "POST", "path": "/shop.v1.Cart/GetCart", "headers": [
            ["host", host], ["traceparent", TRACEPARENT], ["content-type", "application/grpc"],
            ["te", "trailers"], ["x-tenant", "acme"]]}
        return [plain, plain, plain, call]
    headers = [["host", f"127.0.0.1:{port}"]]
    if mode.traceparent:
        headers.append(["traceparent", TRACEPARENT])
    return [{"method": "GET", "path": "/api/users/42", "headers": headers}]


def paced(loader, port, rate, seconds, connections, cpu, mode, workdir):
    """One open-loop run at `rate` req/s: latencies from intended start (see the docstring)."""
    spec = os.path.join(workdir, f"requests-{port}.json")
    with open(spec, "w") as f:
        json.dump(requests_json(mode, port), f)
    out = subprocess.run(
        ["taskset", "-c", str(cpu), loader, "--target", f"127.0.0.1:{port}", "--requests", spec,
         "--rate", str(int(rate)), "--seconds", str(seconds), "--connections", str(connections)],
        capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    if res["errors"]:
        print(f"  warning: {mode.label}: {res['errors']} failed requests at a fixed rate",
              file=sys.stderr)
    if res["achieved_rps"] < 0.97 * rate:
        print(f"  warning: {mode.label}: {res['achieved_rps']:.0f} req/s achieved of {rate:.0f} "
              f"offered: the rate is above what this mode sustains", file=sys.stderr)
    return {"rps": res["achieved_rps"], "requests": res["requests"], "queued": res["queued"],
            "max": res["max"], **{p: res["p99.9" if p == 99.9 else f"p{p}"] for p in PERCENTILES}}


def spread(values):
    v = sorted(values)
    return statistics.median(v), v[0], v[-1]


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            model = m.group(1).strip() if m else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}"


def envoy_version(binary):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"version: \S+/(\d+\.\d+\.\d+)", out)
        return m.group(1) if m else "?"
    except OSError:
        return "?"


DROPS = ("queue_full", "too_large", "export_failed")


def sink_line(path):
    """The sink's last line: it prints a running count each second (`N spans in M requests`)."""
    with open(path) as f:
        lines = f.read().splitlines()
    return lines[-1] if lines else "nothing"


def served(envoy):
    """Requests this Envoy's HTTP connection managers counted, the admin's aside."""
    return sum(v for k, v in envoy.stats("http.").items()
               if k.endswith(".downstream_rq_total") and not k.startswith("http.admin."))


def check_spans(selected, envoys, sink_log, timeout=15):
    """Waits (up to `timeout` s) for every exporter to flush, then checks that no span was lost.

    Per meshtrace mode, from its Envoy's stats: nothing dropped, every recorded span (sampled or
    kept) exported, and in a mode that records every request (`Mode.all_sampled`) as many spans
    as requests Envoy served (warm-up and both phases). Across the run: the sink received
    exactly the spans the meshtrace Envoys exported plus those Envoy's tracer sent. The filter
    pushes its counters on its tick and Envoy's tracer flushes on a timer, hence the wait.
    Returns each meshtrace mode's stats and the check."""
    meshtrace = [m for m in selected if m.meshtrace]
    deadline = time.time() + timeout
    while True:
        exports = {m.key: envoys[m.key].stats("wasmcustom.meshtrace.") for m in meshtrace}
        modes = {}
        for m in meshtrace:
            def get(name, s=exports[m.key]):
                return s.get(f"wasmcustom.meshtrace.{name}", 0)
            recorded = get("spans_sampled") + get("spans_kept")
            row = {"served": served(envoys[m.key]) if m.all_sampled else None,
                   "recorded": recorded, "exported": get("spans_exported"),
                   "drops": {d: get(f"spans_dropped.{d}") for d in DROPS}}
            row["dropped"] = sum(row["drops"].values())
            row["ok"] = row["dropped"] == 0 and row["exported"] == recorded and \
                row["served"] in (None, recorded)
            modes[m.key] = row
        tracer = envoys["tracer"].stats("tracing.opentelemetry.").get(
            "tracing.opentelemetry.spans_sent", 0) if "tracer" in envoys else 0
        sent = sum(r["exported"] for r in modes.values()) + tracer
        line = re.match(r"(\d+) spans in", sink_line(sink_log))
        received = int(line.group(1)) if line else None
        ok = all(r["ok"] for r in modes.values()) and received == sent
        if ok or time.time() > deadline:
            return exports, {"ok": ok, "modes": modes, "sink": (received, sent, tracer)}
        time.sleep(1)


def print_spans_check(check, by_key):
    if not check["modes"]:
        return
    print("\nspans check (after the exporters flushed): every request recorded is exported, "
          "none dropped")
    print(f"{'mode':<40} {'served':>9} {'recorded':>9} {'exported':>9} {'dropped':>8}  check")
    for k, r in check["modes"].items():
        rq = "-" if r["served"] is None else r["served"]
        print(f"{by_key[k].label:<40} {rq:>9} {r['recorded']:>9} {r['exported']:>9} "
              f"{r['dropped']:>8}  {'ok' if r['ok'] else 'SPANS LOST'}"
              + "".join(f", {n} {d}" for d, n in r["drops"].items() if n)
              + (f" ({r['saturated_drops']} of them in the saturated phase)"
                 if r["dropped"] and "saturated_drops" in r else ""))
    if check["sink"]:
        received, sent, tracer = check["sink"]
        print(f"otlp-sink received {received} spans; meshtrace exported {sent - tracer} and "
              f"Envoy's tracer sent {tracer}: {'ok' if received == sent else 'MISMATCH'}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--envoy", required=True)
    p.add_argument("--wasm", required=True, help="dist/meshtrace.wasm")
    p.add_argument("--noop", required=True, help="the no-op filter's .wasm")
    p.add_argument("--sink", required=True, help="the otlp-sink binary")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--modes", default="",
                   help="comma-separated mode keys (default all; floor, floor-mtls and tracer "
                        "are always added)")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=JSON",
                   help="add a meshtrace 100%% mode with JSON merged into its config, e.g. "
                        "'batch256={\"batch\":{\"max_batch\":256}}' (repeatable)")
    p.add_argument("--variant-singleton", action="append", default=[], metavar="LABEL=JSON",
                   help="add a singleton-exporter mode with JSON merged into both the filter's "
                        "and the singleton's config, e.g. "
                        "'gzip={\"collector\":{\"compression\":\"gzip\"}}' (repeatable)")
    p.add_argument("--variant-wasm", action="append", default=[], metavar="LABEL=PATH",
                   help="add a meshtrace 100%% mode running another build (repeatable)")
    p.add_argument("--variant-wasm-full", action="append", default=[], metavar="LABEL=PATH",
                   help="add a full-featured mode running another build (repeatable)")
    p.add_argument("--probe", action="append", default=[], metavar="LABEL=JSON",
                   help="add a no-op filter mode making the host calls JSON names, e.g. "
                        "'clock={\"request_clock_reads\":1}' (benches/noop-filter/src/lib.rs; "
                        "repeatable)")
    p.add_argument("--bridge-load", default="",
                   help="the bridge-load binary (linkerd-bridge), the fixed-rate phase's load "
                        "generator; without it that phase is skipped")
    p.add_argument("--rate", type=float, default=None,
                   help="the fixed-rate phase's offered req/s for every mode (default: "
                        "--rate-fraction of the slowest mode's saturated req/s, per group); "
                        "0 skips the phase")
    # Paced requests each wake the worker on their own (no batching of ready connections),
    # which measured 2-3x the saturated CPU per request: at 0.6 the worker was near saturation
    # again and the phase measured queueing, not stalls. 0.3 leaves it about half busy.
    p.add_argument("--rate-fraction", type=float, default=0.3,
                   help="the automatic fixed rate as a fraction of the slowest mode's "
                        "saturated req/s (default 0.3)")
    p.add_argument("--rate-seconds", type=int, default=0,
                   help="seconds per fixed-rate run (default --seconds)")
    p.add_argument("--sink-nice", type=int, default=19,
                   help="the OTLP sink's nice value in the fixed-rate phase (default 19, so that "
                        "it does not delay the load generator; 0 leaves it as it is)")
    p.add_argument("--markdown", action="store_true", help="also print a README-ready table")
    p.add_argument("--loop-stats", action="store_true",
                   help="turn on Envoy's dispatcher stats and print each worker's event-loop "
                        "iteration time (P99, P99.9, max): a stall shows there whatever its cause")
    p.add_argument("--worker-alone", action="store_true",
                   help="pin only the worker thread to the Envoy CPU and move every other Envoy "
                        "thread (main, where the singleton exports) to the load CPU, as ordinary "
                        "threads (at --sink-nice in the fixed-rate phase, like the sink); "
                        "by default the whole Envoy process shares the Envoy CPU")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (configs, Envoy logs) and print its path")
    args = p.parse_args()
    for tool in ("wrk", "taskset", "openssl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (make bench-envoy installs wrk; "
                             f"apt-get install -y {'util-linux' if tool == 'taskset' else tool})")
    envoy_cpu, load_cpu = (0, 1) if (os.cpu_count() or 1) > 1 else (0, 0)
    selected = modes(args)
    workdir = tempfile.mkdtemp(prefix="meshtrace-bench-envoy-")
    scripts = {"done": os.path.join(workdir, "done.lua"), "mixed": os.path.join(workdir, "mixed.lua")}
    with open(scripts["done"], "w") as f:
        f.write(DONE_LUA)
    with open(scripts["mixed"], "w") as f:
        f.write(MIXED_LUA + DONE_LUA)
    collector_ports = (free_port(), free_port())
    sink_log = open(os.path.join(workdir, "sink.log"), "w")
    sink = subprocess.Popen(
        ["taskset", "-c", str(load_cpu), args.sink, "--port", str(collector_ports[0]),
         "--grpc-port", str(collector_ports[1]), "--quiet"],
        stdout=sink_log, stderr=subprocess.STDOUT,
    )
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    sink_summary = "?"
    envoys, ports, exports, loops = {}, {}, {}, {}
    spans_check = {"ok": True, "modes": {}, "sink": None}
    try:
        cert_dir = make_certs(workdir) if any(m.mesh for m in selected) else ""
        app_port = free_port()
        callers = []
        for m in selected:
            admin, port = free_port(), free_port()
            common = {"ADMIN_PORT": admin, "LISTEN_PORT": port,
                      "COLLECTOR_PORT": collector_ports[0], "HTTP_FILTERS": m.filters}
            if m.mesh:
                text = render("bench-mesh.yaml", {**common, "CERT_DIR": cert_dir,
                                                  "APP_PORT": app_port})
                ports[m.key] = free_port()
                callers.append((m.key, ports[m.key], port))
            else:
                text = render("bench.yaml", {**common, "GRPC_COLLECTOR_PORT": collector_ports[1],
                                             "TRACING": m.tracing,
                                             "BOOTSTRAP_EXTENSIONS": m.bootstrap})
                ports[m.key] = port
            if args.loop_stats:
                text += "\nenable_dispatcher_stats: true\n"
            envoys[m.key] = Envoy(args.envoy, m.label, text, envoy_cpu, workdir)
            envoys[m.key].admin = admin
        if callers:
            admin = free_port()
            envoys["helper"] = Envoy(args.envoy, "helper",
                                     helper_config(admin, app_port, callers, cert_dir),
                                     load_cpu, workdir)
            envoys["helper"].admin = admin
        for e in envoys.values():
            e.wait_ready()

        def split(nice):
            if args.worker_alone:
                for m in selected:
                    envoys[m.key].split_threads(envoy_cpu, load_cpu, nice)

        split(0)
        # Warm every mode once (wasm compilation, connection pools, the exporters' first flush).
        for m in selected:
            wrk(ports[m.key], 1, args.connections, load_cpu, m, scripts)
        results = {m.key: [] for m in selected}
        for r in range(args.rounds):
            # Rotate the order each round so no mode always follows the same neighbour.
            order = selected[r % len(selected):] + selected[: r % len(selected)]
            for m in order:
                cpu, pcpu = envoys[m.key].worker_cpu_s(), envoys[m.key].process_cpu_s()
                res = wrk(ports[m.key], args.seconds, args.connections, load_cpu, m, scripts)
                res["cpu"] = (envoys[m.key].worker_cpu_s() - cpu) * 1e6 / res["requests"]
                res["pcpu"] = (envoys[m.key].process_cpu_s() - pcpu) * 1e6 / res["requests"]
                results[m.key].append(res)
                print(f"  round {r + 1}: {m.label:<40} {res['rps']:>8.0f} req/s  "
                      f"p99 {res[99]:>6} us  p99.9 {res[99.9]:>6} us  "
                      f"cpu {res['cpu']:>5.1f} us/req", file=sys.stderr)
        fixed, rates = {}, {}
        # Drops so far, so that the spans check can say which phase lost spans (the filter
        # pushes its counters on its tick, about every second).
        time.sleep(1.5)
        saturated_drops = {
            m.key: sum(envoys[m.key].stats("wasmcustom.meshtrace.spans_dropped.").values())
            for m in selected if m.meshtrace}
        if args.bridge_load and args.rate != 0:
            for mesh in (False, True):
                group = [m for m in selected if m.mesh == mesh]
                if group:
                    slowest = min(statistics.median(x["rps"] for x in results[m.key])
                                  for m in group)
                    rates[mesh] = args.rate or args.rate_fraction * slowest
            seconds = args.rate_seconds or args.seconds
            if args.sink_nice:
                lowest_priority(sink.pid, args.sink_nice)
            split(args.sink_nice)
            for m in selected:
                paced(args.bridge_load, ports[m.key], rates[m.mesh], 1, args.connections,
                      load_cpu, m, workdir)
            fixed = {m.key: [] for m in selected}
            for r in range(args.rounds):
                order = selected[r % len(selected):] + selected[: r % len(selected)]
                for m in order:
                    cpu, pcpu = envoys[m.key].worker_cpu_s(), envoys[m.key].process_cpu_s()
                    res = paced(args.bridge_load, ports[m.key], rates[m.mesh], seconds,
                                args.connections, load_cpu, m, workdir)
                    res["cpu"] = (envoys[m.key].worker_cpu_s() - cpu) * 1e6 / res["requests"]
                    res["pcpu"] = (envoys[m.key].process_cpu_s() - pcpu) * 1e6 / res["requests"]
                    fixed[m.key].append(res)
                    print(f"  fixed {rates[m.mesh]:.0f}/s round {r + 1}: {m.label:<40} "
                          f"p50 {res[50]:>6.0f} p99 {res[99]:>6.0f} us  p99.9 {res[99.9]:>6.0f} "
                          f"us  cpu {res['cpu']:>5.1f} us/req", file=sys.stderr)
        exports, spans_check = check_spans(selected, envoys, os.path.join(workdir, "sink.log"))
        for k, n in saturated_drops.items():
            spans_check["modes"][k]["saturated_drops"] = n
        if args.loop_stats:
            time.sleep(5.5)  # histograms reach the admin on the stats flush (every 5 s)
            for m in selected:
                loops[m.key] = envoys[m.key].loop_quantiles()
        sink_summary = sink_line(os.path.join(workdir, "sink.log"))
    finally:
        for e in envoys.values():
            e.stop()
        sink.terminate()
        sink.wait()
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    report(args, selected, results, exports, sink_summary, envoy_cpu, load_cpu, started,
           load_before, loops, fixed, rates)
    print_spans_check(spans_check, {m.key: m for m in selected})
    if not spans_check["ok"]:
        raise SystemExit("spans lost: see the spans check above")


def report(args, selected, results, exports, sink_summary, envoy_cpu, load_cpu, started,
           load_before, loops, fixed, rates):
    keys = [m.key for m in selected]
    by_key = {m.key: m for m in selected}
    med = {k: {q: statistics.median(x[q] for x in results[k])
               for q in ("rps", "cpu", "pcpu", *PERCENTILES)}
           for k in keys}

    def paired(k, other, q):
        """Per-round ratios of `k` to `other` on statistic `q`: median, low, high."""
        return spread(a[q] / b[q] for a, b in zip(results[k], results[other]))

    where = (f"the worker thread alone on CPU {envoy_cpu}, Envoy's other threads on CPU "
             f"{load_cpu}" if args.worker_alone else f"the whole Envoy process on CPU {envoy_cpu}")
    print(f"\nEnvoy {envoy_version(args.envoy)}, 1 worker, {where}; wrk -t1 "
          f"-c{args.connections}, otlp-sink and the mTLS modes' helper Envoy on CPU {load_cpu}; "
          f"{args.rounds} rounds x {args.seconds}s interleaved; medians over rounds, latency in us")
    print(f"{'mode':<40} {'req/s':>8} {'p50':>6} {'p90':>6} {'p99':>6} {'p99.9':>7} "
          f"{'us/req':>7} {'cpu us/req':>10} {'all threads':>11}")
    for k in keys:
        s = med[k]
        print(f"{by_key[k].label:<40} {s['rps']:>8.0f} {s[50]:>6.0f} {s[90]:>6.0f} {s[99]:>6.0f} "
              f"{s[99.9]:>7.0f} {1e6 / s['rps']:>7.1f} {s['cpu']:>10.1f} {s['pcpu']:>11.1f}")
    print("(cpu us/req: the Envoy worker thread's own CPU time per request, from /proc; unlike "
          "req/s it does not count time the thread waited for a CPU, so it is the steadier cost "
          "on a shared machine; all threads: the whole Envoy process's, the main thread's "
          "included, where the singleton exporter runs)")

    print("\nper-round paired ratios, median (low to high); floor = the mode's own floor")
    print(f"{'mode':<40} {'req/s vs floor':>20} {'p99 vs floor':>20} {'req/s vs tracer':>20} "
          f"{'p99 vs tracer':>20} {'cpu/req vs floor':>20}")
    fmt = "{:.2f} ({:.2f}-{:.2f})"
    for k in keys:
        m = by_key[k]
        if k in ("floor", "floor-mtls", "tracer"):
            continue
        cols = [fmt.format(*paired(k, m.floor, "rps")), fmt.format(*paired(k, m.floor, 99))]
        if not m.mesh and k != "none":
            cols += [fmt.format(*paired(k, "tracer", "rps")), fmt.format(*paired(k, "tracer", 99))]
        else:
            cols += ["-", "-"]
        cols.append(fmt.format(*paired(k, m.floor, "cpu")))
        print(f"{m.label:<40} " + " ".join(f"{c:>20}" for c in cols))

    probes = [k for k in keys if k == "probe" or k.startswith("p:")]
    if probes and "mt100" in keys:
        print("\nhost-call probes (no-op filter + host calls, nothing else) against meshtrace "
              "100%: per-round paired ratios, median (low to high)")
        print(f"{'mode':<40} {'req/s vs floor':>20} {'cpu/req vs floor':>20} "
              f"{'req/s vs meshtrace':>20} {'cpu/req vs meshtrace':>20}")
        for k in probes:
            cols = [fmt.format(*paired(k, "floor", "rps")), fmt.format(*paired(k, "floor", "cpu")),
                    fmt.format(*paired(k, "mt100", "rps")), fmt.format(*paired(k, "mt100", "cpu"))]
            print(f"{by_key[k].label:<40} " + " ".join(f"{c:>20}" for c in cols))

    fmed = {k: {q: statistics.median(x[q] for x in fixed[k])
                for q in ("rps", "cpu", "pcpu", "max", *PERCENTILES)}
            for k in fixed}

    def fpaired(k, other, q):
        return spread(a[q] / b[q] for a, b in zip(fixed[k], fixed[other]))

    if fixed:
        print(f"\nfixed rate, open loop (bridge-load --target, {args.connections} connections, "
              f"latency from each request's intended start, us): "
              + ", ".join(f"{'mTLS modes' if mesh else 'plain modes'} at {r:.0f} req/s"
                          for mesh, r in rates.items()))
        print(f"{'mode':<40} {'req/s':>8} {'p50':>6} {'p90':>6} {'p99':>6} {'p99.9':>7} "
              f"{'max':>7} {'cpu us/req':>10} {'all threads':>11} {'p99 vs floor':>17} "
              f"{'p99.9 vs floor':>17} "
              f"{'p99 vs tracer':>17} {'p99.9 vs tracer':>17}")
        for k in keys:
            m, s = by_key[k], fmed[k]
            cols = ["-"] * 4
            if k not in ("floor", "floor-mtls"):
                cols[:2] = [fmt.format(*fpaired(k, m.floor, 99)),
                            fmt.format(*fpaired(k, m.floor, 99.9))]
            if not m.mesh and k not in ("tracer", "none", "floor"):
                cols[2:] = [fmt.format(*fpaired(k, "tracer", 99)),
                            fmt.format(*fpaired(k, "tracer", 99.9))]
            print(f"{m.label:<40} {s['rps']:>8.0f} {s[50]:>6.0f} {s[90]:>6.0f} {s[99]:>6.0f} "
                  f"{s[99.9]:>7.0f} {s['max']:>7.0f} {s['cpu']:>10.1f} {s['pcpu']:>11.1f} "
                  + " ".join(f"{c:>17}" for c in cols))
        print("(cpu us/req at a fixed rate also carries the cost of a worker that sleeps and "
              "wakes between requests)")

    if exports:
        print("\nexports over the whole run, from each Envoy's stats")
        print(f"{'mode':<40} {'spans':>9} {'requests':>9} {'bytes/req':>10} {'spans/req':>10} "
              f"{'dropped':>8}")
        for k, s in exports.items():
            get = lambda name: s.get(f"wasmcustom.meshtrace.{name}", 0)
            reqs = get("export_requests.ok") + get("export_requests.retryable") + \
                get("export_requests.failed")
            dropped = sum(get(f"spans_dropped.{d}") for d in ("queue_full", "too_large",
                                                              "export_failed"))
            spans = get("spans_exported")
            print(f"{by_key[k].label:<40} {spans:>9} {reqs:>9} "
                  f"{get('export_bytes.sent') / max(reqs, 1):>10.0f} "
                  f"{spans / max(reqs, 1):>10.1f} {dropped:>8}")
    if loops:
        print("\nworker event-loop iterations over the whole run (us, Envoy's dispatcher stats)")
        print(f"{'mode':<40} {'P50':>7} {'P99':>7} {'P99.9':>7} {'max':>7}")
        for k, q in loops.items():
            print(f"{by_key[k].label:<40} " + " ".join(f"{q.get(p, float('nan')):>7.0f}"
                                                      for p in ("P50", "P99", "P99.9", "P100")))
    print(f"otlp-sink received: {sink_summary}")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"(a busy machine widens every spread)")

    if "mt100" in med:
        rps_f, p99_f = paired("mt100", "floor", "rps")[0], paired("mt100", "floor", 99)[0]
        rps_t = paired("mt100", "tracer", "rps")[0]
        print(f"\ngoals (per-round medians): meshtrace 100% req/s vs floor {rps_f:.2f} (>= 0.85), "
              f"vs tracer {rps_t:.2f} (>= 1.6); p99 vs floor {p99_f:.2f} (<= 1.3), "
              f"p99 {med['mt100'][99]:.0f} us vs tracer {med['tracer'][99]:.0f} us (below)")
    if "mt1" in med:
        print(f"       meshtrace 1% req/s vs floor {paired('mt1', 'floor', 'rps')[0]:.2f} (>= 0.97)")
    if "mt100" in fmed:
        print(f"       at {rates[False]:.0f} req/s fixed: meshtrace 100% p99 vs floor "
              f"{fpaired('mt100', 'floor', 99)[0]:.2f} (<= 1.3), p99.9 vs floor "
              f"{fpaired('mt100', 'floor', 99.9)[0]:.2f}")
    for k in (k for k in keys if k == "singleton" or k.startswith("s:")):
        line = (f"       {by_key[k].label}: req/s vs floor {paired(k, 'floor', 'rps')[0]:.2f}, "
                f"vs meshtrace per worker {paired(k, 'mt100', 'rps')[0]:.2f}"
                if "mt100" in med else "")
        if k in fmed and "mt100" in fmed:
            line += (f"; at {rates[False]:.0f} req/s fixed: p99 vs floor "
                     f"{fpaired(k, 'floor', 99)[0]:.2f}, p99 vs meshtrace per worker "
                     f"{fpaired(k, 'mt100', 99)[0]:.2f}, p99.9 vs meshtrace per worker "
                     f"{fpaired(k, 'mt100', 99.9)[0]:.2f}")
        if line:
            print(line)
    if "probe" in med:
        print(f"       probe (the host calls alone) req/s vs floor "
              f"{paired('probe', 'floor', 'rps')[0]:.2f}: the ceiling of meshtrace's 0.85 goal")

    if args.markdown:
        print(f"\n`make bench-envoy` ({args.rounds} rounds x {args.seconds} s, "
              f"{started:%Y-%m-%d}, {machine()}, Envoy {envoy_version(args.envoy)}"
              + (", `--worker-alone`: the worker thread alone on its CPU" if args.worker_alone
                 else "") + "):\n")
        print("| mode | req/s | p50 µs | p99 µs | p99.9 µs | worker CPU µs/req | req/s vs floor "
              "| p99 vs floor | req/s vs Envoy's tracer | p99 vs Envoy's tracer |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        mfmt = "{:.2f} ({:.2f}–{:.2f})"
        for k in keys:
            m, s = by_key[k], med[k]
            own = k in ("floor", "floor-mtls")
            vs_floor = ["1.00", "1.00"] if own else [mfmt.format(*paired(k, m.floor, "rps")),
                                                     mfmt.format(*paired(k, m.floor, 99))]
            if k == "tracer":
                vs_tracer = ["1.00", "1.00"]
            elif m.mesh or k in ("none", "floor"):
                vs_tracer = ["", ""]
            else:
                vs_tracer = [mfmt.format(*paired(k, "tracer", "rps")),
                             mfmt.format(*paired(k, "tracer", 99))]
            if k == "none":
                vs_floor = [mfmt.format(*paired(k, "floor", "rps")),
                            mfmt.format(*paired(k, "floor", 99))]
            print(f"| {m.label} | {s['rps']:,.0f} | {s[50]:.0f} | {s[99]:.0f} | {s[99.9]:.0f} | "
                  f"{s['cpu']:.1f} | "
                  + " | ".join(vs_floor + vs_tracer) + " |")
        print("\nRatios are per-round paired medians (low–high over rounds); the mTLS rows are read "
              "against the no-op filter on the same mTLS sidecar path.")
        singles = [k for k in keys if k == "singleton" or k.startswith("s:")]
        if singles:
            print("The singleton exporter runs on Envoy's main thread, whose CPU the worker column "
                  "leaves out; Envoy's CPU per request over all its threads: "
                  + ", ".join(f"{by_key[k].label} {med[k]['pcpu']:.1f} µs"
                              for k in keys if by_key[k].meshtrace or k == "floor")
                  + (" (the worker thread alone on its CPU)." if args.worker_alone
                     else " (the whole Envoy process on one CPU)."))
        if fixed:
            print(f"\nAt a fixed offered rate (open loop, {args.connections} connections, latency "
                  "from each request's intended start; "
                  + ", ".join(f"{'mTLS rows' if mesh else 'plain rows'} at {r:,.0f} req/s"
                              for mesh, r in rates.items()) + "):\n")
            print("| mode | p50 µs | p90 µs | p99 µs | p99.9 µs | worker CPU µs/req "
                  "| p99 vs floor | p99.9 vs floor | p99 vs Envoy's tracer "
                  "| p99.9 vs Envoy's tracer |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for k in keys:
                m, s = by_key[k], fmed[k]
                cols = ["1.00", "1.00"] if k in ("floor", "floor-mtls") else \
                    [mfmt.format(*fpaired(k, m.floor, 99)), mfmt.format(*fpaired(k, m.floor, 99.9))]
                if k == "tracer":
                    cols += ["1.00", "1.00"]
                elif m.mesh or k in ("none", "floor"):
                    cols += ["", ""]
                else:
                    cols += [mfmt.format(*fpaired(k, "tracer", 99)),
                             mfmt.format(*fpaired(k, "tracer", 99.9))]
                print(f"| {m.label} | {s[50]:.0f} | {s[90]:.0f} | {s[99]:.0f} | {s[99.9]:.0f} | "
                      f"{s['cpu']:.1f} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
