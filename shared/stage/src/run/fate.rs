//! The fate of a message: the one place where it is decided whether a
//! message is acknowledged, retried later or dead-lettered, and where that
//! is done.

use async_nats::jetstream::AckKind;
use sluice_messages::DeadLetterKind;

use crate::{
    backoff, context::StageContext, dead_letter, keep_alive::Outcome, observe::events,
    pull::release, Delivery, StageError,
};

/// Gives up on a message that was delivered more often than allowed,
/// before working on it again (it may be what crashed the last replica).
pub(crate) fn exhausted(shared: &StageContext, delivery: &Delivery) -> Option<StageError> {
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

/// What became of a message, as its span's `sluice.outcome` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Done: its outputs are stored.
    Acked,
    /// Handed back unfinished (a stop): it comes again at once.
    Released,
    /// Handed back after a transient failure, to come again after a backoff.
    Retried,
    /// Its dead letter stored, the message terminated.
    DeadLettered,
    /// Terminated without a dead letter, which could not be stored.
    Terminated,
    /// Left for redelivery: its dead letter could not be stored yet.
    Kept,
}

impl Settled {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Settled::Acked => "acked",
            Settled::Released => "released",
            Settled::Retried => "retried",
            Settled::DeadLettered => "dead-lettered",
            Settled::Terminated => "terminated",
            Settled::Kept => "kept",
        }
    }
}

/// Acts on how the work on one message ended; says what became of it.
pub(crate) async fn settle(
    shared: &StageContext,
    delivery: &Delivery,
    outcome: Outcome<Result<(), StageError>>,
) -> Settled {
    let message = delivery.message();
    match outcome {
        Outcome::Done(Ok(())) => {
            events::Acked {
                stage: shared.stage,
            }
            .emit();
            if let Err(e) = message.ack().await {
                tracing::warn!(error = %e, "ack failed; the message will be redelivered and its outputs de-duplicated");
            }
            Settled::Acked
        }
        Outcome::Aborted => {
            release(shared, message).await;
            Settled::Released
        }
        Outcome::Done(Err(error)) if error.is_cancelled() => {
            // Dropped, not failed: what it published before stays (the
            // saver writes nothing of a cancelled import).
            tracing::debug!(stage = shared.stage, error = %error, "dropping the rest of a message's work");
            if let Err(e) = message.ack().await {
                tracing::debug!(error = %e, "ack failed; the message comes again and is dropped again");
            }
            Settled::Acked
        }
        Outcome::Done(Err(error)) => {
            let limit = i64::from(shared.consumer.max_deliveries);
            if let Fate::DeadLetter(kind) = fate(&error, delivery.delivered(), limit) {
                return dead_letter_and_terminate(shared, delivery, kind, &error).await;
            }
            let delay = backoff::message_retry(
                shared.consumer.retry_backoff,
                shared.consumer.retry_backoff_max,
                delivery.delivered(),
            );
            events::Retried {
                about: about(shared, delivery),
                error: &error,
                delay,
            }
            .emit();
            if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!(error = %e, "nak failed; redelivery follows ack_wait instead");
            }
            Settled::Retried
        }
    }
}

/// Deliveries on which storing a message's dead letter may fail for a
/// reason other than an outage before the message is terminated.
const DEAD_LETTER_ATTEMPTS: i64 = 3;

pub(crate) async fn dead_letter_and_terminate(
    shared: &StageContext,
    delivery: &Delivery,
    kind: DeadLetterKind,
    error: &StageError,
) -> Settled {
    events::DeadLettering {
        about: about(shared, delivery),
        kind,
        error,
    }
    .emit();
    match dead_letter::store(shared, delivery, kind, error).await {
        Ok(()) => {
            events::DeadLettered {
                stage: shared.stage,
                kind,
            }
            .emit();
            if let Err(e) = delivery.message().ack_with(AckKind::Term).await {
                tracing::warn!(error = %e, "term failed; the message comes back and its dead letter is de-duplicated");
            }
            Settled::DeadLettered
        }
        // Not an outage, and it failed on several deliveries: retrying
        // forever would only keep it in flight. Say so loudly and let go.
        Err(e) if !e.is_outage() && delivery.delivered() >= DEAD_LETTER_ATTEMPTS => {
            events::Undeliverable {
                about: about(shared, delivery),
                error: &e,
            }
            .emit();
            if let Err(e) = dead_letter::report_failed(shared, delivery, kind, error).await {
                tracing::error!(error = %e, "cannot report the message as failed either; its import may not complete");
            }
            if let Err(e) = delivery.message().ack_with(AckKind::Term).await {
                tracing::debug!(error = %e, "term failed; the message comes back and is terminated again");
            }
            Settled::Terminated
        }
        Err(e) => {
            // Never drop it: leave it to be redelivered and dead-lettered later.
            tracing::error!(error = %e, "cannot store dead letter; will try again");
            let delay = backoff::message_retry(
                shared.consumer.retry_backoff,
                shared.consumer.retry_backoff_max,
                delivery.delivered(),
            );
            if let Err(e) = delivery.message().ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!(error = %e, "nak failed; redelivery follows ack_wait instead");
            }
            Settled::Kept
        }
    }
}

/// The message `delivery`, for the lines about it.
fn about<'a>(shared: &StageContext, delivery: &'a Delivery) -> events::About<'a> {
    events::About {
        stage: shared.stage,
        subject: delivery.subject(),
        import_id: delivery.import_id(),
        delivered: delivery.delivered(),
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
}
