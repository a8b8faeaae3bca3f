use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_nats::jetstream::{self, AckKind};
use tokio_util::sync::CancellationToken;

use crate::StageError;

/// How work on some messages ended.
pub(crate) enum Outcome<T> {
    Done(T),
    /// The shutdown grace period ran out first.
    Aborted,
}

impl<T> Outcome<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(t) => Outcome::Done(f(t)),
            Outcome::Aborted => Outcome::Aborted,
        }
    }
}

/// Runs `work` while telling JetStream every `period` that `messages` are
/// still in progress, so a file that streams for an hour stays with this
/// replica instead of being redelivered to another one mid-way; but never
/// longer than `limit`, so a server that trickles forever cannot hold a
/// message for ever either. Time the work spent waiting outside its slot
/// (`waited`, in nanoseconds) extends the limit: it was not processing.
pub(crate) async fn keep_alive<T>(
    work: impl Future<Output = T>,
    messages: &[&jetstream::Message],
    period: Duration,
    limit: Duration,
    waited: Option<&AtomicU64>,
    abort: &CancellationToken,
) -> Outcome<Result<T, StageError>> {
    tokio::pin!(work);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut granted = 0u64;
    // Also while the process waits out an outage: an ack that reaches no
    // leader is lost, and the first one a re-elected leader receives tells
    // it not to redeliver what this replica holds.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = &mut work => return Outcome::Done(Ok(result)),
            _ = ticker.tick() => {
                for message in messages {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(error = %e, "in-progress ack failed; the next tick retries");
                    }
                }
            }
            _ = abort.cancelled() => return Outcome::Aborted,
            _ = &mut deadline => {
                let total = waited.map_or(0, |w| w.load(Ordering::Relaxed));
                if total > granted {
                    deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + Duration::from_nanos(total - granted));
                    granted = total;
                    continue;
                }
                return Outcome::Done(Err(StageError::transient(format!(
                    "gave up after {} of processing (SLUICE_MAX_PROCESSING_TIME)",
                    humantime::format_duration(limit)
                ))))
            }
        }
    }
}
