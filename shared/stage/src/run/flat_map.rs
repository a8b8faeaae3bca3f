use std::{future::Future, sync::Arc, time::Duration, time::Instant};

use async_nats::jetstream::{self, consumer::PullConsumer};

use sluice_messages::DeadLetterKind;
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use opentelemetry::KeyValue;
use tracing::Instrument;

use crate::{
    context::StageContext,
    fate,
    keep_alive::keep_alive,
    keep_alive::Outcome,
    observe::events,
    outage::Pause,
    pull::{self, release_after, FailureStreak},
    slot::Slot,
    tasks::{self, reap},
    telemetry::{self, TraceHeaders},
    Delivery, Emitter, StageError,
};

/// A stage that turns one input message into any number of output messages.
///
/// The runtime first [`decode`](FlatMap::decode)s a message, so it knows
/// the import before any work, then calls `process`, which publishes
/// through the [`Emitter`]; the runtime acknowledges the input only after
/// JetStream stored every output. `process` may be called again for the
/// same input (after a crash, or a transient error): it must publish the
/// same outputs at the same positions, which JetStream then de-duplicates.
pub trait FlatMap: Send + Sync + 'static {
    /// The service, its durable consumer, its dead-letter subject.
    const NAME: &'static str;
    /// Input messages worked on at once per replica, unless configured.
    const DEFAULT_CONCURRENCY: u16;
    /// What one input message says.
    type Input: Send + Sync;

    /// Reads an input message. An error settles it at once, without any
    /// work (an undecodable body is `permanent`: dead-lettered).
    fn decode(&self, input: &Delivery) -> Result<Self::Input, StageError>;

    /// The import `input` belongs to: every output, fact and dead letter of
    /// it names that import (over a header that may disagree).
    fn import_id<'a>(&self, input: &'a Self::Input) -> Option<&'a str>;

    /// Publishes the outputs of `input` through `out`; an error decides the input's fate ([`StageError`]).
    fn process(
        &self,
        input: &Self::Input,
        out: &mut Emitter,
    ) -> impl Future<Output = Result<(), StageError>> + Send;
}

/// How long one pull request waits for messages; also the most a stop waits
/// for the last request to end.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Messages a replica may hold per processing slot: one at work, three
/// waiting without a slot.
const IN_HAND_PER_SLOT: usize = 4;

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
    // Messages a replica holds: those worked on, and up to three times as
    // many waiting without a slot (for a busy host), each kept with
    // in-progress acks.
    let in_hand = Arc::new(Semaphore::new(concurrency * IN_HAND_PER_SLOT));
    // Each input in work gets an equal share of the replica's publish window.
    let publish_budget = shared.consumer.publish_window as usize / concurrency;
    let abort = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut failures = FailureStreak::default();
    tracing::info!(stage = S::NAME, concurrency, "processing");

    'pulling: while !stop.is_cancelled() {
        // A place in hand, then a slot: the order tasks never take them in.
        let first = tokio::select! {
            places = async {
                let place = in_hand.clone().acquire_owned().await;
                let permit = slots.clone().acquire_owned().await;
                (place.expect("semaphore never closes"), permit.expect("semaphore never closes"))
            } => places,
            _ = stop.cancelled() => break,
        };
        let mut permits = vec![first];
        while let Ok(place) = in_hand.clone().try_acquire_owned() {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push((place, permit)),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let mut received = 0;
        let mut batch = match pull::pull(&shared, &consumer, permits.len(), 0, PULL_EXPIRES).await {
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
        while let Some(next) = pull::next(&mut batch, started, PULL_EXPIRES, received).await {
            received += usize::from(next.is_ok());
            match next {
                Ok(message) => match (stop.is_cancelled(), permits.pop()) {
                    (false, Some((place, permit))) => {
                        let slot = Arc::new(Slot {
                            slots: slots.clone(),
                            _in_hand: place,
                            permit: std::sync::Mutex::new(Some(permit)),
                            waited: Default::default(),
                        });
                        let task = Task {
                            stage: stage.clone(),
                            shared: shared.clone(),
                            abort: abort.clone(),
                            slot,
                            publish_budget,
                        };
                        tasks.spawn(task.handle(message));
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

/// One input message's work, and what it needs from the replica.
struct Task<S> {
    stage: Arc<S>,
    shared: Arc<StageContext>,
    abort: CancellationToken,
    /// Its processing slot.
    slot: Arc<Slot>,
    /// Bytes of its publishes that may await their acks.
    publish_budget: usize,
}

impl<S: FlatMap> Task<S> {
    async fn handle(self, message: jetstream::Message) {
        let mut delivery = match Delivery::new(message) {
            Ok(d) => d,
            Err(e) => return tracing::error!(error = %e, "skipping message"),
        };
        let decoded = self.stage.decode(&delivery);
        if let Ok(input) = &decoded {
            delivery.name_import(self.stage.import_id(input));
        }
        let span = delivery.process_span(S::NAME);
        let settled = self
            .work_on(&mut delivery, decoded, &span)
            .instrument(span.clone())
            .await;
        telemetry::annotate(&span, [KeyValue::new("sluice.outcome", settled.as_str())]);
        if let Some(id) = delivery.import_id() {
            telemetry::annotate(&span, [KeyValue::new("sluice.import.id", id.to_owned())]);
        }
    }

    /// Processes one delivery and settles it.
    async fn work_on(
        &self,
        delivery: &mut Delivery,
        decoded: Result<S::Input, StageError>,
        span: &tracing::Span,
    ) -> fate::Settled {
        let shared = &self.shared;
        // A cancelled import's message is dropped, however often it came.
        if let Ok(input) = &decoded {
            if let Some(id) = self.stage.import_id(input) {
                if shared.cancellations.is_cancelled(id) {
                    let error = StageError::cancelled(id);
                    return fate::settle(shared, delivery, Outcome::Done(Err(error))).await;
                }
            }
        }
        if let Some(error) = fate::exhausted(shared, delivery) {
            let kind = DeadLetterKind::Exhausted;
            return fate::dead_letter_and_terminate(shared, delivery, kind, &error).await;
        }
        let input = match decoded {
            Ok(input) => input,
            Err(error) => return fate::settle(shared, delivery, Outcome::Done(Err(error))).await,
        };
        let in_flight = events::InFlight::start(S::NAME);
        let mut detached = false;
        let outcome = keep_alive(
            self.process(delivery, &input, span, &mut detached),
            &[delivery.message()],
            shared.progress_interval(),
            shared.consumer.max_processing_time,
            Some(&self.slot.waited),
            &self.abort,
        )
        .await
        .map(|r| r.and_then(|done| done));
        if detached {
            delivery.forget_import_id();
        }
        let settled = fate::settle(shared, delivery, outcome).await;
        drop(in_flight);
        settled
    }

    /// Runs the stage's step until JetStream stored all it published,
    /// waiting out outages the emitter could not (a step's own dependency
    /// down): then the step runs again, and what was stored already comes
    /// back as duplicates.
    async fn process(
        &self,
        delivery: &Delivery,
        input: &S::Input,
        span: &tracing::Span,
        detached: &mut bool,
    ) -> Result<(), StageError> {
        let shared = &self.shared;
        let trace = TraceHeaders::of(span);
        let started = Instant::now();
        let mut pause: Option<Pause> = None;
        loop {
            let mut out = Emitter::new(
                shared.clone(),
                delivery,
                self.publish_budget,
                self.slot.clone(),
                (span.clone(), trace.clone()),
            );
            let result = async {
                self.stage.process(input, &mut out).await?;
                out.flush().await
            }
            .await;
            *detached = out.is_detached();
            match result {
                Ok(stats) => {
                    events::Processed {
                        stage: S::NAME,
                        subject: delivery.subject(),
                        import_id: out.import_id(),
                        stats,
                        elapsed: started.elapsed(),
                        span,
                    }
                    .emit();
                    return Ok(());
                }
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
    }
}
