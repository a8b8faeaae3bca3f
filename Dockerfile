# syntax=docker/dockerfile:1
#
# One image holding the three services (importer, fetcher, saver), the
# `sluice` CLI and the operator console (`sluice-console`), run as a non-root
# user on a distroless base (no shell).
#
#   docker build -t sluice:0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run --rm sluice:0.1.0 importer --help
#
# The release build below runs exactly the command in deploy/build-command,
# which is also what CI runs (deploy/helm/check.sh fails if they differ):
#   cargo build --release --locked -p sluice-importer -p sluice-fetcher -p sluice-saver -p sluice-cli -p sluice-console

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.77

# --- toolchain + cargo-chef ----------------------------------------------------
# Bookworm, like the runtime image: the binaries link against its glibc.
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# --- the dependency recipe: only manifests and Cargo.lock ---------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- build ----------------------------------------------------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The cached dependency layer: rebuilt only when a manifest or Cargo.lock
# changes, not when the source does.
RUN cargo chef cook --release --locked -p sluice-importer -p sluice-fetcher -p sluice-saver -p sluice-cli -p sluice-console --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p sluice-importer -p sluice-fetcher -p sluice-saver -p sluice-cli -p sluice-console

# --- runtime ---------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Imports nested CSV into PostgreSQL through NATS JetStream: importer, fetcher, saver, the sluice CLI and the sluice-console operator console" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder \
     /src/target/release/importer \
     /src/target/release/fetcher \
     /src/target/release/saver \
     /src/target/release/sluice \
     /src/target/release/sluice-console \
     /usr/local/bin/
# distroless's `nonroot` user.
USER 65532:65532
# SLUICE_METRICS_ADDR: /metrics, /healthz, /readyz. 8080: the console's pages
# (SLUICE_CONSOLE_ADDR=0.0.0.0:8080; it listens on 127.0.0.1 unless told).
EXPOSE 9090 8080
# Pick the program: `importer`, `fetcher`, `saver`, `sluice-console` or
# `sluice <command>`.
CMD ["sluice", "--help"]
