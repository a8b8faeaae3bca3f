//! fetcher: one account in, its transactions CSV out as
//! `transactions.<account_id>` messages of up to N transactions each.

use sluice_download::{DownloadOptions, Downloader, Record, Row};
use sluice_messages::{stage, AccountUpdate, ImportProgress, Transaction, TransactionBatch};
use sluice_stage::{Delivery, Emitter, FlatMap, StageError};

const COLUMNS: [&str; 2] = ["id", "amount"];

pub struct Fetcher {
    downloader: Downloader,
    transactions_per_message: usize,
}

impl Fetcher {
    pub fn new(
        download: &DownloadOptions,
        transactions_per_message: usize,
    ) -> Result<Self, StageError> {
        Ok(Fetcher {
            downloader: Downloader::new(download).map_err(StageError::permanent)?,
            transactions_per_message: transactions_per_message.max(1),
        })
    }
}

impl FlatMap for Fetcher {
    const NAME: &'static str = stage::FETCHER;
    // Downloads mostly wait on the network; many at once fill the pipe.
    const DEFAULT_CONCURRENCY: u16 = 16;

    async fn process(&self, input: &Delivery, out: &mut Emitter) -> Result<(), StageError> {
        let account: AccountUpdate = input.json()?;
        if out.import_id().is_none() {
            out.set_import_id(&account.import_id);
        }
        let mut file = self
            .downloader
            .open_csv(&account.transactions_url, &COLUMNS)
            .await?;
        let url = file.url().clone();
        let subject = out.namespace().transactions(account.account_id);
        let mut chunk = Chunk::new(self.transactions_per_message);
        while let Some(row) = file.next_row().await? {
            match row {
                Row::Record(record) => match transaction(&record) {
                    Ok(transaction) => chunk.push(record.line(), transaction),
                    Err(reason) => out.reject_row(url.as_str(), record.line(), reason).await?,
                },
                Row::Malformed { line, reason } => {
                    out.reject_row(url.as_str(), line, reason).await?
                }
            }
            if chunk.is_full() {
                chunk.publish(&account, &subject, out).await?;
            }
        }
        chunk.publish(&account, &subject, out).await?;
        let (account_key, rejected_rows) = (out.identity().to_owned(), out.rejected_rows());
        out.report(&ImportProgress::Fetched {
            import_id: account.import_id,
            account_key,
            account_id: account.account_id,
            messages: chunk.messages,
            transactions: chunk.transactions_total,
            rejected_rows,
        })
        .await
    }
}

/// Consecutive transactions bound for one message.
struct Chunk {
    capacity: usize,
    first_line: u64,
    last_line: u64,
    transactions: Vec<Transaction>,
    /// Messages published so far, and the transactions in them.
    messages: u64,
    transactions_total: u64,
}

impl Chunk {
    fn new(capacity: usize) -> Self {
        Chunk {
            capacity,
            first_line: 0,
            last_line: 0,
            transactions: Vec::with_capacity(capacity),
            messages: 0,
            transactions_total: 0,
        }
    }

    fn push(&mut self, line: u64, transaction: Transaction) {
        if self.transactions.is_empty() {
            self.first_line = line;
        }
        self.last_line = line;
        self.transactions.push(transaction);
    }

    fn is_full(&self) -> bool {
        self.transactions.len() >= self.capacity
    }

    /// Publishes and empties the chunk. Its id names the file lines it holds,
    /// so a re-run with another chunk size never mistakes a different chunk
    /// for a duplicate.
    async fn publish(
        &mut self,
        account: &AccountUpdate,
        subject: &str,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        if self.transactions.is_empty() {
            return Ok(());
        }
        let batch = TransactionBatch {
            import_id: account.import_id.clone(),
            account_id: account.account_id,
            transactions: std::mem::replace(
                &mut self.transactions,
                Vec::with_capacity(self.capacity),
            ),
        };
        self.messages += 1;
        self.transactions_total += batch.transactions.len() as u64;
        let position = format!("lines-{}-{}", self.first_line, self.last_line);
        out.publish_json(subject.to_owned(), position, &batch).await
    }
}

fn transaction(record: &Record<'_>) -> Result<Transaction, String> {
    let (id, amount) = (record.get(0), record.get(1));
    Ok(Transaction {
        id: id
            .parse()
            .map_err(|_| format!("id {id:?} is not a 64-bit integer"))?,
        amount: amount.parse().map_err(|e| format!("{e}"))?,
    })
}
