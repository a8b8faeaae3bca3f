//! The sluice stage runtime, written once for every service.
//!
//! A service supplies its step, either a [`FlatMap`] (one input message in,
//! any number of output messages out) or a [`Sink`] (a batch of input
//! messages written somewhere durable). The runtime does everything else:
//! it connects, declares the streams and the service's durable consumer,
//! pulls with bounded concurrency, keeps long work owned with in-progress
//! acks, pipelines publishes and acknowledges an input only after every
//! output is stored, retries transient failures with backoff, dead-letters
//! permanent ones, and drains on SIGTERM.

pub mod buckets;
pub mod config;
mod context;
mod dead_letter;
mod delivery;
mod emitter;
mod error;
mod fate;
mod flat_map;
pub mod import_ids;
mod keep_alive;
pub mod misconfiguration;
mod nats_login;
pub mod observe;
mod outage;
mod pull;
pub mod repeats;
pub mod row_budget;
mod service;
mod shutdown;
mod sink;
mod slot;
mod tasks;
pub mod telemetry;
pub mod topology;

pub use config::{ConsumerArgs, NatsArgs, StageArgs};
pub use delivery::Delivery;
pub use emitter::Emitter;
pub use error::{error_chain, Fault, StageError};
pub use flat_map::FlatMap;
pub use service::{connect, run_service, Runtime};
pub use shutdown::shutdown_signal;
pub use sink::{Sink, SinkOptions};

/// The current time as RFC 3339, as every sluice message carries it.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
