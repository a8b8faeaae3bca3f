use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use async_nats::jetstream::{self, AckKind};
use tokio_util::sync::CancellationToken;

use crate::{observe::HEALTH, StageError};

/// How often in-progress acks go out around an outage.
const OUTAGE_PERIOD: Duration = Duration::from_secs(1);

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
    // Every `period`; but every second while the process waits out an
    // outage and for one period after it: a cluster that regains quorum
    // redelivers what it thinks was held too long, so the first ack must
    // reach the new leader soon, and no ack sent meanwhile did.
    let fast = OUTAGE_PERIOD.min(period);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + fast, fast);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent = tokio::time::Instant::now();
    let mut unsettled_until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            result = &mut work => return Outcome::Done(Ok(result)),
            _ = ticker.tick() => {
                let now = tokio::time::Instant::now();
                if HEALTH.is_paused() {
                    unsettled_until = Some(now + period);
                }
                let unsettled = unsettled_until.is_some_and(|until| now < until);
                if !unsettled && now.duration_since(last_sent) < period {
                    continue;
                }
                last_sent = now;
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
