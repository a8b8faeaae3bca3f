//! Every wait between two tries in the runtime, in one place: where to
//! change a retry policy.
//!
//! | what is retried | curve | where |
//! | --- | --- | --- |
//! | a message whose work failed (transient) | exponential from `SLUICE_RETRY_BACKOFF` to `SLUICE_RETRY_BACKOFF_MAX`, half of it random | [`message_retry`] |
//! | a dependency that is down, probed while messages are held | 250 ms, doubling to 2 s | [`Backoff::outage_probe`] |
//! | a pull, or opening a sink's writer, failing in a row | 200 ms more each time, up to 1 s | [`Backoff::failed_pull`] |
//! | connecting to JetStream at start | 250 ms more each time, up to 5 s | [`Backoff::startup`] |
//!
//! The caps of the last three bound how late the end of an outage is
//! noticed, hence how soon `/readyz` turns 200 again.

use std::time::Duration;

/// The delay before redelivering a message that failed on delivery
/// `delivered`: about `base`, then `2·base`, … capped at `max`. Half of it
/// is random so replicas that failed together do not retry together.
pub(crate) fn message_retry(base: Duration, max: Duration, delivered: i64) -> Duration {
    let exponent = delivered.saturating_sub(1).clamp(0, 30) as u32;
    let full = base.saturating_mul(1 << exponent).min(max);
    let half = full / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Waits that grow with each failure in a row, up to a cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    growth: Growth,
    max: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Growth {
    Doubling,
    Adding(Duration),
}

impl Backoff {
    /// Probing a dependency that is down: 250 ms, doubling to 2 s.
    pub(crate) fn outage_probe() -> Self {
        Backoff {
            next: Duration::from_millis(250),
            growth: Growth::Doubling,
            max: Duration::from_secs(2),
        }
    }

    /// Pulling (or opening a writer) after failures in a row: 200 ms,
    /// 400 ms, … up to 1 s. A failed pull costs the server nothing, and
    /// each pause is time lost once a cluster elects its leaders again.
    pub(crate) fn failed_pull() -> Self {
        Self::adding(Duration::from_millis(200), Duration::from_secs(1))
    }

    /// Connecting to JetStream at start: 250 ms, 500 ms, … up to 5 s.
    pub(crate) fn startup() -> Self {
        Self::adding(Duration::from_millis(250), Duration::from_secs(5))
    }

    fn adding(step: Duration, max: Duration) -> Self {
        Backoff {
            next: step,
            growth: Growth::Adding(step),
            max,
        }
    }

    /// The wait before the next try; each call waits longer, up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next.min(self.max);
        self.next = match self.growth {
            Growth::Doubling => self.next.saturating_mul(2),
            Growth::Adding(step) => self.next.saturating_add(step),
        }
        .min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(mut backoff: Backoff, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect()
    }

    #[test]
    fn each_curve_grows_to_its_cap() {
        assert_eq!(
            first(Backoff::outage_probe(), 6),
            [250, 500, 1000, 2000, 2000, 2000]
        );
        assert_eq!(
            first(Backoff::failed_pull(), 7),
            [200, 400, 600, 800, 1000, 1000, 1000]
        );
        let startup = first(Backoff::startup(), 22);
        assert_eq!(&startup[..3], [250, 500, 750]);
        assert_eq!(startup[19..], [5000, 5000, 5000]);
    }

    #[test]
    fn a_message_retry_doubles_with_jitter_and_caps() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..100 {
            let first = message_retry(base, max, 1);
            assert!(first >= Duration::from_millis(500) && first <= base);
            let third = message_retry(base, max, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
            let late = message_retry(base, max, 50);
            assert!(late >= Duration::from_secs(30) && late <= max);
        }
    }
}
