//! saver: batches of transactions in, rows in PostgreSQL out, idempotently
//! on `(account_id, id)`.

mod schema;
mod tracking;

use std::sync::Arc;

use sluice_messages::{stage, TransactionBatch};
use sluice_stage::{error_chain, Delivery, Sink, StageError};
use tokio::sync::OnceCell;
use tokio_postgres::{Client, NoTls, Statement};

pub use schema::{migrate, SCHEMA_VERSION};
pub use tracking::{announce_completions, Tracker};

/// The saver's database: connections, with the schema migrated once first.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    migrated: Arc<OnceCell<()>>,
}

impl Database {
    pub fn new(config: tokio_postgres::Config) -> Self {
        Database {
            config,
            migrated: Arc::default(),
        }
    }

    pub async fn connect(&self) -> Result<Client, StageError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| db_error("connect", &e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "database connection closed");
            }
        });
        self.migrated
            .get_or_try_init(|| async {
                migrate(&client).await.map_err(|e| db_error("migrate", &e))
            })
            .await?;
        Ok(client)
    }
}

pub struct Saver {
    database: Database,
}

impl Saver {
    pub fn new(database: Database) -> Self {
        Saver { database }
    }
}

/// One transactions message: its rows, and its identity for the import's
/// tally of settled messages.
pub struct Chunk {
    batch: TransactionBatch,
    key: String,
}

/// One database connection and its prepared insert.
pub struct Writer {
    client: Client,
    insert: Statement,
}

/// One statement, so one round trip and one atomic transaction: every row
/// of the batch, and every message of it counted as settled for its import.
/// Existing keys are left alone, so replaying a message any number of times
/// leaves the same rows and the same counts. Amounts travel as text and are
/// cast by PostgreSQL, so they stay exact.
fn insert_statement() -> String {
    format!(
        "WITH saved AS (
            INSERT INTO transactions (account_id, id, amount, import_id)
            SELECT account_id, id, amount::numeric, import_id
            FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[]) AS t(account_id, id, amount, import_id)
            ON CONFLICT (account_id, id) DO NOTHING
        ),
        {}",
        tracking::COUNT_CHUNKS
    )
}

impl Sink for Saver {
    const NAME: &'static str = stage::SAVER;
    const DEFAULT_WRITERS: u16 = 2;

    type Item = Chunk;
    type Writer = Writer;

    fn decode(&self, input: &Delivery) -> Result<Chunk, StageError> {
        Ok(Chunk {
            batch: input.json()?,
            key: input.identity().to_owned(),
        })
    }

    async fn open(&self) -> Result<Writer, StageError> {
        let client = self.database.connect().await?;
        let insert = client
            .prepare(&insert_statement())
            .await
            .map_err(|e| db_error("prepare", &e))?;
        Ok(Writer { client, insert })
    }

    async fn write(&self, writer: &mut Writer, chunks: &[Chunk]) -> Result<(), StageError> {
        let mut rows: Vec<(i64, i64, &str, &str)> = chunks
            .iter()
            .flat_map(|c| {
                let b = &c.batch;
                b.transactions
                    .iter()
                    .map(move |t| (b.account_id, t.id, t.amount.as_str(), b.import_id.as_str()))
            })
            .collect();
        // Writers running side by side lock keys in the same order, so they
        // wait for each other instead of deadlocking.
        rows.sort_unstable_by_key(|r| (r.0, r.1));
        let account_ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let amounts: Vec<&str> = rows.iter().map(|r| r.2).collect();
        let import_ids: Vec<&str> = rows.iter().map(|r| r.3).collect();

        let mut settled: Vec<(&str, &str, i64)> = chunks
            .iter()
            .map(|c| {
                (
                    c.batch.import_id.as_str(),
                    c.key.as_str(),
                    c.batch.transactions.len() as i64,
                )
            })
            .collect();
        settled.sort_unstable();
        let chunk_imports: Vec<&str> = settled.iter().map(|c| c.0).collect();
        let chunk_keys: Vec<&str> = settled.iter().map(|c| c.1).collect();
        let chunk_sizes: Vec<i64> = settled.iter().map(|c| c.2).collect();
        writer
            .client
            .execute(
                &writer.insert,
                &[
                    &account_ids,
                    &ids,
                    &amounts,
                    &import_ids,
                    &chunk_imports,
                    &chunk_keys,
                    &chunk_sizes,
                ],
            )
            .await
            .map_err(|e| db_error("insert", &e))?;

        let mut imports = chunk_imports;
        imports.dedup();
        tracking::settle(&writer.client, &imports).await
    }
}

/// Bad data (class 22), constraint (23) and schema (42) errors stay bad
/// however often they are retried; everything else (lost connection,
/// deadlock, shutdown, too many clients) may pass.
fn db_error(action: &str, e: &tokio_postgres::Error) -> StageError {
    let class = e.code().map(|code| &code.code()[..2]);
    let message = format!("database {action} failed: {}", error_chain(e));
    match class {
        Some("22" | "23" | "42") => StageError::permanent(message),
        _ => StageError::transient(message),
    }
}
