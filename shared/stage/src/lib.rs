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
//!
//! The map:
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`service`](Runtime) | starting a service: connect, declare, run its step, exit codes |
//! | `run/` | working on messages: pull, flat_map, sink, emitter, keep_alive, fate, dead letters, outages, backoff |
//! | [`nats`] | login, streams and consumers (`topology`), key-value buckets (import ids, row budget, import specs) |
//! | [`observe`] | metrics and probes, the internal events the runtime emits (`events`: each logs, counts and annotates the span), traces and logs (`telemetry`), lasting conditions (`repeats`, `misconfiguration`) |
//! | [`config`] | the settings every service shares |
//! | `error` | [`StageError`]: what failed, and whose fault it is |

// A dropped Result of an ack or a publish is a message silently lost: in
// the runtime every one is handled, or its name says why not.
#![deny(clippy::let_underscore_must_use)]
#![warn(missing_docs)]

pub mod config;
mod error;
pub mod nats;
pub mod observe;
mod run;
mod service;
mod shutdown;

// The modules' old places, so that paths inside and outside the crate
// read as before.
pub(crate) use nats::login as nats_login;
pub use nats::{buckets, cancellations, checkpoints, import_ids, row_budget, specs, topology};
pub use observe::{misconfiguration, repeats, telemetry};
pub(crate) use run::{
    backoff, context, dead_letter, delivery, emitter, fate, flat_map, keep_alive, outage, pull,
    sink, slot, tasks,
};

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
