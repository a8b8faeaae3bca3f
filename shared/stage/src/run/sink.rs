use std::{future::Future, sync::Arc, time::Duration};

use async_nats::jetstream::consumer::PullConsumer;
use futures_util::future::join_all;
use sluice_messages::DeadLetterKind;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use opentelemetry::KeyValue;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    context::StageContext,
    fate,
    keep_alive::{keep_alive, Outcome},
    observe::{events, HEALTH},
    outage::Pause,
    pull::{self, release_after, FailureStreak},
    tasks, telemetry, Delivery, StageError,
};

/// A stage that writes batches of input messages somewhere durable.
///
/// Each writer task owns one `Writer` (a database connection, say), pulls a
/// batch, decodes it and writes it in one go; the batch is acknowledged only
/// after `write` returned `Ok`. `write` must be idempotent: after a crash the
/// same items come again.
pub trait Sink: Send + Sync + 'static {
    /// The service, its durable consumer, its dead-letter subject.
    const NAME: &'static str;
    /// Writer tasks per replica, unless configured.
    const DEFAULT_WRITERS: u16;

    /// What one input message says.
    type Item: Send + Sync;
    /// A connection to the destination, reused across batches.
    type Writer: Send;

    /// Reads one input message; an error here is about that message only.
    fn decode(&self, input: &Delivery) -> Result<Self::Item, StageError>;

    /// Opens a writer; called again after any failed write.
    fn open(&self) -> impl Future<Output = Result<Self::Writer, StageError>> + Send;

    /// Writes a batch in one transaction: every item's result, in order.
    fn write(
        &self,
        writer: &mut Self::Writer,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<(), StageError>> + Send;
}

/// How a sink batches its input.
#[derive(Debug, Clone, Copy)]
pub struct SinkOptions {
    /// Most input messages in one write.
    pub batch_size: usize,
    /// Most bytes of input messages in one write; never less than the
    /// largest message, which could otherwise never be pulled.
    pub batch_max_bytes: usize,
    /// Longest a writer waits to fill a batch before writing what it has.
    pub batch_wait: Duration,
}

/// Beyond the last pull request's expiry, before a stopping replica's late
/// arrivals are redelivered.
const STOPPING_HAND_BACK: Duration = Duration::from_millis(500);

pub(crate) async fn run<S: Sink>(
    stage: Arc<S>,
    shared: Arc<StageContext>,
    consumer: PullConsumer,
    options: SinkOptions,
    stop: CancellationToken,
) {
    let writers = shared.consumer.concurrency.unwrap_or(S::DEFAULT_WRITERS);
    tracing::info!(
        stage = S::NAME,
        writers,
        batch_size = options.batch_size,
        "writing"
    );
    let abort = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for _ in 0..writers {
        let task = WriterTask {
            stage: stage.clone(),
            shared: shared.clone(),
            consumer: consumer.clone(),
            options,
            stop: stop.clone(),
            abort: abort.clone(),
            writer: None,
            failures: FailureStreak::default(),
        };
        tasks.spawn(task.run());
    }
    stop.cancelled().await;
    tasks::drain(tasks, &abort, shared.consumer.shutdown_timeout).await;
}

/// One writer task of a sink: its writer (a database connection, say) and
/// how many times in a row it failed to open it or to pull.
struct WriterTask<S: Sink> {
    stage: Arc<S>,
    shared: Arc<StageContext>,
    consumer: PullConsumer,
    options: SinkOptions,
    stop: CancellationToken,
    abort: CancellationToken,
    writer: Option<S::Writer>,
    failures: FailureStreak,
}

impl<S: Sink> WriterTask<S> {
    /// Pulls, writes and settles batches until the stop.
    async fn run(mut self) {
        while !self.stop.is_cancelled() {
            // No pulling without a working writer: messages would only wait.
            if !self.open_writer().await {
                continue;
            }
            let Some(deliveries) = self.pull_batch().await else {
                break;
            };
            let (accepted, items) = accept(&*self.stage, &self.shared, deliveries).await;
            if !items.is_empty() {
                self.write_and_settle(accepted, items).await;
            }
        }
    }

    /// Whether a writer is open, opening one if needed (after a pause when
    /// that fails).
    async fn open_writer(&mut self) -> bool {
        if self.writer.is_some() {
            return true;
        }
        match self.stage.open().await {
            Ok(w) => {
                HEALTH.set_destination_reachable(true);
                self.writer = Some(w);
                self.failures.end();
            }
            Err(e) => {
                HEALTH.set_destination_reachable(false);
                self.failures
                    .pause(S::NAME, "cannot open writer", &e, &self.stop)
                    .await;
            }
        }
        false
    }

    /// The next batch (empty when nothing came or the pull failed), or
    /// `None` once stopping: what arrived then is handed back.
    async fn pull_batch(&mut self) -> Option<Vec<Delivery>> {
        let options = self.options;
        let hand_back = Some(options.batch_wait + STOPPING_HAND_BACK);
        let max_bytes = options
            .batch_max_bytes
            .max(self.shared.max_payload + pull::MESSAGE_HEADROOM);
        let started = std::time::Instant::now();
        let pull = pull::pull(
            &self.shared,
            &self.consumer,
            options.batch_size,
            max_bytes,
            options.batch_wait,
        );
        let mut batch = match pull.await {
            Ok(batch) => batch,
            Err(e) => {
                self.failures
                    .pause(
                        S::NAME,
                        "cannot pull",
                        &pull::pull_failure(&self.shared, crate::error_chain(&e)).await,
                        &self.stop,
                    )
                    .await;
                return Some(Vec::new());
            }
        };
        let mut deliveries = Vec::with_capacity(options.batch_size);
        let mut failed = false;
        let mut received = 0;
        while let Some(next) = pull::next(&mut batch, started, options.batch_wait, received).await {
            received += usize::from(next.is_ok());
            match next {
                Ok(message) if self.stop.is_cancelled() => {
                    release_after(&self.shared, &message, hand_back).await
                }
                Ok(message) => match Delivery::new(message) {
                    Ok(d) => deliveries.push(d),
                    Err(e) => tracing::error!(error = %e, "skipping message"),
                },
                // A consumer without a leader (a cluster electing one)
                // answers the request itself with an error.
                Err(e) => {
                    self.failures
                        .pause(
                            S::NAME,
                            "cannot pull",
                            &pull::pull_failure(&self.shared, crate::error_chain(e.as_ref())).await,
                            &self.stop,
                        )
                        .await;
                    failed = true;
                    break;
                }
            }
        }
        if self.stop.is_cancelled() {
            for d in &deliveries {
                release_after(&self.shared, d.message(), hand_back).await;
            }
            return None;
        }
        if !failed {
            if let Some(silence) = pull::unanswered(started, options.batch_wait, received) {
                self.failures
                    .pause(S::NAME, "cannot pull", &silence, &self.stop)
                    .await;
                return Some(deliveries);
            }
            self.failures.end();
        }
        Some(deliveries)
    }

    /// Writes a batch (holding its messages with in-progress acks), then
    /// settles each message by its own result, in its import's span.
    async fn write_and_settle(&mut self, accepted: Vec<Delivery>, items: Vec<S::Item>) {
        events::Received {
            stage: S::NAME,
            messages: accepted.len(),
        }
        .emit();
        let bytes: usize = accepted.iter().map(|d| d.payload().len()).sum();
        let started = std::time::Instant::now();
        let traces = BatchTraces::new(S::NAME, &accepted);
        let messages: Vec<_> = accepted.iter().map(|d| d.message()).collect();
        let outcome = keep_alive(
            write_batch(&*self.stage, &mut self.writer, &items),
            &messages,
            self.shared.progress_interval(),
            self.shared.consumer.max_processing_time,
            None,
            &self.abort,
        )
        .await;
        events::BatchWritten {
            stage: S::NAME,
            messages: accepted.len(),
            bytes,
            elapsed: started.elapsed(),
            written: matches!(outcome, Outcome::Done(Ok(_))),
        }
        .emit();
        let results: Vec<Outcome<Result<(), StageError>>> = match outcome {
            Outcome::Done(Ok(results)) => results.into_iter().map(Outcome::Done).collect(),
            // Past SLUICE_MAX_PROCESSING_TIME (an outage that lasts):
            // hand the batch back to be retried later.
            Outcome::Done(Err(error)) => {
                self.writer = None;
                accepted
                    .iter()
                    .map(|_| Outcome::Done(Err(error.clone())))
                    .collect()
            }
            Outcome::Aborted => accepted.iter().map(|_| Outcome::Aborted).collect(),
        };
        let shared = &self.shared;
        let settled = join_all(accepted.iter().zip(results).enumerate().map(
            |(n, (delivery, result))| {
                fate::settle(shared, delivery, result).instrument(traces.span_of(n).clone())
            },
        ))
        .await;
        traces.finish(&settled);
    }
}

/// Decodes each delivery; one delivered too often, or that does not
/// decode, is settled alone (dead-lettered), in a span of its own.
async fn accept<S: Sink>(
    stage: &S,
    shared: &StageContext,
    deliveries: Vec<Delivery>,
) -> (Vec<Delivery>, Vec<S::Item>) {
    let mut accepted = Vec::with_capacity(deliveries.len());
    let mut items = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        if let Some(error) = fate::exhausted(shared, &delivery) {
            let kind = DeadLetterKind::Exhausted;
            let letter = fate::dead_letter_and_terminate(shared, &delivery, kind, &error);
            settle_alone(S::NAME, &delivery, letter).await;
            continue;
        }
        match stage.decode(&delivery) {
            Ok(item) => {
                items.push(item);
                accepted.push(delivery);
            }
            Err(error) => {
                let settle = fate::settle(shared, &delivery, Outcome::Done(Err(error)));
                settle_alone(S::NAME, &delivery, settle).await;
            }
        }
    }
    (accepted, items)
}

/// Settles a delivery apart from any batch, in a span of its own.
async fn settle_alone(
    consumer: &str,
    delivery: &Delivery,
    settle: impl Future<Output = fate::Settled>,
) {
    let span = delivery.process_span(consumer);
    let settled = settle.instrument(span.clone()).await;
    telemetry::annotate(&span, [KeyValue::new("sluice.outcome", settled.as_str())]);
}

/// The trace spans of one batch: a batch mixes messages of several imports,
/// so each import gets a span of its own in that import's trace (parented
/// by its first message, linked to the others), not one orphan span.
struct BatchTraces {
    spans: Vec<tracing::Span>,
    /// Which span each message of the batch belongs to.
    span_of: Vec<usize>,
}

impl BatchTraces {
    fn new(consumer: &str, batch: &[Delivery]) -> Self {
        let mut spans: Vec<tracing::Span> = Vec::new();
        let mut imports: Vec<Option<&str>> = Vec::new();
        let mut counts: Vec<i64> = Vec::new();
        // The publishers each span is related to already: one link each,
        // and none to the parent (Jaeger would then show no parent).
        let mut related: Vec<Vec<opentelemetry::trace::SpanId>> = Vec::new();
        let mut span_of = Vec::with_capacity(batch.len());
        for delivery in batch {
            let import = delivery.import_id();
            let publisher = telemetry::remote_span(delivery.headers());
            match imports.iter().position(|i| *i == import) {
                Some(n) => {
                    if let Some(link) = publisher {
                        if !related[n].contains(&link.span_id()) {
                            related[n].push(link.span_id());
                            spans[n].add_link(link);
                        }
                    }
                    counts[n] += 1;
                    span_of.push(n);
                }
                None => {
                    let span = telemetry::messaging_span(
                        &format!("process {}", delivery.stream()),
                        "consumer",
                        "process",
                    );
                    if let Err(e) = span.set_parent(telemetry::extract(delivery.headers())) {
                        tracing::debug!(error = %e, "cannot continue the trace");
                    }
                    delivery.annotate(&span, consumer);
                    span_of.push(spans.len());
                    spans.push(span);
                    imports.push(import);
                    counts.push(1);
                    related.push(publisher.map(|p| p.span_id()).into_iter().collect());
                }
            }
        }
        for (span, count) in spans.iter().zip(counts) {
            telemetry::record_ids(span);
            telemetry::annotate(
                span,
                [KeyValue::new("messaging.batch.message_count", count)],
            );
        }
        BatchTraces { spans, span_of }
    }

    fn span_of(&self, message: usize) -> &tracing::Span {
        &self.spans[self.span_of[message]]
    }

    /// Records how many of each span's messages were acked.
    fn finish(self, settled: &[fate::Settled]) {
        let mut acked = vec![0i64; self.spans.len()];
        for (n, outcome) in settled.iter().enumerate() {
            if *outcome == fate::Settled::Acked {
                acked[self.span_of[n]] += 1;
            }
        }
        for (span, acked) in self.spans.iter().zip(acked) {
            telemetry::annotate(span, [KeyValue::new("sluice.messages.acked", acked)]);
        }
    }
}

/// Writes a batch, waiting out outages of the destination with the batch in
/// hand, and returns each message's result. A batch the destination rejects
/// for its data is written again one message at a time, so only the bad
/// message fails.
async fn write_batch<S: Sink>(
    stage: &S,
    writer: &mut Option<S::Writer>,
    items: &[S::Item],
) -> Vec<Result<(), StageError>> {
    match write_through_outages(stage, writer, items).await {
        Ok(()) => items.iter().map(|_| Ok(())).collect(),
        Err(error) if error.is_transient() || items.len() == 1 => {
            *writer = None;
            items.iter().map(|_| Err(error.clone())).collect()
        }
        Err(error) => {
            tracing::warn!(stage = S::NAME, %error, messages = items.len(), "batch rejected; writing its messages one by one");
            let mut results = Vec::with_capacity(items.len());
            for item in items {
                let result = write_through_outages(stage, writer, std::slice::from_ref(item)).await;
                if result.as_ref().is_err_and(StageError::is_transient) {
                    *writer = None;
                }
                results.push(result);
            }
            results
        }
    }
}

async fn write_through_outages<S: Sink>(
    stage: &S,
    writer: &mut Option<S::Writer>,
    items: &[S::Item],
) -> Result<(), StageError> {
    let mut pause: Option<Pause> = None;
    loop {
        let result = async {
            if writer.is_none() {
                *writer = Some(stage.open().await?);
            }
            let open = writer.as_mut().expect("opened above");
            stage.write(open, items).await
        }
        .await;
        match result {
            // The write itself is the real probe (a read-only database
            // still accepts connections): try it again after each wait.
            Err(error) if error.is_outage() => {
                *writer = None;
                HEALTH.set_destination_reachable(false);
                pause
                    .get_or_insert_with(|| Pause::begin(S::NAME, &error))
                    .wait(|| async { stage.open().await.map(drop) })
                    .await;
            }
            other => {
                HEALTH.set_destination_reachable(other.as_ref().is_ok());
                return other;
            }
        }
    }
}
