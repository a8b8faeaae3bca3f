//! Pulling and settling: the one place where a message's fate (ack, retry
//! later, dead letter) is decided.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::Batch, consumer::PullConsumer, AckKind};
use sluice_messages::DeadLetterKind;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    dead_letter, keep_alive::Outcome, observe::names, service::Shared, Delivery, StageError,
};

/// Asks for up to `max` messages and `max_bytes` bytes (0: any); the batch
/// ends when they arrived or after `expires`. Asking only for what there is
/// room for means nothing waits unseen in a client buffer, so shutdown can
/// hand everything back promptly.
pub(crate) async fn pull(
    consumer: &PullConsumer,
    max: usize,
    max_bytes: usize,
    expires: Duration,
) -> Result<Batch, StageError> {
    consumer
        .batch()
        .max_messages(max)
        .max_bytes(max_bytes)
        .expires(expires)
        .messages()
        .await
        .map_err(|e| {
            StageError::transient(format!("pull request failed: {}", crate::error_chain(&e)))
        })
}

/// What a message may add to its payload (headers, subject, framing), for
/// byte limits that must always admit the largest message.
pub(crate) const MESSAGE_HEADROOM: usize = 64 * 1024;

/// Sleeps after a failed pull, longer each time in a row, unless stopped.
pub(crate) async fn pause_after_failure(
    failures: u32,
    error: &(dyn std::fmt::Display + Sync),
    stop: &CancellationToken,
) {
    let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
    tracing::warn!(error = %error, failures, "cannot pull; retrying in {delay:?}");
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => {}
    }
}

/// Hands a message we will not work on back to JetStream for immediate
/// redelivery (to this or another replica).
pub(crate) async fn release(message: &jetstream::Message) {
    release_after(message, None).await
}

/// Hands back a message that arrived for a replica that is stopping, after
/// `delay`: long enough for the replica's last pull requests to expire, so
/// it goes to another replica instead of bouncing between this one's
/// requests, each bounce spending a delivery.
pub(crate) async fn release_after(message: &jetstream::Message, delay: Option<Duration>) {
    if let Err(e) = message.ack_with(AckKind::Nak(delay)).await {
        tracing::debug!(error = %e, "could not release message; it is redelivered after ack_wait");
    }
}

/// Exponential backoff with jitter from the delivery count: attempt 1 waits
/// about `base`, attempt 2 about `2·base`, … capped at `max`. Half of the
/// delay is random so replicas that failed together do not retry together.
pub(crate) fn retry_delay(base: Duration, max: Duration, delivered: i64) -> Duration {
    let exponent = delivered.saturating_sub(1).clamp(0, 30) as u32;
    let full = base.saturating_mul(1 << exponent).min(max);
    let half = full / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Gives up on a message that was delivered more often than allowed,
/// before working on it again (it may be what crashed the last replica).
pub(crate) fn exhausted(shared: &Shared, delivery: &Delivery) -> Option<StageError> {
    let limit = i64::from(shared.consumer.max_deliveries);
    (delivery.delivered() > limit).then(|| {
        StageError::permanent(format!(
            "gave up after {limit} deliveries without success (earlier attempts failed, timed out or crashed)",
        ))
    })
}

/// What becomes of a message whose work ended in `error` on delivery
/// `delivered` of at most `limit`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Handed back, to come again after a backoff.
    Retry,
    DeadLetter(DeadLetterKind),
}

pub(crate) fn fate(error: &StageError, delivered: i64, limit: i64) -> Fate {
    match (error.is_transient(), delivered < limit) {
        (true, true) => Fate::Retry,
        (true, false) => Fate::DeadLetter(DeadLetterKind::Exhausted),
        (false, _) => Fate::DeadLetter(DeadLetterKind::Permanent),
    }
}

/// Acts on how the work on one message ended; says what became of it
/// (`acked`, `released`, `retried`, `dead-lettered`, `kept`) for its span.
pub(crate) async fn settle(
    shared: &Shared,
    delivery: &Delivery,
    outcome: Outcome<Result<(), StageError>>,
) -> &'static str {
    let message = delivery.message();
    match outcome {
        Outcome::Done(Ok(())) => {
            metrics::counter!(names::ACKED, "stage" => shared.stage).increment(1);
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "ack failed; the message will be redelivered and its outputs de-duplicated");
            }
            "acked"
        }
        Outcome::Aborted => {
            release(message).await;
            "released"
        }
        Outcome::Done(Err(error)) => {
            let limit = i64::from(shared.consumer.max_deliveries);
            if let Fate::DeadLetter(kind) = fate(&error, delivery.delivered(), limit) {
                return dead_letter_and_terminate(shared, delivery, kind, &error).await;
            }
            let delay = retry_delay(
                shared.consumer.retry_backoff,
                shared.consumer.retry_backoff_max,
                delivery.delivered(),
            );
            tracing::warn!(
                stage = shared.stage,
                subject = delivery.subject(),
                import_id = delivery.import_id(),
                delivered = delivery.delivered(),
                %error,
                "transient failure; retrying in {delay:?}"
            );
            metrics::counter!(names::RETRIED, "stage" => shared.stage).increment(1);
            if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!(error = %e, "nak failed; redelivery follows ack_wait instead");
            }
            "retried"
        }
    }
}

/// Deliveries on which storing a message's dead letter may fail for a
/// reason other than an outage before the message is terminated.
const DEAD_LETTER_ATTEMPTS: i64 = 3;

pub(crate) async fn dead_letter_and_terminate(
    shared: &Shared,
    delivery: &Delivery,
    kind: DeadLetterKind,
    error: &StageError,
) -> &'static str {
    tracing::error!(
        stage = shared.stage,
        subject = delivery.subject(),
        import_id = delivery.import_id(),
        delivered = delivery.delivered(),
        kind = kind.as_str(),
        %error,
        "dead-lettering message"
    );
    match dead_letter::store(shared, delivery, kind, error).await {
        Ok(()) => {
            metrics::counter!(names::DEAD_LETTERED, "stage" => shared.stage, "kind" => kind.as_str())
                .increment(1);
            if let Err(e) = delivery.message().ack_with(AckKind::Term).await {
                tracing::warn!(error = %e, "term failed; the message comes back and its dead letter is de-duplicated");
            }
            "dead-lettered"
        }
        // Not an outage, and it failed on several deliveries: retrying
        // forever would only keep it in flight. Say so loudly and let go.
        Err(e) if !e.is_outage() && delivery.delivered() >= DEAD_LETTER_ATTEMPTS => {
            tracing::error!(
                stage = shared.stage,
                subject = delivery.subject(),
                import_id = delivery.import_id(),
                delivered = delivery.delivered(),
                error = %e,
                "cannot dead-letter this message; terminating it (it is lost to sluice: this log line is its only record)"
            );
            metrics::counter!(names::DEAD_LETTERED, "stage" => shared.stage, "kind" => "undeliverable")
                .increment(1);
            if let Err(e) = dead_letter::report_failed(shared, delivery, kind, error).await {
                tracing::error!(error = %e, "cannot report the message as failed either; its import may not complete");
            }
            let _ = delivery.message().ack_with(AckKind::Term).await;
            "terminated"
        }
        Err(e) => {
            // Never drop it: leave it to be redelivered and dead-lettered later.
            tracing::error!(error = %e, "cannot store dead letter; will try again");
            let delay = retry_delay(
                shared.consumer.retry_backoff,
                shared.consumer.retry_backoff_max,
                delivery.delivered(),
            );
            let _ = delivery.message().ack_with(AckKind::Nak(Some(delay))).await;
            "kept"
        }
    }
}

/// Waits for work in flight after a stop: up to `grace` to finish, then
/// `abort` tells it to hand its messages back, then it is cut off.
pub(crate) async fn drain(mut tasks: JoinSet<()>, abort: &CancellationToken, grace: Duration) {
    if tokio::time::timeout(grace, join_all(&mut tasks))
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = tasks.len(),
            "shutdown timeout reached; releasing unfinished messages"
        );
        abort.cancel();
        if tokio::time::timeout(Duration::from_secs(5), join_all(&mut tasks))
            .await
            .is_err()
        {
            tasks.abort_all();
        }
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// Logs tasks that panicked: their message was not settled, so JetStream
/// redelivers it after `ack_wait`.
pub(crate) fn reap(tasks: &mut JoinSet<()>) {
    while let Some(result) = tasks.try_join_next() {
        if let Err(e) = result {
            if e.is_panic() {
                tracing::error!(error = %e, "stage task panicked; its message will be redelivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_fate() {
        let transient = StageError::transient("HTTP 503");
        let outage = StageError::outage("database read-only");
        let permanent = StageError::permanent("HTTP 404");
        assert_eq!(fate(&transient, 1, 10), Fate::Retry);
        assert_eq!(fate(&transient, 9, 10), Fate::Retry);
        assert_eq!(
            fate(&transient, 10, 10),
            Fate::DeadLetter(DeadLetterKind::Exhausted)
        );
        assert_eq!(
            fate(&permanent, 1, 10),
            Fate::DeadLetter(DeadLetterKind::Permanent)
        );
        // An outage only reaches here past SLUICE_MAX_PROCESSING_TIME: it is
        // handed back like any transient failure.
        assert_eq!(fate(&outage, 1, 10), Fate::Retry);
        assert!(outage.is_outage() && outage.is_transient());
        assert!(!transient.is_outage());
    }

    #[test]
    fn retry_delay_doubles_with_jitter_and_caps() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..100 {
            let first = retry_delay(base, max, 1);
            assert!(first >= Duration::from_millis(500) && first <= base);
            let third = retry_delay(base, max, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
            let late = retry_delay(base, max, 50);
            assert!(late >= Duration::from_secs(30) && late <= max);
        }
    }
}
