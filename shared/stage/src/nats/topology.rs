//! The one definition of sluice's streams and durable consumers, applied
//! idempotently by every service at start-up and by `sluice setup`.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy, ReplayPolicy},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use sluice_messages::{stage, Namespace, Stream};

use crate::{
    config::{ConsumerArgs, NatsArgs},
    StageError,
};

/// The stream configuration for one of the contract's streams.
///
/// Limits retention, not work-queue: a consumer attached later can replay
/// what earlier stages produced.
pub fn stream_config(nats: &NatsArgs, which: Stream) -> stream::Config {
    let max_age = match which {
        // Dead letters wait for a human; keep them longer than the work.
        Stream::DeadLetters => nats.stream_max_age.saturating_mul(4),
        _ => nats.stream_max_age,
    };
    stream::Config {
        name: nats.namespace.stream(which),
        subjects: nats.namespace.stream_subjects(which),
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        // Full means stop taking more, never drop what may be unprocessed.
        discard: DiscardPolicy::New,
        max_bytes: match nats.stream_max_bytes {
            0 => -1,
            limit => i64::try_from(limit).unwrap_or(i64::MAX),
        },
        num_replicas: nats.stream_replicas as usize,
        max_age,
        duplicate_window: nats.duplicate_window.min(max_age),
        ..Default::default()
    }
}

/// Creates every stream, or updates it to the shared definition.
pub async fn ensure_streams(js: &jetstream::Context, nats: &NatsArgs) -> Result<(), StageError> {
    for which in Stream::ALL {
        let config = stream_config(nats, which);
        // Several services start at once: a create that loses the race to
        // another one's create is followed by an update that wins.
        let mut attempt = 0;
        loop {
            match js.create_or_update_stream(config.clone()).await {
                Ok(_) => break,
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(stream = %config.name, error = %e, "stream declaration raced; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => {
                    return Err(StageError::transient(format!(
                        "cannot create or update stream {}: {}",
                        config.name,
                        crate::error_chain(&e)
                    )))
                }
            }
        }
    }
    Ok(())
}

/// What a service's durable consumer looks like.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Durable name: the service's name, shared by all its replicas.
    pub name: &'static str,
    /// The stream it reads.
    pub input: Stream,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Unacknowledged messages handed out across all replicas at most.
    pub max_ack_pending: i64,
}

impl ConsumerSpec {
    /// The consumer of `name` (a stage or the tracker) under `consumer`'s
    /// settings: what the services, `sluice setup` and `sluice doctor` agree on.
    pub fn of(name: &'static str, consumer: &ConsumerArgs) -> Option<ConsumerSpec> {
        Some(ConsumerSpec {
            name,
            input: input_of(name)?,
            ack_wait: consumer.ack_wait,
            max_ack_pending: consumer.max_ack_pending.into(),
        })
    }
}

/// The stream each service consumes.
pub fn input_of(consumer: &str) -> Option<Stream> {
    match consumer {
        stage::IMPORTER => Some(Stream::Imports),
        stage::FETCHER => Some(Stream::AccountUpdates),
        stage::SAVER => Some(Stream::Transactions),
        stage::TRACKER => Some(Stream::ImportEvents),
        _ => None,
    }
}

/// Every durable consumer: the three stages and the saver's import tracker.
pub const CONSUMERS: [&str; 4] = [
    stage::IMPORTER,
    stage::FETCHER,
    stage::SAVER,
    stage::TRACKER,
];

/// The subjects a consumer takes from its stream: all of them (no filter),
/// except that the tracker leaves the completion events to their readers.
/// A stream whose every subject is a stage's input needs no filter, so a
/// subject added to it (`import-files`, `rows.>`) reaches the stage as is.
fn input_filter(ns: &Namespace, input: Stream) -> String {
    match input {
        Stream::ImportEvents => ns.all_import_progress(),
        _ => String::new(),
    }
}

/// A consumer's state (pending, ack pending, redelivered), for status and tests.
/// A consumer's lag: what it has not delivered, what its replicas hold,
/// and what is on its second delivery or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Lag {
    /// Messages not yet delivered.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Of those, the ones on their second delivery or later.
    pub redelivered: u64,
}

impl Lag {
    /// The lag a consumer's info shows.
    pub fn of(info: &jetstream::consumer::Info) -> Lag {
        Lag {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
        }
    }

    /// pending + ack_pending + redelivered: what `sluice status` and the
    /// `sluice_consumer_lag` gauge show.
    pub fn total(&self) -> u64 {
        self.pending + self.ack_pending + self.redelivered
    }
}

/// What JetStream says of consumer `name`, with its stream named in the error.
pub async fn consumer_info(
    js: &jetstream::Context,
    ns: &Namespace,
    consumer: &str,
) -> Result<jetstream::consumer::Info, StageError> {
    let input = input_of(consumer)
        .ok_or_else(|| StageError::permanent(format!("unknown consumer {consumer}")))?;
    let stream = ns.stream(input);
    js.get_stream(&stream)
        .await
        .map_err(|e| {
            StageError::caused_by(crate::Fault::Outage, e)
                .context(&format!("cannot open stream {stream}"))
        })?
        .consumer_info(consumer)
        .await
        .map_err(|e| {
            StageError::caused_by(crate::Fault::Outage, e)
                .context(&format!("cannot read consumer {consumer} on {stream}"))
        })
}

/// The consumer `spec` describes, as JetStream takes it.
pub fn consumer_config(ns: &Namespace, spec: &ConsumerSpec) -> pull::Config {
    pull::Config {
        durable_name: Some(spec.name.to_owned()),
        description: Some(format!("sluice {}", spec.name)),
        filter_subject: input_filter(ns, spec.input),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // Unlimited: the runtime counts deliveries itself and dead-letters an
        // exhausted message with its reason. A server-side limit would stop
        // redelivering silently, and `backoff` would override `ack_wait`.
        max_deliver: -1,
        max_ack_pending: spec.max_ack_pending,
        replay_policy: ReplayPolicy::Instant,
        ..Default::default()
    }
}

/// Creates the durable consumer, or updates its settings, and returns it.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    ns: &Namespace,
    spec: &ConsumerSpec,
) -> Result<jetstream::consumer::PullConsumer, StageError> {
    let stream_name = ns.stream(spec.input);
    js.create_consumer_on_stream(consumer_config(ns, spec), stream_name.as_str())
        .await
        .map_err(|e| {
            StageError::transient(format!(
                "cannot create or update consumer {} on stream {stream_name}: {}",
                spec.name,
                crate::error_chain(&e)
            ))
        })
}
