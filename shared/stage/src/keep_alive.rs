use std::{future::Future, time::Duration};

use async_nats::jetstream::{self, AckKind};
use tokio_util::sync::CancellationToken;

/// How work on some messages ended.
pub(crate) enum Outcome<T> {
    Done(T),
    /// The shutdown grace period ran out first.
    Aborted,
}

/// Runs `work` while telling JetStream every `period` that `messages` are
/// still in progress, so a file that streams for an hour stays with this
/// replica instead of being redelivered to another one mid-way.
pub(crate) async fn keep_alive<T>(
    work: impl Future<Output = T>,
    messages: &[&jetstream::Message],
    period: Duration,
    abort: &CancellationToken,
) -> Outcome<T> {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut work => return Outcome::Done(result),
            _ = ticker.tick() => {
                for message in messages {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "in-progress ack failed; the next tick retries");
                    }
                }
            }
            _ = abort.cancelled() => return Outcome::Aborted,
        }
    }
}
