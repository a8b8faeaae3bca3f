//! Reading one file of an import run with a spec: each record read with
//! its level ([`sluice_spec::rows::LevelReader`]), its row published for the
//! level's table in windows (`rows.<table>`), and each file it links to
//! published for the next stage (`import-files`), with the values that
//! file's level inherits. The importer reads the root file with it, the
//! fetcher every file below; both then report one `read` fact. A file an
//! earlier attempt got part-way through goes on from there ([`resume`]).

pub mod resume;

use std::sync::Arc;

use resume::{Resumption, Start};
use sluice_download::{Columns, CsvFormat, Downloader, Row};
use sluice_messages::{windows::window_position, FileTask, ImportProgress, RowBatch};
use sluice_spec::{rows::LevelReader, Dialect, Encoding, Escape};
use sluice_stage::{
    buckets,
    checkpoints::Checkpoints,
    row_budget::{RowBudget, COUNT_EVERY},
    specs::{PinnedSpecs, StoredSpec},
    telemetry::KeyValue,
    Emitter, StageError,
};

/// The settings of reading files, shared by the importer and the fetcher.
#[derive(clap::Args, Debug, Clone)]
pub struct RowsArgs {
    /// Rows per published message (transactions, or a spec's table rows);
    /// 1 reproduces one message per row.
    #[arg(long, env = "SLUICE_TRANSACTIONS_PER_MESSAGE", default_value_t = sluice_messages::windows::DEFAULT_ROWS_PER_WINDOW,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub transactions_per_message: u32,
    /// Most rows one import may produce across all its files; past it
    /// the file being read fails and so does every file of that import
    /// started afterwards (counted every 100,000 rows per file, so it may
    /// overshoot by that much per file in work).
    #[arg(long, env = "SLUICE_MAX_ROWS_PER_IMPORT", default_value_t = sluice_stage::row_budget::DEFAULT_MAX_ROWS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows_per_import: u64,
}

/// What reading a file may do.
pub struct LevelFiles {
    /// Rows per `rows.<table>` message (SLUICE_TRANSACTIONS_PER_MESSAGE).
    pub rows_per_message: u64,
    /// Most files one file may link to (SLUICE_MAX_ACCOUNTS_PER_IMPORT).
    pub max_files: u64,
    /// The imports' row budget (SLUICE_MAX_ROWS_PER_IMPORT).
    pub budget: buckets::Lazy<RowBudget>,
    /// Where each file's reading stopped, to resume it.
    pub checkpoints: buckets::Lazy<Checkpoints>,
}

/// How a level's files are written, as the reader takes it.
pub fn csv_format(dialect: &Dialect) -> CsvFormat {
    let byte = |s: &str| s.bytes().next().unwrap_or(b',');
    CsvFormat {
        delimiter: byte(&dialect.delimiter),
        quote: byte(&dialect.quote),
        backslash_escape: dialect.escape == Escape::Backslash,
        header: dialect.header,
        skip_lines: u64::from(dialect.skip_lines),
        comment: dialect.comment.as_deref().map(byte),
        trim: dialect.trim,
        encoding: match dialect.encoding {
            Encoding::Utf8 => None,
            Encoding::Utf16 => Some(sluice_download::encoding_rs::UTF_16LE),
            // Latin-1's printable characters are Windows-1252's too, which
            // is what files labelled Latin-1 mostly are (as browsers read them).
            Encoding::Windows1252 | Encoding::Latin1 => {
                Some(sluice_download::encoding_rs::WINDOWS_1252)
            }
        },
        quoted_fields: false,
    }
}

impl LevelFiles {
    /// The settings of `rows`, with the import specs and the row budget,
    /// each opened from JetStream when the first import run with a spec
    /// needs it: what a stage that reads such files needs.
    pub fn open(
        runtime: &sluice_stage::Runtime,
        replicas: usize,
        rows: &RowsArgs,
        max_files: u64,
    ) -> (PinnedSpecs, LevelFiles) {
        let (js, ns) = (runtime.jetstream(), runtime.namespace().clone());
        let specs = PinnedSpecs::open_when_needed(&js, &ns, replicas);
        let limit = rows.max_rows_per_import;
        let files = LevelFiles {
            rows_per_message: u64::from(rows.transactions_per_message),
            max_files,
            budget: {
                let (js, ns) = (js.clone(), ns.clone());
                buckets::Lazy::new(move || {
                    let (js, ns) = (js.clone(), ns.clone());
                    async move { RowBudget::open(&js, &ns, replicas, limit).await }
                })
            },
            checkpoints: buckets::Lazy::new(move || {
                let (js, ns) = (js.clone(), ns.clone());
                async move { Checkpoints::open(&js, &ns, replicas).await }
            }),
        };
        (specs, files)
    }

    /// Reads the file `task` names with its level of `spec`, publishing its
    /// rows and the files it links to, then the `read` fact once all of it
    /// is stored.
    pub async fn read(
        &self,
        downloader: &Downloader,
        task: &FileTask,
        spec: &Arc<StoredSpec>,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let Some(level) = spec.spec.level(&task.level) else {
            return Err(StageError::permanent(format!(
                "import spec {} revision {} has no level {:?}",
                spec.spec.name, spec.revision, task.level
            )));
        };
        let budget = self.budget.get().await?;
        budget.check_start(&task.import_id)?;
        let checkpoints = self.checkpoints.get().await?;
        let per_window = self.rows_per_message;
        let mut resumption = Resumption::load(Some(checkpoints), out.key(), per_window).await;
        let read: Result<(), StageError> = async {
            // A busy host makes this file wait, not the files behind it.
            let reserved = out
                .without_slot(downloader.reserve(&task.url, task.credentials.as_deref()))
                .await?;
            let (mut file, reopened) = downloader
                .open_formatted_after(
                    reserved,
                    &CsvFormat {
                        quoted_fields: spec.spec.has_null_markers(level),
                        ..csv_format(&level.csv)
                    },
                    Columns::All,
                    resumption.stopped(),
                )
                .await?;
            let shown = file.shown_url();
            let reader = LevelReader::new(&spec.spec, &task.level, file.header())
                .map_err(|e| StageError::permanent(format!("{shown}: {e}")))?;
            let url = file.url().clone();
            let table = level.table.as_deref();
            let batch = table.map(|table| RowBatch {
                import_id: task.import_id.clone(),
                spec: spec.spec.name.clone(),
                revision: spec.revision,
                level: task.level.clone(),
                table: table.to_owned(),
                columns: spec
                    .spec
                    .table_columns(&task.level)
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.name.to_owned())
                    .collect(),
                path: task.path.clone(),
                url: Some(shown.clone()),
                lines: Vec::new(),
                rows: Vec::new(),
            });
            let rows_subject = table.map(|t| out.namespace().rows(t));
            let files_subject = out.namespace().import_files();
            let Start {
                mut windows,
                stored_rows,
                earlier,
                ..
            } = resumption
                .start::<(u64, Vec<Option<String>>)>(reopened, &shown, per_window, out)
                .await?;
            let mut sent = Sent::default();
            if let Some(earlier) = earlier {
                sent.messages = earlier.messages;
                sent.rows = earlier.valid_rows;
                sent.counted = earlier.valid_rows;
                sent.files = earlier.files;
            }
            let first_unsent = stored_rows / per_window;
            while let Some(row) = file.next_row().await? {
                // Where a later attempt could resume: this row, once everything
                // before it is stored (and before anything of it is sent).
                let mut due = None;
                if let Some(full) = windows.next_row() {
                    // Windows before `first_unsent` were stored by the earlier attempt.
                    if full.index >= first_unsent {
                        if let (Some(batch), Some(subject)) = (&batch, &rows_subject) {
                            sent.publish(batch, full, windows.rows_per_window(), subject, out)
                                .await?;
                        }
                        count(budget, task, &mut sent, out.key()).await?;
                    }
                    due = resumption.due_checkpoint(
                        per_window,
                        windows.rows_read() - 1,
                        (sent.messages, sent.rows, sent.files),
                        out,
                    );
                }
                let at = row.line();
                if windows.rows_read() > stored_rows {
                    'row: {
                        let record = match row {
                            Row::Record(record) => record,
                            Row::Malformed { line, reason } => {
                                out.reject_row(&shown, line, reason).await?;
                                break 'row;
                            }
                        };
                        let line = record.line();
                        let read = match reader.read(record.fields(), record.quoted(), &task.inherited)
                        {
                            Ok(read) => read,
                            Err(e) => {
                                out.reject_row(&shown, line, e).await?;
                                break 'row;
                            }
                        };
                        // Links are checked before anything of the row is sent, so a
                        // bad one rejects the row whole.
                        let mut links = Vec::with_capacity(read.children.len());
                        let mut unusable = None;
                        for child in read.children {
                            match url.join(&child.url) {
                                Ok(resolved) => {
                                    let index = level
                                        .children
                                        .iter()
                                        .position(|c| c.level == child.level)
                                        .unwrap_or(0);
                                    links.push((index, child, resolved));
                                }
                                Err(e) => {
                                    let link = sluice_messages::redact_file_url(&child.url);
                                    unusable = Some(format!("{link:?} is not a URL: {e}"));
                                    break;
                                }
                            }
                        }
                        if let Some(reason) = unusable {
                            out.reject_row(&shown, line, reason).await?;
                            break 'row;
                        }
                        for (index, child, resolved) in links {
                            if sent.files == self.max_files {
                                return Err(StageError::permanent(format!(
                                    "{shown} links to more than {} files (SLUICE_MAX_ACCOUNTS_PER_IMPORT); \
                                     the first {} are imported",
                                    self.max_files, self.max_files
                                )));
                            }
                            let mut path = task.path.clone();
                            path.push(line);
                            let next = FileTask {
                                import_id: task.import_id.clone(),
                                spec: spec.spec.name.clone(),
                                revision: spec.revision,
                                level: child.level,
                                url: resolved.into(),
                                path,
                                inherited: child.inherited,
                                credentials: task.credentials.clone(),
                            };
                            let position = match index {
                                0 => line.to_string(),
                                n => format!("{line}-{}", n + 1),
                            };
                            out.publish_json(files_subject.clone(), position, &next)
                                .await?;
                            sent.files += 1;
                        }
                        if let Some(values) = read.table_row {
                            windows.push((line, values));
                        }
                    }
                }
                if let Some(checkpoint) = due {
                    resumption.record(&file, at, checkpoint, out).await?;
                }
            }
            if let Some(last) = windows.finish().filter(|w| w.index >= first_unsent) {
                if let (Some(batch), Some(subject)) = (&batch, &rows_subject) {
                    sent.publish(batch, last, windows.rows_per_window(), subject, out)
                        .await?;
                }
            }
            budget
                .count_finished(&task.import_id, out.key(), sent.rows)
                .await?;
            let rejected_rows = out.rejected_rows();
            out.annotate([
                KeyValue::new("sluice.file.url", shown.clone()),
                KeyValue::new("sluice.spec.level", task.level.clone()),
                KeyValue::new("sluice.rows.read", (sent.rows + rejected_rows) as i64),
                KeyValue::new("sluice.rows.rejected", rejected_rows as i64),
            ]);
            let fact = ImportProgress::Read {
                import_id: task.import_id.clone(),
                file_key: out.key().to_owned(),
                level: task.level.clone(),
                messages: sent.messages,
                lines_per_message: windows.rows_per_window(),
                rows: sent.rows,
                rejected_rows,
                files: sent.files,
                url: Some(shown),
            };
            out.report_after_stored(&fact).await?;
            Ok(())
        }
        .await;
        resumption.end(&read).await;
        read
    }
}

/// Counts the rows sent so far against the import's budget, every
/// [`COUNT_EVERY`] rows.
async fn count(
    budget: &RowBudget,
    task: &FileTask,
    sent: &mut Sent,
    file_key: &str,
) -> Result<(), StageError> {
    if sent.rows >= sent.counted + COUNT_EVERY {
        budget.count(&task.import_id, file_key, sent.rows).await?;
        sent.counted = sent.rows;
    }
    Ok(())
}

/// What was published for a file so far.
#[derive(Default)]
struct Sent {
    messages: u64,
    rows: u64,
    files: u64,
    /// Rows last counted against the import's row budget.
    counted: u64,
}

impl Sent {
    async fn publish(
        &mut self,
        batch: &RowBatch,
        window: sluice_messages::windows::Window<(u64, Vec<Option<String>>)>,
        rows_per_window: u64,
        subject: &str,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let (lines, rows) = window.rows.into_iter().unzip();
        let message = RowBatch {
            lines,
            rows,
            ..batch.clone()
        };
        self.messages += 1;
        self.rows += message.rows.len() as u64;
        let position = window_position(window.index, rows_per_window);
        out.publish_json(subject.to_owned(), position, &message)
            .await
    }
}
