//! What a batch must not write, and the lock that makes sure of it: rows
//! of a cancelled import, and rows of a file version superseded.
//!
//! **Cancelled imports.** An operator's cancel takes the import's advisory
//! lock exclusively and marks the import `cancelled` (with what it saved
//! by then) in one transaction. Every batch shares the lock from before it
//! reads which of its imports are cancelled until it commits, and leaves
//! their messages out (acked, nothing written): no row of a cancelled
//! import is written after its completion event, whatever the timing.
//!
//! **File versions.** A transactions file that changed between two
//! attempts (another `ETag` or `Last-Modified`) is read again from its
//! first row under ids of its own (`…/v<n>-rows-…`). The first message of
//! version `n` to reach the saver *upgrades* its file, under the same lock
//! held exclusively: the rows the import saved from earlier versions (the
//! account's rows of this import at the file's account line) go, with the
//! records of their messages, and `import_file_versions` says `n`. A
//! message of an earlier version that comes after (stored before the
//! fetcher died, or redelivered) is superseded: acked, nothing written.

use std::collections::{BTreeSet, HashMap, HashSet};

use sluice_messages::windows::version_of;
use sluice_stage::StageError;
use tokio_postgres::{Client, GenericClient, Statement};

use crate::{account_key, db_error, Chunk};

/// The key of import `id`'s advisory lock: FNV-1a of its id, computed
/// here (not by PostgreSQL) so that the shared locks go in the same simple
/// query as `BEGIN`, and the same in every release (replicas of two
/// releases exclude each other during a rolling upgrade).
pub(crate) fn lock_key(id: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"sluice-import:".iter().chain(id.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Every file of `chunks` read again at a later version than the table
/// holds is brought to it, each in a transaction of its own, before the
/// batch's own begins (so a writer never waits for the exclusive lock
/// while sharing it).
pub(crate) async fn upgrade(client: &mut Client, chunks: &[&Chunk]) -> Result<(), StageError> {
    let mut latest: HashMap<(&str, &str), (u32, i64)> = HashMap::new();
    for chunk in chunks {
        let version = version_of(&chunk.key);
        if version > 1 {
            let file = (chunk.batch.import_id.as_str(), account_key(&chunk.key));
            let seen = latest
                .entry(file)
                .or_insert((version, chunk.batch.account_id));
            seen.0 = seen.0.max(version);
        }
    }
    for ((import_id, file), (version, account_id)) in latest {
        // Most batches of a version come after its upgrade: no lock for them.
        let held = client
            .query_opt(
                "SELECT version FROM import_file_versions WHERE import_id = $1 AND account_key = $2",
                &[&import_id, &file],
            )
            .await
            .map_err(|e| db_error("read", &e))?
            .map_or(1, |r| r.get::<_, i32>(0));
        if held >= version as i32 {
            continue;
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_error("begin", &e))?;
        upgrade_file(&tx, import_id, file, version, account_id)
            .await
            .map_err(|e| db_error("upgrade", &e))?;
        tx.commit().await.map_err(|e| db_error("commit", &e))?;
    }
    Ok(())
}

/// Brings file `file` (an account's key) of import `import_id` to
/// `version`, in transaction `tx`, unless it is there already or the
/// import was cancelled: the rows the import saved at the file's account
/// line go, with their messages' records, conflicts and clashes, and the
/// account waits for the new version's announcement. Run on the first
/// message of the version, and on its `fetched` fact (a version without a
/// row has no message). Says whether it upgraded.
pub(crate) async fn upgrade_file(
    tx: &impl GenericClient,
    import_id: &str,
    file: &str,
    version: u32,
    account_id: i64,
) -> Result<bool, tokio_postgres::Error> {
    let version = version as i32;
    let Some(line) = account_line(file) else {
        // Not an account of the built-in shape: nothing to replace.
        return Ok(false);
    };
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(import_id)])
        .await?;
    let cancelled = tx
        .query_opt(
            "SELECT 1 FROM imports WHERE id = $1 AND status = 'cancelled'",
            &[&import_id],
        )
        .await?
        .is_some();
    if cancelled {
        return Ok(false);
    }
    let upgraded = tx
        .query_opt(
            "INSERT INTO import_file_versions AS f (import_id, account_key, version)
             VALUES ($1, $2, $3)
             ON CONFLICT (import_id, account_key) DO UPDATE SET version = excluded.version
                 WHERE f.version < excluded.version
             RETURNING 1",
            &[&import_id, &file, &version],
        )
        .await?
        .is_some();
    if !upgraded {
        return Ok(false);
    }
    // The rows this file won in the import are at its account line;
    // another import's rows keep their own import id.
    let removed = tx
        .execute(
            "DELETE FROM transactions
             WHERE account_id = $1 AND import_id = $2 AND position >> 32 = $3",
            &[&account_id, &import_id, &line],
        )
        .await?;
    // Every parameter is typed in each (PostgreSQL needs them all).
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&import_id, &file, &account_id, &line, &version];
    for sql in [
        "DELETE FROM import_chunks WHERE import_id = $1 AND account_key = $2
           AND $3::int8 IS NOT NULL AND $4::int8 IS NOT NULL AND $5::int4 IS NOT NULL",
        "DELETE FROM import_conflicts WHERE import_id = $1 AND $2::text IS NOT NULL
           AND account_id = $3 AND account_line = $4 AND $5::int4 IS NOT NULL",
        "DELETE FROM import_clashes WHERE import_id = $1 AND $2::text IS NOT NULL
           AND account_id = $3 AND account_line = $4 AND $5::int4 IS NOT NULL",
        // An earlier version announced already (its fact stored just before
        // its fetcher died) completes nothing now: the account waits for
        // the new version's announcement.
        "UPDATE import_accounts SET complete = false, lines_per_message = 0
         WHERE import_id = $1 AND account_key = $2 AND version < $5
           AND $3::int8 IS NOT NULL AND $4::int8 IS NOT NULL",
    ] {
        tx.execute(sql, &params).await?;
    }
    tracing::warn!(
        import_id,
        file,
        version,
        removed,
        "a transactions file changed and is read again: the rows its earlier version saved are replaced"
    );
    Ok(true)
}

/// The account line of a file key `<import>/<line>`.
fn account_line(file: &str) -> Option<i64> {
    file.rsplit('/').next()?.parse().ok()
}

/// What a batch's transaction holds: the imports of the batch an
/// operator cancelled, and the versions of their files read again. Neither
/// can change until the transaction ends.
#[derive(Debug, Default)]
pub(crate) struct Held {
    cancelled: HashSet<String>,
    versions: HashMap<(String, String), u32>,
}

impl Held {
    /// Whether `chunk` is left out: its import was cancelled, or it is of
    /// a version older than the one its file is at now.
    pub(crate) fn drops(&self, chunk: &Chunk) -> bool {
        let import_id = chunk.batch.import_id.as_str();
        if self.cancelled.contains(import_id) {
            return true;
        }
        if self.versions.is_empty() {
            return false;
        }
        let file = (import_id.to_owned(), account_key(&chunk.key).to_owned());
        self.versions
            .get(&file)
            .is_some_and(|&at| version_of(&chunk.key) < at)
    }

    /// Whether import `id` was cancelled.
    pub(crate) fn cancelled(&self, id: &str) -> bool {
        self.cancelled.contains(id)
    }

    fn of(rows: &[tokio_postgres::Row]) -> Held {
        let mut held = Held::default();
        for r in rows {
            let import_id: String = r.get(0);
            match r.get::<_, Option<String>>(1) {
                None => {
                    held.cancelled.insert(import_id);
                }
                Some(file) => {
                    held.versions
                        .insert((import_id, file), r.get::<_, i32>(2) as u32);
                }
            }
        }
        held
    }
}

/// What a batch reads once its locks are held: its cancelled imports
/// (no file), and the versions of their files read again.
pub(crate) const READ: &str = "
    SELECT id, NULL::text, 0 FROM imports WHERE id = ANY($1) AND status = 'cancelled'
    UNION ALL
    SELECT import_id, account_key, version FROM import_file_versions WHERE import_id = ANY($1)";

/// The statement taking the locks of `imports` shared, for a simple query
/// (one round trip). The locks go in key order, so two writers' shared
/// locks never wait on each other behind an exclusive one.
fn share(imports: &[&str]) -> String {
    let keys: BTreeSet<i64> = imports.iter().map(|id| lock_key(id)).collect();
    let locks: Vec<String> = keys
        .iter()
        .map(|k| format!("pg_advisory_xact_lock_shared({k})"))
        .collect();
    format!("SELECT {}", locks.join(", "))
}

fn ids(imports: &[&str]) -> Vec<String> {
    let set: BTreeSet<&str> = imports.iter().copied().collect();
    set.into_iter().map(str::to_owned).collect()
}

/// Begins a batch's transaction on `client`, takes the locks of `imports`
/// shared and reads (with `read`, [`READ`] prepared) what the batch must
/// not write: one round trip (the read pipelined after the locks, which
/// the server takes first: the read's snapshot is taken once they are
/// held). On an error the transaction is rolled back.
pub(crate) async fn begin(
    client: &Client,
    read: &Statement,
    imports: &[&str],
) -> Result<Held, StageError> {
    let ids = ids(imports);
    // One simple query: its statements run in order.
    let locks = format!("BEGIN; {}", share(imports));
    let begun =
        futures_util::future::try_join(client.batch_execute(&locks), client.query(read, &[&ids]))
            .await;
    match begun {
        Ok((_, rows)) => Ok(Held::of(&rows)),
        Err(e) => {
            rollback(client).await;
            Err(db_error("begin", &e))
        }
    }
}

/// [`begin`]'s locks and reads, in transaction `tx` (the rows of imports
/// run with a spec, whose files are never read again).
pub(crate) async fn hold(
    tx: &tokio_postgres::Transaction<'_>,
    imports: &[&str],
) -> Result<Held, StageError> {
    tx.batch_execute(&share(imports))
        .await
        .map_err(|e| db_error("lock", &e))?;
    let rows = tx
        .query(READ, &[&ids(imports)])
        .await
        .map_err(|e| db_error("read", &e))?;
    Ok(Held::of(&rows))
}

/// How a cancel went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// The import is cancelled now, or was already.
    Done,
    /// No record of the import (yet).
    Unknown,
    /// It ended already, with this status.
    Ended(String),
}

/// Cancels import `id`: once this returns `Done`, no batch writes a row
/// of it any more (the ones under way have committed), and its completion
/// event says `cancelled` with the rows it saved.
pub(crate) async fn cancel(
    client: &mut Client,
    id: &str,
) -> Result<Cancelled, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(id)])
        .await?;
    let status: Option<String> = tx
        .query_opt(
            "SELECT status FROM imports WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
        .map(|r| r.get(0));
    let outcome = match status.as_deref() {
        None => Cancelled::Unknown,
        Some("cancelled") => Cancelled::Done,
        Some("running") => {
            tx.execute(
                "UPDATE imports i SET status = 'cancelled', finished_at = now(),
                     transactions_saved = (SELECT COALESCE(sum(inserted), 0) FROM import_chunks c
                                           WHERE c.import_id = i.id AND c.table_name IS NULL)
                 WHERE id = $1",
                &[&id],
            )
            .await?;
            Cancelled::Done
        }
        Some(ended) => Cancelled::Ended(ended.to_owned()),
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Ends a failed transaction, if one is open (else PostgreSQL only warns):
/// the connection takes the next batch.
pub(crate) async fn rollback(client: &Client) {
    if let Err(e) = client.batch_execute("ROLLBACK").await {
        tracing::debug!(error = %e, "rollback failed: the connection is gone, and its transaction with it");
    }
}

#[cfg(test)]
mod tests {
    use sluice_messages::{Transaction, TransactionBatch};
    use sluice_stage::Sink;

    use crate::{Chunk, Item, Saver, Wakeups};

    #[test]
    fn a_file_key_names_its_account_line() {
        assert_eq!(super::account_line("nightly-3/12"), Some(12));
        assert_eq!(super::account_line("nightly-3"), None);
    }

    fn chunk(import_id: &str, key: &str, rows: &[(i64, &str, u64)]) -> Item {
        Item::Transactions(Chunk {
            batch: TransactionBatch {
                import_id: import_id.into(),
                account_id: 7,
                transactions: rows
                    .iter()
                    .map(|&(id, amount, line)| Transaction {
                        id,
                        amount: amount.parse().unwrap(),
                        line: Some(line),
                    })
                    .collect(),
            },
            key: key.into(),
        })
    }

    #[tokio::test]
    async fn a_later_version_replaces_the_earlier_ones_rows_and_a_late_message_of_it_writes_nothing(
    ) {
        let sandbox = sluice_devkit::Sandbox::new("versions").await;
        let database = crate::Database::new(sandbox.database_url().parse().unwrap());
        let saver = Saver::new(database, Wakeups::default());
        let mut writer = saver.open().await.unwrap();
        let batches = [
            // Another import's row of the account, and version 1 of the file.
            vec![chunk("t-0", "t-0/2/rows-1-2", &[(9, "9", 2)])],
            vec![chunk("t-1", "t-1/2/rows-1-2", &[(1, "1", 2), (2, "2", 3)])],
            // Version 2: one row, another amount.
            vec![chunk("t-1", "t-1/2/v2-rows-1-2", &[(1, "10", 2)])],
            // A message of version 1 that comes late, alone and beside one
            // of version 2.
            vec![
                chunk("t-1", "t-1/2/rows-3-4", &[(3, "3", 4), (4, "4", 5)]),
                chunk("t-1", "t-1/2/v2-rows-3-4", &[(5, "5", 4)]),
            ],
        ];
        for batch in &batches {
            saver.write(&mut writer, batch).await.unwrap();
        }
        let db = sandbox.db().await;
        let rows: Vec<(String, i64, String)> = db
            .query(
                "SELECT import_id, id, amount::text FROM transactions ORDER BY import_id, id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let row = |import: &str, id, amount: &str| (import.to_owned(), id, amount.to_owned());
        assert_eq!(
            rows,
            [row("t-0", 9, "9"), row("t-1", 1, "10"), row("t-1", 5, "5")]
        );
        let chunks: Vec<String> = db
            .query(
                "SELECT chunk_key FROM import_chunks WHERE import_id = 't-1' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(chunks, ["t-1/2/v2-rows-1-2", "t-1/2/v2-rows-3-4"]);
    }

    #[tokio::test]
    async fn a_cancelled_import_gets_no_row_more_and_an_ended_one_cannot_be_cancelled() {
        let sandbox = sluice_devkit::Sandbox::new("cancel").await;
        let database = crate::Database::new(sandbox.database_url().parse().unwrap());
        let saver = Saver::new(database.clone(), Wakeups::default());
        let mut writer = saver.open().await.unwrap();
        let mut db = database.connect().await.unwrap();
        db.batch_execute(
            "INSERT INTO imports (id) VALUES ('t-1'), ('t-2');
             UPDATE imports SET status = 'completed' WHERE id = 't-2'",
        )
        .await
        .unwrap();
        saver
            .write(
                &mut writer,
                &[chunk("t-1", "t-1/2/rows-1-2", &[(1, "1", 2)])],
            )
            .await
            .unwrap();
        assert_eq!(
            super::cancel(&mut db, "t-1").await.unwrap(),
            super::Cancelled::Done
        );
        assert_eq!(
            super::cancel(&mut db, "t-1").await.unwrap(),
            super::Cancelled::Done
        );
        assert_eq!(
            super::cancel(&mut db, "t-9").await.unwrap(),
            super::Cancelled::Unknown
        );
        assert_eq!(
            super::cancel(&mut db, "t-2").await.unwrap(),
            super::Cancelled::Ended("completed".into())
        );
        // After the cancel, its messages are acknowledged and write nothing;
        // another import's beside them are written.
        saver
            .write(
                &mut writer,
                &[
                    chunk("t-1", "t-1/2/rows-3-4", &[(3, "3", 4)]),
                    chunk("t-3", "t-3/2/rows-1-2", &[(5, "5", 2)]),
                ],
            )
            .await
            .unwrap();
        let ids: Vec<i64> = db
            .query("SELECT id FROM transactions ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, [1, 5]);
        let (status, saved): (String, i64) = db
            .query_one(
                "SELECT status, transactions_saved FROM imports WHERE id = 't-1'",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((status.as_str(), saved), ("cancelled", 1));
    }

    #[tokio::test]
    async fn a_new_version_without_a_row_replaces_the_earlier_ones_rows_on_its_announcement() {
        let sandbox = sluice_devkit::Sandbox::new("empty-version").await;
        let database = crate::Database::new(sandbox.database_url().parse().unwrap());
        let saver = Saver::new(database.clone(), Wakeups::default());
        let mut writer = saver.open().await.unwrap();
        saver
            .write(
                &mut writer,
                &[chunk("t-1", "t-1/2/rows-1-2", &[(1, "1", 2), (2, "2", 3)])],
            )
            .await
            .unwrap();
        let db = database.connect().await.unwrap();
        let account = crate::completion::FetchedAccount {
            key: "t-1/2",
            id: 7,
            messages: 0,
            lines_per_message: 2,
            transactions: 0,
            rejected_rows: 0,
            url: None,
            version: 2,
        };
        crate::completion::fetched(&db, "t-1", &account)
            .await
            .unwrap();
        let left: i64 = db
            .query_one("SELECT count(*) FROM transactions", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }
}
