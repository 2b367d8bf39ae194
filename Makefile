# The two commands of the README's Quick start are `make demo` and `make test`.
# Both install the Debian packages they need first (scripts/install-deps.sh, idempotent).

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: all deps build release image image-test test test-e2e test-rust test-alerts test-deploy lint demo bench reference-node alert-latency fleet clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins

release: deps
	$(CARGO) build --workspace --bins --release

# The container image the DaemonSet runs, built from the release binaries with buildah and no
# registry (deploy/image/build.sh; storage and an OCI archive in target/image), and its test:
# each exporter started inside the image's filesystem as the DaemonSet runs it (deploy/image/test.sh).
image: release
	@bash scripts/install-deps.sh --image
	bash deploy/image/build.sh target/release

image-test: image
	bash deploy/image/test.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: alert rules and Alertmanager (promtool, amtool, real Prometheus and Alertmanager),
# then the Rust tests (unit, framework, exporters against real libvirt / OVS / files, and the
# end-to-end tests of the built binaries). The cargo run comes last so its summary closes the log.
test: deps
	$(CARGO) build --workspace --bins
	bash alerts/test.sh
	bash deploy/test.sh
	python3 dashboards/test.py --check
	$(CARGO) test --workspace --no-fail-fast
	@cat target/tmp/e2e-alert-latency.txt 2>/dev/null || true

# The end-to-end test alone (the demo stack, injected faults, every dashboard panel), with output.
test-e2e: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test -p e2e-tests --test e2e -- --nocapture

test-rust: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

test-alerts: deps
	bash alerts/test.sh

test-deploy: deps
	bash deploy/test.sh
	python3 dashboards/test.py --check

# Runs every exporter on embedded demo inputs, on 127.0.0.1, until Ctrl-C.
demo: deps
	$(CARGO) build --workspace --bins --release
	bash scripts/demo.sh target/release

# The fleet layout of docs/scaling.md at a larger size than `make test` runs it: 2 Prometheus
# shards x 3 racks x 4 nodes (72 exporter processes), a shared Alertmanager, VictoriaMetrics.
# Time divided by 10, not 30 as in `make test`: 3 s scrapes leave 2 cores time for 72 exporters.
fleet: deps
	$(CARGO) build --workspace --bins
	python3 alerts/tests/fleet.py --racks-per-shard 3 --nodes-per-rack 4 --time-scale 10

# Benchmarks print tables; they are not pass/fail tests.
bench: deps release
	@set -e; for b in exporters/*/bench/bench.sh; do \
	  if [ -x "$$b" ]; then echo "== $$b"; bash "$$b"; fi; \
	done
	@echo "== exporters/log_pattern/bench/churn.sh"
	bash exporters/log_pattern/bench/churn.sh
	@echo "== scripts/alert-latency.sh"
	bash scripts/alert-latency.sh target/release

# The fast lane measured at the shipped intervals (15 s scrape and evaluation, shipped Alertmanager
# timings): injection -> notification for OvsDirtyFlows, LogPatternMatched, OomKillerInvoked
# against the 45 s target. About 6 minutes.
alert-latency: deps release
	bash scripts/alert-latency.sh target/release

# Series, scrape time and memory of each exporter on a reference compute node (100 VMs, 30 pods,
# 20k flows) built from real components: the measurements behind docs/scaling.md.
reference-node: deps release
	bash scripts/reference-node.sh target/release

clean:
	$(CARGO) clean
