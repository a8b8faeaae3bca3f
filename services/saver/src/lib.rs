//! saver: batches of transactions in, rows in PostgreSQL out, idempotently
//! on `(account_id, id)`.

#![deny(clippy::let_underscore_must_use)]

pub mod api;
mod completion;
mod copy;
mod guard;
pub mod reports;
mod rows;
pub mod schema;
pub mod tables;
mod tracker;
mod webhooks;

use std::sync::Arc;

use sluice_messages::{stage, TransactionBatch};
use sluice_stage::{error_chain, specs::PinnedSpecs, Delivery, Sink, StageError};
use tokio::sync::OnceCell;
use tokio_postgres::{Client, Statement};

pub use completion::complete_finished;
pub use completion::Wakeups;
pub use schema::{migrate, MigrateError, SCHEMA_VERSION};
pub use tracker::{announce_completions, Tracker};
pub use webhooks::deliver_webhooks;

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
    /// fix (see `misconfigured`) is reported as such; the caller still
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
                            Some(
                                "run the saver release that migrated this database, or a later one",
                            ),
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
    /// The specs of imports run with one: how their rows are saved.
    specs: Option<PinnedSpecs>,
    /// `rows.` in the deployment's namespace: where their rows come.
    rows_subjects: String,
    /// Where rows the `error` policy refuses are dead-lettered.
    letters: Option<(async_nats::jetstream::Context, sluice_messages::Namespace)>,
    /// Told the accounts of each committed batch, for the announcer.
    wakeups: Wakeups,
    /// When a COPY was last refused before its data, for every writer.
    copy_refusals: copy::CopyRefusals,
}

impl Saver {
    /// Saves to `database`, telling the announcer through `wakeups`.
    pub fn new(database: Database, wakeups: Wakeups) -> Self {
        Saver {
            database,
            specs: None,
            rows_subjects: sluice_messages::Namespace::default().rows(""),
            letters: None,
            wakeups,
            copy_refusals: Default::default(),
        }
    }

    /// Saves the rows of imports run with a spec as `specs` say, taking
    /// them on `rows.>` in namespace `ns`.
    /// Refused rows are dead-lettered through `js`.
    pub fn with_specs(
        mut self,
        specs: PinnedSpecs,
        js: async_nats::jetstream::Context,
        ns: &sluice_messages::Namespace,
    ) -> Self {
        self.specs = Some(specs);
        self.rows_subjects = ns.rows("");
        self.letters = Some((js, ns.clone()));
        self
    }

    /// Dead-letters the rows the `error` policy refused, each a `conflict`
    /// letter naming its file and line, under an id of its message and
    /// line: the batch's transaction commits only once they are stored, and
    /// a batch written again (its first commit lost) sends the same ids,
    /// which JetStream drops.
    async fn dead_letter(
        &self,
        refused: &[rows::Refused],
        import_id: &str,
        table: &str,
    ) -> Result<(), StageError> {
        let Some((js, ns)) = &self.letters else {
            return Ok(());
        };
        let mut acks = Vec::with_capacity(refused.len());
        for r in refused {
            let url = r.url.clone().unwrap_or_else(|| "the file".to_owned());
            let letter = sluice_messages::DeadLetter {
                stage: stage::SAVER.to_owned(),
                kind: sluice_messages::DeadLetterKind::Conflict,
                error: format!("{url} line {}: {}", r.line, r.reason),
                import_id: Some(import_id.to_owned()),
                subject: ns.rows(table),
                body: None,
                body_base64: None,
                headers: Default::default(),
                delivered: 1,
                url: r.url.clone(),
                line: Some(r.line),
                time: sluice_stage::now(),
                truncated: false,
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(sluice_messages::HEADER_IMPORT_ID, import_id);
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(&letter).expect("letters encode").into())
                .headers(headers)
                .message_id(format!("{}/refused-line-{}", r.chunk_key, r.line));
            let ack = js
                .send_publish(ns.dead_letters(stage::SAVER), message)
                .await
                .map_err(|e| {
                    StageError::outage(format!("cannot dead-letter a refused row: {e}"))
                })?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| {
                StageError::outage(format!(
                    "JetStream did not store a refused row's letter: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// Writes the rows messages of a batch in one transaction, table by
    /// table in the order of their turns (so writers that need the turns
    /// of several tables take them in one order), each import's messages
    /// apart.
    async fn write_rows(
        &self,
        writer: &mut Writer,
        chunks: &[&rows::RowChunk],
    ) -> Result<(), StageError> {
        let Some(specs) = &self.specs else {
            return Err(StageError::permanent(
                "this saver saves the built-in spec's transactions only",
            ));
        };
        let mut seen = std::collections::HashSet::new();
        // Tables by their lock, so every writer takes the locks in one order.
        let mut groups: std::collections::BTreeMap<(i64, &str, &str), Vec<&rows::RowChunk>> =
            Default::default();
        for chunk in chunks {
            let b = &chunk.batch;
            if seen.insert((b.import_id.as_str(), chunk.key.as_str())) {
                let table = sluice_spec::sql::canonical_table(&b.table);
                groups
                    .entry((rows::table_lock(table), table, b.import_id.as_str()))
                    .or_default()
                    .push(chunk);
            }
        }
        // The specs first: nothing waits on NATS while holding a table.
        let mut specs_of = Vec::with_capacity(groups.len());
        for ((_, table, import_id), group) in &groups {
            let first = &group[0].batch;
            if group
                .iter()
                .any(|c| c.batch.spec != first.spec || c.batch.revision != first.revision)
            {
                return Err(StageError::permanent(format!(
                    "import {import_id} sent rows for table {table} read with two specs"
                )));
            }
            specs_of.push(specs.pinned(&first.spec, first.revision).await?);
        }
        let tx = writer
            .client
            .transaction()
            .await
            .map_err(|e| db_error("begin", &e))?;
        let imports: Vec<&str> = groups.keys().map(|(_, _, import_id)| *import_id).collect();
        let held = guard::hold(&tx, &imports).await?;
        for (((_, table, import_id), group), spec) in groups.iter().zip(&specs_of) {
            if held.cancelled(import_id) {
                continue;
            }
            let refused =
                rows::write_group(&tx, spec, import_id, group, &mut writer.new_keys).await?;
            self.dead_letter(&refused, import_id, table).await?;
        }
        tx.commit().await.map_err(|e| db_error("commit", &e))
    }
}

/// What the saver writes: transactions of the built-in spec, or rows of a
/// spec's table.
pub enum Item {
    Transactions(Chunk),
    Rows(rows::RowChunk),
}

/// One transactions message: its rows, and its key, recorded with the
/// rows so the tracker can tell which of an account's messages are saved.
pub struct Chunk {
    batch: TransactionBatch,
    key: String,
}

/// One database connection and its prepared inserts.
pub struct Writer {
    client: Client,
    insert: Statement,
    /// [`COPY_NEW`] and [`COPY_RECORDS`]: a batch of keys all new.
    copy_new: Statement,
    copy_records: Statement,
    /// [`guard::READ`]: what a batch must not write.
    guard_read: Statement,
    new_keys: NewKeys,
}

/// Whether a writer tries a batch as keys all new first (a plain COPY,
/// [`COPY_NEW`]). After one met keys held already, the next are likely
/// to (a replay, an import over another), and each failed attempt costs
/// work and an error line in PostgreSQL's log: the next
/// [`NewKeys::SKIP_AFTER_HELD`] go straight to `ON CONFLICT`, and every
/// batch while COPY rests after a refusal ([`copy::CopyRefusals`]).
pub(crate) struct NewKeys {
    skip: u32,
    refusals: copy::CopyRefusals,
}

impl NewKeys {
    const SKIP_AFTER_HELD: u32 = 32;

    fn new(refusals: copy::CopyRefusals) -> Self {
        NewKeys { skip: 0, refusals }
    }

    /// Where a COPY refused before its data is recorded.
    pub(crate) fn refusals(&self) -> &copy::CopyRefusals {
        &self.refusals
    }

    /// Whether to try this batch as keys all new (else one skip is spent).
    pub(crate) fn try_now(&mut self) -> bool {
        if self.refusals.resting() {
            return false;
        }
        match self.skip {
            0 => true,
            _ => {
                self.skip -= 1;
                false
            }
        }
    }

    /// The attempt met a key held already.
    pub(crate) fn held(&mut self) {
        self.skip = Self::SKIP_AFTER_HELD;
    }
}

/// The batch as both inserts take it: its rows (`$1`-`$4`, `$9`) and its
/// messages (`$5`-`$8`, `$10`, and `$11` the rows each gives the insert).
macro_rules! batch_inputs {
    () => {
        "
    WITH input AS (
        SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int4[], $9::int8[])
            AS t(account_id, id, amount, chunk, position)
    ),
    chunks AS (
        SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::int4[], $10::int8[],
                             $11::int8[])
            AS c(import_id, chunk_key, account_key, chunk, rows, winners)
    )"
    };
}

/// The rows' insert, in key order so concurrent writers lock alike.
macro_rules! insert_rows {
    () => {
        "
        INSERT INTO transactions AS t (account_id, id, amount, import_id, position)
        SELECT i.account_id, i.id, i.amount::numeric, c.import_id, i.position
        FROM input i JOIN chunks c USING (chunk)
        ORDER BY i.account_id, i.id"
    };
}

/// One statement, so one round trip and one atomic transaction: every row
/// of the batch, and a record of every message of it with the rows it
/// actually inserted, the conflicts and the clashes it met. Existing keys
/// are left alone, so replaying a message any number of times leaves the
/// same rows and the same records. Amounts travel as text and are cast by
/// PostgreSQL, so they stay exact. Nothing here touches a row shared by all
/// writers of an import.
///
/// Each key comes once (see [`plan`]); `$12`-`$16` are the rows of the
/// batch that another row of the batch displaced. A row displaced within
/// its own import is a conflict; a row that another import saved already
/// with another amount is a clash: that import's row stays, and both are
/// counted per message. The rows naming them are kept up to
/// [`RECORDED_PER_IMPORT`] per import.
const INSERT: &str = concat!(
    batch_inputs!(),
    ",
    beaten AS (
        SELECT * FROM unnest($12::int4[], $13::int8[], $14::int8[], $15::int8[], $16::text[])
            AS d(chunk, account_id, id, position, amount)
    ),
    saved AS (",
    insert_rows!(),
    "
        -- Another import's row keeps its first amount; one with another
        -- amount is touched only to be returned as a clash. Within one
        -- import the earlier position wins, so the outcome does not depend
        -- on which message commits first; a redelivery (same position)
        -- changes nothing.
        ON CONFLICT (account_id, id) DO UPDATE SET
            amount = CASE WHEN t.import_id = excluded.import_id AND excluded.position < t.position
                          THEN excluded.amount ELSE t.amount END,
            position = CASE WHEN t.import_id = excluded.import_id
                            THEN LEAST(t.position, excluded.position) ELSE t.position END,
            displaced = CASE WHEN t.import_id = excluded.import_id
                             THEN GREATEST(t.position, excluded.position) ELSE t.displaced END
            WHERE (t.import_id = excluded.import_id AND t.position <> excluded.position)
               OR (t.import_id <> excluded.import_id AND t.amount <> excluded.amount)
        RETURNING account_id, id, xmax = 0 AS inserted, import_id AS owner, displaced,
                  amount AS kept
    ),
    -- The rows that met a row already there and were returned: none on a
    -- first import, so nothing below joins every row of the batch again.
    -- (A fresh row is its own import's, at its own amount.)
    met AS (
        SELECT s.*, i.chunk FROM saved s JOIN input i USING (account_id, id)
        WHERE NOT s.inserted
    ),
    -- The rows that met one and were left as they were, which are not
    -- returned at all: looked for only when fewer rows came back than went
    -- in (a replay, or another import's rows), never on a first import.
    untouched AS (
        SELECT i.chunk FROM input i
        WHERE (SELECT count(*) FROM saved) < (SELECT count(*) FROM input)
          AND NOT EXISTS (SELECT FROM saved s WHERE s.account_id = i.account_id AND s.id = i.id)
    ),
    -- Who holds each beaten key now, and at which amount: this statement's
    -- outcome, else the row as it was (a replay changes nothing). Only the
    -- beaten keys: a batch without repeats looks nothing up.
    holder AS (
        SELECT b.account_id, b.id, COALESCE(s.owner, t.import_id) AS owner,
               COALESCE(s.kept, t.amount) AS kept
        FROM (SELECT DISTINCT account_id, id FROM beaten) b
        LEFT JOIN saved s USING (account_id, id)
        LEFT JOIN transactions t USING (account_id, id)
    ),
    conflicted AS (
        SELECT m.chunk, c.import_id, m.account_id, m.id, m.displaced AS at
        FROM met m JOIN chunks c USING (chunk)
        WHERE m.owner = c.import_id AND m.displaced IS NOT NULL
        UNION ALL
        SELECT d.chunk, c.import_id, d.account_id, d.id, d.position
        FROM beaten d JOIN chunks c USING (chunk) JOIN holder h USING (account_id, id)
        WHERE h.owner = c.import_id AND d.position IS NOT NULL
    ),
    clashed AS (
        SELECT i.chunk, c.import_id, i.account_id, i.id, i.position AS at, i.amount
        FROM met m JOIN input i USING (account_id, id, chunk) JOIN chunks c USING (chunk)
        WHERE m.owner <> c.import_id
        UNION ALL
        SELECT d.chunk, c.import_id, d.account_id, d.id, d.position, d.amount
        FROM beaten d JOIN chunks c USING (chunk) JOIN holder h USING (account_id, id)
        WHERE h.owner <> c.import_id AND h.kept <> d.amount::numeric
    ),
    -- Rows each import of the batch may still name (read once per import,
    -- never per row: a batch of one key repeated holds thousands).
    room AS (
        SELECT i.import_id,
               $17 - (SELECT count(*) FROM (SELECT FROM import_conflicts r
                                            WHERE r.import_id = i.import_id LIMIT $17) n) AS conflicts,
               $17 - (SELECT count(*) FROM (SELECT FROM import_clashes r
                                            WHERE r.import_id = i.import_id LIMIT $17) n) AS clashes
        FROM (SELECT DISTINCT import_id FROM chunks) i
    ),
    recorded_conflicts AS (
        INSERT INTO import_conflicts (import_id, account_id, id, account_line, line)
        SELECT k.import_id, k.account_id, k.id, k.at >> 32, k.at & 4294967295
        FROM (SELECT *, row_number() OVER (PARTITION BY import_id ORDER BY at) AS n
              FROM conflicted) k
        JOIN room USING (import_id)
        WHERE k.n <= room.conflicts
        ON CONFLICT DO NOTHING
    ),
    recorded_clashes AS (
        INSERT INTO import_clashes (import_id, account_id, id, account_line, line, amount)
        SELECT k.import_id, k.account_id, k.id, COALESCE(k.at >> 32, 0), COALESCE(k.at & 4294967295, 0), k.amount
        FROM (SELECT *, row_number() OVER (PARTITION BY import_id ORDER BY at) AS n
              FROM clashed) k
        JOIN room USING (import_id)
        WHERE k.n <= room.clashes
        ON CONFLICT DO NOTHING
    ),
    counts AS (
        SELECT c.chunk, c.winners - COALESCE(old.n, 0) - COALESCE(kept.n, 0) AS inserted,
               COALESCE(con.n, 0) AS conflicts, COALESCE(cla.n, 0) AS clashes
        FROM chunks c
        LEFT JOIN (SELECT chunk, count(*) AS n FROM met GROUP BY chunk) old USING (chunk)
        LEFT JOIN (SELECT chunk, count(*) AS n FROM untouched GROUP BY chunk) kept USING (chunk)
        LEFT JOIN (SELECT chunk, count(*) AS n FROM conflicted GROUP BY chunk) con USING (chunk)
        LEFT JOIN (SELECT chunk, count(*) AS n FROM clashed GROUP BY chunk) cla USING (chunk)
    )
    INSERT INTO import_chunks AS k
        (import_id, chunk_key, account_key, state, transactions, inserted, conflicts, clashes)
    SELECT c.import_id, c.chunk_key, c.account_key, 'saved', c.rows, n.inserted, n.conflicts, n.clashes
    FROM chunks c JOIN counts n USING (chunk)
    -- Bytewise, as `copy_records` orders them: writers lock alike.
    ORDER BY c.import_id COLLATE \"C\", c.chunk_key COLLATE \"C\"
    ON CONFLICT (import_id, chunk_key) DO UPDATE SET
        state = 'saved', transactions = excluded.transactions, inserted = excluded.inserted,
        conflicts = excluded.conflicts, clashes = excluded.clashes
        WHERE k.state = 'failed'"
);

/// The common batch, keys new to the table and none repeated in it,
/// goes in with COPY: no `ON CONFLICT`, whose probe before each insert and
/// second WAL record to confirm it cost a third of PostgreSQL's time on a
/// first import, and none of `INSERT … SELECT`'s work per row (see
/// [`copy`]). A key held already makes it fail whole (unique violation,
/// nothing written), and the batch goes through [`INSERT`]: replays and
/// clashing imports pay one failed attempt, stopped at the first key held,
/// since the rows go in key order.
const COPY_NEW: &str = "COPY transactions (account_id, id, amount, import_id, position) FROM STDIN";

/// The records of a batch's messages when [`COPY_NEW`] took its rows
/// (with no conflict to count, every row was inserted), also a COPY. A
/// record there already (a message delivered again) fails it whole, and
/// the batch goes through [`INSERT`], which leaves a saved record alone.
const COPY_RECORDS: &str = "COPY import_chunks
    (import_id, chunk_key, account_key, state, transactions, inserted, conflicts, clashes)
    FROM STDIN";

/// How many conflicts, and how many clashes, are recorded row by row per
/// import by each writer (writers check on their own); all are counted.
pub const RECORDED_PER_IMPORT: i64 = 1000;

/// Where a row stands in its import: the account's line in the accounts
/// CSV (from the message key `<import>/<line>/rows-…`) above the row's
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

    type Item = Item;
    type Writer = Writer;

    fn decode(&self, input: &Delivery) -> Result<Item, StageError> {
        let key = input.key().to_owned();
        if input.subject().starts_with(&self.rows_subjects) {
            return Ok(Item::Rows(rows::RowChunk {
                batch: input.json()?,
                key,
            }));
        }
        Ok(Item::Transactions(Chunk {
            batch: input.json()?,
            key,
        }))
    }

    async fn open(&self) -> Result<Writer, StageError> {
        let client = self.database.connect().await?;
        let insert = client
            .prepare(INSERT)
            .await
            .map_err(|e| db_error("prepare", &e))?;
        let copy_new = client
            .prepare(COPY_NEW)
            .await
            .map_err(|e| db_error("prepare", &e))?;
        let copy_records = client
            .prepare(COPY_RECORDS)
            .await
            .map_err(|e| db_error("prepare", &e))?;
        let guard_read = client
            .prepare(guard::READ)
            .await
            .map_err(|e| db_error("prepare", &e))?;
        Ok(Writer {
            client,
            insert,
            copy_new,
            copy_records,
            guard_read,
            new_keys: NewKeys::new(self.copy_refusals.clone()),
        })
    }

    async fn write(&self, writer: &mut Writer, items: &[Item]) -> Result<(), StageError> {
        let (mut chunks, mut rows) = (Vec::new(), Vec::new());
        for item in items {
            match item {
                Item::Transactions(chunk) => chunks.push(chunk),
                Item::Rows(chunk) => rows.push(chunk),
            }
        }
        if !chunks.is_empty() {
            self.write_transactions(writer, &chunks).await?;
        }
        if !rows.is_empty() {
            self.write_rows(writer, &rows).await?;
        }
        // Committed: the accounts these messages belong to may be complete.
        for item in items {
            let (import, key) = match item {
                Item::Transactions(c) => (&c.batch.import_id, &c.key),
                Item::Rows(c) => (&c.batch.import_id, &c.key),
            };
            self.wakeups.touch(import, Some(account_key(key)), false);
        }
        self.wakeups.wake();
        Ok(())
    }
}

impl Saver {
    async fn write_transactions(
        &self,
        writer: &mut Writer,
        chunks: &[&Chunk],
    ) -> Result<(), StageError> {
        // Messages in stream order, which within an account is file order;
        // a message delivered twice in one batch (a redelivery racing the
        // first) counts once.
        let mut seen = std::collections::HashSet::new();
        let chunks: Vec<&Chunk> = chunks
            .iter()
            .copied()
            .filter(|c| seen.insert((c.batch.import_id.as_str(), c.key.as_str())))
            .collect();
        guard::upgrade(&mut writer.client, &chunks).await?;
        let imports: Vec<&str> = chunks.iter().map(|c| c.batch.import_id.as_str()).collect();
        let mut new_keys = writer.new_keys.try_now();
        loop {
            let held = guard::begin(&writer.client, &writer.guard_read, &imports).await?;
            let live: Vec<&Chunk> = chunks.iter().copied().filter(|c| !held.drops(c)).collect();
            let plan = plan(&live);
            let messages = Messages::of(&live);
            let statements = Statements {
                insert: &writer.insert,
                copy_new: &writer.copy_new,
                copy_records: &writer.copy_records,
            };
            let refusals = writer.new_keys.refusals();
            match insert_and_commit(
                &writer.client,
                statements,
                new_keys,
                &plan,
                &messages,
                refusals,
            )
            .await
            {
                Ok(Inserted::Done) => return Ok(()),
                Ok(Inserted::Held) => {
                    // Nothing was written: again, through `ON CONFLICT`.
                    writer.new_keys.held();
                    new_keys = false;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A batch's rows as one statement takes them: each key once, with the row
/// that wins it within the batch, and the rows it beat. PostgreSQL refuses
/// to update a row twice in one statement, and a key repeated in a batch
/// must cost no more than a key that is not: one pass, O(rows).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan<'a> {
    pub winners: Vec<Row<'a>>,
    pub beaten: Vec<Row<'a>>,
}

/// The winner of a key within a batch is the first row met, unless a row
/// of the same import with an earlier file position comes later: within an
/// import the first in file order wins, whatever order messages come in.
pub(crate) fn plan<'a>(chunks: &[&'a Chunk]) -> Plan<'a> {
    use std::collections::hash_map::Entry;
    let rows: usize = chunks.iter().map(|c| c.batch.transactions.len()).sum();
    let mut plan = Plan {
        winners: Vec::with_capacity(rows),
        beaten: Vec::new(),
    };
    let mut index: std::collections::HashMap<(i64, i64), usize> =
        std::collections::HashMap::with_capacity(rows);
    for (n, chunk) in chunks.iter().enumerate() {
        let b = &chunk.batch;
        for t in &b.transactions {
            let row = Row {
                account_id: b.account_id,
                id: t.id,
                amount: t.amount.as_str(),
                chunk: n as i32,
                import_id: b.import_id.as_str(),
                position: position(&chunk.key, t.line),
            };
            match index.entry((row.account_id, row.id)) {
                Entry::Vacant(v) => {
                    v.insert(plan.winners.len());
                    plan.winners.push(row);
                }
                Entry::Occupied(o) => {
                    let kept = &mut plan.winners[*o.get()];
                    let earlier = row.import_id == kept.import_id
                        && row.position.is_some()
                        && (kept.position.is_none() || row.position < kept.position);
                    let beaten = if earlier {
                        std::mem::replace(kept, row)
                    } else {
                        row
                    };
                    plan.beaten.push(beaten);
                }
            }
        }
    }
    plan
}

/// The messages of a batch, column by column.
struct Messages<'a> {
    import_ids: Vec<&'a str>,
    chunk_keys: Vec<&'a str>,
    account_keys: Vec<&'a str>,
    numbers: Vec<i32>,
    /// Rows each message holds.
    rows: Vec<i64>,
}

impl<'a> Messages<'a> {
    fn of(chunks: &[&'a Chunk]) -> Self {
        Messages {
            import_ids: chunks.iter().map(|c| c.batch.import_id.as_str()).collect(),
            chunk_keys: chunks.iter().map(|c| c.key.as_str()).collect(),
            account_keys: chunks.iter().map(|c| account_key(&c.key)).collect(),
            numbers: (0..chunks.len() as i32).collect(),
            rows: chunks
                .iter()
                .map(|c| c.batch.transactions.len() as i64)
                .collect(),
        }
    }
}

/// How a batch's insert went.
#[derive(Debug, PartialEq, Eq)]
enum Inserted {
    Done,
    /// Tried as keys all new, it met a key held already: nothing written,
    /// and the transaction is aborted.
    Held,
}

/// How many of the rows the insert takes (the winners) each message gave:
/// those not inserted are the ones that met a row already there (none on a
/// first import), so the statement counts the inserted ones without
/// joining every row.
fn winners_per_message(plan: &Plan<'_>, messages: usize) -> Vec<i64> {
    let mut winners = vec![0i64; messages];
    for row in &plan.winners {
        winners[row.chunk as usize] += 1;
    }
    winners
}

/// A list of rows, column by column, as the insert binds them.
type Columns<'a> = (Vec<i64>, Vec<i64>, Vec<&'a str>, Vec<i32>, Vec<Option<i64>>);

fn columns<'a>(rows: &[Row<'a>]) -> Columns<'a> {
    (
        rows.iter().map(|r| r.account_id).collect(),
        rows.iter().map(|r| r.id).collect(),
        rows.iter().map(|r| r.amount).collect(),
        rows.iter().map(|r| r.chunk).collect(),
        rows.iter().map(|r| r.position).collect(),
    )
}

/// A writer's prepared statements for a batch's rows.
struct Statements<'a> {
    insert: &'a Statement,
    copy_new: &'a Statement,
    copy_records: &'a Statement,
}

/// Writes a batch with `statements` in the transaction [`guard::begin`]
/// opened on `client`, and commits it, the commit pipelined after the
/// writes (if one fails, the transaction is aborted and the commit rolls
/// it back). As keys all new first if `new_keys` says so. The transaction
/// is over whatever the outcome.
async fn insert_and_commit(
    client: &Client,
    statements: Statements<'_>,
    new_keys: bool,
    plan: &Plan<'_>,
    messages: &Messages<'_>,
    refusals: &copy::CopyRefusals,
) -> Result<Inserted, StageError> {
    use tokio_postgres::types::ToSql;
    if messages.numbers.is_empty() {
        // Every message of the batch was left out: nothing to write.
        return commit(client, async { Ok(0) })
            .await
            .map(|_| Inserted::Done)
            .map_err(|e| db_error("commit", &e));
    }
    let (account_ids, ids, amounts, chunk_of, positions) = columns(&plan.winners);
    let (b_account_ids, b_ids, b_amounts, b_chunk_of, b_positions) = columns(&plan.beaten);
    let winners = winners_per_message(plan, messages.numbers.len());
    // `$1`-`$11` of both statements (`batch_inputs!`), then the full
    // one's `$12`-`$17`.
    let batch: [&(dyn ToSql + Sync); 11] = [
        &account_ids,
        &ids,
        &amounts,
        &chunk_of,
        &messages.import_ids,
        &messages.chunk_keys,
        &messages.account_keys,
        &messages.numbers,
        &positions,
        &messages.rows,
        &winners,
    ];
    if new_keys && plan.beaten.is_empty() {
        // A COPY's start waits for its answer, and the second starts only
        // once the first is through: started behind one that failed, in an
        // aborted transaction, it would be refused before its data.
        let rows = async {
            let sink = client.copy_in(statements.copy_new).await?;
            copy::send(sink, copy_rows(&plan.winners)).await?;
            client.copy_in(statements.copy_records).await
        };
        let copied = match rows.await {
            // The records and the commit in one round trip.
            Ok(sink) => commit(client, copy::send(sink, copy_records(messages, &winners))).await,
            Err(e) => Err(e),
        };
        let Err(e) = copied else {
            return Ok(Inserted::Done);
        };
        return match copy::CopyFailed::of(e) {
            copy::CopyFailed::Held => {
                guard::rollback(client).await;
                Ok(Inserted::Held)
            }
            copy::CopyFailed::Rows(e) | copy::CopyFailed::Lost(e) => {
                guard::rollback(client).await;
                Err(db_error("insert", &e))
            }
            // Nothing more on this connection: the caller's error drops it.
            copy::CopyFailed::OutOfStep(e) => Err(refusals.refused("insert", &e)),
        };
    }
    let beaten: [&(dyn ToSql + Sync); 6] = [
        &b_chunk_of,
        &b_account_ids,
        &b_ids,
        &b_positions,
        &b_amounts,
        &RECORDED_PER_IMPORT,
    ];
    let all: Vec<&(dyn ToSql + Sync)> = batch.iter().chain(&beaten).copied().collect();
    commit(client, client.execute(statements.insert, &all))
        .await
        .map_err(|e| db_error("insert", &e))?;
    Ok(Inserted::Done)
}

/// Runs `statement` and the commit after it in one round trip (what the
/// statement sends when first polled goes first); on any error, makes sure
/// the transaction is over.
async fn commit(
    client: &Client,
    statement: impl std::future::Future<Output = Result<u64, tokio_postgres::Error>>,
) -> Result<u64, tokio_postgres::Error> {
    // Sent in order (`try_join` polls the statement first, and a query is
    // sent when first polled): if the statement fails, the commit finds
    // the transaction aborted and rolls it back.
    let done = futures_util::future::try_join(statement, client.batch_execute("COMMIT")).await;
    match done {
        Ok((n, ())) => Ok(n),
        Err(e) => {
            guard::rollback(client).await;
            Err(e)
        }
    }
}

/// The rows in key order (so concurrent writers lock alike), as
/// [`COPY_NEW`] takes them.
fn copy_rows(rows: &[Row<'_>]) -> bytes::Bytes {
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_unstable_by_key(|r| (r.account_id, r.id));
    let mut data = copy::CopyText::with_capacity(rows.len() * 64);
    for row in sorted {
        data.int(row.account_id);
        data.int(row.id);
        data.text(Some(row.amount));
        data.text(Some(row.import_id));
        match row.position {
            Some(p) => data.int(p),
            None => data.text(None),
        }
        data.end_row();
    }
    data.into_bytes()
}

/// The batch's messages in key order (as [`INSERT`] locks them), as
/// [`COPY_RECORDS`] takes them: saved, with the rows each inserted.
fn copy_records(messages: &Messages<'_>, inserted: &[i64]) -> bytes::Bytes {
    let mut order: Vec<usize> = (0..messages.chunk_keys.len()).collect();
    order.sort_unstable_by_key(|&n| (messages.import_ids[n], messages.chunk_keys[n]));
    let mut data = copy::CopyText::with_capacity(order.len() * 128);
    for n in order {
        data.text(Some(messages.import_ids[n]));
        data.text(Some(messages.chunk_keys[n]));
        data.text(Some(messages.account_keys[n]));
        data.text(Some("saved"));
        data.int(messages.rows[n]);
        data.int(inserted[n]);
        data.int(0);
        data.int(0);
        data.end_row();
    }
    data.into_bytes()
}

/// One transaction of a batch, as the insert takes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row<'a> {
    account_id: i64,
    id: i64,
    amount: &'a str,
    /// Which message of the batch it came from.
    chunk: i32,
    import_id: &'a str,
    position: Option<i64>,
}

/// A transactions message's id is `<account key>/rows-<first>-<last>` (or `lines-…`).
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
