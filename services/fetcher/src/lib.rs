//! fetcher: one account in, its transactions CSV out as
//! `transactions.<account_id>` messages of up to N transactions each.

#![deny(clippy::let_underscore_must_use)]

use sluice_download::{DownloadOptions, Downloader, Record, Row};
use sluice_levels::{
    resume::{OnChange, Resumption, Start},
    LevelFiles,
};
use sluice_messages::{
    stage,
    windows::{versioned_position, Window, Windows},
    AccountUpdate, FileTask, ImportProgress, Transaction, TransactionBatch,
};
use sluice_stage::{
    checkpoints::Checkpoints,
    row_budget::{RowBudget, COUNT_EVERY},
    specs::PinnedSpecs,
    telemetry::KeyValue,
    Delivery, Emitter, FlatMap, StageError,
};

const COLUMNS: [&str; 2] = ["id", "amount"];

pub struct Fetcher {
    downloader: Downloader,
    transactions_per_message: usize,
    budget: Option<RowBudget>,
    /// Files of imports run with a spec of the user's.
    specs: Option<(PinnedSpecs, LevelFiles)>,
    /// Where each account's file stopped, to resume it.
    checkpoints: Option<Checkpoints>,
}

/// What the fetcher reads: an account's transactions CSV, or a file of an
/// import run with a spec.
pub enum Input {
    Account(AccountUpdate),
    File(FileTask),
}

impl Fetcher {
    pub fn new(
        download: &DownloadOptions,
        transactions_per_message: usize,
    ) -> Result<Self, StageError> {
        Ok(Fetcher {
            downloader: Downloader::new(download)?,
            transactions_per_message: transactions_per_message.max(1),
            budget: None,
            specs: None,
            checkpoints: None,
        })
    }

    /// Records where each file stopped in `checkpoints`, and resumes
    /// files from there.
    pub fn with_checkpoints(mut self, checkpoints: Checkpoints) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// Reads the files of imports run with a spec with `specs`, as `files`
    /// says.
    pub fn with_specs(mut self, specs: PinnedSpecs, files: LevelFiles) -> Self {
        self.specs = Some((specs, files));
        self
    }

    /// Holds every import to `budget` rows (`SLUICE_MAX_ROWS_PER_IMPORT`).
    pub fn with_budget(mut self, budget: RowBudget) -> Self {
        self.budget = Some(budget);
        self
    }
}

impl Fetcher {
    /// Refuses a window so large that a message of it could exceed the
    /// server's largest message: it would fail every file that fills it.
    pub fn check_fits(&self, max_payload: usize) -> Result<(), StageError> {
        let largest = largest_message(self.transactions_per_message);
        // Headers (ids, import id) travel in the same message.
        let room = max_payload.saturating_sub(HEADER_ROOM);
        if largest <= room {
            return Ok(());
        }
        let fits = (1..=self.transactions_per_message)
            .rev()
            .find(|&n| largest_message(n) <= room)
            .unwrap_or(1);
        Err(StageError::permanent(format!(
            "SLUICE_TRANSACTIONS_PER_MESSAGE={} allows messages of up to {largest} bytes, \
             over the NATS server's max_payload of {max_payload}: use at most {fits}",
            self.transactions_per_message
        )))
    }
}

const HEADER_ROOM: usize = 4096;

/// The encoded size of a message of `n` transactions of the longest kind
/// (a 128-character import id, 20-digit ids and lines, 62-character
/// amounts).
fn largest_message(n: usize) -> usize {
    let batch = |count: usize| TransactionBatch {
        import_id: "i".repeat(128),
        account_id: i64::MIN,
        transactions: vec![
            Transaction {
                id: i64::MIN,
                amount: format!("-{}.", "9".repeat(60))
                    .parse()
                    .expect("a valid amount"),
                line: Some(u64::MAX),
            };
            count
        ],
    };
    let size = |count| serde_json::to_vec(&batch(count)).expect("encodes").len();
    let (empty, one) = (size(0), size(1));
    // Each transaction adds itself, and each but the first a comma.
    empty + n * (one - empty) + n.saturating_sub(1)
}

impl FlatMap for Fetcher {
    const NAME: &'static str = stage::FETCHER;
    // Downloads mostly wait on the network; many at once fill the pipe.
    const DEFAULT_CONCURRENCY: u16 = 16;

    type Input = Input;

    fn decode(&self, input: &Delivery) -> Result<Input, StageError> {
        // `import-files`, in whatever namespace; `account-updates` else.
        if input.subject().rsplit('.').next() == Some("import-files") {
            return input.json().map(Input::File);
        }
        input.json().map(Input::Account)
    }

    fn import_id<'a>(&self, input: &'a Input) -> Option<&'a str> {
        match input {
            Input::Account(account) => Some(&account.import_id),
            Input::File(file) => Some(&file.import_id),
        }
    }

    async fn process(&self, input: &Input, out: &mut Emitter) -> Result<(), StageError> {
        match input {
            Input::Account(account) => self.fetch_account(account, out).await,
            Input::File(file) => {
                let Some((specs, files)) = &self.specs else {
                    return Err(StageError::permanent(
                        "this fetcher reads the built-in spec's files only",
                    ));
                };
                out.annotate([KeyValue::new("sluice.spec.name", file.spec.clone())]);
                let spec = specs.pinned(&file.spec, file.revision).await?;
                files.read(&self.downloader, file, &spec, out).await
            }
        }
    }
}

impl Fetcher {
    async fn fetch_account(
        &self,
        account: &AccountUpdate,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        out.annotate([KeyValue::new("sluice.account.id", account.account_id)]);
        if let Some(budget) = &self.budget {
            budget.check_start(&account.import_id)?;
        }
        let per_window = self.transactions_per_message as u64;
        // A changed file is read again: the saver can tell the rows an
        // account's earlier version saved (by their file position) and
        // replaces them.
        let mut resumption = Resumption::load(self.checkpoints.as_ref(), out.key(), per_window)
            .await
            .on_change(OnChange::ReadAgain);
        let read: Result<(), StageError> = async {
            // A busy host makes this account wait, not the accounts behind it.
            let reserved = out
                .without_slot(
                    self.downloader
                        .reserve(&account.transactions_url, account.credentials.as_deref()),
                )
                .await?;
            let (mut file, reopened) = self
                .downloader
                .open_csv_after(reserved, &COLUMNS, resumption.stopped())
                .await?;
            let shown = file.shown_url();
            let subject = out.namespace().transactions(account.account_id);
            let Start {
                mut windows,
                stored_rows,
                earlier,
                version,
            } = resumption
                .start::<Transaction>(reopened, &shown, per_window, out)
                .await?;
            let mut sent = Sent {
                version,
                ..Sent::default()
            };
            if let Some(earlier) = earlier {
                sent.messages = earlier.messages;
                sent.transactions = earlier.valid_rows;
                sent.counted = earlier.valid_rows;
            }
            let first_unsent = stored_rows / per_window;
            while let Some(row) = file.next_row().await? {
                // Where a later attempt could resume: this row, once the windows
                // before it are stored (and before it is rejected, if it is).
                let mut due = None;
                if let Some(full) = windows.next_row() {
                    // Windows before `first_unsent` were stored by the earlier attempt.
                    if full.index >= first_unsent {
                        sent.publish(full, &windows, account, &subject, out).await?;
                        if let Some(budget) = &self.budget {
                            if sent.transactions >= sent.counted + COUNT_EVERY {
                                budget
                                    .count(&account.import_id, out.key(), sent.transactions)
                                    .await?;
                                sent.counted = sent.transactions;
                            }
                        }
                    }
                    due = resumption.due_checkpoint(
                        per_window,
                        windows.rows_read() - 1,
                        (sent.messages, sent.transactions, 0),
                        out,
                    );
                }
                let line = row.line();
                if windows.rows_read() > stored_rows {
                    match row {
                        Row::Record(record) => match transaction(&record, record.line()) {
                            Ok(transaction) => windows.push(transaction),
                            Err(reason) => out.reject_row(&shown, record.line(), reason).await?,
                        },
                        Row::Malformed { line, reason } => {
                            out.reject_row(&shown, line, reason).await?
                        }
                    }
                }
                if let Some(checkpoint) = due {
                    resumption.record(&file, line, checkpoint, out).await?;
                }
            }
            if let Some(last) = windows.finish().filter(|w| w.index >= first_unsent) {
                sent.publish(last, &windows, account, &subject, out).await?;
            }
            let (account_key, rejected_rows) = (out.key().to_owned(), out.rejected_rows());
            if let Some(budget) = &self.budget {
                budget
                    .count_finished(&account.import_id, &account_key, sent.transactions)
                    .await?;
            }
            out.annotate([
                KeyValue::new("sluice.file.url", shown.clone()),
                KeyValue::new(
                    "sluice.rows.read",
                    (sent.transactions + rejected_rows) as i64,
                ),
                KeyValue::new("sluice.rows.rejected", rejected_rows as i64),
            ]);
            out.report_after_stored(&ImportProgress::Fetched {
                import_id: account.import_id.clone(),
                account_key,
                account_id: account.account_id,
                messages: sent.messages,
                lines_per_message: windows.rows_per_window(),
                transactions: sent.transactions,
                rejected_rows,
                url: Some(shown),
                version,
            })
            .await?;
            Ok(())
        }
        .await;
        resumption.end(&read).await;
        read
    }
}

/// What was published for an account so far.
#[derive(Default)]
struct Sent {
    messages: u64,
    transactions: u64,
    /// Transactions last counted against the import's row budget.
    counted: u64,
    /// The version of the file read.
    version: u32,
}

impl Sent {
    async fn publish(
        &mut self,
        window: Window,
        windows: &Windows,
        account: &AccountUpdate,
        subject: &str,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let batch = TransactionBatch {
            import_id: account.import_id.clone(),
            account_id: account.account_id,
            transactions: window.rows,
        };
        self.messages += 1;
        self.transactions += batch.transactions.len() as u64;
        let position = versioned_position(self.version, window.index, windows.rows_per_window());
        out.publish_json(subject.to_owned(), position, &batch).await
    }
}

fn transaction(record: &Record<'_>, line: u64) -> Result<Transaction, String> {
    let (id, amount) = (record.get(0), record.get(1));
    Ok(Transaction {
        line: Some(line),
        id: id
            .parse()
            .map_err(|_| format!("id {id:?} is not a 64-bit integer"))?,
        amount: amount.parse().map_err(|e| format!("{e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_that_could_outgrow_max_payload_is_refused_at_start() {
        let fetcher = |n| Fetcher::new(&DownloadOptions::default(), n).unwrap();
        assert!(fetcher(100).check_fits(1 << 20).is_ok());
        // NATS' default 1 MiB takes 5,000 of the longest, not 10,000.
        assert!(fetcher(5_000).check_fits(1 << 20).is_ok());
        let err = fetcher(10_000).check_fits(1 << 20).unwrap_err().to_string();
        assert!(
            err.starts_with("SLUICE_TRANSACTIONS_PER_MESSAGE=10000 allows messages of up to"),
            "{err}"
        );
        let fits: usize = err.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(largest_message(fits) <= (1 << 20) - HEADER_ROOM);
        assert!(largest_message(fits + 1) > (1 << 20) - HEADER_ROOM);
        // The worst case is the real encoding's size.
        let one = TransactionBatch {
            import_id: "i".repeat(128),
            account_id: i64::MIN,
            transactions: vec![
                Transaction {
                    id: i64::MIN,
                    amount: format!("-{}.", "9".repeat(60)).parse().unwrap(),
                    line: Some(u64::MAX),
                };
                3
            ],
        };
        assert_eq!(serde_json::to_vec(&one).unwrap().len(), largest_message(3));
    }
}
