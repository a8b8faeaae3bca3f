//! Asking JetStream for messages, and handing back the ones not worked on.

use std::{sync::atomic::Ordering, time::Duration};

use async_nats::jetstream::{self, consumer::pull::Batch, consumer::PullConsumer, AckKind};
use tokio_util::sync::CancellationToken;

use crate::{context::StageContext, observe::names, StageError};

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

/// One task's failures in a row (to pull, or to open a sink's writer):
/// each is followed by a longer pause, and the streak ends with the first
/// clean pull.
#[derive(Default)]
pub(crate) struct FailureStreak(u32);

impl FailureStreak {
    /// Sleeps after failure `what`, longer each time in a row, unless stopped.
    pub(crate) async fn pause(
        &mut self,
        stage: &'static str,
        what: &str,
        error: &(dyn std::fmt::Display + Sync),
        stop: &CancellationToken,
    ) {
        self.0 += 1;
        let failures = self.0;
        let delay = Duration::from_millis(200 * u64::from(failures.min(25)));
        // A cluster electing the consumer's leader answers every pull with
        // 503 for seconds, in every task: say so on the first failure in a
        // row and every tenth, not each time.
        if failures == 1 || failures % 10 == 0 {
            tracing::warn!(stage, error = %error, failures, "{what}; retrying in {delay:?}");
        } else {
            tracing::debug!(stage, error = %error, failures, "{what}; retrying in {delay:?}");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {}
        }
    }

    pub(crate) fn end(&mut self) {
        self.0 = 0;
    }
}

/// Hands a message we will not work on back to JetStream for immediate
/// redelivery (to this or another replica).
pub(crate) async fn release(shared: &StageContext, message: &jetstream::Message) {
    release_after(shared, message, None).await
}

/// Hands back a message that arrived for a replica that is stopping, after
/// `delay`: long enough for the replica's last pull requests to expire, so
/// it goes to another replica instead of bouncing between this one's
/// requests, each bounce spending a delivery.
pub(crate) async fn release_after(
    shared: &StageContext,
    message: &jetstream::Message,
    delay: Option<Duration>,
) {
    shared.handed_back.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(names::RELEASED, "stage" => shared.stage).increment(1);
    if let Err(e) = message.ack_with(AckKind::Nak(delay)).await {
        tracing::debug!(error = %e, "could not release message; it is redelivered after ack_wait");
    }
}
