//! The saver's schema, migrated forward at start-up.

use tokio_postgres::Client;

/// Applied in order, each exactly once; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE transactions (
        account_id BIGINT NOT NULL,
        id BIGINT NOT NULL,
        amount NUMERIC NOT NULL,
        import_id TEXT NOT NULL,
        saved_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (account_id, id)
    )",
    // Import tracking. Every counter on `imports` grows only when a keyed
    // row below is first inserted, so a fact or batch processed twice
    // counts once.
    "
    CREATE TABLE imports (
        id TEXT PRIMARY KEY,
        url TEXT,
        started_at TIMESTAMPTZ,
        -- NULL until the importer read the whole accounts CSV.
        accounts_listed BIGINT,
        -- The accounts request itself was dead-lettered.
        import_failed BOOLEAN NOT NULL DEFAULT false,
        accounts_settled BIGINT NOT NULL DEFAULT 0,
        accounts_failed BIGINT NOT NULL DEFAULT 0,
        messages_expected BIGINT NOT NULL DEFAULT 0,
        chunks_settled BIGINT NOT NULL DEFAULT 0,
        transactions_saved BIGINT NOT NULL DEFAULT 0,
        rows_rejected BIGINT NOT NULL DEFAULT 0,
        failures BIGINT NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'running'
            CHECK (status IN ('running', 'completed', 'completed_with_errors')),
        finished_at TIMESTAMPTZ,
        event_published_at TIMESTAMPTZ
    );
    CREATE INDEX imports_unannounced ON imports (id)
        WHERE status <> 'running' AND event_published_at IS NULL;
    -- One row per account message of an import: fetched, or dead-lettered.
    CREATE TABLE import_accounts (
        import_id TEXT NOT NULL,
        account_key TEXT NOT NULL,
        account_id BIGINT,
        state TEXT NOT NULL CHECK (state IN ('fetched', 'failed')),
        messages BIGINT NOT NULL DEFAULT 0,
        transactions BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (import_id, account_key)
    );
    -- One row per transactions message of an import: saved, or dead-lettered.
    CREATE TABLE import_chunks (
        import_id TEXT NOT NULL,
        chunk_key TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('saved', 'failed')),
        transactions BIGINT NOT NULL,
        PRIMARY KEY (import_id, chunk_key)
    );
    -- Every message of an import that a stage dead-lettered.
    CREATE TABLE import_failures (
        import_id TEXT NOT NULL,
        key TEXT NOT NULL,
        stage TEXT NOT NULL,
        kind TEXT NOT NULL,
        error TEXT NOT NULL,
        PRIMARY KEY (import_id, key)
    )",
    // Completion by matching keys, not counting: every chunk records its
    // account and the rows it actually inserted, every fetched account the
    // window size its chunk ids derive from. The saver no longer touches
    // `imports`, so its writers never wait on one row.
    "
    ALTER TABLE import_chunks
        ADD COLUMN account_key TEXT,
        ADD COLUMN inserted BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX import_chunks_by_account ON import_chunks (import_id, account_key);
    ALTER TABLE import_accounts
        ADD COLUMN lines_per_message BIGINT NOT NULL DEFAULT 0,
        ADD COLUMN complete BOOLEAN NOT NULL DEFAULT false;
    CREATE INDEX imports_running ON imports (id) WHERE status = 'running'",
    // Conflicting duplicates: the same (account, id) twice in one import.
    // `position` orders a row within its import (accounts-file line << 32 |
    // transactions-file line) so the first in file order is kept whatever
    // the commit order; every later occurrence is recorded.
    "
    ALTER TABLE transactions
        ADD COLUMN position BIGINT,
        ADD COLUMN displaced BIGINT;
    CREATE TABLE import_conflicts (
        import_id TEXT NOT NULL,
        account_id BIGINT NOT NULL,
        id BIGINT NOT NULL,
        -- Where the later occurrence is: the account's line in the accounts
        -- CSV, the row's in the transactions CSV. The one kept is the row's
        -- `position` in `transactions`, final only once all are saved.
        account_line BIGINT NOT NULL,
        line BIGINT NOT NULL,
        PRIMARY KEY (import_id, account_id, id, account_line, line)
    );
    -- The transactions CSV of a fetched account (redacted), for reports.
    ALTER TABLE import_accounts ADD COLUMN url TEXT",
    // The W3C trace context the import was started in, so its completion
    // event is published in the import's trace.
    "
    ALTER TABLE imports ADD COLUMN traceparent TEXT",
    // Conflicts and clashes counted per message, so the count is exact
    // while the rows that name them are bounded per import (a file of one
    // key repeated 200,000 times records a thousand, not 199,999). A clash
    // is a row another import saved already with another value: it keeps
    // that value, and the import says so. Two columns no query used go.
    "
    ALTER TABLE import_chunks
        ADD COLUMN conflicts BIGINT NOT NULL DEFAULT 0,
        ADD COLUMN clashes BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE import_clashes (
        import_id TEXT NOT NULL,
        account_id BIGINT NOT NULL,
        id BIGINT NOT NULL,
        -- Where this import lists the row, and the amount it gives.
        account_line BIGINT NOT NULL,
        line BIGINT NOT NULL,
        amount TEXT NOT NULL,
        PRIMARY KEY (import_id, account_id, id, account_line, line)
    );
    ALTER TABLE imports DROP COLUMN messages_expected, DROP COLUMN chunks_settled",
    // Imports run with a spec: every file below the root is an
    // `import_accounts` row that counts the files it links to (an import
    // expects the files its root and every read file announced), every
    // rows message an `import_chunks` row naming its table, and each row a
    // conflict policy reported is named, bounded per import and table.
    "
    ALTER TABLE imports ADD COLUMN spec TEXT;
    ALTER TABLE import_accounts
        ADD COLUMN files BIGINT NOT NULL DEFAULT 0,
        ADD COLUMN level TEXT;
    ALTER TABLE import_chunks
        ADD COLUMN table_name TEXT,
        ADD COLUMN updated BIGINT NOT NULL DEFAULT 0,
        ADD COLUMN refused BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE import_row_reports (
        import_id TEXT NOT NULL,
        table_name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('conflict', 'clash', 'updated', 'refused')),
        -- The file (its key: the import id for the root file) and the
        -- row's line in it.
        file_key TEXT NOT NULL,
        line BIGINT NOT NULL,
        -- The key, as people read it: `(customer_id) = (7)`.
        key TEXT NOT NULL,
        PRIMARY KEY (import_id, table_name, kind, file_key, line)
    )",
    // A transactions file that changed between two attempts is read again
    // from its first row as version n+1 (`…/v<n>-rows-…`): the account's
    // announcement names the version whose windows complete it, and the
    // saver keeps, per file, the version whose rows the table holds. An
    // operator may cancel an import.
    "
    ALTER TABLE imports DROP CONSTRAINT imports_status_check,
        ADD CONSTRAINT imports_status_check
            CHECK (status IN ('running', 'completed', 'completed_with_errors', 'cancelled'));
    ALTER TABLE import_accounts ADD COLUMN version INT NOT NULL DEFAULT 1;
    CREATE TABLE import_file_versions (
        import_id TEXT NOT NULL,
        account_key TEXT NOT NULL,
        version INT NOT NULL,
        PRIMARY KEY (import_id, account_key)
    )",
    // An import may name a webhook target: once its completion event is
    // published (and kept, for every import), it waits here until the
    // target took it (an outbox the saver's replicas share by leases).
    "
    ALTER TABLE imports
        ADD COLUMN webhook TEXT,
        ADD COLUMN completion_event TEXT,
        ADD COLUMN webhook_next_at TIMESTAMPTZ,
        ADD COLUMN webhook_attempts INT NOT NULL DEFAULT 0,
        ADD COLUMN webhook_delivered_at TIMESTAMPTZ,
        ADD COLUMN webhook_error TEXT;
    CREATE INDEX imports_webhooks_due ON imports (webhook_next_at)
        WHERE webhook IS NOT NULL AND completion_event IS NOT NULL
          AND webhook_delivered_at IS NULL",
];

/// The version `migrate` brings a database to.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// How a database's schema version stands against this binary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// Older: `migrate` brings it up to date.
    Behind { at: i32, knows: usize },
    /// Newer: a later release migrated it, and this binary would misread or
    /// corrupt what that release writes. Only an upgrade helps.
    Ahead { at: i32, knows: usize },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Behind { at, knows } => {
                write!(f, "the database schema is at version {at} of {knows}")
            }
            Mismatch::Ahead { at, knows } => write!(
                f,
                "the database schema is at version {at}; this binary knows up to version {knows}: upgrade the binary"
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Whether schema version `at` is the one this binary writes.
pub fn compare(at: i32) -> Result<(), Mismatch> {
    let knows = SCHEMA_VERSION;
    match usize::try_from(at).unwrap_or(0).cmp(&knows) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(Mismatch::Behind { at, knows }),
        std::cmp::Ordering::Greater => Err(Mismatch::Ahead { at, knows }),
    }
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// The database is newer than this binary: nothing was changed.
    #[error(transparent)]
    Ahead(Mismatch),
}

/// Brings the schema up to date, or refuses a schema newer than this
/// binary. Replicas starting together serialise on an advisory lock, so
/// each migration runs once.
pub async fn migrate(client: &Client) -> Result<(), MigrateError> {
    client.batch_execute("BEGIN").await?;
    let result: Result<(), MigrateError> = async {
        // The lock comes before the table: replicas starting together on a
        // new database would otherwise race `CREATE TABLE IF NOT EXISTS`,
        // and the loser fails on the catalog (a type or a unique index
        // "already exists") though the table is there.
        client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('sluice-saver-migrations'))",
                &[],
            )
            .await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS sluice_migrations (
                    version INT PRIMARY KEY,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )",
            )
            .await?;
        let applied: i32 = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM sluice_migrations",
                &[],
            )
            .await?
            .get(0);
        if let Err(ahead @ Mismatch::Ahead { .. }) = compare(applied) {
            return Err(MigrateError::Ahead(ahead));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            client.batch_execute(sql).await?;
            client
                .execute(
                    "INSERT INTO sluice_migrations (version) VALUES ($1)",
                    &[&(index as i32 + 1)],
                )
                .await?;
            tracing::info!(version = index + 1, "applied schema migration");
        }
        Ok(())
    }
    .await;
    client
        .batch_execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await?;
    result
}
