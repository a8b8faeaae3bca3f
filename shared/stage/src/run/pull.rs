//! Asking JetStream for messages, and handing back the ones not worked on.

use std::{sync::atomic::Ordering, time::Duration};

use async_nats::jetstream::{self, consumer::pull::Batch, consumer::PullConsumer, AckKind};
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::Backoff,
    context::StageContext,
    misconfiguration,
    observe::{events, Paused, HEALTH},
    repeats::Repeats,
    StageError,
};

/// Asks for up to `max` messages and `max_bytes` bytes (0: any); the batch
/// ends when they arrived or after `expires`. Asking only for what there is
/// room for means nothing waits unseen in a client buffer, so shutdown can
/// hand everything back promptly.
///
/// No request is made while the client is disconnected: it would be
/// buffered and reach the server after its reply subscription is gone,
/// where it takes messages nobody receives, each losing a delivery.
pub(crate) async fn pull(
    shared: &StageContext,
    consumer: &PullConsumer,
    max: usize,
    max_bytes: usize,
    expires: Duration,
) -> Result<Batch, StageError> {
    if shared.js.client().connection_state() != async_nats::connection::State::Connected {
        return Err(StageError::outage(
            "not connected to NATS (a pull request now would be answered to no one)",
        ));
    }
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

/// How long past its expiry a pull request that brought nothing is waited
/// for. A server always ends a request it heard (with messages, or a timeout
/// status once `expires` runs out); a cluster electing a consumer leader
/// drops it without a word, and async-nats would wait `expires` + 5 s. Each
/// such wait delays the return after an outage, so sluice gives up sooner.
/// What a server answers later still (overloaded past this margin) goes to
/// a subscription that is gone and is redelivered after the ack wait: late,
/// never lost.
pub(crate) const UNHEARD: Duration = Duration::from_secs(1);

/// The next item of `batch`; `None` at its end, or when nothing at all came
/// within `expires` + [`UNHEARD`] of `started` (a request no server heard:
/// [`unanswered`] then says so).
pub(crate) async fn next(
    batch: &mut Batch,
    started: std::time::Instant,
    expires: Duration,
    received: usize,
) -> Option<<Batch as futures_util::Stream>::Item> {
    use futures_util::StreamExt;
    let next = if received > 0 {
        batch.next().await
    } else {
        let deadline = tokio::time::Instant::from_std(started + expires + UNHEARD);
        tokio::time::timeout_at(deadline, batch.next())
            .await
            .ok()
            .flatten()
    };
    match next {
        // Only once something came: a budget too small for even one
        // message is a misconfiguration, reported and backed off from as
        // before, not an endless round of empty pulls.
        Some(Err(e)) if received > 0 && filled(e.as_ref()) => None,
        next => next,
    }
}

/// Whether a pull request ended because its byte budget was spent: the
/// server says so with a `409 Message Size Exceeds MaxBytes` status, which
/// async-nats hands on as an error. It is the batch's normal end (a batch
/// of wide rows fills by bytes before it fills by count), not a failure
/// to back off from.
fn filled(e: &(dyn std::error::Error + 'static)) -> bool {
    e.to_string().contains("Message Size Exceeds MaxBytes")
}

/// A pull request the server never ended: it answers every request it
/// heard, with messages or with a timeout status when `expires` runs out,
/// so a request that brought nothing and outlived `expires` by [`UNHEARD`]
/// went unheard. That is what a cluster without quorum does: no error,
/// just silence.
pub(crate) fn unanswered(
    started: std::time::Instant,
    expires: Duration,
    received: usize,
) -> Option<String> {
    let waited = started.elapsed();
    (received == 0 && waited >= expires + UNHEARD).then(|| {
        format!(
            "no JetStream server answered a pull request within {:.1} s (JetStream down, or on a cluster a leader being elected)",
            waited.as_secs_f64()
        )
    })
}

/// A failed pull in words. async-nats reports a pull request the server
/// answered with a status as its raw parts (`409, Some("Consumer
/// Deleted")`), and a stream or consumer that is gone as "no responders":
/// look up which is missing, and name it with the fix.
pub(crate) async fn pull_failure(shared: &StageContext, chain: String) -> String {
    use async_nats::jetstream::{
        context::{ConsumerInfoErrorKind, GetStreamErrorKind},
        ErrorCode,
    };
    let gone = [
        "Consumer Deleted",
        "consumer deleted",
        "no responders",
        "503,",
    ];
    if !gone.iter().any(|g| chain.contains(g)) {
        return chain;
    }
    let Some(input) = crate::topology::input_of(shared.stage) else {
        return chain;
    };
    let stream = shared.ns.stream(input);
    let consumer = shared.stage;
    // A cluster without a leader may not answer the look-up either: it is
    // worth a second at most, on a path that is about to pause anyway.
    let found = tokio::time::timeout(Duration::from_secs(1), shared.js.get_stream(&stream));
    let Ok(found) = found.await else {
        return format!(
            "no JetStream server answered for stream {stream} (JetStream down, or on a cluster a leader being elected): {chain}"
        );
    };
    match found {
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            format!("stream {stream} does not exist (was it deleted?): run `sluice setup`, then restart this stage")
        }
        Ok(found)
            if matches!(
                tokio::time::timeout(Duration::from_secs(1), found.consumer_info(consumer)).await,
                Ok(Err(ref e)) if e.kind() == ConsumerInfoErrorKind::NotFound
            ) =>
        {
            // A cluster node that has just come back answers so too until it
            // has caught up: say both, as the pause ends by itself then.
            format!(
            "the durable consumer {consumer} on stream {stream} was not found (deleted, or a cluster node still recovering it): if this lasts, restart this stage, which declares it, or run `sluice setup`"
        )
        }
        _ => format!(
            "no JetStream server answered for stream {stream} (JetStream down, or on a cluster a leader being elected): {chain}"
        ),
    }
}

/// What a message may add to its payload (headers, subject, framing), for
/// byte limits that must always admit the largest message.
pub(crate) const MESSAGE_HEADROOM: usize = 64 * 1024;

/// One task's failures in a row (to pull, or to open a sink's writer):
/// each is followed by a longer pause, and the streak ends with the first
/// clean pull. While it lasts the process reports itself not ready (a
/// stage that cannot pull cannot work, whatever else answers).
pub(crate) struct FailureStreak {
    failures: u32,
    backoff: Backoff,
    repeats: Repeats,
    paused: Option<Paused>,
}

impl Default for FailureStreak {
    fn default() -> Self {
        FailureStreak {
            failures: 0,
            backoff: Backoff::failed_pull(),
            repeats: Repeats::default(),
            paused: None,
        }
    }
}

impl FailureStreak {
    /// Sleeps after failure `what`, longer each time in a row, unless stopped.
    pub(crate) async fn pause(
        &mut self,
        stage: &'static str,
        what: &str,
        error: &(dyn std::fmt::Display + Sync),
        stop: &CancellationToken,
    ) {
        self.failures += 1;
        let failures = self.failures;
        self.paused.get_or_insert_with(|| HEALTH.pause());
        let delay = self.backoff.next_delay();
        // A cluster electing the consumer's leader answers every pull with
        // 503 for seconds, in every task: say so on the first failure in a
        // row, then at most every 30 s, not each time.
        // A misconfiguration was already reported, with its fix, as an error.
        let due = self.repeats.due().filter(|_| !misconfiguration::reported());
        match due {
            Some(repeated) => {
                tracing::warn!(stage, error = %error, failures, repeated, "{what}; retrying in {delay:?}")
            }
            None => {
                tracing::debug!(stage, error = %error, failures, "{what}; retrying in {delay:?}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {}
        }
    }

    pub(crate) fn end(&mut self) {
        self.failures = 0;
        self.backoff = Backoff::failed_pull();
        self.repeats.end();
        self.paused = None;
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
    events::Released {
        stage: shared.stage,
    }
    .emit();
    if let Err(e) = message.ack_with(AckKind::Nak(delay)).await {
        tracing::debug!(error = %e, "could not release message; it is redelivered after ack_wait");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stage_that_cannot_pull_is_not_ready_until_it_can() {
        let paused = |why: Result<(), Vec<&str>>| {
            why.err()
                .is_some_and(|reasons| reasons.contains(&"paused: waiting out an outage"))
        };
        let stop = CancellationToken::new();
        stop.cancel();
        let mut streak = FailureStreak::default();
        streak.pause("test", "cannot pull", &"503", &stop).await;
        streak.pause("test", "cannot pull", &"503", &stop).await;
        assert!(paused(HEALTH.readiness()));
        streak.end();
        assert!(!paused(HEALTH.readiness()));
    }
}
