use std::{future::Future, sync::Arc, time::Duration, time::Instant};

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures_util::StreamExt;
use sluice_messages::DeadLetterKind;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use opentelemetry::KeyValue;
use tracing::Instrument;

use crate::{
    context::StageContext,
    fate,
    keep_alive::keep_alive,
    observe::names,
    outage::Pause,
    pull::{self, release_after, FailureStreak},
    slot::Slot,
    tasks::{self, reap},
    telemetry::{self, TraceHeaders},
    Delivery, Emitter, StageError,
};

/// A stage that turns one input message into any number of output messages.
///
/// `process` publishes through the [`Emitter`]; the runtime acknowledges the
/// input only after JetStream stored every output. It may be called again for
/// the same input (after a crash, or a transient error): it must publish the
/// same outputs at the same positions, which JetStream then de-duplicates.
pub trait FlatMap: Send + Sync + 'static {
    /// The service, its durable consumer, its dead-letter subject.
    const NAME: &'static str;
    /// Input messages worked on at once per replica, unless configured.
    const DEFAULT_CONCURRENCY: u16;

    fn process(
        &self,
        input: &Delivery,
        out: &mut Emitter,
    ) -> impl Future<Output = Result<(), StageError>> + Send;

    /// The import an input belongs to, read without processing it, so that
    /// a message given up on before any work (exhausted, say) still names
    /// its import in the dead letter and the import can complete.
    fn import_id_of(&self, _input: &Delivery) -> Option<String> {
        None
    }
}

/// How long one pull request waits for messages; also the most a stop waits
/// for the last request to end.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

pub(crate) async fn run<S: FlatMap>(
    stage: Arc<S>,
    shared: Arc<StageContext>,
    consumer: PullConsumer,
    stop: CancellationToken,
) {
    let concurrency = usize::from(
        shared
            .consumer
            .concurrency
            .unwrap_or(S::DEFAULT_CONCURRENCY),
    );
    let slots = Arc::new(Semaphore::new(concurrency));
    // Messages waiting without a slot (for a busy host): up to three times
    // as many as are worked on, each kept with in-progress acks.
    let waiting_room = Arc::new(Semaphore::new(concurrency * 3));
    // Each input in work gets an equal share of the replica's publish window.
    let publish_budget = shared.consumer.publish_window as usize / concurrency;
    let abort = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut failures = FailureStreak::default();
    tracing::info!(stage = S::NAME, concurrency, "processing");

    'pulling: while !stop.is_cancelled() {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
            _ = stop.cancelled() => break,
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let started = Instant::now();
        let mut received = 0;
        let mut batch = match pull::pull(&consumer, permits.len(), 0, PULL_EXPIRES).await {
            Ok(batch) => batch,
            Err(e) => {
                failures
                    .pause(
                        S::NAME,
                        "cannot pull",
                        &pull::pull_failure(&shared, crate::error_chain(&e)).await,
                        &stop,
                    )
                    .await;
                continue;
            }
        };
        // The request runs to its end even after a stop, so nothing is
        // delivered to a subscription that is gone; what arrives late is
        // handed straight back.
        while let Some(next) = batch.next().await {
            received += usize::from(next.is_ok());
            match next {
                Ok(message) => match (stop.is_cancelled(), permits.pop()) {
                    (false, Some(permit)) => {
                        let slot = Arc::new(Slot {
                            slots: slots.clone(),
                            waiting_room: waiting_room.clone(),
                            permit: std::sync::Mutex::new(Some(permit)),
                            waited: Default::default(),
                        });
                        tasks.spawn(handle(
                            stage.clone(),
                            shared.clone(),
                            message,
                            abort.clone(),
                            slot,
                            publish_budget,
                        ));
                    }
                    _ => release_after(&shared, &message, Some(PULL_EXPIRES)).await,
                },
                // A consumer without a leader (a cluster electing one)
                // answers the request itself with an error.
                Err(e) => {
                    failures
                        .pause(
                            S::NAME,
                            "cannot pull",
                            &pull::pull_failure(&shared, crate::error_chain(e.as_ref())).await,
                            &stop,
                        )
                        .await;
                    continue 'pulling;
                }
            }
            reap(&mut tasks);
        }
        if let Some(silence) = pull::unanswered(started, PULL_EXPIRES, received) {
            failures
                .pause(S::NAME, "cannot pull", &silence, &stop)
                .await;
            continue;
        }
        failures.end();
        reap(&mut tasks);
    }
    tasks::drain(tasks, &abort, shared.consumer.shutdown_timeout).await;
}

async fn handle<S: FlatMap>(
    stage: Arc<S>,
    shared: Arc<StageContext>,
    message: jetstream::Message,
    abort: CancellationToken,
    slot: Arc<Slot>,
    publish_budget: usize,
) {
    let mut delivery = match Delivery::new(message) {
        Ok(d) => d,
        Err(e) => return tracing::error!(error = %e, "skipping message"),
    };
    let known = stage.import_id_of(&delivery);
    delivery.learn_import_id(known.as_deref());
    let span = delivery.process_span(S::NAME);
    let work = work_on(
        stage,
        shared,
        delivery,
        abort,
        slot,
        publish_budget,
        span.clone(),
    );
    work.instrument(span).await
}

/// Processes one delivery and settles it, inside its span.
async fn work_on<S: FlatMap>(
    stage: Arc<S>,
    shared: Arc<StageContext>,
    mut delivery: Delivery,
    abort: CancellationToken,
    slot: Arc<Slot>,
    publish_budget: usize,
    span: tracing::Span,
) {
    if let Some(error) = fate::exhausted(&shared, &delivery) {
        let settled =
            fate::dead_letter_and_terminate(&shared, &delivery, DeadLetterKind::Exhausted, &error)
                .await;
        return telemetry::annotate(&span, [KeyValue::new("sluice.outcome", settled)]);
    }
    let started = Instant::now();
    let in_flight = metrics::gauge!(names::IN_FLIGHT, "stage" => S::NAME);
    in_flight.increment(1.0);
    metrics::counter!(names::RECEIVED, "stage" => S::NAME).increment(1);
    let trace = TraceHeaders::of(&span);
    let mut import_id = None;
    let mut detached = false;
    let work = async {
        let mut pause: Option<Pause> = None;
        loop {
            let mut out = Emitter::new(
                shared.clone(),
                &delivery,
                publish_budget,
                slot.clone(),
                (span.clone(), trace.clone()),
            );
            let result = async {
                stage.process(&delivery, &mut out).await?;
                out.flush().await
            }
            .await;
            import_id = out.import_id().map(str::to_owned);
            detached = out.is_detached();
            match result {
                Ok(stats) => {
                    telemetry::annotate(
                        &span,
                        [
                            KeyValue::new("sluice.messages.published", stats.published as i64),
                            KeyValue::new("sluice.messages.duplicate", stats.duplicates as i64),
                            KeyValue::new("sluice.rows.rejected", stats.rejected_rows as i64),
                        ],
                    );
                    metrics::counter!(names::PUBLISHED, "stage" => S::NAME)
                        .increment(stats.published);
                    metrics::counter!(names::ROWS_REJECTED, "stage" => S::NAME)
                        .increment(stats.rejected_rows);
                    tracing::info!(
                        stage = S::NAME,
                        subject = delivery.subject(),
                        import_id = out.import_id(),
                        published = stats.published,
                        duplicates = stats.duplicates,
                        rejected_rows = stats.rejected_rows,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "processed"
                    );
                    return Ok(());
                }
                // NATS not storing what we publish is not this message's
                // fault: keep it, wait for JetStream, and do it again (what
                // was stored already comes back as duplicates).
                Err(e) if e.is_outage() => {
                    pause
                        .get_or_insert_with(|| Pause::begin(S::NAME, &e))
                        .wait(|| async {
                            shared
                                .js
                                .query_account()
                                .await
                                .map(drop)
                                .map_err(StageError::outage)
                        })
                        .await
                }
                Err(e) => return Err(e),
            }
        }
    };
    let outcome = keep_alive(
        work,
        &[delivery.message()],
        shared.progress_interval(),
        shared.consumer.max_processing_time,
        Some(&slot.waited),
        &abort,
    )
    .await
    .map(|r| r.and_then(|done| done));
    if detached {
        delivery.forget_import_id();
    } else {
        delivery.learn_import_id(import_id.as_deref());
    }
    let settled = fate::settle(&shared, &delivery, outcome).await;
    telemetry::annotate(&span, [KeyValue::new("sluice.outcome", settled)]);
    if let Some(id) = delivery.import_id() {
        telemetry::annotate(&span, [KeyValue::new("sluice.import.id", id.to_owned())]);
    }
    metrics::histogram!(names::PROCESSING_SECONDS, "stage" => S::NAME)
        .record(started.elapsed().as_secs_f64());
    in_flight.decrement(1.0);
}
