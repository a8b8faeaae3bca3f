//! Import completion, as queries: the tracker records the stages' progress facts, the
//! saver records which transactions messages it committed, and a check
//! that runs beside them matches the two: an import is complete when its
//! listing is done, every listed account is fetched or dead-lettered, and
//! every message each fetched account announced is committed or
//! dead-lettered, key by key. The completion event is then published from
//! the `imports` table (an outbox), so it goes out once even if the saver
//! dies in between.
//!
//! No lock is held across services and nothing is counted twice: the
//! tracker's counters move only when a keyed row (an account, a failure) is
//! first inserted, and the saver writes only rows of its own messages.

//!
//! Every query is a function with typed arguments, its SQL beside it; the
//! unit tests run them against a real PostgreSQL.

use sluice_messages::{DeadLetterKind, ImportCompleted, ImportProgress, ImportStatus};
use tokio_postgres::{Client, GenericClient};

/// Marks complete every fetched account whose announced messages are all
/// committed or dead-lettered: the keys are named from the account's key,
/// its message count and window size, and matched among the account's own
/// records. A window is named by the rows it spans
/// (`rows-<1+w·N>-<(w+1)·N>`, sluice's fetcher) or by the file lines
/// (`lines-<2+w·N>-<1+(w+1)·N>`, fetchers before it, and the contract's
/// other form): both are matched. A file read again because it changed
/// names its windows `v<n>-rows-…`: only those of the version announced
/// count.
///
/// Every lookup is by the account (`import_chunks_by_account`), never by
/// the import alone: `import_chunks` grows by thousands of rows a second
/// during a large import, faster than autovacuum's statistics, and a plan
/// that believes an import has two rows and scans them all per account
/// turns the check quadratic (seconds a check at 10,000 messages).
const ACCOUNTS_COMPLETE: &str = "
    UPDATE import_accounts a SET complete = true
    WHERE a.import_id = ANY($1) AND a.state = 'fetched' AND NOT a.complete
      AND a.lines_per_message > 0
      -- Cheap first: enough messages recorded at all (an index-only count).
      AND (SELECT count(*) FROM import_chunks c
           WHERE c.import_id = a.import_id AND c.account_key = a.account_key) >= a.messages
      -- Then each expected key looked up by the primary key: a join, not
      -- `= ANY (ARRAY(…))`, which compares every message with every key
      -- (a million comparisons for an account of 1,000 messages).
      AND (SELECT count(*)
           FROM (SELECT a.account_key || '/'
                        || CASE WHEN a.version > 1 THEN 'v' || a.version || '-' ELSE '' END
                        || 'rows-' || (1 + w * a.lines_per_message)
                        || '-' || ((w + 1) * a.lines_per_message)
                 FROM generate_series(0, a.messages - 1) AS w
                 UNION ALL
                 SELECT a.account_key || '/lines-' || (2 + w * a.lines_per_message)
                        || '-' || (1 + (w + 1) * a.lines_per_message)
                 FROM generate_series(0, a.messages - 1) AS w) AS expected(chunk_key)
           JOIN import_chunks c USING (chunk_key)
           WHERE c.import_id = a.import_id AND c.account_key = a.account_key) = a.messages";

/// Marks complete every import whose listing is done and whose listed
/// accounts are all settled (dead-lettered, or complete as above), and
/// fixes its count of rows saved.
const IMPORTS_COMPLETE: &str = "
    UPDATE imports i SET
        status = CASE WHEN import_failed OR failures > 0 OR rows_rejected > 0 OR accounts_failed > 0
                           OR EXISTS (SELECT 1 FROM import_chunks c WHERE c.import_id = i.id
                                      AND (c.conflicts > 0 OR c.clashes > 0 OR c.refused > 0))
                      THEN 'completed_with_errors' ELSE 'completed' END,
        finished_at = now(),
        transactions_saved = (SELECT COALESCE(sum(inserted), 0) FROM import_chunks c
                              WHERE c.import_id = i.id AND c.table_name IS NULL)
    WHERE i.id = ANY($1) AND i.status = 'running'
      AND (i.import_failed
           OR (i.accounts_listed IS NOT NULL
               -- Every file listed, and every file each read file links to
               -- (none for an account), is settled. A file counts only if
               -- it was expected: listed by the import itself, or linked
               -- from a file read whole (one that failed part-way may have
               -- linked some files already, which nobody expects).
               AND (SELECT count(*) FROM import_accounts a
                    WHERE a.import_id = i.id AND (a.state = 'failed' OR a.complete)
                      AND (i.spec IS NULL
                           OR regexp_replace(a.account_key, '/[^/]*$', '') = i.id
                           OR a.account_key = i.id
                           OR EXISTS (SELECT 1 FROM import_accounts p
                                      WHERE p.import_id = i.id AND p.state = 'fetched'
                                        AND p.account_key = regexp_replace(a.account_key, '/[^/]*$', ''))))
                   >= i.accounts_listed
                      + (SELECT COALESCE(sum(files), 0) FROM import_accounts a
                         WHERE a.import_id = i.id AND a.state = 'fetched')))";

const STARTED: &str = "
    INSERT INTO imports AS i (id, url, started_at, traceparent, spec, webhook)
    VALUES ($1, $2, $3::text::timestamptz, $4, $5, $6)
    ON CONFLICT (id) DO UPDATE SET
        url = COALESCE(i.url, excluded.url),
        started_at = COALESCE(i.started_at, excluded.started_at),
        traceparent = COALESCE(i.traceparent, excluded.traceparent),
        spec = COALESCE(i.spec, excluded.spec),
        webhook = COALESCE(i.webhook, excluded.webhook),
        -- A `started` recorded after the import was announced (facts
        -- reordered across tracker replicas): its target is due now.
        webhook_next_at = CASE WHEN i.webhook IS NULL AND excluded.webhook IS NOT NULL
                                    AND i.completion_event IS NOT NULL
                               THEN now() ELSE i.webhook_next_at END";

/// A file of an import run with a spec read whole: it settles like an
/// account, and expects the files it links to. The root file (keyed by the
/// import id) lists itself: the import expects it and what it links to.
const READ: &str = "
    WITH file AS (
        INSERT INTO import_accounts
            (import_id, account_key, state, messages, lines_per_message, transactions, url, files, level)
        VALUES ($1, $2, 'fetched', $3::int8, $4::int8, $5::int8, $6, $7::int8, $8)
        ON CONFLICT (import_id, account_key) DO UPDATE SET
            state = 'fetched', messages = excluded.messages,
            lines_per_message = excluded.lines_per_message, transactions = excluded.transactions,
            url = excluded.url, files = excluded.files, level = excluded.level
            WHERE import_accounts.state = 'failed'
        RETURNING (xmax = 0) AS inserted
    )
    INSERT INTO imports AS i (id, accounts_listed, accounts_settled, accounts_failed, rows_rejected)
    SELECT $1, CASE WHEN $2 = $1 THEN 1 END, CASE WHEN inserted THEN 1 ELSE 0 END,
           CASE WHEN inserted THEN 0 ELSE -1 END, $9::int8
    FROM file
    ON CONFLICT (id) DO UPDATE SET
        accounts_listed = COALESCE(i.accounts_listed, excluded.accounts_listed),
        accounts_settled = i.accounts_settled + excluded.accounts_settled,
        accounts_failed = i.accounts_failed + excluded.accounts_failed,
        rows_rejected = i.rows_rejected + excluded.rows_rejected";

const LISTED: &str = "
    INSERT INTO imports AS i (id, accounts_listed, rows_rejected) VALUES ($1, $2, $3)
    ON CONFLICT (id) DO UPDATE SET
        accounts_listed = COALESCE(i.accounts_listed, excluded.accounts_listed),
        rows_rejected = i.rows_rejected
            + CASE WHEN i.accounts_listed IS NULL THEN excluded.rows_rejected ELSE 0 END";

/// An account fetched: a new account settles, a dead-lettered one that was
/// replayed stops counting as failed.
const FETCHED: &str = "
    WITH account AS (
        INSERT INTO import_accounts
            (import_id, account_key, account_id, state, messages, lines_per_message, transactions, url,
             version)
        VALUES ($1, $2, $3, 'fetched', $4::int8, $7::int8, $5, $8, $9::int4)
        ON CONFLICT (import_id, account_key) DO UPDATE SET
            state = 'fetched', messages = excluded.messages,
            lines_per_message = excluded.lines_per_message, transactions = excluded.transactions,
            url = excluded.url, version = excluded.version
            WHERE import_accounts.state = 'failed'
        RETURNING (xmax = 0) AS inserted
    )
    INSERT INTO imports AS i (id, accounts_settled, accounts_failed, rows_rejected)
    SELECT $1, CASE WHEN inserted THEN 1 ELSE 0 END, CASE WHEN inserted THEN 0 ELSE -1 END, $6::int8
    FROM account
    ON CONFLICT (id) DO UPDATE SET
        accounts_settled = i.accounts_settled + excluded.accounts_settled,
        accounts_failed = i.accounts_failed + excluded.accounts_failed,
        rows_rejected = i.rows_rejected + excluded.rows_rejected";

/// A dead-lettered message: counted once, and it settles what it was (the
/// import request, an account, a transactions message). A fact the tracker
/// itself could not record leaves the import unknowable: it ends with
/// errors rather than never.
const FAILED: &str = "
    WITH failure AS (
        INSERT INTO import_failures (import_id, key, stage, kind, error) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT DO NOTHING
        RETURNING 1
    ),
    account AS (
        INSERT INTO import_accounts (import_id, account_key, state)
        SELECT $1, $2, 'failed' WHERE $3 = 'fetcher'
        ON CONFLICT DO NOTHING
        RETURNING 1
    ),
    chunk AS (
        INSERT INTO import_chunks (import_id, chunk_key, account_key, state, transactions)
        SELECT $1, $2, regexp_replace($2, '/[^/]*$', ''), 'failed', 0 WHERE $3 = 'saver'
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    INSERT INTO imports AS i (id, import_failed, failures, accounts_settled, accounts_failed)
    SELECT $1, $3 IN ('importer', 'tracker'), (SELECT count(*) FROM failure),
           (SELECT count(*) FROM account), (SELECT count(*) FROM account)
    ON CONFLICT (id) DO UPDATE SET
        import_failed = i.import_failed OR excluded.import_failed,
        failures = i.failures + excluded.failures,
        accounts_settled = i.accounts_settled + excluded.accounts_settled,
        accounts_failed = i.accounts_failed + excluded.accounts_failed";

/// Records one progress fact (`traceparent`: the W3C trace context it was
/// published in, kept for a `started` fact so the completion event joins
/// the import's trace). Recording a fact again changes nothing.
pub(crate) async fn record(
    db: &impl GenericClient,
    fact: &ImportProgress,
    traceparent: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    match fact {
        ImportProgress::Started {
            import_id,
            url,
            time,
            spec,
            webhook,
        } => {
            let (spec, webhook) = (spec.as_deref(), webhook.as_deref());
            started(db, import_id, url, time, traceparent, spec, webhook).await
        }
        ImportProgress::Read {
            import_id,
            file_key,
            level,
            messages,
            lines_per_message,
            rows,
            rejected_rows,
            files,
            url,
        } => {
            let counts = [
                *messages as i64,
                *lines_per_message as i64,
                *rows as i64,
                *files as i64,
                *rejected_rows as i64,
            ];
            db.execute(
                READ,
                &[
                    &import_id,
                    &file_key,
                    &counts[0],
                    &counts[1],
                    &counts[2],
                    &url.as_deref(),
                    &counts[3],
                    &level,
                    &counts[4],
                ],
            )
            .await
            .map(drop)
        }
        ImportProgress::Listed {
            import_id,
            accounts,
            rejected_rows,
        } => listed(db, import_id, *accounts, *rejected_rows).await,
        ImportProgress::Fetched {
            import_id,
            account_key,
            account_id,
            messages,
            lines_per_message,
            transactions,
            rejected_rows,
            url,
            version,
        } => {
            let account = FetchedAccount {
                key: account_key,
                id: *account_id,
                messages: *messages,
                lines_per_message: *lines_per_message,
                transactions: *transactions,
                rejected_rows: *rejected_rows,
                url: url.as_deref(),
                version: *version,
            };
            fetched(db, import_id, &account).await
        }
        ImportProgress::Failed {
            import_id,
            stage,
            key,
            kind,
            error,
        } => failed(db, import_id, key, stage, *kind, error).await,
    }
}

pub(crate) async fn started(
    db: &impl GenericClient,
    import_id: &str,
    url: &str,
    time: &str,
    traceparent: Option<&str>,
    spec: Option<&str>,
    webhook: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        STARTED,
        &[&import_id, &url, &time, &traceparent, &spec, &webhook],
    )
    .await
    .map(drop)
}

pub(crate) async fn listed(
    db: &impl GenericClient,
    import_id: &str,
    accounts: u64,
    rejected_rows: u64,
) -> Result<(), tokio_postgres::Error> {
    let (accounts, rejected_rows) = (accounts as i64, rejected_rows as i64);
    db.execute(LISTED, &[&import_id, &accounts, &rejected_rows])
        .await
        .map(drop)
}

/// What the fetcher announced of one account.
pub(crate) struct FetchedAccount<'a> {
    pub key: &'a str,
    pub id: i64,
    pub messages: u64,
    pub lines_per_message: u64,
    pub transactions: u64,
    pub rejected_rows: u64,
    pub url: Option<&'a str>,
    /// The version of the file read (1 unless it changed between attempts).
    pub version: u32,
}

pub(crate) async fn fetched(
    db: &impl GenericClient,
    import_id: &str,
    account: &FetchedAccount<'_>,
) -> Result<(), tokio_postgres::Error> {
    let counts = [
        account.messages as i64,
        account.transactions as i64,
        account.rejected_rows as i64,
        account.lines_per_message as i64,
    ];
    let version = account.version.max(1) as i32;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
        &import_id,
        &account.key,
        &account.id,
        &counts[0],
        &counts[1],
        &counts[2],
        &counts[3],
        &account.url,
        &version,
    ];
    if version > 1 {
        // A version without a row has no message to replace the earlier
        // version's rows on its arrival: its announcement does. First,
        // before this transaction holds the import's row: the upgrade
        // waits for the import's batches.
        crate::guard::upgrade_file(db, import_id, account.key, account.version, account.id).await?;
    }
    db.execute(FETCHED, &params).await?;
    if version > 1 {
        // A later version of a file the account was fetched from already
        // (its earlier version's fact stored just before the fetcher died):
        // its windows, not the earlier ones, complete the account now.
        db.execute(FETCHED_AGAIN, &params).await?;
    }
    Ok(())
}

/// The account's file read again at a later version: its announcement
/// replaces the earlier version's, and the account waits for its windows.
const FETCHED_AGAIN: &str = "
    UPDATE import_accounts SET
        messages = $4::int8, transactions = $5::int8, lines_per_message = $7::int8, url = $8,
        version = $9::int4, complete = false
    WHERE import_id = $1 AND account_key = $2 AND state = 'fetched' AND version < $9::int4
      AND $3::int8 IS NOT NULL AND $6::int8 IS NOT NULL";

pub(crate) async fn failed(
    db: &impl GenericClient,
    import_id: &str,
    key: &str,
    stage: &str,
    kind: DeadLetterKind,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    db.execute(FAILED, &[&import_id, &key, &stage, &kind.as_str(), &error])
        .await
        .map(drop)
}

/// The key a fact records its row under, for ordering.
pub(crate) fn fact_key(fact: &ImportProgress) -> &str {
    match fact {
        ImportProgress::Fetched { account_key, .. } => account_key,
        ImportProgress::Read { file_key, .. } => file_key,
        ImportProgress::Failed { key, .. } => key,
        _ => "",
    }
}

/// Matches what every running import announced against what is committed,
/// and marks the imports that are complete.
pub async fn complete_finished(client: &Client) -> Result<(), tokio_postgres::Error> {
    let running: Vec<String> = client
        .query("SELECT id FROM imports WHERE status = 'running'", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    client.execute(ACCOUNTS_COMPLETE, &[&running]).await?;
    client.execute(IMPORTS_COMPLETE, &[&running]).await?;
    Ok(())
}

/// Matches what the imports and accounts just committed to (by a saver
/// writer or the tracker) announced against what is committed, and marks
/// those complete: the check right after a commit, so an import completes
/// in milliseconds; [`complete_finished`] sweeps the rest.
pub(crate) async fn complete_touched(
    client: &Client,
    touched: &Touched,
) -> Result<(), tokio_postgres::Error> {
    let imports: Vec<&str> = touched.accounts.keys().map(String::as_str).collect();
    let accounts: Vec<&str> = touched
        .accounts
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    // An import can complete only when one of its accounts just did, or a
    // fact about it came (listed, fetched, read, failed).
    let mut settle: std::collections::BTreeSet<String> = touched.facts.clone();
    if !accounts.is_empty() {
        let query =
            format!("{ACCOUNTS_COMPLETE} AND a.account_key = ANY($2) RETURNING a.import_id");
        for row in client.query(&query, &[&imports, &accounts]).await? {
            settle.insert(row.get(0));
        }
    }
    if !settle.is_empty() {
        let settle: Vec<String> = settle.into_iter().collect();
        client.execute(IMPORTS_COMPLETE, &[&settle]).await?;
    }
    Ok(())
}

/// The imports and accounts committed to since the announcer last looked.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// Accounts (files) whose messages or facts were committed, by import.
    pub accounts: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Imports a fact was committed about.
    pub facts: std::collections::BTreeSet<String>,
}

/// What writers and the tracker tell the announcer after each commit.
#[derive(Clone, Default)]
pub struct Wakeups(std::sync::Arc<WakeupsInner>);

#[derive(Default)]
struct WakeupsInner {
    touched: std::sync::Mutex<Touched>,
    notify: tokio::sync::Notify,
}

impl Wakeups {
    /// Notes that `account` of `import` was committed to (by a fact, when
    /// `fact`); [`Wakeups::wake`] once a commit's notes are all taken.
    pub(crate) fn touch(&self, import: &str, account: Option<&str>, fact: bool) {
        let mut touched = self.0.touched.lock().expect("never poisoned");
        let accounts = touched.accounts.entry(import.to_owned()).or_default();
        if let Some(account) = account.filter(|a| !a.is_empty()) {
            accounts.insert(account.to_owned());
        }
        if fact {
            touched.facts.insert(import.to_owned());
        }
    }

    pub(crate) fn wake(&self) {
        self.0.notify.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.0.notify.notified().await
    }

    pub(crate) fn take(&self) -> Touched {
        std::mem::take(&mut *self.0.touched.lock().expect("never poisoned"))
    }
}

/// A finished import whose completion event is not published yet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unannounced {
    pub event: ImportCompleted,
    /// The trace context the import was started in.
    pub traceparent: Option<String>,
}

/// Up to 100 finished imports not yet announced, oldest first.
pub(crate) async fn unannounced(
    client: &Client,
) -> Result<Vec<Unannounced>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, status, url, COALESCE(accounts_listed, 0), accounts_failed, transactions_saved,
                    rows_rejected, failures,
                    (SELECT COALESCE(sum(conflicts), 0)::int8 FROM import_chunks c WHERE c.import_id = imports.id),
                    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    traceparent,
                    (SELECT COALESCE(sum(clashes), 0)::int8 FROM import_chunks c WHERE c.import_id = imports.id),
                    spec,
                    (SELECT count(*) FROM import_accounts a WHERE a.import_id = imports.id),
                    (SELECT COALESCE(json_object_agg(t.name, t.counts), '{}')::text FROM (
                        SELECT COALESCE(c.table_name, 'transactions') AS name,
                               json_build_object('rows', sum(c.transactions), 'inserted', sum(c.inserted),
                                                 'conflicts', sum(c.conflicts), 'clashes', sum(c.clashes),
                                                 'updated', sum(c.updated), 'refused', sum(c.refused)) AS counts
                        FROM import_chunks c WHERE c.import_id = imports.id AND c.state = 'saved'
                        GROUP BY 1) t),
                    (SELECT count(*) FROM import_accounts a WHERE a.import_id = imports.id AND a.version > 1)
             FROM imports WHERE status <> 'running' AND event_published_at IS NULL
             ORDER BY finished_at LIMIT 100",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let spec: Option<String> = row.get(13);
            let with_spec = spec.is_some();
            let (listed, failed) = (row.get::<_, i64>(3) as u64, row.get::<_, i64>(4) as u64);
            let tables = serde_json::from_str(row.get::<_, &str>(15)).unwrap_or_default();
            Unannounced {
                event: ImportCompleted {
                    import_id: row.get(0),
                    status: match row.get::<_, &str>(1) {
                        "completed" => ImportStatus::Completed,
                        "cancelled" => ImportStatus::Cancelled,
                        _ => ImportStatus::CompletedWithErrors,
                    },
                    url: row.get(2),
                    accounts: if with_spec { 0 } else { listed },
                    accounts_failed: if with_spec { 0 } else { failed },
                    files: if with_spec {
                        row.get::<_, i64>(14) as u64
                    } else {
                        0
                    },
                    files_failed: if with_spec { failed } else { 0 },
                    spec,
                    tables,
                    transactions_saved: row.get::<_, i64>(5) as u64,
                    rows_rejected: row.get::<_, i64>(6) as u64,
                    dead_letters: row.get::<_, i64>(7) as u64,
                    conflicts: row.get::<_, i64>(8) as u64,
                    clashes: row.get::<_, i64>(12) as u64,
                    files_changed: row.get::<_, i64>(16) as u64,
                    started_at: row.get(9),
                    finished_at: row.get::<_, Option<String>>(10).unwrap_or_default(),
                },
                traceparent: row.get(11),
            }
        })
        .collect())
}

/// Claims the announcement of import `id` for this transaction: false when
/// another replica holds the claim or has announced it already.
pub(crate) async fn claim_announcement(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
) -> Result<bool, tokio_postgres::Error> {
    tx.query_opt(
        "SELECT 1 FROM imports WHERE id = $1 AND status <> 'running' AND event_published_at IS NULL
         FOR UPDATE SKIP LOCKED",
        &[&id],
    )
    .await
    .map(|row| row.is_some())
}

/// Records that the completion event of import `id` is published, keeps
/// it (`event`, its JSON) and, for an import that named a webhook target,
/// makes its delivery due now: in the same transaction, so the target is
/// told once the event is out, and of the very same event.
pub(crate) async fn mark_announced(
    client: &impl tokio_postgres::GenericClient,
    id: &str,
    event: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE imports SET event_published_at = now(), completion_event = $2,
                 webhook_next_at = CASE WHEN webhook IS NOT NULL THEN now() END
             WHERE id = $1",
            &[&id, &event],
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// A database of its own on `DATABASE_URL`'s server, migrated.
    async fn database() -> (sluice_devkit::Sandbox, Client) {
        let sandbox = sluice_devkit::Sandbox::new("tracking").await;
        let db = sandbox.db().await;
        crate::migrate(&db).await.expect("migrated");
        (sandbox, db)
    }

    async fn commit_message(db: &Client, import_id: &str, key: &str, inserted: i64) {
        let account = crate::account_key(key);
        db.execute(
            "INSERT INTO import_chunks (import_id, chunk_key, account_key, state, transactions, inserted)
             VALUES ($1, $2, $3, 'saved', $4, $4)",
            &[&import_id, &key, &account, &inserted],
        )
        .await
        .expect("message recorded");
    }

    #[tokio::test]
    async fn an_import_completes_once_every_account_is_settled_and_is_announced_once() {
        let (_sandbox, db) = database().await;
        let id = "t-1";
        started(
            &db,
            id,
            "https://files.example/a.csv",
            "2026-11-28T00:00:00Z",
            Some(TRACEPARENT),
            None,
            None,
        )
        .await
        .unwrap();
        listed(&db, id, 2, 1).await.unwrap();
        let account = FetchedAccount {
            key: "t-1/2",
            id: 7,
            messages: 2,
            lines_per_message: 100,
            transactions: 150,
            rejected_rows: 0,
            url: Some("https://files.example/7.csv"),
            version: 1,
        };
        // Facts come again after a redelivery: counted once.
        for _ in 0..2 {
            fetched(&db, id, &account).await.unwrap();
            failed(
                &db,
                id,
                "t-1/3",
                "fetcher",
                DeadLetterKind::Permanent,
                "HTTP 404",
            )
            .await
            .unwrap();
        }

        // One of account 7's two messages is committed: not finished.
        commit_message(&db, id, "t-1/2/lines-2-101", 100).await;
        complete_finished(&db).await.unwrap();
        assert_eq!(unannounced(&db).await.unwrap(), []);

        commit_message(&db, id, "t-1/2/lines-102-201", 50).await;
        complete_finished(&db).await.unwrap();
        complete_finished(&db).await.unwrap();
        let pending = unannounced(&db).await.unwrap();
        assert_eq!(pending.len(), 1);
        let event = &pending[0].event;
        assert_eq!(event.import_id, id);
        assert_eq!(event.status, ImportStatus::CompletedWithErrors);
        assert_eq!(
            (
                event.accounts,
                event.accounts_failed,
                event.transactions_saved,
                event.rows_rejected,
                event.dead_letters,
                event.conflicts
            ),
            (2, 1, 150, 1, 1, 0)
        );
        assert_eq!(event.url.as_deref(), Some("https://files.example/a.csv"));
        assert_eq!(pending[0].traceparent.as_deref(), Some(TRACEPARENT));

        mark_announced(&db, id, "{}").await.unwrap();
        assert_eq!(unannounced(&db).await.unwrap(), []);
    }

    #[tokio::test]
    async fn a_replayed_account_stops_counting_as_failed_and_facts_record_through_record() {
        let (_sandbox, db) = database().await;
        let id = "t-2";
        let facts = [
            ImportProgress::Started {
                import_id: id.into(),
                url: "https://files.example/b.csv".into(),
                time: "2026-11-28T00:00:00Z".into(),
                spec: None,
                webhook: None,
            },
            ImportProgress::Listed {
                import_id: id.into(),
                accounts: 1,
                rejected_rows: 0,
            },
            ImportProgress::Failed {
                import_id: id.into(),
                stage: "fetcher".into(),
                key: "t-2/2".into(),
                kind: DeadLetterKind::Permanent,
                error: "HTTP 404".into(),
            },
            // The letter was replayed once the file existed.
            ImportProgress::Fetched {
                import_id: id.into(),
                account_key: "t-2/2".into(),
                account_id: 9,
                messages: 1,
                lines_per_message: 100,
                transactions: 1,
                rejected_rows: 0,
                url: None,
                version: 1,
            },
        ];
        for fact in &facts {
            record(&db, fact, None).await.unwrap();
        }
        commit_message(&db, id, "t-2/2/lines-2-101", 1).await;
        complete_finished(&db).await.unwrap();
        let pending = unannounced(&db).await.unwrap();
        let event = &pending[0].event;
        // The failure stays on record (a dead letter was written), but the
        // account is fetched now.
        assert_eq!(
            (
                event.accounts,
                event.accounts_failed,
                event.transactions_saved,
                event.dead_letters
            ),
            (1, 0, 1, 1)
        );
        assert_eq!(pending[0].traceparent, None);
    }

    #[tokio::test]
    async fn a_file_read_again_completes_its_account_with_the_windows_of_its_new_version() {
        let (_sandbox, db) = database().await;
        let id = "t-3";
        listed(&db, id, 1, 0).await.unwrap();
        // Version 1 was fetched whole (its fact stored just before the
        // fetcher died), then the file changed and was read again.
        let mut account = FetchedAccount {
            key: "t-3/2",
            id: 7,
            messages: 2,
            lines_per_message: 100,
            transactions: 150,
            rejected_rows: 0,
            url: None,
            version: 1,
        };
        fetched(&db, id, &account).await.unwrap();
        account.messages = 1;
        account.transactions = 60;
        account.version = 2;
        fetched(&db, id, &account).await.unwrap();
        // Windows of version 1 do not complete it any more.
        commit_message(&db, id, "t-3/2/rows-1-100", 100).await;
        commit_message(&db, id, "t-3/2/rows-101-200", 50).await;
        complete_finished(&db).await.unwrap();
        assert_eq!(unannounced(&db).await.unwrap(), []);
        commit_message(&db, id, "t-3/2/v2-rows-1-100", 60).await;
        complete_finished(&db).await.unwrap();
        let pending = unannounced(&db).await.unwrap();
        assert_eq!(pending.len(), 1);
        let event = &pending[0].event;
        assert_eq!(event.status, ImportStatus::Completed);
        assert_eq!((event.accounts, event.files_changed), (1, 1));
        // The fact of version 1 again (a redelivery) changes nothing.
        account.version = 1;
        fetched(&db, id, &account).await.unwrap();
        let version: i32 = db
            .query_one(
                "SELECT version FROM import_accounts WHERE import_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, 2);
    }
}
