# skipflow: `make demo` runs the main job on the embedded default,
# `make test` builds and runs every test (installing what they need).

CARGO      ?= cargo
CACHE      ?= $(HOME)/.cache/skipflow
# Where cargo puts binaries: honours CARGO_TARGET_DIR.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
SKIPFLOW   := $(TARGET_DIR)/release/skipflow
VENV       ?= $(CACHE)/venv
PYTHON     := $(VENV)/bin/python
BENCH_DIR  ?= .bench
WORKERS    ?= 2

.PHONY: all build release test diskcheck pyenv tansu sysdeps testdeps lint demo bench bench-continuous clean

all: build

# System packages, from Debian's repositories when missing (root or sudo).
# To build: OpenSSL's headers for librdkafka's TLS and SASL (zstd, lz4,
# snappy, zlib and curl are built from source by their crates). To test:
# stunnel, the TLS terminator in front of tansu for the TLS tests; openssl
# to make their certificates; promtool (Debian's prometheus package, not
# started) to check and unit-test the alert rules in jobs/monitoring/;
# headless Chromium to open the HTML report (skipflow report) as a person would.
APT_INSTALL = if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

sysdeps:
	@missing=""; \
	pkg-config --exists openssl 2>/dev/null || missing="$$missing libssl-dev pkg-config"; \
	$(APT_INSTALL)

testdeps: sysdeps
	@missing=""; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || missing="$$missing stunnel4"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	$(APT_INSTALL)

build: sysdeps
	$(CARGO) build

release: sysdeps
	$(CARGO) build --release

# Python readers (pyarrow, DuckDB from PyPI) used by the tests to read the
# Parquet outputs back, and moto's S3 server for the object-store tests;
# installed once into a cache outside the clone.
PYPKGS := pyarrow duckdb "moto[server]"
$(PYTHON):
	mkdir -p $(CACHE)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PYPKGS)

pyenv: $(PYTHON)
	@$(PYTHON) -c "import pyarrow, duckdb, moto" 2>/dev/null || \
	  $(VENV)/bin/pip install --quiet --disable-pip-version-check $(PYPKGS)

# tansu, an independent Kafka-API broker, for the real-broker test tier.
# Built once (about 20 minutes on 2 cores) into a cache outside the clone.
TANSU_VERSION := 0.6.0
TANSU         := $(CACHE)/tansu/bin/tansu
$(TANSU):
	mkdir -p $(CACHE)
	$(CARGO) install --locked --root $(CACHE)/tansu tansu --version $(TANSU_VERSION) --features dynostore,libsql

tansu: $(TANSU)

# A clean test build writes about 5 GB under target/ (debug builds of 25
# test binaries): say so up front when the disk is short, since a linker
# that runs out of space fails with a truncated message.
TEST_BUILD_GB := 6
diskcheck:
	@mkdir -p $(TARGET_DIR); \
	free=$$(df -Pk $(TARGET_DIR) | awk 'NR==2 {print int($$4/1048576)}'); \
	if [ "$$free" -lt $(TEST_BUILD_GB) ]; then \
	  echo "warning: $$free GB free under $(TARGET_DIR); a clean test build needs about $(TEST_BUILD_GB) GB (free some space or set CARGO_TARGET_DIR)"; \
	fi

test: diskcheck testdeps pyenv tansu
	SKIPFLOW_PYTHON=$(PYTHON) SKIPFLOW_TANSU=$(TANSU) $(CARGO) test --all-targets -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

demo: release
	$(SKIPFLOW) demo

# Batch benchmark: ~3.5M events (20,000 users, 7 days) generated once, then,
# one after the other on that file: `skipflow batch` with $(WORKERS) workers,
# the DuckDB peer job (benches/duckdb_job.py, same tables and threads), the
# serde_json parse floor (benches/parse_floor.rs), and
# skipflow on 2 and 3 processes x 1 worker (events/s, peak RSS per process,
# ratios to the peer).
$(BENCH_DIR)/events.ndjson: | release
	mkdir -p $(BENCH_DIR)
	$(SKIPFLOW) generate --users 20000 --days 7 --seed 7 --output $@

bench: release pyenv $(BENCH_DIR)/events.ndjson
	$(CARGO) bench -q --bench parse_floor --no-run
	SKIPFLOW=$(SKIPFLOW) SKIPFLOW_PYTHON=$(PYTHON) PARSE_FLOOR="$(CARGO) bench -q --bench parse_floor --" \
	  ./scripts/bench-batch.sh $(BENCH_DIR)/events.ndjson $(WORKERS)

# Continuous benchmark (benches/continuous.rs): tansu's memory engine, a
# 3.4M-event backlog caught up, then $(RATE) events/s for $(LIVE_SECS) s with
# 30 s commits; catch-up rate, freshness p50/p99, CPU s per M events, peak
# RSS. More options: make bench-continuous BENCH_ARGS="--help".
RATE       ?= 167000
LIVE_SECS  ?= 120
BENCH_ARGS ?=
bench-continuous: tansu
	SKIPFLOW_TANSU=$(TANSU) $(CARGO) bench --bench continuous -- --rate $(RATE) --live-secs $(LIVE_SECS) --workers $(WORKERS) $(BENCH_ARGS)

clean:
	$(CARGO) clean
	rm -rf out $(BENCH_DIR)
