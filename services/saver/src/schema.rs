//! The saver's schema, migrated forward at start-up.

use tokio_postgres::Client;

/// Applied in order, each exactly once; never edit one that has shipped.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE transactions (
        account_id BIGINT NOT NULL,
        id BIGINT NOT NULL,
        amount NUMERIC NOT NULL,
        import_id TEXT NOT NULL,
        saved_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (account_id, id)
    )"];

/// Brings the schema up to date. Replicas starting together serialise on an
/// advisory lock, so each migration runs once.
pub async fn migrate(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sluice_migrations (
                version INT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .or_else(ignore_concurrent_create)?;
    client.batch_execute("BEGIN").await?;
    let result = async {
        client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('sluice-saver-migrations'))",
                &[],
            )
            .await?;
        let applied: i32 = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM sluice_migrations",
                &[],
            )
            .await?
            .get(0);
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

/// Two replicas racing `CREATE TABLE IF NOT EXISTS` can still collide on the
/// catalog's unique index; the loser's table exists all the same.
fn ignore_concurrent_create(e: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    match e.code() {
        Some(code) if *code == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => Ok(()),
        _ => Err(e),
    }
}
