# sluice task runner. `just --list` shows the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Start NATS (JetStream) and PostgreSQL on this machine if they are not running.
services:
    bash deploy/local/ensure-services.sh

# Build the three services and the `sluice` CLI (debug).
build:
    cargo build --workspace --bins

# Unit tests, then end-to-end tests against real NATS, PostgreSQL and HTTP.
test: services build
    cargo test --workspace

# A real import end to end: 200 accounts x 100,000 transactions by default.
demo *ARGS: services
    cargo build --release --workspace --bins
    target/release/sluice demo {{ARGS}}

# Format and lint.
check:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Throughput and memory against the naive job and COPY, in one run (writes docs/benchmarks.md).
bench *ARGS: services
    cargo build --release --workspace --bins
    target/release/sluice-bench {{ARGS}}
