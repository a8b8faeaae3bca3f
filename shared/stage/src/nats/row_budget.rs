//! How many rows one import may produce, across every fetcher replica
//! (`SLUICE_MAX_ROWS_PER_IMPORT`). Without it, what one request can make is
//! the product of the accounts it may list and the size of each file, and
//! every account may point at the same large file.
//!
//! The count lives in a JetStream key-value bucket, `IMPORT_ROWS`: per
//! import, its total; per account of it, the rows counted for that account
//! so far. A fetcher counts an account when it ends and every
//! [`COUNT_EVERY`] rows before that. An account processed again (a
//! redelivery) counts only rows beyond what it counted before, so a replay
//! never spends the budget twice. A crash between the two writes loses that
//! delta (the count errs low); an outage is waited out in place (the file
//! is not read again), and a write whose answer the outage lost may count
//! that account's new rows once more (the only way the count errs high). Once the total passes
//! the budget, the account being counted fails (permanent: its rows so far
//! are kept, the rest of its file is not read), and every account of that
//! import a replica starts afterwards fails before its download. The total
//! may overshoot by what the accounts in work at that moment read until
//! their next count: at most `COUNT_EVERY` rows each.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_nats::jetstream::{self, kv};
use sluice_messages::Namespace;

use crate::{buckets, outage::Pause, StageError};
use sluice_messages::stage;

/// Rows an account may read between two counts.
pub const COUNT_EVERY: u64 = 100_000;

/// How long counts are kept: past any import's life.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default budget: a hundred million rows (about 4 GB of messages).
pub const DEFAULT_MAX_ROWS: u64 = 100_000_000;

/// The shared count of rows per import, and the budget it is held to (a
/// clone shares what it saw).
#[derive(Clone)]
pub struct RowBudget {
    bucket: kv::Store,
    limit: u64,
    /// Imports this replica saw over budget, refused without asking again.
    spent: std::sync::Arc<Mutex<HashMap<String, u64>>>,
}

impl RowBudget {
    /// The bucket, created when missing.
    pub async fn open(
        js: &jetstream::Context,
        ns: &Namespace,
        replicas: usize,
        limit: u64,
    ) -> Result<Self, StageError> {
        let bucket = buckets::open(
            js,
            kv::Config {
                bucket: ns.import_rows_bucket(),
                description: "sluice: rows counted per import and per account, for SLUICE_MAX_ROWS_PER_IMPORT".into(),
                history: 1,
                max_value_size: 256,
                max_age: KEEP,
                num_replicas: replicas.max(1),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        Ok(RowBudget {
            bucket,
            limit,
            spent: Default::default(),
        })
    }

    /// Refuses to start an account of an import this replica already saw
    /// over budget.
    pub fn check_start(&self, import: &str) -> Result<(), StageError> {
        match self.spent.lock().expect("never poisoned").get(import) {
            Some(&total) => Err(self.exceeded(import, total)),
            None => Ok(()),
        }
    }

    /// Counts `rows` as what account `account` of import `import` has read
    /// so far, and fails once the import's total passes the budget: the
    /// rest of that account's file is not to be read.
    pub async fn count(&self, import: &str, account: &str, rows: u64) -> Result<(), StageError> {
        match self.record(import, account, rows).await? {
            Some(total) => Err(self.exceeded(import, total)),
            None => Ok(()),
        }
    }

    /// Counts an account whose file was read to its end: its rows are all
    /// sent, so it is not failed for them, but the accounts of the import
    /// started after it are if the total passed the budget.
    pub async fn count_finished(
        &self,
        import: &str,
        account: &str,
        rows: u64,
    ) -> Result<(), StageError> {
        self.record(import, account, rows).await.map(drop)
    }

    /// The import's total when it passed the budget.
    async fn record(
        &self,
        import: &str,
        account: &str,
        rows: u64,
    ) -> Result<Option<u64>, StageError> {
        let import_key = buckets::key_of(import);
        let account_key = format!("{import_key}.{}", buckets::key_of(account));
        let delta = self.raise(&account_key, rows, import).await?;
        if delta == 0 {
            return Ok(None);
        }
        let total = self.add(&import_key, delta, import).await?;
        if total <= self.limit {
            return Ok(None);
        }
        self.spent
            .lock()
            .expect("never poisoned")
            .insert(import.to_owned(), total);
        Ok(Some(total))
    }

    fn exceeded(&self, import: &str, total: u64) -> StageError {
        StageError::permanent(format!(
            "import {import} has produced {total} rows, over SLUICE_MAX_ROWS_PER_IMPORT ({}): the rest of its files is not read",
            self.limit
        ))
    }

    /// Sets the account's count to `rows` unless it is that high already;
    /// returns by how much it rose.
    async fn raise(&self, key: &str, rows: u64, import: &str) -> Result<u64, StageError> {
        loop {
            let (counted, revision) = self.read(key, import).await?;
            if rows <= counted {
                return Ok(0);
            }
            if self.write(key, rows, revision, import).await? {
                return Ok(rows - counted);
            }
        }
    }

    /// Adds `delta` to the import's total; returns the new total.
    async fn add(&self, key: &str, delta: u64, import: &str) -> Result<u64, StageError> {
        loop {
            let (total, revision) = self.read(key, import).await?;
            let total = total.saturating_add(delta);
            if self.write(key, total, revision, import).await? {
                return Ok(total);
            }
        }
    }

    /// Reads a count, waiting out an outage in place: the account being
    /// counted must not be read again from the start for it.
    async fn read(&self, key: &str, import: &str) -> Result<(u64, Option<u64>), StageError> {
        let mut pause: Option<Pause> = None;
        let entry = loop {
            match self.bucket.entry(key).await {
                Ok(entry) => break entry,
                Err(e) => {
                    let e = self.outage("read", import, &e);
                    pause
                        .get_or_insert_with(|| Pause::begin(stage::FETCHER, &e))
                        .back_off()
                        .await
                }
            }
        };
        Ok(match entry {
            Some(entry) if entry.operation == kv::Operation::Put => (
                std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                Some(entry.revision),
            ),
            Some(entry) => (0, Some(entry.revision)),
            None => (0, None),
        })
    }

    /// Writes `value` if the key is still at `revision` (absent: `None`);
    /// false when another writer came first. An outage is waited out in
    /// place; a write whose answer it lost may have been stored: the retry
    /// then finds the revision moved and reads again.
    async fn write(
        &self,
        key: &str,
        value: u64,
        revision: Option<u64>,
        import: &str,
    ) -> Result<bool, StageError> {
        let mut pause: Option<Pause> = None;
        loop {
            match self.try_write(key, value, revision, import).await {
                Err(e) if e.is_outage() => {
                    pause
                        .get_or_insert_with(|| Pause::begin(stage::FETCHER, &e))
                        .back_off()
                        .await
                }
                done => return done,
            }
        }
    }

    async fn try_write(
        &self,
        key: &str,
        value: u64,
        revision: Option<u64>,
        import: &str,
    ) -> Result<bool, StageError> {
        let value = value.to_string().into_bytes().into();
        match revision {
            None => match self.bucket.create(key, value).await {
                Ok(_) => Ok(true),
                // Another writer created it first: async-nats says so as
                // AlreadyExists, or, when the two creates raced, with the
                // stream's own "wrong last sequence".
                Err(e)
                    if e.kind() == kv::CreateErrorKind::AlreadyExists
                        || crate::error_chain(&e).contains("wrong last sequence") =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.outage("write", import, &e)),
            },
            Some(revision) => match self.bucket.update(key, value, revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(self.outage("write", import, &e)),
            },
        }
    }

    fn outage(
        &self,
        what: &str,
        import: &str,
        e: &(dyn std::error::Error + 'static),
    ) -> StageError {
        StageError::outage(format!(
            "cannot {what} the row count of import {import}: {}",
            crate::error_chain(e)
        ))
    }
}
