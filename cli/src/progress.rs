//! Progress of one import for a person: rows saved of expected, rows/s,
//! ETA and the stage that is behind, or what the import waits on (a stage
//! nobody runs, a missing stream). A live bar on a terminal (a spinner
//! until the total can be estimated); plain lines every few seconds
//! otherwise (logs, CI). Also the interrupt handling that `demo` and
//! `import --wait` share.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_messages::{stage, Namespace, Stream};
use sluice_stage::topology;

use crate::imports::group;

/// The error of a command a person interrupted: `main` exits 130 on it.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// How many rows an import will have saved, as far as is known now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// Every account is fetched: their rows are all announced.
    Known(u64),
    /// Some accounts are fetched: the rows they announced, scaled to every
    /// listed account.
    Estimated(u64),
    /// The accounts file is still being read, or no account is fetched
    /// yet: only the rows announced so far.
    Unknown { announced: u64 },
}

impl Total {
    /// The import's expected total from the saver's records: `announced`
    /// rows from `fetched` accounts (fetched or given up: settled) of
    /// `listed` (`None` until the whole accounts file was read).
    pub fn estimate(saved: u64, announced: u64, listed: Option<u64>, fetched: u64) -> Total {
        match listed {
            Some(listed) if fetched >= listed => Total::Known(announced.max(saved)),
            Some(listed) if fetched > 0 => {
                let scaled = u128::from(announced) * u128::from(listed) / u128::from(fetched);
                Total::Estimated(u64::try_from(scaled).unwrap_or(u64::MAX).max(saved))
            }
            _ => Total::Unknown { announced },
        }
    }

    /// The rows a bar can be drawn against, when there is a total.
    pub fn rows(self) -> Option<u64> {
        match self {
            Total::Known(n) | Total::Estimated(n) => Some(n),
            Total::Unknown { .. } => None,
        }
    }
}

/// Rows saved per second over the last [`Rate::WINDOW`]: recent enough to
/// fall to 0 when saving stops, long enough not to jump with every batch.
#[derive(Debug, Default)]
pub struct Rate {
    samples: std::collections::VecDeque<(Duration, u64)>,
}

impl Rate {
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// `saved` rows at `at` (time since any fixed start).
    pub fn record(&mut self, at: Duration, saved: u64) {
        self.samples.push_back((at, saved));
        // Keep one sample at or before the window's start, to span all of it.
        while self.samples.len() > 2 && at.saturating_sub(self.samples[1].0) >= Rate::WINDOW {
            self.samples.pop_front();
        }
    }

    /// `None` until samples span a second.
    pub fn per_sec(&self) -> Option<f64> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let span = last.0.saturating_sub(first.0).as_secs_f64();
        (span >= 1.0).then(|| last.1.saturating_sub(first.1) as f64 / span)
    }
}

/// `1,234 rows/s`: whole rows, grouped; `- rows/s` while unknown.
pub fn format_rate(per_sec: Option<f64>) -> String {
    match per_sec {
        Some(rate) => format!("{} rows/s", group(rate.round() as i128)),
        None => "- rows/s".into(),
    }
}

/// Time left at `per_sec` for the rows of `total` not saved yet: `None`
/// without a total or while nothing is being saved.
pub fn eta(saved: u64, total: Total, per_sec: Option<f64>) -> Option<Duration> {
    let left = total.rows()?.saturating_sub(saved);
    if left == 0 {
        return Some(Duration::ZERO);
    }
    let rate = per_sec.filter(|r| *r >= 0.5)?;
    Some(Duration::from_secs_f64((left as f64 / rate).min(1e9)))
}

/// `45s`, `4m 05s`, `2h 03m`; `-` when unknown.
pub fn format_eta(eta: Option<Duration>) -> String {
    let Some(eta) = eta else { return "-".into() };
    let secs = eta.as_secs_f64().ceil() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// `saved 1,234/~5,678 rows` (`~`: estimated), or `saved 1,234 rows (2,000
/// announced so far)` without a total.
pub fn format_saved(saved: u64, total: Total) -> String {
    match total {
        Total::Known(n) => format!("saved {}/{} rows", group(saved.into()), group(n.into())),
        Total::Estimated(n) => format!("saved {}/~{} rows", group(saved.into()), group(n.into())),
        Total::Unknown { announced } if announced > saved => format!(
            "saved {} rows ({} announced so far)",
            group(saved.into()),
            group(announced.into())
        ),
        Total::Unknown { .. } => format!("saved {} rows", group(saved.into())),
    }
}

pub struct Progress {
    bar: Option<ProgressBar>,
    /// Whether the bar is drawn with a bar (a total is known) or a spinner.
    bar_has_total: Option<bool>,
    started: Instant,
    rate: Rate,
    last_line: Option<Instant>,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            bar_has_total: None,
            started: Instant::now(),
            rate: Rate::default(),
            last_line: None,
        }
    }

    /// A total known from the start (`demo`).
    #[cfg(feature = "demo")]
    pub fn update(&mut self, saved: u64, expected: u64, behind: &str) {
        self.show(saved, Total::Known(expected.max(saved)), behind);
    }

    /// `saved` of `total`, with `note` (where the import waits, what is
    /// behind): a bar when there is a total, a spinner otherwise.
    pub fn show(&mut self, saved: u64, total: Total, note: &str) {
        self.rate.record(self.started.elapsed(), saved);
        let per_sec = self.rate.per_sec();
        let counts = format!(
            "{}  {}  ETA {}",
            format_saved(saved, total),
            format_rate(per_sec),
            format_eta(eta(saved, total, per_sec))
        );
        if let Some(bar) = &self.bar {
            let has_total = total.rows().is_some();
            if self.bar_has_total != Some(has_total) {
                self.bar_has_total = Some(has_total);
                // One line: counts, the bar taking the room left, and
                // where the import stands.
                let template = if has_total {
                    "{spinner} {prefix} [{wide_bar}] {msg}"
                } else {
                    "{spinner} {prefix}  {msg}"
                };
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .expect("valid template")
                        .progress_chars("=> "),
                );
            }
            let rows = total.rows().unwrap_or(saved).max(saved);
            bar.set_length(rows);
            bar.set_position(saved);
            bar.set_prefix(counts);
            bar.set_message(note.to_owned());
            return;
        }
        if self
            .last_line
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.last_line = Some(Instant::now());
        eprintln!("{}, {note}", counts.replace("  ", ", "));
    }

    /// A change worth its own line (a stage is idle, and again when it is
    /// not): on standard error when there is no live bar, whose message
    /// shows it instead.
    pub fn notice(&self, line: &str) {
        if self.bar.is_none() {
            eprintln!("{line}");
        }
    }

    /// Clears the live bar, if any.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Which stage holds the most unfinished messages, from its consumer's
/// pending and in-flight counts: where an import is waiting now.
#[cfg(feature = "demo")]
pub async fn behind(js: &jetstream::Context, ns: &Namespace) -> String {
    let mut lags = Vec::new();
    for name in [stage::IMPORTER, stage::FETCHER, stage::SAVER] {
        if let Ok(info) = topology::consumer_info(js, ns, name).await {
            lags.push((name, info.num_pending + info.num_ack_pending as u64));
        }
    }
    behind_of(&lags)
}

/// `behind: fetcher (1,234 messages)`, the stage with the largest lag.
fn behind_of(lags: &[(&str, u64)]) -> String {
    let mut worst: Option<(&str, u64)> = None;
    for &(name, lag) in lags {
        if lag > 0 && worst.is_none_or(|(_, w)| lag > w) {
            worst = Some((name, lag));
        }
    }
    match worst {
        Some((name, lag)) => format!("behind: {name} ({} messages)", group(lag.into())),
        None => "no stage behind".into(),
    }
}

/// The service whose replicas pull from `consumer`: the saver runs the tracker.
fn service_of(consumer: &str) -> &str {
    if consumer == stage::TRACKER {
        stage::SAVER
    } else {
        consumer
    }
}

/// One consumer at one moment, as far as spotting an idle stage goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSample {
    pub consumer: &'static str,
    /// Pending plus in flight: messages that wait on this consumer.
    pub lag: u64,
    /// Pull requests waiting: a bound replica keeps one at almost every moment.
    pub waiting: usize,
    /// Where delivery and acknowledgement stand: a replica at work moves them.
    pub marks: (u64, u64),
}

impl ConsumerSample {
    pub fn of(consumer: &'static str, info: &jetstream::consumer::Info) -> ConsumerSample {
        ConsumerSample {
            consumer,
            lag: info.num_pending + info.num_ack_pending as u64,
            waiting: info.num_waiting,
            marks: (
                info.delivered.stream_sequence,
                info.ack_floor.stream_sequence,
            ),
        }
    }
}

/// Consumers with messages waiting and no replica pulling, for
/// [`Idle::AFTER`] on end (a replica busy with all it can take pulls
/// nothing either, but moves its delivered and acked marks).
#[derive(Debug, Default)]
pub struct Idle {
    since: std::collections::HashMap<&'static str, (Duration, (u64, u64))>,
}

impl Idle {
    pub const AFTER: Duration = Duration::from_secs(3);

    /// Takes `samples` taken at `at`; returns those idle for long enough.
    pub fn observe(&mut self, at: Duration, samples: &[ConsumerSample]) -> Vec<ConsumerSample> {
        let mut idle = Vec::new();
        for sample in samples {
            if sample.lag == 0 || sample.waiting > 0 {
                self.since.remove(sample.consumer);
                continue;
            }
            let since = self
                .since
                .entry(sample.consumer)
                .or_insert((at, sample.marks));
            if since.1 != sample.marks {
                *since = (at, sample.marks);
            }
            if at.saturating_sub(since.0) >= Idle::AFTER {
                idle.push(*sample);
            }
        }
        idle
    }
}

/// Something an import waits on that a person must fix: `key` identifies
/// it while its counts change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub key: String,
    /// Shown while it lasts.
    pub what: String,
    /// Said once when it is over.
    pub cleared: String,
}

/// One per service with idle consumers: `waiting: no saver is running
/// (1,234 messages wait on consumer saver); start saver`.
pub fn idle_services(idle: &[ConsumerSample]) -> Vec<Waiting> {
    let mut services: Vec<(&str, Vec<&ConsumerSample>)> = Vec::new();
    for sample in idle {
        let service = service_of(sample.consumer);
        match services.iter_mut().find(|(s, _)| *s == service) {
            Some((_, samples)) => samples.push(sample),
            None => services.push((service, vec![sample])),
        }
    }
    services
        .into_iter()
        .map(|(service, samples)| {
            let counts = samples
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let n = group(s.lag.into());
                    match i {
                        0 if s.lag == 1 => format!("1 message waits on consumer {}", s.consumer),
                        0 => format!("{n} messages wait on consumer {}", s.consumer),
                        _ => format!("{n} on consumer {}", s.consumer),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            Waiting {
                key: format!("service {service}"),
                what: format!("waiting: no {service} is running ({counts}); start {service}"),
                cleared: format!("no longer waiting: {service} is running"),
            }
        })
        .collect()
}

fn stream_missing(stream: &str) -> Waiting {
    Waiting {
        key: format!("stream {stream}"),
        what: format!("stream {stream} does not exist: run sluice setup"),
        cleared: format!("stream {stream} exists again"),
    }
}

fn consumer_missing(consumer: &str, stream: &str) -> Waiting {
    let service = service_of(consumer);
    Waiting {
        key: format!("consumer {consumer}"),
        what: format!(
            "consumer {consumer} on stream {stream} does not exist: run sluice setup (or start {service})"
        ),
        cleared: format!("consumer {consumer} exists again"),
    }
}

/// What a look at sluice's streams and consumers found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// What the import waits on that needs a person; empty when nothing.
    pub waiting: Vec<Waiting>,
    /// The stage that is behind (see [`behind`]).
    pub behind: String,
}

impl Health {
    /// The waits if any (they say why nothing moves), else what is behind.
    pub fn note(&self) -> String {
        if self.waiting.is_empty() {
            self.behind.clone()
        } else {
            self.waiting
                .iter()
                .map(|w| w.what.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        }
    }
}

/// Follows sluice's streams and consumers for `import --wait`: missing
/// streams and consumers by name, stages with work and no replica.
pub struct Watch {
    started: Instant,
    idle: Idle,
    /// The waits already announced, by key.
    announced: Vec<Waiting>,
}

impl Watch {
    pub fn new() -> Watch {
        Watch {
            started: Instant::now(),
            idle: Idle::default(),
            announced: Vec::new(),
        }
    }

    /// Looks once; says what started and stopped waiting through `progress`.
    pub async fn check(
        &mut self,
        js: &jetstream::Context,
        ns: &Namespace,
        progress: &Progress,
    ) -> Health {
        use async_nats::jetstream::context::ConsumerInfoErrorKind;
        let mut missing_streams = Vec::new();
        let mut missing_consumers = Vec::new();
        let mut samples = Vec::new();
        for which in Stream::ALL {
            let name = ns.stream(which);
            let stream = match get_stream(js, &name).await {
                Ok(Some(stream)) => stream,
                Ok(None) => {
                    missing_streams.push(stream_missing(&name));
                    continue;
                }
                // Unanswered: nothing learnt this time.
                Err(_) => continue,
            };
            for consumer in topology::CONSUMERS {
                if topology::input_of(consumer) != Some(which) {
                    continue;
                }
                match stream.consumer_info(consumer).await {
                    Ok(info) => samples.push(ConsumerSample::of(consumer, &info)),
                    Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                        missing_consumers.push(consumer_missing(consumer, &name))
                    }
                    Err(e) if e.kind() == ConsumerInfoErrorKind::StreamNotFound => {
                        missing_streams.push(stream_missing(&name))
                    }
                    Err(_) => {}
                }
            }
        }
        let idle = self.idle.observe(self.started.elapsed(), &samples);
        let lags: Vec<(&str, u64)> = samples
            .iter()
            .filter(|s| s.consumer != stage::TRACKER)
            .map(|s| (s.consumer, s.lag))
            .collect();
        let waiting = if missing_streams.is_empty() {
            missing_consumers.extend(idle_services(&idle));
            missing_consumers
        } else {
            // A stage whose output stream is gone holds its input and pulls
            // nothing: the stream is the cause, not that stage.
            missing_streams
        };
        self.announce(&waiting, progress);
        Health {
            waiting,
            behind: behind_of(&lags),
        }
    }

    /// The import is over: whatever it waited on is not waited on any more.
    pub fn settle(&mut self, progress: &Progress) {
        self.announce(&[], progress);
    }

    fn announce(&mut self, now: &[Waiting], progress: &Progress) {
        for old in &self.announced {
            if !now.iter().any(|w| w.key == old.key) {
                progress.notice(&old.cleared);
            }
        }
        for new in now {
            if !self.announced.iter().any(|w| w.key == new.key) {
                progress.notice(&new.what);
            }
        }
        self.announced = now.to_vec();
    }
}

/// `None` when there is no such stream.
async fn get_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<jetstream::stream::Stream>, jetstream::context::GetStreamError> {
    use async_nats::jetstream::{context::GetStreamErrorKind, ErrorCode};
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether stream `which` is known to be missing (not merely unanswered).
pub async fn stream_is_missing(js: &jetstream::Context, ns: &Namespace, which: Stream) -> bool {
    matches!(get_stream(js, &ns.stream(which)).await, Ok(None))
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP (a closed terminal). The handlers
/// are in place from the call on, not only once the future is polled.
pub fn interrupted() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| signal(kind).expect("signal handlers can be installed");
    let mut int = handler(SignalKind::interrupt());
    let mut term = handler(SignalKind::terminate());
    let mut hup = handler(SignalKind::hangup());
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
}

/// After a first interrupt: a second one exits at once.
#[cfg(feature = "demo")]
pub fn exit_on_second_interrupt() {
    tokio::spawn(async {
        interrupted().await;
        eprintln!("interrupted again: exiting now");
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_counts_accounts_not_yet_fetched() {
        // 92 of 200 accounts fetched announced 9,200 rows: about 20,000 in all.
        assert_eq!(
            Total::estimate(9_000, 9_200, Some(200), 92),
            Total::Estimated(20_000)
        );
        assert_eq!(
            Total::estimate(9_000, 20_000, Some(200), 200),
            Total::Known(20_000)
        );
        // Accounts still being listed, or none fetched: no total to draw.
        assert_eq!(
            Total::estimate(10, 9_200, None, 92),
            Total::Unknown { announced: 9_200 }
        );
        assert_eq!(
            Total::estimate(0, 0, Some(200), 0),
            Total::Unknown { announced: 0 }
        );
        // Never less than what is saved already; an empty file is done.
        assert_eq!(Total::estimate(50, 10, Some(4), 1), Total::Estimated(50));
        assert_eq!(Total::estimate(0, 0, Some(0), 0), Total::Known(0));
        assert_eq!(
            Total::estimate(0, u64::MAX, Some(u64::MAX), 1),
            Total::Estimated(u64::MAX)
        );
    }

    #[test]
    fn the_eta_is_not_zero_while_accounts_remain() {
        let total = Total::estimate(9_200, 9_200, Some(200), 92);
        assert_eq!(
            eta(9_200, total, Some(1_000.0)),
            Some(Duration::from_secs_f64(10.8))
        );
        assert_eq!(format_eta(eta(9_200, total, Some(1_000.0))), "11s");
        assert_eq!(eta(10, Total::Known(10), Some(5.0)), Some(Duration::ZERO));
        assert_eq!(eta(10, Total::Known(20), None), None);
        assert_eq!(eta(10, Total::Known(20), Some(0.0)), None);
        assert_eq!(eta(10, Total::Unknown { announced: 99 }, Some(5.0)), None);
        assert_eq!(format_eta(None), "-");
        assert_eq!(format_eta(Some(Duration::from_secs(245))), "4m 05s");
        assert_eq!(format_eta(Some(Duration::from_secs(7_380))), "2h 03m");
    }

    #[test]
    fn rates_are_whole_grouped_numbers() {
        assert_eq!(format_rate(Some(1_234_567.891)), "1,234,568 rows/s");
        assert_eq!(format_rate(Some(0.4)), "0 rows/s");
        assert_eq!(format_rate(None), "- rows/s");
        assert_eq!(
            format_saved(1_234, Total::Estimated(20_000)),
            "saved 1,234/~20,000 rows"
        );
        assert_eq!(format_saved(5, Total::Known(5)), "saved 5/5 rows");
        assert_eq!(
            format_saved(0, Total::Unknown { announced: 1_000 }),
            "saved 0 rows (1,000 announced so far)"
        );
        assert_eq!(
            format_saved(0, Total::Unknown { announced: 0 }),
            "saved 0 rows"
        );
    }

    #[test]
    fn the_rate_is_over_the_last_seconds() {
        let mut rate = Rate::default();
        let s = Duration::from_secs;
        rate.record(s(0), 0);
        assert_eq!(rate.per_sec(), None);
        rate.record(Duration::from_millis(500), 500);
        assert_eq!(rate.per_sec(), None);
        rate.record(s(2), 2_000);
        assert_eq!(rate.per_sec(), Some(1_000.0));
        // Saving stops: the rate falls to 0 within the window.
        for t in 3..=13 {
            rate.record(s(t), 2_000);
        }
        assert_eq!(rate.per_sec(), Some(0.0));
        assert!(rate.samples.len() <= 13);
    }

    fn sample(consumer: &'static str, lag: u64, waiting: usize, marks: u64) -> ConsumerSample {
        ConsumerSample {
            consumer,
            lag,
            waiting,
            marks: (marks, marks),
        }
    }

    #[test]
    fn a_stage_is_idle_after_seconds_of_work_and_no_pull() {
        let mut idle = Idle::default();
        let ms = Duration::from_millis;
        let nobody = |lag| [sample("saver", lag, 0, 7), sample("fetcher", 0, 1, 3)];
        assert!(idle.observe(ms(0), &nobody(5)).is_empty());
        assert!(idle.observe(ms(2_900), &nobody(9)).is_empty());
        assert_eq!(
            idle.observe(ms(3_000), &nobody(12)),
            vec![sample("saver", 12, 0, 7)]
        );
        // A replica pulls: not idle, and the 3 s start again.
        assert!(idle
            .observe(ms(3_500), &[sample("saver", 12, 1, 7)])
            .is_empty());
        assert!(idle.observe(ms(4_000), &nobody(12)).is_empty());
        assert!(idle.observe(ms(6_500), &nobody(12)).is_empty());
        assert_eq!(idle.observe(ms(7_000), &nobody(12)).len(), 1);
        // Busy with all it can take: no pull waiting, but it moves on.
        let mut busy = Idle::default();
        for (t, mark) in [(0, 1), (2_000, 2), (4_000, 3), (6_000, 4)] {
            assert!(busy
                .observe(ms(t), &[sample("saver", 100, 0, mark)])
                .is_empty());
        }
        // Nothing waiting: not idle, however long.
        let mut done = Idle::default();
        assert!(done.observe(ms(0), &[sample("saver", 0, 0, 1)]).is_empty());
        assert!(done
            .observe(ms(60_000), &[sample("saver", 0, 0, 1)])
            .is_empty());
    }

    #[test]
    fn idle_consumers_name_their_service_once() {
        let waiting = idle_services(&[
            sample("saver", 1_234, 0, 0),
            sample("tracker", 3, 0, 0),
            sample("fetcher", 1, 0, 0),
        ]);
        let shown: Vec<&str> = waiting.iter().map(|w| w.what.as_str()).collect();
        assert_eq!(
            shown,
            [
                "waiting: no saver is running (1,234 messages wait on consumer saver, 3 on consumer tracker); start saver",
                "waiting: no fetcher is running (1 message waits on consumer fetcher); start fetcher",
            ]
        );
        assert_eq!(waiting[0].cleared, "no longer waiting: saver is running");
        let health = Health {
            waiting: vec![stream_missing("TRANSACTIONS")],
            behind: "behind: fetcher (3 messages)".into(),
        };
        assert_eq!(
            health.note(),
            "stream TRANSACTIONS does not exist: run sluice setup"
        );
        assert_eq!(
            behind_of(&[("importer", 0), ("fetcher", 3), ("saver", 2)]),
            "behind: fetcher (3 messages)"
        );
        assert_eq!(behind_of(&[("saver", 0)]), "no stage behind");
    }
}
