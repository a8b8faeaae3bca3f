//! The tables an import spec saves to: created when missing, checked when
//! they exist, never altered (each mismatch is said with its fix, for the
//! owner of the table to apply).

use sluice_spec::{
    sql::{self, FoundColumn, FoundTable},
    Spec,
};
use tokio_postgres::Client;

/// Columns sluice keeps in every table a spec saves to, with their types:
/// which import wrote a row, and where in that import's files it was (the
/// file line of the row and of each ancestor row, root first: arrays
/// compare element by element, so they order rows in file order at any
/// depth, which decides the row a key keeps under `keep-first` and
/// `keep-last`). NULL in rows sluice did not write.
pub const BOOKKEEPING: [(&str, &str); 2] = [
    ("_sluice_import_id", "text"),
    ("_sluice_position", "bigint[]"),
];

/// What became of one level's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableState {
    /// It did not exist and was created.
    Created,
    /// It exists and fits the spec.
    Fits,
    /// It exists and does not fit: each line a mismatch with its fix.
    Mismatched(Vec<String>),
    /// It is one of sluice's own tables.
    Reserved,
    /// It does not exist, and is created once every other table of the
    /// spec fits (nothing is created for a spec that is refused).
    Missing,
}

/// One table of a spec, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The level saving to it.
    pub level: String,
    /// The table, as the spec names it.
    pub table: String,
    /// What was found or done.
    pub state: TableState,
}

impl TableReport {
    /// Whether the table can take the spec's rows.
    pub fn fits(&self) -> bool {
        matches!(
            self.state,
            TableState::Created | TableState::Fits | TableState::Missing
        )
    }
}

impl std::fmt::Display for TableReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (level, table) = (&self.level, &self.table);
        match &self.state {
            TableState::Created => write!(f, "table {table} (level {level}) created"),
            TableState::Fits => write!(f, "table {table} (level {level}) fits"),
            TableState::Missing => write!(
                f,
                "table {table} (level {level}) is missing: it is created once the spec's other tables fit"
            ),
            TableState::Reserved => write!(
                f,
                "table {table} (level {level}) is one of sluice's own tables: save this level to another table"
            ),
            TableState::Mismatched(problems) => {
                write!(f, "table {table} (level {level}) does not fit the spec:")?;
                for problem in problems {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

/// Checks each existing table of `spec`; then, if every one fits, creates
/// the missing ones. The built-in spec's table is the saver's own (its
/// migrations make it), so it has nothing to check here.
pub async fn ensure_tables(
    db: &Client,
    spec: &Spec,
) -> Result<Vec<TableReport>, tokio_postgres::Error> {
    let mut reports = Vec::new();
    if spec.name == sluice_spec::BUILTIN {
        return Ok(reports);
    }
    for (level, l) in &spec.levels {
        let Some(table) = &l.table else { continue };
        let state = if sql::RESERVED_TABLES.contains(&sql::canonical_table(table)) {
            TableState::Reserved
        } else {
            let (schema, name) = split(table);
            match find(db, schema, name).await? {
                None => TableState::Missing,
                Some(found) => mismatches(spec, level, &found),
            }
        };
        reports.push(TableReport {
            level: level.clone(),
            table: table.clone(),
            state,
        });
    }
    if reports
        .iter()
        .any(|r| !matches!(r.state, TableState::Fits | TableState::Missing))
    {
        return Ok(reports);
    }
    let extra: Vec<String> = BOOKKEEPING
        .iter()
        .map(|(name, kind)| format!("{} {kind}", sql::quoted(name)))
        .collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    for report in reports
        .iter_mut()
        .filter(|r| r.state == TableState::Missing)
    {
        let create = sql::create_table(spec, &report.level, &extra)
            .expect("a level with a table has its statement");
        report.state = match db.batch_execute(&create).await {
            Ok(()) => TableState::Created,
            // Another `spec put` or `setup` created it meanwhile (a race
            // on the catalog shows as either error).
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE)
                    || e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                let (schema, name) = split(&report.table);
                check(db, spec, &report.level, schema, name).await?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(reports)
}

fn split(table: &str) -> (Option<&str>, &str) {
    match table.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    }
}

async fn check(
    db: &Client,
    spec: &Spec,
    level: &str,
    schema: Option<&str>,
    name: &str,
) -> Result<TableState, tokio_postgres::Error> {
    Ok(match find(db, schema, name).await? {
        Some(found) => mismatches(spec, level, &found),
        None => TableState::Mismatched(vec![format!("table {name} vanished while being checked")]),
    })
}

fn mismatches(spec: &Spec, level: &str, found: &FoundTable) -> TableState {
    let problems = sql::verify(spec, level, found, &BOOKKEEPING);
    if problems.is_empty() {
        TableState::Fits
    } else {
        TableState::Mismatched(problems)
    }
}

/// The table as the catalog describes it, or `None` if there is none (in
/// `schema`, or else on the search path).
async fn find(
    db: &Client,
    schema: Option<&str>,
    name: &str,
) -> Result<Option<FoundTable>, tokio_postgres::Error> {
    let qualified = match schema {
        Some(schema) => format!("{}.{}", sql::quoted(schema), sql::quoted(name)),
        None => sql::quoted(name),
    };
    let Some(row) = db
        .query_opt("SELECT to_regclass($1)::oid", &[&qualified])
        .await?
    else {
        return Ok(None);
    };
    let Some(oid) = row.get::<_, Option<u32>>(0) else {
        return Ok(None);
    };
    let columns = db
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod),
                    attnotnull AND NOT atthasdef AND attidentity = '' AND attgenerated = ''
               FROM pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped
              ORDER BY attnum",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| FoundColumn {
            name: r.get(0),
            type_name: r.get(1),
            required: r.get::<_, bool>(2),
        })
        .collect();
    let unique = db
        .query(
            "SELECT array_agg(a.attname::text ORDER BY k.n)
               FROM pg_index i
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL
                AND i.indexprs IS NULL AND i.indimmediate AND i.indisvalid
                AND k.n <= i.indnkeyatts
              GROUP BY i.indexrelid",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, Vec<String>>(0))
        .collect();
    Ok(Some(FoundTable { columns, unique }))
}
