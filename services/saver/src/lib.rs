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
        // The same message twice in one batch (a redelivery racing its
        // first delivery) would make the upsert touch a row twice (21000).
        settled.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
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

/// Whose fault a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The database cannot take writes now; no message is to blame: wait.
    Outage,
    /// The data of the batch: it stays bad however often it is retried.
    Data,
    /// Anything else: retry, counting deliveries.
    Transient,
}

/// The SQLSTATE table: which errors are outages, which the data's fault.
fn fault(sqlstate: Option<&str>) -> Fault {
    let Some(code) = sqlstate else {
        // No SQLSTATE: the connection could not be made or was lost.
        return Fault::Outage;
    };
    match (code.get(..2).unwrap_or(""), code) {
        // Read-only (a failover, maintenance), serialization failure and
        // deadlock (retry at once), lock not available, and permission or a
        // table missing while an operator works on the schema.
        (_, "25006" | "40001" | "40P01" | "55P03" | "42501" | "42P01") => Fault::Outage,
        // Connection exceptions; insufficient resources (disk full 53100,
        // out of memory, too many connections 53300); operator
        // intervention (shutting down 57P01-57P03, cancelled).
        ("08" | "53" | "57", _) => Fault::Outage,
        // Data exceptions, integrity constraints, other statement errors.
        ("22" | "23" | "42", _) => Fault::Data,
        _ => Fault::Transient,
    }
}

fn db_error(action: &str, e: &tokio_postgres::Error) -> StageError {
    let code = e.code().map(|c| c.code());
    let message = match code {
        Some(code) => format!(
            "database {action} failed (SQLSTATE {code}): {}",
            error_chain(e)
        ),
        None => format!("database {action} failed: {}", error_chain(e)),
    };
    match fault(code) {
        Fault::Outage => StageError::outage(message),
        Fault::Data => StageError::permanent(message),
        Fault::Transient => StageError::transient(message),
    }
}

#[cfg(test)]
mod tests {
    use super::{fault, Fault};

    #[test]
    fn the_sqlstate_table() {
        let cases = [
            (None, Fault::Outage),
            (Some("08006"), Fault::Outage),
            (Some("08001"), Fault::Outage),
            (Some("25006"), Fault::Outage),
            (Some("40001"), Fault::Outage),
            (Some("40P01"), Fault::Outage),
            (Some("55P03"), Fault::Outage),
            (Some("42501"), Fault::Outage),
            (Some("42P01"), Fault::Outage),
            (Some("53100"), Fault::Outage),
            (Some("53300"), Fault::Outage),
            (Some("57P01"), Fault::Outage),
            (Some("57P03"), Fault::Outage),
            (Some("22003"), Fault::Data),
            (Some("22P02"), Fault::Data),
            (Some("23505"), Fault::Data),
            (Some("42804"), Fault::Data),
            (Some("XX000"), Fault::Transient),
            (Some("58030"), Fault::Transient),
        ];
        for (code, expected) in cases {
            assert_eq!(fault(code), expected, "{code:?}");
        }
    }
}
