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
pub use tracking::{announce_completions, settle_running, Tracker};

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

/// One transactions message: its rows, and its identity, recorded with the
/// rows so the tracker can tell which of an account's messages are saved.
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
/// of the batch, and a record of every message of it with the rows it
/// actually inserted. Existing keys are left alone, so replaying a message
/// any number of times leaves the same rows and the same records. Amounts
/// travel as text and are cast by PostgreSQL, so they stay exact. Nothing
/// here touches a row shared by all writers of an import.
const INSERT: &str = "
    WITH input AS (
        SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int4[]) AS t(account_id, id, amount, chunk)
    ),
    chunks AS (
        SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::int4[]) AS c(import_id, chunk_key, account_key, chunk)
    ),
    saved AS (
        INSERT INTO transactions (account_id, id, amount, import_id)
        SELECT i.account_id, i.id, i.amount::numeric, c.import_id
        FROM input i JOIN chunks c USING (chunk)
        ORDER BY i.account_id, i.id
        ON CONFLICT (account_id, id) DO NOTHING
        RETURNING account_id, id
    ),
    counts AS (
        SELECT i.chunk, count(*) AS rows, count(s.id) AS inserted
        FROM input i LEFT JOIN saved s USING (account_id, id)
        GROUP BY i.chunk
    )
    INSERT INTO import_chunks AS k (import_id, chunk_key, account_key, state, transactions, inserted)
    SELECT c.import_id, c.chunk_key, c.account_key, 'saved', COALESCE(n.rows, 0), COALESCE(n.inserted, 0)
    FROM chunks c LEFT JOIN counts n USING (chunk)
    ORDER BY c.import_id, c.chunk_key
    ON CONFLICT (import_id, chunk_key) DO UPDATE SET
        state = 'saved', transactions = excluded.transactions, inserted = excluded.inserted
        WHERE k.state = 'failed'";

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
            .prepare(INSERT)
            .await
            .map_err(|e| db_error("prepare", &e))?;
        Ok(Writer { client, insert })
    }

    async fn write(&self, writer: &mut Writer, chunks: &[Chunk]) -> Result<(), StageError> {
        // Messages in stream order, which within an account is file order;
        // a message delivered twice in one batch (a redelivery racing the
        // first) counts once.
        let mut seen = std::collections::HashSet::new();
        let chunks: Vec<&Chunk> = chunks
            .iter()
            .filter(|c| seen.insert((c.batch.import_id.as_str(), c.key.as_str())))
            .collect();
        // A key twice in one statement: the first in file order wins.
        let mut keys = std::collections::HashSet::new();
        let (mut account_ids, mut ids, mut amounts, mut chunk_of) =
            (vec![], vec![], vec![], vec![]);
        for (n, chunk) in chunks.iter().enumerate() {
            let b = &chunk.batch;
            for t in &b.transactions {
                if keys.insert((b.account_id, t.id)) {
                    account_ids.push(b.account_id);
                    ids.push(t.id);
                    amounts.push(t.amount.as_str());
                    chunk_of.push(n as i32);
                }
            }
        }
        let import_ids: Vec<&str> = chunks.iter().map(|c| c.batch.import_id.as_str()).collect();
        let chunk_keys: Vec<&str> = chunks.iter().map(|c| c.key.as_str()).collect();
        let account_keys: Vec<&str> = chunks.iter().map(|c| account_key(&c.key)).collect();
        let numbers: Vec<i32> = (0..chunks.len() as i32).collect();
        writer
            .client
            .execute(
                &writer.insert,
                &[
                    &account_ids,
                    &ids,
                    &amounts,
                    &chunk_of,
                    &import_ids,
                    &chunk_keys,
                    &account_keys,
                    &numbers,
                ],
            )
            .await
            .map_err(|e| db_error("insert", &e))?;
        Ok(())
    }
}

/// A transactions message's id is `<account key>/lines-<first>-<last>`.
pub(crate) fn account_key(chunk_key: &str) -> &str {
    chunk_key
        .rsplit_once('/')
        .map_or(chunk_key, |(account, _)| account)
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
    fn a_chunk_names_its_account() {
        assert_eq!(super::account_key("42/7/lines-2-101"), "42/7");
        assert_eq!(
            super::account_key("nightly:3/12/lines-102-201"),
            "nightly:3/12"
        );
    }

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
