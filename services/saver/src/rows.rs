//! Saving the rows of imports run with a spec: each message's rows go to
//! the table its level names, keyed as the spec says, and a key met again
//! is settled by the table's conflict policy.
//!
//! Rows whose key the table does not hold are inserted at once, by every
//! writer side by side. The others are decided in the table's turn (a
//! transaction-scoped advisory lock per table), so each writer sees what
//! the one before it committed: who holds a key now, at which file
//! position, with which values. Every decision is made from that, exactly,
//! and a message delivered again finds its own rows in place and changes
//! nothing.

use std::collections::HashMap;

use sluice_messages::RowBatch;
use sluice_spec::{
    sql::{quoted, sql_type},
    ColumnType, Conflict,
};
use sluice_stage::{specs::StoredSpec, StageError};
use tokio_postgres::{types::ToSql, Transaction};

use crate::{
    account_key,
    copy::{CopyFailed, CopyRefusals},
    db_error, RECORDED_PER_IMPORT,
};

/// The advisory lock that gives writers of `table` their turns: a stable
/// 64-bit hash (FNV-1a) of its name, the same in every saver.
pub(crate) fn table_lock(table: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "sluice-table:".bytes().chain(table.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// One `rows.<table>` message and its key.
pub struct RowChunk {
    pub batch: RowBatch,
    pub key: String,
}

/// How one table is written, from the spec revision its rows were read
/// with.
struct Table {
    name: String,
    columns: Vec<String>,
    types: Vec<String>,
    /// Positions of the key columns in `columns`.
    key: Vec<usize>,
    /// Per key column, whether it is a number (compared by value).
    numeric_key: Vec<bool>,
    conflict: Conflict,
}

impl Table {
    fn of(spec: &StoredSpec, batch: &RowBatch) -> Result<Table, StageError> {
        let s = &spec.spec;
        let (Some(level), Some(columns)) = (s.level(&batch.level), s.table_columns(&batch.level))
        else {
            return Err(StageError::permanent(format!(
                "import spec {} revision {} has no level {:?} with a table",
                s.name, spec.revision, batch.level
            )));
        };
        let names: Vec<String> = columns.iter().map(|c| c.name.to_owned()).collect();
        if names != batch.columns || level.table.as_deref() != Some(batch.table.as_str()) {
            return Err(StageError::permanent(format!(
                "the message's table {} ({}) is not what import spec {} revision {} says of level {} \
                 ({:?}: {})",
                batch.table,
                batch.columns.join(", "),
                s.name,
                spec.revision,
                batch.level,
                level.table,
                names.join(", ")
            )));
        }
        let key: Vec<usize> = level
            .key
            .iter()
            .filter_map(|k| names.iter().position(|n| n == k))
            .collect();
        let numeric_key = key
            .iter()
            .map(|&k| {
                matches!(
                    columns[k].source.kind,
                    ColumnType::Numeric | ColumnType::Bigint | ColumnType::Integer
                )
            })
            .collect();
        Ok(Table {
            numeric_key,
            name: batch.table.clone(),
            types: columns.iter().map(|c| sql_type(c.source)).collect(),
            columns: names,
            key,
            conflict: level.conflict,
        })
    }

    /// The key's values of a row, as one text to compare: each part
    /// length-prefixed (so no text can pass for two parts), numbers in one
    /// form (`10.0` and `010` are the key `10`).
    fn key_of(&self, row: &[Option<String>]) -> String {
        let mut key = String::new();
        for (&k, numeric) in self.key.iter().zip(&self.numeric_key) {
            let value = row.get(k).and_then(|v| v.as_deref()).unwrap_or("");
            let value = if *numeric {
                canonical_number(value)
            } else {
                std::borrow::Cow::Borrowed(value)
            };
            key.push_str(&format!("{}:{value}", value.len()));
        }
        key
    }

    /// The key as people read it: `(customer_id, order_id) = (7, 12)`.
    fn shown_key(&self, row: &[Option<String>]) -> String {
        let names: Vec<&str> = self.key.iter().map(|&k| self.columns[k].as_str()).collect();
        let values: Vec<&str> = self
            .key
            .iter()
            .map(|&k| row.get(k).and_then(|v| v.as_deref()).unwrap_or(""))
            .collect();
        format!("({}) = ({})", names.join(", "), values.join(", "))
    }
}

/// What happened to the rows of one message.
#[derive(Default, Clone, Copy)]
struct Counts {
    inserted: i64,
    conflicts: i64,
    clashes: i64,
    updated: i64,
    refused: i64,
}

/// A row of the batch, where it comes from.
struct Candidate<'a> {
    values: &'a [Option<String>],
    position: Vec<i64>,
    line: u64,
    /// Which message of the group.
    chunk: usize,
}

/// A report of one row (a conflict, a clash, an update, a refusal).
struct Report {
    kind: &'static str,
    chunk: usize,
    line: u64,
    key: String,
}

/// A row the `error` policy refused, for its dead letter.
pub(crate) struct Refused {
    /// The message it came in.
    pub chunk_key: String,
    pub url: Option<String>,
    pub line: u64,
    /// Why, with the table and the key.
    pub reason: String,
}

/// Writes every message of `chunks` (all of one import and one table) in
/// `tx`, taking the table's turn for keys it holds; returns the rows the
/// `error` policy refused.
///
/// `new_keys` says whether the batch is tried as keys all new first (see
/// [`insert_new`]).
pub(crate) async fn write_group(
    tx: &Transaction<'_>,
    spec: &StoredSpec,
    import_id: &str,
    chunks: &[&RowChunk],
    new_keys: &mut crate::NewKeys,
) -> Result<Vec<Refused>, StageError> {
    let table = Table::of(spec, &chunks[0].batch)?;
    // A message recorded already was written whole: it changes nothing.
    let keys: Vec<&str> = chunks.iter().map(|c| c.key.as_str()).collect();
    let done: Vec<String> = tx
        .query(
            "SELECT chunk_key FROM import_chunks
             WHERE import_id = $1 AND chunk_key = ANY($2) AND state = 'saved'",
            &[&import_id, &keys],
        )
        .await
        .map_err(|e| db_error("read saved messages", &e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let chunks: Vec<&RowChunk> = chunks
        .iter()
        .copied()
        .filter(|c| !done.contains(&c.key))
        .collect();
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    for chunk in &chunks {
        let b = &chunk.batch;
        if b.lines.len() != b.rows.len() || b.rows.iter().any(|r| r.len() != table.columns.len()) {
            return Err(StageError::permanent(format!(
                "message {} has {} lines for {} rows, or rows without {} values",
                chunk.key,
                b.lines.len(),
                b.rows.len(),
                table.columns.len()
            )));
        }
    }
    let mut counts = vec![Counts::default(); chunks.len()];
    let mut reports = Vec::new();

    // Within the batch, each key once: the row the policy keeps.
    let later_wins = matches!(table.conflict, Conflict::KeepLast | Conflict::Update);
    let beaten_kind = match table.conflict {
        Conflict::Error => "refused",
        _ => "conflict",
    };
    let mut winners: Vec<Candidate> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (n, chunk) in chunks.iter().enumerate() {
        let b = &chunk.batch;
        for (values, &line) in b.rows.iter().zip(&b.lines) {
            let mut position: Vec<i64> = b.path.iter().map(|&l| l as i64).collect();
            position.push(line as i64);
            let row = Candidate {
                values,
                position,
                line,
                chunk: n,
            };
            let key = table.key_of(values);
            match index.get(&key) {
                None => {
                    index.insert(key, winners.len());
                    winners.push(row);
                }
                Some(&at) => {
                    let kept = &mut winners[at];
                    if row.position == kept.position {
                        continue;
                    }
                    let takes_over = (row.position > kept.position) == later_wins;
                    let loser = if takes_over {
                        std::mem::replace(kept, row)
                    } else {
                        row
                    };
                    count(&mut counts[loser.chunk], beaten_kind);
                    reports.push(Report {
                        kind: beaten_kind,
                        chunk: loser.chunk,
                        line: loser.line,
                        key: table.shown_key(loser.values),
                    });
                }
            }
        }
    }

    // Keys nobody holds are inserted first, without waiting for the
    // table's turn: a new key has no one to conflict with. (A writer
    // inserting the same key at the same time makes this one wait for its
    // commit, and the key is then held.)
    let all: Vec<&Candidate> = winners.iter().collect();
    let tried = new_keys.try_now();
    let all_new = tried && insert_new(tx, &table, import_id, &all, new_keys.refusals()).await?;
    if tried && !all_new {
        new_keys.held();
    }
    let fresh = match all_new {
        true => Default::default(),
        false => insert(tx, &table, import_id, &all, Mode::NewKeysOnly)
            .await
            .map_err(|e| write_error(&table, &e))?,
    };
    let mut left = Vec::new();
    for row in &winners {
        if all_new || fresh.contains(&row.position) {
            counts[row.chunk].inserted += 1;
        } else {
            left.push(row);
        }
    }
    if left.is_empty() {
        let recorded = record_reports(tx, &table, import_id, &chunks, &reports).await?;
        record_chunks(tx, &table, import_id, &chunks, &counts).await?;
        return Ok(refused(&table, &chunks, &reports[..recorded]));
    }
    // The rest meet rows already there: decided in the table's turn, so
    // each writer sees what the one before it committed.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&table_lock(&table.name)],
    )
    .await
    .map_err(|e| db_error("wait for the table's turn", &e))?;
    let held = held(tx, &table, &left).await?;
    let mut writes: Vec<&Candidate> = Vec::with_capacity(left.len());
    for (n, row) in left.iter().copied().enumerate() {
        let Some(holder) = held.get(&n) else {
            // Held a moment ago, gone now (a row deleted meanwhile).
            counts[row.chunk].inserted += 1;
            writes.push(row);
            continue;
        };
        let kind = if holder.owner.as_deref() == Some(import_id) {
            if holder.position.as_deref() == Some(row.position.as_slice()) {
                // This very row, saved by an earlier delivery.
                continue;
            }
            let ours_later = Some(row.position.as_slice()) > holder.position.as_deref();
            match table.conflict {
                // The first in file order stays, whichever committed first:
                // the other one is the repeat refused.
                Conflict::Error => {
                    if !ours_later {
                        writes.push(row);
                    }
                    "refused"
                }
                _ if ours_later == later_wins => {
                    writes.push(row);
                    "conflict"
                }
                _ => "conflict",
            }
        } else if !holder.differs {
            // Another import's row, with the same values: nothing to say.
            // Under `update` this import takes it over, so its own later
            // rows of the key are judged against it, whatever their order.
            if table.conflict == Conflict::Update {
                writes.push(row);
            }
            continue;
        } else {
            match table.conflict {
                Conflict::Update => {
                    writes.push(row);
                    "updated"
                }
                Conflict::Error => "refused",
                Conflict::KeepFirst | Conflict::KeepLast => "clash",
            }
        };
        count(&mut counts[row.chunk], kind);
        let mut key = table.shown_key(row.values);
        if let Some(at) = holder
            .position
            .as_ref()
            .filter(|_| holder.owner.as_deref() == Some(import_id))
        {
            // The other row of the pair, by its lines from the root file down.
            key.push_str(&format!("; also at lines {at:?}"));
        }
        reports.push(Report {
            kind,
            chunk: row.chunk,
            line: row.line,
            key,
        });
    }

    insert(tx, &table, import_id, &writes, Mode::Overwrite)
        .await
        .map_err(|e| write_error(&table, &e))?;
    let recorded = record_reports(tx, &table, import_id, &chunks, &reports).await?;
    record_chunks(tx, &table, import_id, &chunks, &counts).await?;
    Ok(refused(&table, &chunks, &reports[..recorded]))
}

/// The refused rows among `reports` (those recorded: as many letters as
/// names, all counted).
fn refused(table: &Table, chunks: &[&RowChunk], reports: &[Report]) -> Vec<Refused> {
    reports
        .iter()
        .filter(|r| r.kind == "refused")
        .map(|r| Refused {
            chunk_key: chunks[r.chunk].key.clone(),
            url: chunks[r.chunk].batch.url.clone(),
            line: r.line,
            reason: format!(
                "table {} holds key {} already (conflict policy error: the row is refused)",
                table.name, r.key
            ),
        })
        .collect()
}

/// A decimal in one form: no sign for zero, no leading zeros, no trailing
/// fractional zeros (`-010.50` is `-10.5`, `0.0` is `0`).
fn canonical_number(value: &str) -> std::borrow::Cow<'_, str> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value.strip_prefix('+').unwrap_or(value)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    let mut out = String::with_capacity(value.len());
    if negative && !(whole.is_empty() && fraction.is_empty()) {
        out.push('-');
    }
    out.push_str(if whole.is_empty() { "0" } else { whole });
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    std::borrow::Cow::Owned(out)
}

fn count(counts: &mut Counts, kind: &str) {
    match kind {
        "conflict" => counts.conflicts += 1,
        "clash" => counts.clashes += 1,
        "updated" => counts.updated += 1,
        _ => counts.refused += 1,
    }
}

/// The row holding a key, as it stands.
struct Holder {
    owner: Option<String>,
    position: Option<Vec<i64>>,
    /// Whether its values differ from the candidate's.
    differs: bool,
}

/// The rows of `table` holding the candidates' keys, by candidate.
async fn held(
    tx: &Transaction<'_>,
    table: &Table,
    rows: &[&Candidate<'_>],
) -> Result<HashMap<usize, Holder>, StageError> {
    let n = table.columns.len();
    let inputs: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let typed = |prefix: &str, i: usize| format!("{prefix}.c{i}::{}", table.types[i]);
    let on: Vec<String> = table
        .key
        .iter()
        .map(|&k| format!("t.{} = {}", quoted(&table.columns[k]), typed("i", k)))
        .collect();
    let theirs: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("t.{}", quoted(c)))
        .collect();
    let ours: Vec<String> = (0..n).map(|i| typed("i", i)).collect();
    let sql = format!(
        "SELECT i.n, t._sluice_import_id, t._sluice_position,
                ROW({}) IS DISTINCT FROM ROW({})
         FROM unnest({}) WITH ORDINALITY AS i({}, n)
         JOIN {} t ON {}",
        theirs.join(", "),
        ours.join(", "),
        inputs.join(", "),
        names.join(", "),
        quoted(&table.name),
        on.join(" AND ")
    );
    let columns = column_arrays(table, rows);
    let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(|c| c as _).collect();
    let found = tx
        .query(&sql, &params)
        .await
        .map_err(|e| db_error(&format!("read table {}", table.name), &e))?;
    Ok(found
        .iter()
        .map(|r| {
            let n: i64 = r.get(0);
            (
                (n - 1) as usize,
                Holder {
                    owner: r.get(1),
                    position: r.get(2),
                    differs: r.get(3),
                },
            )
        })
        .collect())
}

/// The rows' values column by column, as text arrays.
fn column_arrays<'a>(table: &Table, rows: &[&'a Candidate<'a>]) -> Vec<Vec<Option<&'a str>>> {
    (0..table.columns.len())
        .map(|i| rows.iter().map(|r| r.values[i].as_deref()).collect())
        .collect()
}

/// Writes `rows` as keys new to `table`, all or none: a COPY, in a
/// savepoint, skipping what `ON CONFLICT` costs per row and what an
/// `INSERT … SELECT` costs (see the saver's `COPY_NEW`). `false` when it
/// failed, nothing written: a key held already, or a value COPY takes
/// otherwise than a cast (a table made by hand with other types); the rows
/// then go the way of keys that may be held, which says what is wrong. A
/// COPY refused before its data ends the batch with an error that
/// replaces the connection ([`CopyFailed::OutOfStep`]).
async fn insert_new(
    tx: &Transaction<'_>,
    table: &Table,
    import_id: &str,
    rows: &[&Candidate<'_>],
    refusals: &CopyRefusals,
) -> Result<bool, StageError> {
    if rows.is_empty() {
        return Ok(true);
    }
    let columns: Vec<String> = table.columns.iter().map(|c| quoted(c)).collect();
    let sql = format!(
        "COPY {} ({}, _sluice_import_id, _sluice_position) FROM STDIN",
        quoted(&table.name),
        columns.join(", ")
    );
    let mut data = crate::copy::CopyText::with_capacity(rows.len() * 16 * (columns.len() + 2));
    for row in rows {
        for value in row.values {
            data.text(value.as_deref());
        }
        data.text(Some(import_id));
        let parts: Vec<String> = row.position.iter().map(|p| p.to_string()).collect();
        data.text(Some(&format!("{{{}}}", parts.join(","))));
        data.end_row();
    }
    // The savepoint and the statement in one round trip, the COPY's start
    // in a second, then the data and the release in a third.
    let (_, copy) =
        futures_util::future::try_join(tx.batch_execute("SAVEPOINT new_keys"), tx.prepare(&sql))
            .await
            .map_err(|e| write_error(table, &e))?;
    let copied = async {
        let sink = tx.copy_in(&copy).await?;
        let rows = crate::copy::send(sink, data.into_bytes());
        futures_util::future::try_join(rows, tx.batch_execute("RELEASE SAVEPOINT new_keys")).await
    };
    let Err(e) = copied.await else {
        return Ok(true);
    };
    match CopyFailed::of(e) {
        // A key held, or a value COPY reads otherwise than a cast (a table
        // made by hand with other types): `INSERT` says what is wrong.
        CopyFailed::Held | CopyFailed::Rows(_) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT new_keys; RELEASE SAVEPOINT new_keys")
                .await
                .map_err(|e| db_error("roll back to a savepoint", &e))?;
            Ok(false)
        }
        // Nothing more on this connection: the error drops it.
        CopyFailed::OutOfStep(e) => {
            Err(refusals.refused(&format!("write table {}", table.name), &e))
        }
        CopyFailed::Lost(e) => Err(write_error(table, &e)),
    }
}

fn write_error(table: &Table, e: &tokio_postgres::Error) -> StageError {
    db_error(&format!("write table {}", table.name), e)
}

/// How [`insert`] treats a key the table holds already.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Leaves it: only new keys are inserted.
    NewKeysOnly,
    /// Overwrites it (every row given won its key).
    Overwrite,
}

/// Writes `rows` to `table` as `mode` says; returns the positions of the
/// rows inserted as new keys (`NewKeysOnly`; positions are unique within
/// an import, so they name the rows).
async fn insert(
    tx: &Transaction<'_>,
    table: &Table,
    import_id: &str,
    rows: &[&Candidate<'_>],
    mode: Mode,
) -> Result<std::collections::HashSet<Vec<i64>>, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(Default::default());
    }
    let n = table.columns.len();
    let inputs: Vec<String> = (1..=n + 1).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let values: Vec<String> = (0..n)
        .map(|i| format!("i.c{i}::{}", table.types[i]))
        .collect();
    let columns: Vec<String> = table.columns.iter().map(|c| quoted(c)).collect();
    let key: Vec<String> = table.key.iter().map(|&k| columns[k].clone()).collect();
    let on_conflict = match mode {
        Mode::NewKeysOnly => "DO NOTHING RETURNING _sluice_position".to_owned(),
        Mode::Overwrite => {
            let mut set: Vec<String> = columns
                .iter()
                .enumerate()
                .filter(|(i, _)| !table.key.contains(i))
                .map(|(_, c)| format!("{c} = excluded.{c}"))
                .collect();
            set.push("_sluice_import_id = excluded._sluice_import_id".into());
            set.push("_sluice_position = excluded._sluice_position".into());
            format!("DO UPDATE SET {}", set.join(", "))
        }
    };
    let sql = format!(
        "INSERT INTO {} AS t ({}, _sluice_import_id, _sluice_position)
         SELECT {}, ${}, i.p::int8[]
         FROM unnest({}) AS i({}, p)
         ON CONFLICT ({}) {on_conflict}",
        quoted(&table.name),
        columns.join(", "),
        values.join(", "),
        n + 2,
        inputs.join(", "),
        names.join(", "),
        key.join(", "),
    );
    let mut arrays = column_arrays(table, rows);
    let positions: Vec<String> = rows
        .iter()
        .map(|r| {
            let parts: Vec<String> = r.position.iter().map(|p| p.to_string()).collect();
            format!("{{{}}}", parts.join(","))
        })
        .collect();
    arrays.push(positions.iter().map(|p| Some(p.as_str())).collect());
    let mut params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|c| c as _).collect();
    params.push(&import_id);
    let written = tx.query(&sql, &params).await?;
    Ok(written.iter().map(|r| r.get::<_, Vec<i64>>(0)).collect())
}

/// Records the rows reported, up to [`RECORDED_PER_IMPORT`] per import and
/// table (all are counted); returns how many of the first were recorded.
async fn record_reports(
    tx: &Transaction<'_>,
    table: &Table,
    import_id: &str,
    chunks: &[&RowChunk],
    reports: &[Report],
) -> Result<usize, StageError> {
    if reports.is_empty() {
        return Ok(0);
    }
    let recorded: i64 = tx
        .query_one(
            "SELECT count(*) FROM (SELECT FROM import_row_reports
                WHERE import_id = $1 AND table_name = $2 LIMIT $3) r",
            &[&import_id, &table.name, &RECORDED_PER_IMPORT],
        )
        .await
        .map_err(|e| db_error("count reports", &e))?
        .get(0);
    let room = (RECORDED_PER_IMPORT - recorded).max(0) as usize;
    let reports = &reports[..reports.len().min(room)];
    if reports.is_empty() {
        return Ok(0);
    }
    let kinds: Vec<&str> = reports.iter().map(|r| r.kind).collect();
    let files: Vec<&str> = reports
        .iter()
        .map(|r| account_key(&chunks[r.chunk].key))
        .collect();
    let lines: Vec<i64> = reports.iter().map(|r| r.line as i64).collect();
    let keys: Vec<&str> = reports.iter().map(|r| r.key.as_str()).collect();
    tx.execute(
        "INSERT INTO import_row_reports (import_id, table_name, kind, file_key, line, key)
         SELECT $1, $2, k, f, l, r FROM unnest($3::text[], $4::text[], $5::int8[], $6::text[]) AS u(k, f, l, r)
         ON CONFLICT DO NOTHING",
        &[&import_id, &table.name, &kinds, &files, &lines, &keys],
    )
    .await
    .map_err(|e| db_error("record reports", &e))?;
    Ok(reports.len())
}

/// Records each message as saved, with what became of its rows.
async fn record_chunks(
    tx: &Transaction<'_>,
    table: &Table,
    import_id: &str,
    chunks: &[&RowChunk],
    counts: &[Counts],
) -> Result<(), StageError> {
    let keys: Vec<&str> = chunks.iter().map(|c| c.key.as_str()).collect();
    let files: Vec<&str> = chunks.iter().map(|c| account_key(&c.key)).collect();
    let rows: Vec<i64> = chunks.iter().map(|c| c.batch.rows.len() as i64).collect();
    let column = |f: fn(&Counts) -> i64| counts.iter().map(f).collect::<Vec<i64>>();
    let (inserted, conflicts, clashes, updated, refused) = (
        column(|c| c.inserted),
        column(|c| c.conflicts),
        column(|c| c.clashes),
        column(|c| c.updated),
        column(|c| c.refused),
    );
    tx.execute(
        "INSERT INTO import_chunks AS k (import_id, chunk_key, account_key, state, transactions,
                                         inserted, conflicts, clashes, updated, refused, table_name)
         SELECT $1, u.* , $10
         FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[],
                     $8::int8[], $9::int8[], $11::int8[])
              AS u(chunk_key, account_key, state, transactions, inserted, conflicts, clashes, updated, refused)
         ON CONFLICT (import_id, chunk_key) DO UPDATE SET
             state = 'saved', transactions = excluded.transactions, inserted = excluded.inserted,
             conflicts = excluded.conflicts, clashes = excluded.clashes,
             updated = excluded.updated, refused = excluded.refused, table_name = excluded.table_name
             WHERE k.state = 'failed'",
        &[
            &import_id,
            &keys,
            &files,
            &vec!["saved"; chunks.len()],
            &rows,
            &inserted,
            &conflicts,
            &clashes,
            &updated,
            &table.name,
            &refused,
        ],
    )
    .await
    .map_err(|e| db_error("record messages", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_equal_in_postgresql_are_one_key() {
        for (value, canonical) in [
            ("10", "10"),
            ("10.0", "10"),
            ("010", "10"),
            ("-010.50", "-10.5"),
            ("+3", "3"),
            ("0.0", "0"),
            ("-0", "0"),
            ("0.25", "0.25"),
        ] {
            assert_eq!(super::canonical_number(value), canonical, "{value}");
        }
    }
}
