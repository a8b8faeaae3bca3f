//! Going on with a file after what an earlier attempt stored: the
//! bookkeeping the fetcher's transactions files and the files of an import
//! run with a spec share.
//!
//! While a file is read, about once a second and only once JetStream
//! stored every output before that point, where the reading got to is
//! recorded (`FILE_CHECKPOINTS`, by input key). The next attempt at the
//! same input asks for the rest of the file only; where the server sends
//! it whole instead, it reads past the rows stored; where the file changed,
//! it never mixes two versions: it reads the new one from its first row
//! under ids of its own (an account's transactions file, whose earlier
//! rows the saver can tell and replace), or refuses it.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use sluice_download::{CsvFile, Reopened, Stopped};
use sluice_messages::windows::Windows;
use sluice_stage::{checkpoints::Checkpoints, telemetry::KeyValue, Emitter, StageError};

/// How often a file being read records where it got to: a crash re-reads
/// at most about this much.
const EVERY: Duration = Duration::from_secs(1);

/// Where an attempt stopped, and what it had sent before that point.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub stopped: Stopped,
    /// Rows per message then: windows of another size would be named
    /// otherwise, so such a checkpoint is not used.
    #[serde(default)]
    pub rows_per_window: u64,
    /// Rows before `stopped` (whole windows), malformed ones included.
    pub rows: u64,
    /// Messages, valid rows and linked files sent before it.
    pub messages: u64,
    pub valid_rows: u64,
    #[serde(default)]
    pub files: u64,
    pub rejected_rows: u64,
    /// The version of the file read: 1, then one more each time the file
    /// turned out to have changed and was read again from its first row.
    #[serde(default = "sluice_messages::windows::first_version")]
    pub version: u32,
}

/// How the reading of a file goes on.
pub struct Start<T> {
    /// The windows to fill (after those stored, when the file resumed).
    pub windows: Windows<T>,
    /// Rows to read past without sending them again (the file was sent
    /// whole).
    pub stored_rows: u64,
    /// What the earlier attempt sent, if the reading goes on from it.
    pub earlier: Option<Checkpoint>,
    /// The version of the file read (see [`Checkpoint::version`]).
    pub version: u32,
}

/// What to do with a file that changed since an earlier attempt stored
/// some of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Fail it (`permanent`), and keep failing when it is replayed.
    Refuse,
    /// Read the new version from its first row, as version n+1: its
    /// windows are named apart, and the saver replaces the rows of the
    /// earlier version with them.
    ReadAgain,
}

/// One input's file, read with its checkpoints.
pub struct Resumption {
    checkpoints: Option<Checkpoints>,
    key: String,
    earlier: Option<Checkpoint>,
    last: Instant,
    /// A checkpoint of this attempt's is stored, or an earlier one was
    /// found: either goes once the file is read.
    recorded: bool,
    /// The file turned out to have changed and is refused: its
    /// checkpoint stays.
    changed: AtomicBool,
    on_change: OnChange,
    /// The version of the file read.
    version: u32,
}

impl Resumption {
    /// The checkpoint input `key` left, if any, for windows of
    /// `rows_per_window` rows.
    pub async fn load(checkpoints: Option<&Checkpoints>, key: &str, rows_per_window: u64) -> Self {
        let earlier: Option<Checkpoint> = match checkpoints {
            Some(checkpoints) => checkpoints.get(key).await,
            None => None,
        };
        let recorded = earlier.is_some();
        // A checkpoint of windows of another size is not resumed from; its
        // version still counts (the ids name it).
        let version = earlier.as_ref().map_or(1, |c| c.version.max(1));
        let earlier = earlier.filter(|c| c.rows_per_window == rows_per_window);
        Resumption {
            checkpoints: checkpoints.cloned(),
            key: key.to_owned(),
            earlier,
            last: Instant::now(),
            recorded,
            changed: AtomicBool::new(false),
            on_change: OnChange::Refuse,
            version,
        }
    }

    /// What to do if the file changed since the earlier attempt.
    pub fn on_change(mut self, on_change: OnChange) -> Self {
        self.on_change = on_change;
        self
    }

    /// Where the earlier attempt stopped, for opening the file.
    pub fn stopped(&self) -> Option<&Stopped> {
        self.earlier.as_ref().map(|c| &c.stopped)
    }

    /// How to go on reading, windows of `rows_per_window` rows, now that
    /// the file is open as `reopened` says. Fails on a changed file.
    pub async fn start<T>(
        &mut self,
        reopened: Reopened,
        shown: &str,
        rows_per_window: u64,
        out: &mut Emitter,
    ) -> Result<Start<T>, StageError> {
        let earlier = self.begin(reopened, shown, out).await?;
        let (windows, stored_rows) = match (&earlier, reopened) {
            (Some(e), Reopened::Resumed) => (Windows::after(rows_per_window, e.rows), 0),
            (Some(e), _) => (Windows::new(rows_per_window), e.rows),
            (None, _) => (Windows::new(rows_per_window), 0),
        };
        Ok(Start {
            windows,
            stored_rows,
            earlier,
            version: self.version,
        })
    }

    /// What the earlier attempt sent, now that the file is open as
    /// `reopened` says; `None` to start afresh. Fails on a changed file.
    async fn begin(
        &mut self,
        reopened: Reopened,
        shown: &str,
        out: &mut Emitter,
    ) -> Result<Option<Checkpoint>, StageError> {
        let Some(earlier) = &self.earlier else {
            return Ok(None);
        };
        match reopened {
            Reopened::Fresh => return Ok(None),
            // Read from its first row under ids of the next version: none
            // of the earlier version's windows is taken for the new one's.
            Reopened::Changed if self.on_change == OnChange::ReadAgain => {
                let stored = earlier.rows;
                self.version += 1;
                self.earlier = None;
                out.annotate([KeyValue::new(
                    "sluice.file.version",
                    i64::from(self.version),
                )]);
                tracing::warn!(
                    url = %shown,
                    stored,
                    version = self.version,
                    "the file changed since an earlier attempt stored its first rows \
                     (another ETag or Last-Modified): reading the new version from its \
                     first row; its rows replace those of the earlier version"
                );
                return Ok(None);
            }
            // The checkpoint stays: replaying this input refuses again,
            // rather than read the new version under the old one's ids.
            Reopened::Changed => {
                self.changed.store(true, Ordering::Relaxed);
                return Err(StageError::permanent(format!(
                    "{shown} changed since an earlier attempt stored its first {} rows \
                     (another ETag or Last-Modified): those rows came from the earlier version, \
                     so the file is not read again; import it again under a new import id",
                    earlier.rows
                )));
            }
            Reopened::Resumed | Reopened::ReadPast => {}
        }
        out.rejected_before(earlier.rejected_rows);
        out.annotate([KeyValue::new(
            "sluice.file.resumed_after_rows",
            earlier.rows as i64,
        )]);
        tracing::info!(
            url = %shown,
            rows = earlier.rows,
            how = ?reopened,
            "going on after the rows an earlier attempt stored"
        );
        Ok(Some(earlier.clone()))
    }

    /// Whether it is time to record where the reading got to, with
    /// `rows_before` rows read (asked at a window's end, before the next
    /// row is handled). Never while reading past what an earlier attempt
    /// stored: a checkpoint must not go back.
    pub fn due(&self, rows_before: u64) -> bool {
        let stored = self.earlier.as_ref().map_or(0, |c| c.rows);
        self.checkpoints.is_some() && self.last.elapsed() >= EVERY && rows_before >= stored
    }

    /// The checkpoint to record after the row at hand, if it is time: with
    /// `rows_before` rows read, and what was sent before it.
    pub fn due_checkpoint(
        &self,
        rows_per_window: u64,
        rows_before: u64,
        sent: (u64, u64, u64),
        out: &Emitter,
    ) -> Option<Checkpoint> {
        let (messages, valid_rows, files) = sent;
        self.due(rows_before).then(|| Checkpoint {
            stopped: Stopped::default(),
            rows_per_window,
            rows: rows_before,
            messages,
            valid_rows,
            files,
            rejected_rows: out.rejected_rows(),
            version: self.version,
        })
    }

    /// Records `checkpoint`, stopped at the row on `line` that `file` just
    /// returned, once everything sent before is stored.
    pub fn record<'a>(
        &'a mut self,
        file: &CsvFile,
        line: u64,
        checkpoint: Checkpoint,
        out: &'a mut Emitter,
    ) -> impl std::future::Future<Output = Result<(), StageError>> + Send + 'a {
        // Taken now: the file (not `Sync`) is not held across a wait.
        let stopped = file.stop_point(line);
        self.record_at(stopped, checkpoint, out)
    }

    async fn record_at(
        &mut self,
        stopped: Option<Stopped>,
        mut checkpoint: Checkpoint,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let (Some(checkpoints), Some(stopped)) = (&self.checkpoints, stopped) else {
            return Ok(());
        };
        out.stored().await?;
        checkpoint.stopped = stopped;
        checkpoints.put(&self.key, &checkpoint).await;
        self.last = Instant::now();
        self.recorded = true;
        Ok(())
    }

    /// After reading the file: its checkpoint goes unless another attempt
    /// will need it (a transient failure), must keep refusing the file (it
    /// changed), or must go on with the version it read (a file read again
    /// after it changed: a replay of the same version resumes it, a fixed
    /// file is the next version; from its start under version 1's ids, its
    /// windows would be taken for the earlier version's). A file that
    /// failed otherwise is read from its start if it is replayed once fixed.
    pub async fn end(&self, read: &Result<(), StageError>) {
        let keep = match read {
            Ok(()) => false,
            Err(e) => e.is_transient() || self.changed.load(Ordering::Relaxed) || self.version > 1,
        };
        if !keep {
            self.finish().await;
        }
    }

    /// The file is done: its checkpoint goes.
    async fn finish(&self) {
        if let Some(checkpoints) = &self.checkpoints {
            if self.recorded {
                checkpoints.remove(&self.key).await;
            }
        }
    }
}
