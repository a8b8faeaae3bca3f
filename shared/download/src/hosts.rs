//! How many downloads each host gets at once, found as TCP finds its
//! window (additive increase, multiplicative decrease) and as Vector's
//! adaptive request concurrency does for HTTP sinks: each host starts at a
//! few, gains one per answer while its time to first byte stays near the
//! best seen (doubling per round trip until the first cut, then one per
//! round trip), and is cut on 429, 503, time-outs, connection errors or
//! answers growing slower, waiting out `Retry-After`. A host's limit lies
//! between the floor and the ceiling (`SLUICE_MIN_DOWNLOADS_PER_HOST`,
//! `SLUICE_MAX_DOWNLOADS_PER_HOST`).
//!
//! A request that has no answer long after the host's usual time is sent
//! again (twice at most), and the first answer taken ("hedged", as in
//! Dean and Barroso's *The Tail at Scale*): a server whose accept queue
//! overflowed drops the connection's SYN, and the kernel tries again only
//! a second later. Hedges come from a budget, as retries do in Finagle's
//! `RetryBudget`: one per [`HEDGE_EVERY`] answers, and
//! [`HEDGES_PER_SECOND`] however few answers came, so a host gets at most
//! a tenth more requests than without them, and a few a second more. The
//! floor matters at a burst's start: a host's first dozens of connections
//! may all meet a full accept queue, before its answers paid for anything,
//! and each would wait out the kernel's retransmission (most of a second)
//! holding its download slot.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

// tokio's clock, which tests can pause and advance.
use tokio::time::Instant;

/// The limit a host starts at (within the floor and ceiling).
const INITIAL: f64 = 4.0;

/// Answers slower than this many times the best one seen mean the host is
/// queueing: the limit is cut by [`SLOWER_CUT`].
const SLOWER: f64 = 3.0;
/// Below this, a slower answer is noise (a fast host's few milliseconds).
const NOISE: Duration = Duration::from_millis(20);
const SLOWER_CUT: f64 = 0.75;
/// The best time seen forgets over this long (an exponential average's
/// time constant, towards slower answers only), so a host that got slower
/// for good is judged by what it does now. Kept in time, not answers: per
/// answer, a busy host (many answers a round trip) forgot its best before
/// a second cut, and one ten times slower kept its limit.
const BEST_FORGOTTEN_OVER: Duration = Duration::from_secs(10);
/// Refusals and failures halve the limit.
const FAILURE_CUT: f64 = 0.5;
/// Cuts are at least this far apart, however fast the host answers.
const MIN_ROUND_TRIP: Duration = Duration::from_millis(10);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A request is hedged once it waited this many times the host's smoothed
/// time to first byte...
const HEDGE_FACTOR: u32 = 4;
/// ...and at least this long: a fast host's few milliseconds vary more
/// than they say, and a second answers what a dropped SYN costs.
const HEDGE_AFTER_AT_LEAST: Duration = Duration::from_millis(100);
/// Answers that pay for one hedge.
const HEDGE_EVERY: u32 = 10;
/// Hedges earned each second on top of what answers pay for (a new host
/// starts with its savings full).
const HEDGES_PER_SECOND: f64 = 10.0;
/// Hedges saved up at most (a burst of stalled connections).
const HEDGES_SAVED: u32 = 8;
const HEDGE_COST: f64 = HEDGE_EVERY as f64;
const MAX_HEDGE_CREDIT: f64 = (HEDGE_EVERY * HEDGES_SAVED) as f64;

/// Hosts with a metric label of their own; the rest share `other`, so a
/// stream of strangers' URLs cannot grow the metrics without bound.
const LABELLED_HOSTS: usize = 32;

/// Metric names (documented in docs/operations.md).
pub mod metric {
    /// Gauge: the host's current limit of downloads at once.
    pub const LIMIT: &str = "sluice_download_host_limit";
    /// Gauge: the host's smoothed time to first byte, in seconds.
    pub const LATENCY: &str = "sluice_download_host_latency_seconds";
    /// Counter: requests sent again for want of an answer.
    pub const HEDGED: &str = "sluice_download_hedged_requests_total";
}

/// The metrics' help texts (again for every new host: cheap, and right
/// whenever the exporter was installed).
fn describe() {
    metrics::describe_gauge!(
        metric::LIMIT,
        "Downloads this replica may have at once from the host, adapted to how it answers."
    );
    metrics::describe_gauge!(
        metric::LATENCY,
        metrics::Unit::Seconds,
        "The host's smoothed time to first byte."
    );
    metrics::describe_counter!(
        metric::HEDGED,
        "Requests to the host sent again because they had no answer long after the host's usual time."
    );
}

/// Each host's limit, shared by every download of a process.
#[derive(Debug, Clone)]
pub struct HostLimits {
    floor: f64,
    ceiling: f64,
    hosts: Arc<Mutex<HashMap<String, Arc<Host>>>>,
    labelled: Arc<Mutex<std::collections::HashSet<String>>>,
}

#[derive(Debug)]
struct Host {
    label: String,
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    /// Doubling per round trip until the first cut.
    slow_start: bool,
    /// No new download before this (`Retry-After`).
    closed_until: Option<Instant>,
    /// The best time to first byte seen, forgotten over
    /// [`BEST_FORGOTTEN_OVER`], and when it was last updated.
    best: Option<(Duration, Instant)>,
    /// The smoothed time to first byte.
    smoothed: Option<Duration>,
    /// When the limit was last cut: one cut per round trip, so a burst of
    /// failures from one episode is one cut.
    cut_at: Option<Instant>,
    /// What hedges may be sent, counted in answers (a hedge costs
    /// [`HEDGE_EVERY`]; time adds [`HEDGES_PER_SECOND`]'s worth), and when
    /// time last added to it.
    hedge_credit: f64,
    hedge_credit_at: Instant,
}

/// A download slot on a host; freed when dropped.
#[derive(Debug)]
pub struct HostSlot {
    host: Arc<Host>,
    ceiling: f64,
    floor: f64,
    started: Instant,
}

/// How a request to a host went, as far as its limit is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It answered (whatever the status, but those below).
    Answered,
    /// 429 or 503: the host asks for less; `Retry-After`, if any.
    Refused(Option<Duration>),
    /// No answer: a time-out or a connection that failed or broke.
    Failed,
}

impl HostLimits {
    pub fn new(floor: usize, ceiling: usize) -> HostLimits {
        let ceiling = ceiling.max(1) as f64;
        HostLimits {
            floor: (floor.max(1) as f64).min(ceiling),
            ceiling,
            hosts: Default::default(),
            labelled: Default::default(),
        }
    }

    fn host(&self, name: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().expect("never poisoned");
        if hosts.len() > 4096 {
            // Forget hosts nobody is downloading from.
            hosts.retain(|_, h| Arc::strong_count(h) > 1);
        }
        hosts
            .entry(name.to_owned())
            .or_insert_with(|| {
                describe();
                let mut labelled = self.labelled.lock().expect("never poisoned");
                let label = match labelled.len() < LABELLED_HOSTS || labelled.contains(name) {
                    true => {
                        labelled.insert(name.to_owned());
                        name.to_owned()
                    }
                    false => "other".to_owned(),
                };
                let limit = INITIAL.clamp(self.floor, self.ceiling);
                metrics::gauge!(metric::LIMIT, "host" => label.clone()).set(limit);
                Arc::new(Host {
                    label,
                    state: Mutex::new(State {
                        limit,
                        in_flight: 0,
                        slow_start: true,
                        closed_until: None,
                        best: None,
                        smoothed: None,
                        cut_at: None,
                        hedge_credit: MAX_HEDGE_CREDIT,
                        hedge_credit_at: Instant::now(),
                    }),
                    changed: tokio::sync::Notify::new(),
                })
            })
            .clone()
    }

    /// Waits until `host` may take one more download, and takes it.
    pub async fn acquire(&self, host: &str) -> HostSlot {
        let host = self.host(host);
        loop {
            let changed = host.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so no change is missed.
            changed.as_mut().enable();
            let closed_until = {
                let mut state = host.state.lock().expect("never poisoned");
                let now = Instant::now();
                match state.closed_until.filter(|until| *until > now) {
                    Some(until) => Some(until),
                    None if (state.in_flight as f64) < state.limit.floor() => {
                        state.in_flight += 1;
                        return HostSlot {
                            host: host.clone(),
                            ceiling: self.ceiling,
                            floor: self.floor,
                            started: now,
                        };
                    }
                    None => None,
                }
            };
            match closed_until {
                Some(until) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// The current limit of `host` (the initial one for a host not seen).
    pub fn limit(&self, host: &str) -> usize {
        let host = self.host(host);
        let limit = host.state.lock().expect("never poisoned").limit;
        limit as usize
    }
}

impl HostSlot {
    /// How long a request waits for its answer before it may be hedged
    /// (see [`HostSlot::take_hedge`]): `None` until the host has answered
    /// once, so there is a usual time to compare with.
    pub fn hedge_after(&self) -> Option<Duration> {
        let state = self.host.state.lock().expect("never poisoned");
        let usual = state.smoothed?;
        Some((usual * HEDGE_FACTOR).max(HEDGE_AFTER_AT_LEAST))
    }

    /// Whether the host's hedge budget (its answers and time) holds one
    /// more hedge, taking it.
    pub fn take_hedge(&self) -> bool {
        let mut state = self.host.state.lock().expect("never poisoned");
        let now = Instant::now();
        let earned = (now - state.hedge_credit_at).as_secs_f64() * HEDGES_PER_SECOND * HEDGE_COST;
        state.hedge_credit = (state.hedge_credit + earned).min(MAX_HEDGE_CREDIT);
        state.hedge_credit_at = now;
        if state.hedge_credit < HEDGE_COST || state.closed_until.is_some_and(|u| u > now) {
            drop(state);
            tracing::debug!(host = %self.host.label, waited = ?self.started.elapsed(), "no answer yet, and no hedge to spend");
            return false;
        }
        state.hedge_credit -= HEDGE_COST;
        drop(state);
        tracing::debug!(host = %self.host.label, waited = ?self.started.elapsed(), "no answer yet: the request is sent again (hedged)");
        metrics::counter!(metric::HEDGED, "host" => self.host.label.clone()).increment(1);
        true
    }

    /// Tells the host's limit how the request went: `outcome`, seen now.
    pub fn report(&self, outcome: Outcome) {
        let waited = self.started.elapsed();
        let now = Instant::now();
        let mut state = self.host.state.lock().expect("never poisoned");
        let round_trip = state.smoothed.unwrap_or(waited).max(MIN_ROUND_TRIP);
        let cut_due = state.cut_at.is_none_or(|at| now - at >= round_trip);
        let before = state.limit;
        match outcome {
            Outcome::Answered => {
                state.hedge_credit = (state.hedge_credit + 1.0).min(MAX_HEDGE_CREDIT);
                let smoothed = match state.smoothed {
                    Some(s) => s.mul_f64(0.8) + waited.mul_f64(0.2),
                    None => waited,
                };
                state.smoothed = Some(smoothed);
                let best = match state.best {
                    Some((b, at)) if waited > b => {
                        // Time without answers is no evidence: an idle host
                        // forgets at most a round trip's worth.
                        let elapsed = (now - at).min(round_trip);
                        let forgotten = 1.0
                            - (-elapsed.as_secs_f64() / BEST_FORGOTTEN_OVER.as_secs_f64()).exp();
                        b + (waited - b).mul_f64(forgotten)
                    }
                    _ => waited,
                };
                state.best = Some((best, now));
                metrics::gauge!(metric::LATENCY, "host" => self.host.label.clone())
                    .set(smoothed.as_secs_f64());
                let slower = smoothed > best.mul_f64(SLOWER) && smoothed > NOISE;
                if slower {
                    if cut_due {
                        state.limit = (state.limit * SLOWER_CUT).max(self.floor);
                        state.slow_start = false;
                        state.cut_at = Some(now);
                    }
                } else if state.in_flight as f64 >= state.limit.floor() {
                    // Only a limit in use earns more.
                    let step = match state.slow_start {
                        true => 1.0,
                        false => 1.0 / state.limit,
                    };
                    state.limit = (state.limit + step).min(self.ceiling);
                }
            }
            Outcome::Refused(retry_after) => {
                if let Some(after) = retry_after {
                    let until = now + after.min(MAX_RETRY_AFTER);
                    state.closed_until = Some(state.closed_until.map_or(until, |u| u.max(until)));
                }
                if cut_due {
                    state.limit = (state.limit * FAILURE_CUT).max(self.floor);
                    state.slow_start = false;
                    state.cut_at = Some(now);
                }
            }
            Outcome::Failed => {
                if cut_due {
                    state.limit = (state.limit * FAILURE_CUT).max(self.floor);
                    state.slow_start = false;
                    state.cut_at = Some(now);
                }
            }
        }
        if state.limit != before {
            metrics::gauge!(metric::LIMIT, "host" => self.host.label.clone()).set(state.limit);
            if state.limit.floor() != before.floor() {
                tracing::debug!(host = %self.host.label, limit = state.limit.floor(), "downloads at once from this host");
            }
            if state.limit > before {
                self.host.changed.notify_waiters();
            }
        }
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut state = self.host.state.lock().expect("never poisoned");
        state.in_flight -= 1;
        drop(state);
        self.host.changed.notify_waiters();
    }
}

/// `Retry-After` as seconds or an HTTP date, from now.
pub fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(limits: &HostLimits, host: &str, in_flight: usize, outcome: Outcome) {
        let slots: Vec<HostSlot> = (0..in_flight)
            .map(|_| {
                futures_util::FutureExt::now_or_never(limits.acquire(host)).expect("a free slot")
            })
            .collect();
        slots[0].report(outcome);
    }

    #[test]
    fn a_busy_fast_host_ramps_up_to_the_ceiling_and_an_idle_one_does_not() {
        let limits = HostLimits::new(1, 32);
        assert_eq!(limits.limit("fast"), 4);
        for _ in 0..40 {
            let n = limits.limit("fast");
            answer(&limits, "fast", n, Outcome::Answered);
        }
        assert_eq!(limits.limit("fast"), 32);
        // One download at a time proves nothing about more.
        for _ in 0..40 {
            answer(&limits, "idle", 1, Outcome::Answered);
        }
        assert_eq!(limits.limit("idle"), 4);
    }

    /// Every slot of `host` taken, answered after `wait`.
    async fn round(limits: &HostLimits, host: &str, wait: Duration) {
        let slots: Vec<HostSlot> = (0..limits.limit(host))
            .map(|_| {
                futures_util::FutureExt::now_or_never(limits.acquire(host)).expect("a free slot")
            })
            .collect();
        tokio::time::advance(wait).await;
        for slot in &slots {
            slot.report(Outcome::Answered);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_host_ten_times_slower_is_cut_then_judged_by_its_new_pace() {
        let limits = HostLimits::new(1, 32);
        for _ in 0..40 {
            round(&limits, "h", Duration::from_millis(10)).await;
        }
        assert_eq!(limits.limit("h"), 32);
        // 32 answers a round trip: the old pace must not be forgotten in one.
        for _ in 0..10 {
            round(&limits, "h", Duration::from_millis(100)).await;
        }
        assert!(limits.limit("h") <= 2, "kept {}", limits.limit("h"));
        // Slower for good: within half a minute it is the usual pace.
        for _ in 0..300 {
            round(&limits, "h", Duration::from_millis(100)).await;
        }
        assert_eq!(limits.limit("h"), 32);
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_wait_for_a_usual_time_and_are_paid_for_by_answers_and_time() {
        let limits = HostLimits::new(1, 32);
        let slot = limits.acquire("h").await;
        // No answer yet: nothing to compare a wait with.
        assert_eq!(slot.hedge_after(), None);
        // A new host's savings are full, and spent.
        let hedges = (0..20).filter(|_| slot.take_hedge()).count();
        assert_eq!(hedges, HEDGES_SAVED as usize);
        // Nine answers pay for no hedge; the tenth pays for one.
        for _ in 0..9 {
            slot.report(Outcome::Answered);
        }
        assert!(!slot.take_hedge());
        slot.report(Outcome::Answered);
        assert!(slot.take_hedge());
        assert!(!slot.take_hedge(), "one answer in ten pays for one hedge");
        // Without answers, time pays for a few a second.
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(!slot.take_hedge());
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(slot.take_hedge(), "{HEDGES_PER_SECOND} a second");
        assert!(!slot.take_hedge());
        // A fast host's wait is the floor; a slower one's, four times its usual.
        slot.report(Outcome::Answered);
        assert_eq!(slot.hedge_after(), Some(HEDGE_AFTER_AT_LEAST));
        tokio::time::advance(Duration::from_millis(500)).await;
        for _ in 0..40 {
            slot.report(Outcome::Answered);
        }
        // (Every answer took 600 ms: since the slot was taken.)
        let after = slot.hedge_after().unwrap();
        assert!(
            after > Duration::from_millis(2300) && after <= Duration::from_millis(2400),
            "{after:?}"
        );
        // At most a few saved up, however long the host answered well.
        for _ in 0..1000 {
            slot.report(Outcome::Answered);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        let hedges = (0..20).filter(|_| slot.take_hedge()).count();
        assert_eq!(hedges, HEDGES_SAVED as usize);
        // None while the host asked to be left alone.
        tokio::time::advance(Duration::from_secs(1)).await;
        slot.report(Outcome::Refused(Some(Duration::from_secs(5))));
        assert!(!slot.take_hedge());
    }

    #[test]
    fn refusals_and_failures_halve_the_limit_once_per_round_trip_down_to_the_floor() {
        let limits = HostLimits::new(2, 32);
        for _ in 0..12 {
            let n = limits.limit("h");
            answer(&limits, "h", n, Outcome::Answered);
        }
        assert_eq!(limits.limit("h"), 16);
        answer(&limits, "h", 1, Outcome::Refused(None));
        assert_eq!(limits.limit("h"), 8);
        // The same episode: not cut again at once.
        answer(&limits, "h", 1, Outcome::Failed);
        assert_eq!(limits.limit("h"), 8);
        for _ in 0..4 {
            std::thread::sleep(MIN_ROUND_TRIP * 2);
            answer(&limits, "h", 1, Outcome::Failed);
        }
        assert_eq!(limits.limit("h"), 2, "never under the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_closes_the_host_for_that_long() {
        let limits = HostLimits::new(1, 8);
        let slot = limits.acquire("h").await;
        slot.report(Outcome::Refused(Some(Duration::from_secs(3))));
        drop(slot);
        let started = tokio::time::Instant::now();
        let _next = limits.acquire("h").await;
        assert!(started.elapsed() >= Duration::from_secs(3));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
