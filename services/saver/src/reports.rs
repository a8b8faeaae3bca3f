//! What the saver's tables say about imports, for the operator commands
//! (`sluice status`, `sluice import --wait`): the queries beside the
//! tables they read, so a schema change and its readers move together.

use tokio_postgres::Client;

pub use sluice_messages::api::{
    Clash, Conflict, Failure, ImportReply, ImportRow, RowReport, WebhookDelivery,
};

/// Rows saved are counted live from the saver's records, so a replay after
/// completion shows too. Times are RFC 3339 in UTC, to the second
/// (`2026-12-03T07:43:07Z`), whatever the session's time zone.
const COLUMNS: &str = "id, url, status, accounts_listed, accounts_settled, accounts_failed,
    (SELECT COALESCE(sum(inserted), 0)::int8 FROM import_chunks c WHERE c.import_id = imports.id),
    rows_rejected, failures,
    to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
    to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
    (SELECT COALESCE(sum(conflicts), 0)::int8 FROM import_chunks c WHERE c.import_id = imports.id),
    (SELECT COALESCE(sum(clashes), 0)::int8 FROM import_chunks c WHERE c.import_id = imports.id),
    spec,
    (SELECT COALESCE(sum(updated), 0)::int8 FROM import_chunks c WHERE c.import_id = imports.id),
    (SELECT COALESCE(sum(refused), 0)::int8 FROM import_chunks c WHERE c.import_id = imports.id),
    (SELECT count(*) FROM import_accounts a WHERE a.import_id = imports.id AND a.version > 1),
    webhook,
    to_char(webhook_delivered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
    webhook_attempts, webhook_error";

fn row(r: &tokio_postgres::Row) -> ImportRow {
    ImportRow {
        id: r.get(0),
        url: r.get(1),
        status: r.get(2),
        accounts_listed: r.get(3),
        accounts_settled: r.get(4),
        accounts_failed: r.get(5),
        transactions_saved: r.get(6),
        rows_rejected: r.get(7),
        dead_letters: r.get(8),
        started_at: r.get(9),
        finished_at: r.get(10),
        conflicts: r.get(11),
        clashes: r.get(12),
        spec: r.get(13),
        updated: r.get(14),
        refused: r.get(15),
        files_changed: r.get(16),
        webhook: r
            .get::<_, Option<String>>(17)
            .map(|target| WebhookDelivery {
                target,
                delivered_at: r.get(18),
                attempts: r.get::<_, i32>(19).into(),
                error: r.get(20),
            }),
    }
}

/// The first `limit` rows reported for import `id`, by table, file and line.
pub async fn row_reports(
    db: &Client,
    id: &str,
    limit: i64,
) -> Result<Vec<RowReport>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT r.table_name, r.kind, a.url, r.line, r.key
             FROM import_row_reports r
             LEFT JOIN import_accounts a ON a.import_id = r.import_id AND a.account_key = r.file_key
             WHERE r.import_id = $1 ORDER BY r.table_name, r.file_key, r.line LIMIT $2",
            &[&id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RowReport {
            table: r.get(0),
            kind: r.get(1),
            url: r.get(2),
            line: r.get(3),
            key: r.get(4),
        })
        .collect())
}

/// The first `limit` conflicts of import `id`, in file order.
pub async fn conflicts(
    db: &Client,
    id: &str,
    limit: i64,
) -> Result<Vec<Conflict>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT k.account_id, k.id, a.url, k.line, k.account_line,
                    kept.url, t.position & 4294967295, t.position >> 32
             FROM import_conflicts k
             JOIN transactions t ON t.account_id = k.account_id AND t.id = k.id
             LEFT JOIN import_accounts a
               ON a.import_id = k.import_id AND a.account_key = k.import_id || '/' || k.account_line
             LEFT JOIN import_accounts kept
               ON kept.import_id = k.import_id
              AND kept.account_key = k.import_id || '/' || (t.position >> 32)
             WHERE k.import_id = $1 ORDER BY k.account_line, k.line LIMIT $2",
            &[&id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Conflict {
            account_id: r.get(0),
            id: r.get(1),
            url: r.get(2),
            line: r.get(3),
            account_line: r.get(4),
            kept_url: r.get(5),
            kept_line: r.get(6),
            kept_account_line: r.get(7),
        })
        .collect())
}

/// The first `limit` clashes of import `id`, in file order.
pub async fn clashes(
    db: &Client,
    id: &str,
    limit: i64,
) -> Result<Vec<Clash>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT k.account_id, k.id, a.url, k.line, k.account_line, k.amount,
                    t.import_id, t.amount::text, kept.url, t.position & 4294967295
             FROM import_clashes k
             JOIN transactions t ON t.account_id = k.account_id AND t.id = k.id
             LEFT JOIN import_accounts a
               ON a.import_id = k.import_id AND a.account_key = k.import_id || '/' || k.account_line
             LEFT JOIN import_accounts kept
               ON kept.import_id = t.import_id
              AND kept.account_key = t.import_id || '/' || (t.position >> 32)
             WHERE k.import_id = $1 ORDER BY k.account_line, k.line LIMIT $2",
            &[&id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Clash {
            account_id: r.get(0),
            id: r.get(1),
            url: r.get(2),
            line: r.get(3),
            account_line: r.get(4),
            amount: r.get(5),
            kept_import_id: r.get(6),
            kept_amount: r.get(7),
            kept_url: r.get(8),
            kept_line: r.get(9),
        })
        .collect())
}

/// `None` while the saver has recorded nothing of it yet.
pub async fn one(db: &Client, id: &str) -> Result<Option<ImportRow>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM imports WHERE id = $1");
    db.query_opt(&sql, &[&id])
        .await
        .map(|r| r.as_ref().map(row))
}

pub async fn recent(db: &Client, limit: i64) -> Result<Vec<ImportRow>, tokio_postgres::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM imports ORDER BY started_at DESC NULLS LAST, id LIMIT $1");
    let rows = db.query(&sql, &[&limit]).await?;
    Ok(rows.iter().map(row).collect())
}

/// Rows the import's fetched accounts announced so far.
pub async fn announced_transactions(db: &Client, id: &str) -> Result<i64, tokio_postgres::Error> {
    db.query_one(
        "SELECT COALESCE(sum(transactions), 0)::int8 FROM import_accounts WHERE import_id = $1 AND state = 'fetched'",
        &[&id],
    )
    .await
    .map(|r| r.get(0))
}

/// The first `limit` messages of import `id` a stage dead-lettered, by key.
pub async fn failures(
    db: &Client,
    id: &str,
    limit: i64,
) -> Result<Vec<Failure>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT key, stage, kind, error FROM import_failures
             WHERE import_id = $1 ORDER BY key LIMIT $2",
            &[&id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Failure {
            key: r.get(0),
            stage: r.get(1),
            kind: r.get(2),
            error: r.get(3),
        })
        .collect())
}

/// Import `id` with the first [`ImportReply::SHOWN`] of each kind of row it
/// reported and of its dead-lettered messages (read only when it counts
/// some), and the rows announced so far: what the service API's `import`
/// answers and `sluice status ID` shows. `None` while nothing of it is
/// recorded.
pub async fn import_reply(
    db: &Client,
    id: &str,
) -> Result<Option<ImportReply>, tokio_postgres::Error> {
    let Some(import) = one(db, id).await? else {
        return Ok(None);
    };
    let shown = ImportReply::SHOWN;
    let builtin = import.spec.is_none();
    let conflicts = match builtin && import.conflicts > 0 {
        true => conflicts(db, id, shown).await?,
        false => Vec::new(),
    };
    let clashes = match builtin && import.clashes > 0 {
        true => clashes(db, id, shown).await?,
        false => Vec::new(),
    };
    let reported = import.conflicts + import.clashes + import.updated + import.refused;
    let reports = match !builtin && reported > 0 {
        true => row_reports(db, id, shown).await?,
        false => Vec::new(),
    };
    let failures = match import.dead_letters > 0 {
        true => failures(db, id, shown).await?,
        false => Vec::new(),
    };
    let transactions_announced = announced_transactions(db, id).await?;
    Ok(Some(ImportReply {
        import,
        conflicts,
        clashes,
        reports,
        failures,
        transactions_announced,
    }))
}
