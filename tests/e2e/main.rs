//! End-to-end tests: the real `importer`, `fetcher`, `saver` and `sluice`
//! binaries against real NATS, PostgreSQL and HTTP. Every test has its own
//! namespace and database, so they run in parallel. Build the binaries first
//! (`just test` does): `cargo build --workspace --bins --features sluice-cli/demo`.

mod cli;
mod cluster;
mod console;
mod contract;
mod creds;
mod dialects;
mod downloads;
mod hostile;
mod lifecycle;
mod misconfigured;
mod nats_cli;
mod observe;
mod operator;
mod pipeline;
mod resilience;
mod secured;
mod servers;
mod sources;
mod spec_imports;
mod specs;
mod traces;
mod webhooks;
