//! Import completion: the tracker records the stages' progress facts, the
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

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use sluice_messages::{stage, ImportCompleted, ImportProgress, ImportStatus, Namespace};
use sluice_stage::{
    telemetry::{self, KeyValue, TraceHeaders},
    Delivery, Sink, StageError,
};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{db_error, Database};

/// Marks complete every fetched account whose announced messages are all
/// committed or dead-lettered: the keys are named from the account's key,
/// its message count and window size, and looked up one by one.
const ACCOUNTS_COMPLETE: &str = "
    UPDATE import_accounts a SET complete = true
    WHERE a.import_id = ANY($1) AND a.state = 'fetched' AND NOT a.complete
      AND a.lines_per_message > 0
      -- Cheap first: enough messages recorded at all (an index-only count).
      AND (SELECT count(*) FROM import_chunks c
           WHERE c.import_id = a.import_id AND c.account_key = a.account_key) >= a.messages
      AND (SELECT count(*)
           FROM generate_series(0, a.messages - 1) AS w
           JOIN import_chunks c ON c.import_id = a.import_id
            AND c.chunk_key = a.account_key || '/lines-' || (2 + w * a.lines_per_message)
                              || '-' || (1 + (w + 1) * a.lines_per_message)) = a.messages";

/// Marks complete every import whose listing is done and whose listed
/// accounts are all settled (dead-lettered, or complete as above), and
/// fixes its count of rows saved.
const IMPORTS_COMPLETE: &str = "
    UPDATE imports i SET
        status = CASE WHEN import_failed OR failures > 0 OR rows_rejected > 0 OR accounts_failed > 0
                           OR EXISTS (SELECT 1 FROM import_conflicts k WHERE k.import_id = i.id)
                      THEN 'completed_with_errors' ELSE 'completed' END,
        finished_at = now(),
        transactions_saved = (SELECT COALESCE(sum(inserted), 0) FROM import_chunks c WHERE c.import_id = i.id)
    WHERE i.id = ANY($1) AND i.status = 'running'
      AND (i.import_failed
           OR (i.accounts_listed IS NOT NULL
               AND (SELECT count(*) FROM import_accounts a
                    WHERE a.import_id = i.id AND (a.state = 'failed' OR a.complete)) >= i.accounts_listed))";

const STARTED: &str = "
    INSERT INTO imports AS i (id, url, started_at, traceparent)
    VALUES ($1, $2, $3::text::timestamptz, $4)
    ON CONFLICT (id) DO UPDATE SET
        url = COALESCE(i.url, excluded.url),
        started_at = COALESCE(i.started_at, excluded.started_at),
        traceparent = COALESCE(i.traceparent, excluded.traceparent)";

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
            (import_id, account_key, account_id, state, messages, lines_per_message, transactions, url)
        VALUES ($1, $2, $3, 'fetched', $4::int8, $7::int8, $5, $8)
        ON CONFLICT (import_id, account_key) DO UPDATE SET
            state = 'fetched', messages = excluded.messages,
            lines_per_message = excluded.lines_per_message, transactions = excluded.transactions,
            url = excluded.url
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

/// A progress fact, and the trace context it was published in.
pub struct Fact {
    progress: ImportProgress,
    traceparent: Option<String>,
}

/// The saver's second consumer: records progress facts.
pub struct Tracker {
    database: Database,
}

impl Tracker {
    pub fn new(database: Database) -> Self {
        Tracker { database }
    }
}

impl Sink for Tracker {
    const NAME: &'static str = stage::TRACKER;
    // Facts are few (a handful per account); their order does not matter,
    // one writer is plenty.
    const DEFAULT_WRITERS: u16 = 1;

    type Item = Fact;
    type Writer = Client;

    fn decode(&self, input: &Delivery) -> Result<Fact, StageError> {
        Ok(Fact {
            progress: input.json()?,
            traceparent: input.header("traceparent").map(str::to_owned),
        })
    }

    async fn open(&self) -> Result<Client, StageError> {
        self.database.connect().await
    }

    async fn write(&self, client: &mut Client, facts: &[Fact]) -> Result<(), StageError> {
        // Replicas of the tracker write facts of the same imports: taking
        // the row locks in one order (import, then the fact's own key) lets
        // them wait for each other instead of deadlocking.
        let mut facts: Vec<&Fact> = facts.iter().collect();
        facts.sort_by_key(|f| {
            (
                f.progress.import_id(),
                f.progress.fact(),
                fact_key(&f.progress),
            )
        });
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_error("begin", &e))?;
        for Fact {
            progress,
            traceparent,
        } in facts
        {
            let result = match progress {
                ImportProgress::Started {
                    import_id,
                    url,
                    time,
                } => {
                    tx.execute(STARTED, &[import_id, url, time, traceparent])
                        .await
                }
                ImportProgress::Listed {
                    import_id,
                    accounts,
                    rejected_rows,
                } => {
                    tx.execute(
                        LISTED,
                        &[import_id, &(*accounts as i64), &(*rejected_rows as i64)],
                    )
                    .await
                }
                ImportProgress::Fetched {
                    import_id,
                    account_key,
                    account_id,
                    messages,
                    lines_per_message,
                    transactions,
                    rejected_rows,
                    url,
                } => {
                    tx.execute(
                        FETCHED,
                        &[
                            import_id,
                            account_key,
                            account_id,
                            &(*messages as i64),
                            &(*transactions as i64),
                            &(*rejected_rows as i64),
                            &(*lines_per_message as i64),
                            url,
                        ],
                    )
                    .await
                }
                ImportProgress::Failed {
                    import_id,
                    stage,
                    key,
                    kind,
                    error,
                } => {
                    tx.execute(FAILED, &[import_id, key, stage, &kind.as_str(), error])
                        .await
                }
            };
            result.map_err(|e| db_error("record progress", &e))?;
        }
        tx.commit().await.map_err(|e| db_error("commit", &e))?;
        Ok(())
    }
}

/// The key a fact records its row under, for ordering.
fn fact_key(fact: &ImportProgress) -> &str {
    match fact {
        ImportProgress::Fetched { account_key, .. } => account_key,
        ImportProgress::Failed { key, .. } => key,
        _ => "",
    }
}

/// Matches what every running import announced against what is committed,
/// and marks the imports that are complete.
pub async fn settle_running(client: &Client) -> Result<(), StageError> {
    let running: Vec<String> = client
        .query("SELECT id FROM imports WHERE status = 'running'", &[])
        .await
        .map_err(|e| db_error("list running imports", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if running.is_empty() {
        return Ok(());
    }
    client
        .execute(ACCOUNTS_COMPLETE, &[&running])
        .await
        .map_err(|e| db_error("match accounts", &e))?;
    client
        .execute(IMPORTS_COMPLETE, &[&running])
        .await
        .map_err(|e| db_error("settle imports", &e))?;
    Ok(())
}

/// Every 200 ms: settles the imports that are complete, then publishes the
/// completion event of every settled import not yet announced, and marks
/// it announced. The event's `Nats-Msg-Id` is the
/// import's, so replicas announcing the same import at once, or a saver
/// that died between publishing and marking, publish it once.
pub async fn announce_completions(
    database: Database,
    js: jetstream::Context,
    ns: Namespace,
    stop: CancellationToken,
) -> Result<(), StageError> {
    let mut client: Option<Client> = None;
    while !stop.is_cancelled() {
        let result = async {
            if client.is_none() {
                client = Some(database.connect().await?);
            }
            let connected = client.as_ref().expect("connected");
            settle_running(connected).await?;
            announce_pending(connected, &js, &ns).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot announce completed imports yet");
            client = None;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}

async fn mark_announced(client: &Client, id: &str) -> Result<(), StageError> {
    client
        .execute(
            "UPDATE imports SET event_published_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(|e| db_error("mark import announced", &e))?;
    Ok(())
}

async fn announce_pending(
    client: &Client,
    js: &jetstream::Context,
    ns: &Namespace,
) -> Result<(), StageError> {
    let rows = client
        .query(
            "SELECT id, status, url, COALESCE(accounts_listed, 0), accounts_failed, transactions_saved,
                    rows_rejected, failures,
                    (SELECT count(*) FROM import_conflicts k WHERE k.import_id = imports.id),
                    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    traceparent
             FROM imports WHERE status <> 'running' AND event_published_at IS NULL
             ORDER BY finished_at LIMIT 100",
            &[],
        )
        .await
        .map_err(|e| db_error("read settled imports", &e))?;
    for row in rows {
        let id: String = row.get(0);
        // Ids are checked where messages are decoded; one that got into the
        // table otherwise (an older version, a hand edit) has no subject to
        // go to. It must not hold up the imports after it.
        if let Err(why) = sluice_messages::validate_import_id(&id) {
            tracing::error!(import_id = ?id, %why, "cannot announce this import; marking it announced without an event");
            mark_announced(client, &id).await?;
            continue;
        }
        let status = match row.get::<_, &str>(1) {
            "completed" => ImportStatus::Completed,
            _ => ImportStatus::CompletedWithErrors,
        };
        let event = ImportCompleted {
            import_id: id.clone(),
            status,
            url: row.get(2),
            accounts: row.get::<_, i64>(3) as u64,
            accounts_failed: row.get::<_, i64>(4) as u64,
            transactions_saved: row.get::<_, i64>(5) as u64,
            rows_rejected: row.get::<_, i64>(6) as u64,
            dead_letters: row.get::<_, i64>(7) as u64,
            conflicts: row.get::<_, i64>(8) as u64,
            started_at: row.get(9),
            finished_at: row.get::<_, Option<String>>(10).unwrap_or_default(),
        };
        let span = completion_span(&event, row.get(11));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(sluice_messages::HEADER_IMPORT_ID, id.as_str());
        TraceHeaders::of(&span).apply(&mut headers);
        let message = PublishMessage::build()
            .payload(
                serde_json::to_vec(&event)
                    .expect("events always encode")
                    .into(),
            )
            .headers(headers)
            .message_id(format!("import-completed/{id}"));
        js.send_publish(ns.import_events(&id), message)
            .instrument(span)
            .await
            .map_err(|e| StageError::transient(format!("cannot publish completion of {id}: {e}")))?
            .await
            .map_err(|e| {
                StageError::transient(format!("JetStream did not store completion of {id}: {e}"))
            })?;
        mark_announced(client, &id).await?;
        tracing::info!(import_id = %id, status = ?event.status, transactions = event.transactions_saved, "import complete");
    }
    Ok(())
}

/// The completion's span: the last of the import's trace, under the span
/// that started the import (the importer's).
fn completion_span(event: &ImportCompleted, traceparent: Option<String>) -> tracing::Span {
    let span = telemetry::messaging_span("publish import-events", "producer", "publish");
    let mut started_in = async_nats::HeaderMap::new();
    if let Some(traceparent) = &traceparent {
        started_in.insert("traceparent", traceparent.as_str());
    }
    telemetry::continue_trace(&span, telemetry::extract(Some(&started_in)));
    telemetry::annotate(
        &span,
        [
            KeyValue::new("sluice.import.id", event.import_id.clone()),
            KeyValue::new("sluice.outcome", format!("{:?}", event.status)),
            KeyValue::new("sluice.transactions.saved", event.transactions_saved as i64),
            KeyValue::new("sluice.dead_letters", event.dead_letters as i64),
        ],
    );
    span
}
