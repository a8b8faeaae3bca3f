# sluice task runner. `just --list` shows the recipes.
#
# NATS_URL and DATABASE_URL choose the servers, as they do for the services:
# `just services` starts embedded ones where they point at this machine and
# nothing answers.

set shell := ["bash", "-euo", "pipefail", "-c"]

# What ships (the three services, `sluice` and `sluice-console`) is built by deploy/build-command:
# the same line in the Dockerfile, `just demo` and CI.

# List the recipes.
default:
    @just --list

# Make sure NATS (JetStream) and PostgreSQL answer at NATS_URL / DATABASE_URL; start embedded ones on this machine if not.
services:
    python3 deploy/local/services.py up

# Stop what `just services` started, and only that (data stays in .local/ for the next run).
services-down:
    python3 deploy/local/services.py down

# What answers, and what `just services` started.
services-status:
    python3 deploy/local/services.py status

# Jaeger in the background (built by `just tools`): traces from OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318, query API on :16686; `just services-down` stops it.
jaeger:
    python3 deploy/local/services.py jaeger

# Build the tools the tests drive as users do: the official `nats` CLI, promtool and Jaeger, from the Go module proxy, into .local/bin.
tools:
    python3 deploy/local/services.py tools

# Build the three services and the `sluice` CLI (debug, with `sluice demo`, which the tests drive).
build:
    cargo build --workspace --bins --features sluice-cli/demo

# Unit tests, then end-to-end tests against real NATS, PostgreSQL, HTTP and the nats CLI.
test: services tools build
    cargo test --workspace --features sluice-cli/demo

# The 3-node quorum-loss test alone (its bounds are timings; `just test` runs it not).
test-cluster: services tools build
    cargo test --workspace --features sluice-cli/demo --test e2e -- --ignored --exact cluster::losing_quorum_pauses_every_stage_and_the_import_resumes_without_fetching_again --nocapture

# A real import end to end: 200 accounts x 100,000 transactions by default.
demo *ARGS: services
    sh deploy/build-command
    cargo build --release --locked -p sluice-cli --features demo
    "${CARGO_TARGET_DIR:-target}/release/sluice" demo {{ARGS}}

# Regenerate the message JSON Schemas (shared/messages/schema) after changing a message type.
schemas:
    SLUICE_WRITE_SCHEMAS=1 cargo test -p sluice-e2e --test e2e committed_schemas_match_the_code

# Format and lint.
check:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --features sluice-cli/demo -- -D warnings
    cargo clippy -p sluice-cli -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --features sluice-cli/demo
    python3 deploy/checks/layers.py

# Throughput and memory against the naive job and COPY, in one run, against a durable PostgreSQL (fsync on, started on 127.0.0.1:5433) and files served by Python's http.server (writes docs/benchmarks.md).
bench *ARGS: services tools
    python3 deploy/local/services.py durable-postgres
    python3 deploy/local/services.py bench-tools
    sh deploy/build-command
    cargo build --release --locked -p sluice-bench
    SLUICE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5433/sluice "${CARGO_TARGET_DIR:-target}/release/sluice-bench" {{ARGS}}

# Fuzz the CSV reader, amount parser, address guard, URL redaction and the windows of rows for SECONDS each (libFuzzer; needs the nightly toolchain). Finds land in fuzz/artifacts/. SEED fixes libFuzzer's seed (CI does, so a run is a repeatable regression check; explore with the default, a new seed each run).
fuzz SECONDS="30" SEED="0":
    python3 deploy/local/services.py fuzz-tools
    cd fuzz && for target in csv_reader amount address_guard redact windows; do \
        PATH="$PWD/../.local/cargo/bin:$PATH" cargo +nightly fuzz run -O "$target" "corpus/$target" -- -max_total_time={{SECONDS}} -max_len=4096 -seed={{SEED}} 2>&1 | grep -a -E '^(Done|INFO: Seed)|panicked|SUMMARY'; \
    done

# The Helm chart, Dockerfile and compose file, checked offline with helm, kubernetes-validate and hadolint.
deploy-check:
    bash deploy/helm/check.sh
