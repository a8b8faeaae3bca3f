//! saver: batches of transactions in, rows in PostgreSQL out, idempotently
//! on `(account_id, id)`.

pub mod schema;
mod tracker;
mod tracking;

use std::sync::Arc;

use sluice_messages::{stage, TransactionBatch};
use sluice_stage::{error_chain, Delivery, Sink, StageError};
use tokio::sync::OnceCell;
use tokio_postgres::{Client, Statement};

pub use schema::{migrate, MigrateError, SCHEMA_VERSION};
pub use tracker::{announce_completions, Tracker};
pub use tracking::complete_finished;

/// The saver's database: connections, with the schema migrated once first.
#[derive(Clone)]
pub struct Database {
    config: sluice_postgres::Database,
    migrated: Arc<OnceCell<()>>,
}

impl Database {
    pub fn new(config: sluice_postgres::Database) -> Self {
        Database {
            config,
            migrated: Arc::default(),
        }
    }

    /// A connection, the schema migrated. A refusal that only a setting can
    /// fix (see [`misconfigured`]) is reported as such; the caller still
    /// sees an outage, so no message is blamed for it.
    pub async fn connect(&self) -> Result<Client, StageError> {
        let connected = async {
            let client = self
                .config
                .connect()
                .await
                .map_err(|e| (db_error("connect", &e), misconfigured(&e)))?;
            self.migrated
                .get_or_try_init(|| async {
                    match migrate(&client).await {
                        Ok(()) => Ok(()),
                        Err(MigrateError::Postgres(e)) => {
                            Err((db_error("migrate", &e), misconfigured(&e)))
                        }
                        Err(MigrateError::Ahead(ahead)) => Err((
                            StageError::outage(ahead),
                            Some("run the saver release that migrated this database, or a later one"),
                        )),
                    }
                })
                .await?;
            Ok(client)
        };
        match connected.await {
            Ok(client) => {
                sluice_stage::misconfiguration::cleared("PostgreSQL");
                Ok(client)
            }
            Err((error, Some(fix))) => {
                sluice_stage::misconfiguration::report("PostgreSQL", error.message(), fix);
                Err(error)
            }
            Err((error, None)) => Err(error),
        }
    }
}

/// The fix, when connecting or migrating failed for a setting rather than
/// an outage: a password (28P01), a role (28000), a database (3D000), or a
/// right (42501) that is wrong or missing.
fn misconfigured(e: &tokio_postgres::Error) -> Option<&'static str> {
    match e.code()?.code() {
        "28P01" | "28000" => Some("check the user and password in DATABASE_URL (and pg_hba.conf)"),
        "3D000" => Some("create the database (`sluice setup` does) or name an existing one in DATABASE_URL"),
        "42501" => Some(
            "grant the DATABASE_URL role CONNECT on the database and CREATE on its schema, or run `sluice setup` as its owner",
        ),
        _ => None,
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

/// One transactions message: its rows, and its key, recorded with the
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
        SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int4[], $9::int8[])
            AS t(account_id, id, amount, chunk, position)
    ),
    chunks AS (
        SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::int4[])
            AS c(import_id, chunk_key, account_key, chunk)
    ),
    saved AS (
        INSERT INTO transactions AS t (account_id, id, amount, import_id, position)
        SELECT i.account_id, i.id, i.amount::numeric, c.import_id, i.position
        FROM input i JOIN chunks c USING (chunk)
        ORDER BY i.account_id, i.id
        -- Another import's row keeps its first amount. Within one import
        -- the earlier position wins, so the outcome does not depend on
        -- which message commits first; a redelivery (same position)
        -- changes nothing.
        ON CONFLICT (account_id, id) DO UPDATE SET
            amount = CASE WHEN excluded.position < t.position THEN excluded.amount ELSE t.amount END,
            position = LEAST(t.position, excluded.position),
            displaced = GREATEST(t.position, excluded.position)
            WHERE t.import_id = excluded.import_id AND t.position <> excluded.position
        RETURNING account_id, id, xmax = 0 AS inserted, position, displaced
    ),
    conflicts AS (
        INSERT INTO import_conflicts (import_id, account_id, id, account_line, line)
        SELECT c.import_id, s.account_id, s.id, s.displaced >> 32, s.displaced & 4294967295
        FROM saved s JOIN input i USING (account_id, id) JOIN chunks c USING (chunk)
        WHERE NOT s.inserted
        ON CONFLICT DO NOTHING
    ),
    counts AS (
        SELECT i.chunk, count(*) AS rows, count(s.id) FILTER (WHERE s.inserted) AS inserted
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

/// Where a row stands in its import: the account's line in the accounts
/// CSV (from the message key `<import>/<line>/lines-…`) above the row's
/// line in the transactions CSV. `None` for a message without lines (from
/// an older fetcher): such rows take no part in conflict resolution.
fn position(chunk_key: &str, line: Option<u64>) -> Option<i64> {
    let mut segments = chunk_key.rsplit('/');
    let account_line: u64 = segments.nth(1)?.parse().ok()?;
    let line = line?;
    (account_line < 1 << 31 && line < 1 << 32).then_some(((account_line << 32) | line) as i64)
}

impl Sink for Saver {
    const NAME: &'static str = stage::SAVER;
    const DEFAULT_WRITERS: u16 = 2;

    type Item = Chunk;
    type Writer = Writer;

    fn decode(&self, input: &Delivery) -> Result<Chunk, StageError> {
        Ok(Chunk {
            batch: input.json()?,
            key: input.key().to_owned(),
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
        // A key twice in one statement cannot be resolved by the statement
        // (PostgreSQL refuses to update a row twice): each round holds a
        // key at most once. The first round has each key's winner, the
        // earliest position of the import that reaches it first; the later
        // rounds meet it as conflicts.
        let import_of = |chunk: i32| chunks[chunk as usize].batch.import_id.as_str();
        let mut rounds: Vec<Vec<Row>> = vec![Vec::new()];
        // Each key: its row in the first round, and how many rows it has.
        let mut seen: std::collections::HashMap<(i64, i64), (usize, usize)> =
            std::collections::HashMap::new();
        for (n, chunk) in chunks.iter().enumerate() {
            let b = &chunk.batch;
            for t in &b.transactions {
                let mut row = Row {
                    account_id: b.account_id,
                    id: t.id,
                    amount: t.amount.as_str(),
                    chunk: n as i32,
                    position: position(&chunk.key, t.line),
                };
                match seen.entry((b.account_id, t.id)) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert((rounds[0].len(), 1));
                        rounds[0].push(row);
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let (first, count) = o.get_mut();
                        let kept = &mut rounds[0][*first];
                        if import_of(row.chunk) == import_of(kept.chunk)
                            && row.position.is_some()
                            && (kept.position.is_none() || row.position < kept.position)
                        {
                            std::mem::swap(kept, &mut row);
                        }
                        if rounds.len() == *count {
                            rounds.push(Vec::new());
                        }
                        rounds[*count].push(row);
                        *count += 1;
                    }
                }
            }
        }
        let messages = Messages {
            import_ids: chunks.iter().map(|c| c.batch.import_id.as_str()).collect(),
            chunk_keys: chunks.iter().map(|c| c.key.as_str()).collect(),
            account_keys: chunks.iter().map(|c| account_key(&c.key)).collect(),
            numbers: (0..chunks.len() as i32).collect(),
        };
        if rounds.len() == 1 {
            return writer.insert(&rounds[0], &messages).await;
        }
        // All rounds in one transaction: the batch stays atomic. Recording
        // the messages again in later rounds changes nothing.
        writer.execute("BEGIN").await?;
        let result = async {
            for round in &rounds {
                writer.insert(round, &messages).await?;
            }
            writer.execute("COMMIT").await
        }
        .await;
        if result.is_err() {
            let _ = writer.execute("ROLLBACK").await;
        }
        result
    }
}

/// The messages of a batch, column by column.
struct Messages<'a> {
    import_ids: Vec<&'a str>,
    chunk_keys: Vec<&'a str>,
    account_keys: Vec<&'a str>,
    numbers: Vec<i32>,
}

impl Writer {
    async fn insert(&self, rows: &[Row<'_>], messages: &Messages<'_>) -> Result<(), StageError> {
        let account_ids: Vec<i64> = rows.iter().map(|r| r.account_id).collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let amounts: Vec<&str> = rows.iter().map(|r| r.amount).collect();
        let chunk_of: Vec<i32> = rows.iter().map(|r| r.chunk).collect();
        let positions: Vec<Option<i64>> = rows.iter().map(|r| r.position).collect();
        self.client
            .execute(
                &self.insert,
                &[
                    &account_ids,
                    &ids,
                    &amounts,
                    &chunk_of,
                    &messages.import_ids,
                    &messages.chunk_keys,
                    &messages.account_keys,
                    &messages.numbers,
                    &positions,
                ],
            )
            .await
            .map_err(|e| db_error("insert", &e))?;
        Ok(())
    }

    async fn execute(&self, statement: &str) -> Result<(), StageError> {
        self.client
            .batch_execute(statement)
            .await
            .map_err(|e| db_error(statement, &e))
    }
}

/// One transaction of a batch, as the insert takes it.
struct Row<'a> {
    account_id: i64,
    id: i64,
    amount: &'a str,
    /// Which message of the batch it came from.
    chunk: i32,
    position: Option<i64>,
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
        // Cardinality violations, data exceptions, integrity constraints,
        // other statement errors.
        ("21" | "22" | "23" | "42", _) => Fault::Data,
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
    fn positions_order_rows_by_account_line_then_file_line() {
        let p = |key, line| super::position(key, line);
        assert!(p("42/7/lines-2-101", Some(9)) < p("42/7/lines-2-101", Some(10)));
        assert!(p("42/7/lines-102-201", Some(150)) < p("42/8/lines-2-101", Some(2)));
        assert_eq!(p("42/7/lines-2-101", Some(9)), Some((7 << 32) | 9));
        assert_eq!(p("nightly:3-x/12/lines-2-3", Some(3)), Some((12 << 32) | 3));
        // No line (an older fetcher) or no account line: no position.
        assert_eq!(p("42/7/lines-2-101", None), None);
        assert_eq!(p("ACCOUNT_UPDATES:5/lines-2-101", Some(3)), None);
    }

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
            (Some("21000"), Fault::Data),
            (Some("42804"), Fault::Data),
            (Some("XX000"), Fault::Transient),
            (Some("58030"), Fault::Transient),
        ];
        for (code, expected) in cases {
            assert_eq!(fault(code), expected, "{code:?}");
        }
    }
}
