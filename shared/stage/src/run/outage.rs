//! Waiting out a dependency that is down (the database, NATS) while the
//! messages in hand stay owned: an outage is nobody's fault, so it must not
//! spend their deliveries or dead-letter them.

use crate::{
    backoff::Backoff,
    observe::{Paused, HEALTH},
    StageError,
};

/// One task's outage, from the first failure to the first success after it:
/// logged once at each end; the process reports itself not ready meanwhile.
pub(crate) struct Pause {
    stage: &'static str,
    started: tokio::time::Instant,
    backoff: Backoff,
    _paused: Paused,
}

impl Pause {
    pub(crate) fn begin(stage: &'static str, cause: &StageError) -> Pause {
        tracing::warn!(stage, error = %cause, "dependency unavailable; holding the messages in hand until it is back");
        Pause {
            stage,
            started: tokio::time::Instant::now(),
            backoff: Backoff::outage_probe(),
            _paused: HEALTH.pause(),
        }
    }

    /// Waits until `probe` succeeds, probing with backoff (250 ms, doubling
    /// to 2 s, kept across the calls of one outage). The cap bounds how late
    /// the end of an outage is noticed: a JetStream cluster that lost a
    /// stream's leader elects the next in 4 to 9 s, and a probe is one
    /// request, cheap every 2 s even against a database that is down.
    pub(crate) async fn wait<F, Fut>(&mut self, mut probe: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), StageError>>,
    {
        loop {
            self.back_off().await;
            match probe().await {
                Ok(()) => return,
                Err(e) => tracing::debug!(stage = self.stage, error = %e, "still unavailable"),
            }
        }
    }
}

impl Pause {
    /// Sleeps before the next attempt: 250 ms, doubling to 2 s.
    pub(crate) async fn back_off(&mut self) {
        tokio::time::sleep(self.backoff.next_delay()).await;
    }
}

impl Drop for Pause {
    fn drop(&mut self) {
        tracing::info!(
            stage = self.stage,
            paused_ms = self.started.elapsed().as_millis() as u64,
            "dependency available again; resuming"
        );
    }
}
