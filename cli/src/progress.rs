//! Progress of one import for a person: rows saved of expected, rows/s,
//! ETA and the stage that is behind. A live bar on a terminal; plain lines
//! every few seconds otherwise (logs, CI). Also the interrupt handling that
//! `demo` and `import --wait` share.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_messages::Namespace;
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

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} saved {human_pos}/{human_len} rows  {per_sec:.bold}  ETA {eta}  {msg}",
                )
                .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            last_line: None,
        }
    }

    /// `expected` may grow while accounts are still being fetched.
    pub fn update(&mut self, saved: u64, expected: u64, behind: &str) {
        if let Some(bar) = &self.bar {
            bar.set_length(expected.max(saved));
            bar.set_position(saved);
            bar.set_message(behind.to_owned());
            return;
        }
        if self
            .last_line
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.last_line = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = saved as f64 / elapsed;
        let eta = if rate > 0.0 && expected > saved {
            format!("{:.0} s", (expected - saved) as f64 / rate)
        } else {
            "-".into()
        };
        eprintln!(
            "saved {}/{} rows, {} rows/s, ETA {eta}, {behind}",
            group(saved.into()),
            group(expected.into()),
            group(rate as i128),
        );
    }

    #[cfg(feature = "demo")]
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Which stage holds the most unfinished messages, from its consumer's
/// pending and in-flight counts: where an import is waiting now.
pub async fn behind(js: &jetstream::Context, ns: &Namespace) -> String {
    let mut worst: Option<(&str, u64)> = None;
    for name in ["importer", "fetcher", "saver"] {
        if let Ok(info) = topology::consumer_info(js, ns, name).await {
            let lag = info.num_pending + info.num_ack_pending as u64;
            if lag > 0 && worst.is_none_or(|(_, w)| lag > w) {
                worst = Some((name, lag));
            }
        }
    }
    match worst {
        Some((name, lag)) => format!("behind: {name} ({} messages)", group(lag.into())),
        None => "no stage behind".into(),
    }
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
