//! saver: batches of transactions in, rows in PostgreSQL out, idempotently
//! on `(account_id, id)`.

mod schema;

use sluice_messages::{stage, TransactionBatch};
use sluice_stage::{error_chain, Delivery, Sink, StageError};
use tokio::sync::OnceCell;
use tokio_postgres::{Client, NoTls, Statement};

pub use schema::migrate;

pub struct Saver {
    database: tokio_postgres::Config,
    migrated: OnceCell<()>,
}

impl Saver {
    pub fn new(database: tokio_postgres::Config) -> Self {
        Saver {
            database,
            migrated: OnceCell::new(),
        }
    }
}

/// One database connection and its prepared insert.
pub struct Writer {
    client: Client,
    insert: Statement,
}

/// Every row of the batch in one statement: one round trip, one implicit
/// transaction. Existing keys are left alone, so replaying a message any
/// number of times leaves the same rows. Amounts travel as text and are cast
/// by PostgreSQL, so they stay exact.
const INSERT: &str = "
    INSERT INTO transactions (account_id, id, amount, import_id)
    SELECT account_id, id, amount::numeric, import_id
    FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[]) AS t(account_id, id, amount, import_id)
    ON CONFLICT (account_id, id) DO NOTHING";

impl Sink for Saver {
    const NAME: &'static str = stage::SAVER;
    const DEFAULT_WRITERS: u16 = 2;

    type Item = TransactionBatch;
    type Writer = Writer;

    fn decode(&self, input: &Delivery) -> Result<TransactionBatch, StageError> {
        input.json()
    }

    async fn open(&self) -> Result<Writer, StageError> {
        let (client, connection) = self
            .database
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
        let insert = client
            .prepare(INSERT)
            .await
            .map_err(|e| db_error("prepare", &e))?;
        Ok(Writer { client, insert })
    }

    async fn write(
        &self,
        writer: &mut Writer,
        batches: &[TransactionBatch],
    ) -> Result<(), StageError> {
        let mut rows: Vec<(i64, i64, &str, &str)> = batches
            .iter()
            .flat_map(|b| {
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
        writer
            .client
            .execute(&writer.insert, &[&account_ids, &ids, &amounts, &import_ids])
            .await
            .map_err(|e| db_error("insert", &e))?;
        Ok(())
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
