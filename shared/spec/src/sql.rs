//! The tables a spec needs: the `CREATE TABLE` of a missing one, and the
//! check of one that exists (its columns, their types, and a unique index
//! on the key), each mismatch in one line with its fix. Pure functions:
//! the caller reads the catalog and runs the statements.

use crate::{ColumnType, Spec, TableColumn};

/// Names sluice writes into SQL: lowercase letters, digits and `_`, not
/// starting with a digit, at most 63 bytes (PostgreSQL's limit, past which
/// it would silently truncate). Lowercase, so a name means the same table
/// or column quoted (as sluice writes it) and unquoted (as people do).
pub fn check_identifier(name: &str) -> Result<(), InvalidName> {
    let mut bytes = name.bytes();
    let first_ok = matches!(bytes.next(), Some(b'a'..=b'z' | b'_'));
    if !first_ok
        || name.len() > 63
        || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(InvalidName(
            "use 1 to 63 characters of lowercase letters, digits and _, not starting with a digit",
        ));
    }
    Ok(())
}

/// A table or column name sluice will not write into SQL, and the rule it
/// breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidName(&'static str);

impl std::fmt::Display for InvalidName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidName {}

/// Tables of sluice's own (the saver's schema): no spec saves to them.
pub const RESERVED_TABLES: [&str; 10] = [
    "transactions",
    "imports",
    "import_accounts",
    "import_chunks",
    "import_failures",
    "import_conflicts",
    "import_clashes",
    "import_row_reports",
    "import_file_versions",
    "sluice_migrations",
];

/// Columns sluice keeps in the tables it saves to start with this.
pub const RESERVED_PREFIX: &str = "_sluice_";

/// The table a name means for comparing two: `public.x` and `x` are one.
pub fn canonical_table(name: &str) -> &str {
    name.strip_prefix("public.").unwrap_or(name)
}

/// A table name: `name` or `schema.name`, each an identifier.
pub fn check_table_name(name: &str) -> Result<(), InvalidName> {
    name.split('.')
        .take(3)
        .enumerate()
        .try_for_each(|(i, part)| match i {
            0 | 1 => check_identifier(part),
            _ => Err(InvalidName("write name or schema.name")),
        })
}

/// `name` quoted for SQL, schema and table alike (`"shop"."orders"`).
pub fn quoted(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The PostgreSQL type a column is stored as.
pub fn sql_type(column: &crate::Column) -> String {
    match (column.kind, column.precision) {
        (ColumnType::Numeric, Some(p)) => format!("numeric({p},{})", column.scale.unwrap_or(0)),
        (kind, _) => kind.as_str().to_owned(),
    }
}

/// The statements that create `level`'s table with its columns (key
/// columns NOT NULL), `extra` column definitions the caller keeps there
/// (bookkeeping), and a unique index on the key. `None` for a level
/// without a table.
pub fn create_table(spec: &Spec, level: &str, extra: &[&str]) -> Option<String> {
    let l = spec.level(level)?;
    let table = l.table.as_deref()?;
    let columns = spec.table_columns(level)?;
    let mut definitions: Vec<String> = columns
        .iter()
        .map(|c| {
            let not_null = if l.key.iter().any(|k| k == c.name) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{not_null}", quoted(c.name), sql_type(c.source))
        })
        .collect();
    definitions.extend(extra.iter().map(|e| e.to_string()));
    let key: Vec<String> = l.key.iter().map(|k| quoted(k)).collect();
    Some(format!(
        "CREATE TABLE {} (\n    {},\n    UNIQUE ({})\n)",
        quoted(table),
        definitions.join(",\n    "),
        key.join(", ")
    ))
}

/// A table as the catalog describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundTable {
    /// Its columns.
    pub columns: Vec<FoundColumn>,
    /// The column lists of its unique indexes and constraints that `ON
    /// CONFLICT` can use: valid, not deferrable, not partial, no expression
    /// (their key columns only, not `INCLUDE` ones).
    pub unique: Vec<Vec<String>>,
}

/// One column of an existing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundColumn {
    /// Its name.
    pub name: String,
    /// Its type as `format_type` says it (`numeric(12,2)`, `timestamp
    /// with time zone`).
    pub type_name: String,
    /// NOT NULL without a default: every insert must give it.
    pub required: bool,
}

/// What `format_type` calls a type the spec names otherwise.
fn catalog_name(kind: ColumnType) -> &'static str {
    match kind {
        ColumnType::Timestamptz => "timestamp with time zone",
        other => other.as_str(),
    }
}

fn type_matches(column: &crate::Column, found: &str) -> bool {
    let found = found.to_ascii_lowercase();
    match column.kind {
        // Unconstrained numeric in the spec takes any numeric column; a
        // declared precision must match, or the column be unconstrained.
        ColumnType::Numeric => {
            found == "numeric"
                || column.precision.is_none() && found.starts_with("numeric(")
                || found == sql_type(column)
        }
        ColumnType::Text => found == "text" || found.starts_with("character varying"),
        kind => found == catalog_name(kind),
    }
}

/// The mismatches between `level`'s table as the spec describes it and
/// the table `found`, each in one line naming the table, the column and
/// the fix; `extra` are the bookkeeping columns the caller needs there
/// (name and type, as `format_type` says it). Empty: the table fits.
pub fn verify(spec: &Spec, level: &str, found: &FoundTable, extra: &[(&str, &str)]) -> Vec<String> {
    let (Some(l), Some(columns)) = (spec.level(level), spec.table_columns(level)) else {
        return Vec::new();
    };
    let table = l.table.as_deref().unwrap_or_default();
    let q = quoted(table);
    let mut problems = Vec::new();
    let find = |name: &str| found.columns.iter().find(|c| c.name == name);
    for TableColumn { name, source, .. } in &columns {
        match find(name) {
            None => problems.push(format!(
                "table {table} has no column {name} ({}): ALTER TABLE {q} ADD COLUMN {} {}, or leave it out of the spec (save = false)",
                sql_type(source),
                quoted(name),
                sql_type(source)
            )),
            Some(c) if !type_matches(source, &c.type_name) => problems.push(format!(
                "table {table} column {name} is {}, the spec says {}: change the column's type in the spec, or ALTER TABLE {q} ALTER COLUMN {} TYPE {}",
                c.type_name,
                sql_type(source),
                quoted(name),
                sql_type(source)
            )),
            Some(_) => {}
        }
    }
    for (name, kind) in extra {
        match find(name) {
            None => problems.push(format!(
                "table {table} has no column {name}, which sluice keeps there: ALTER TABLE {q} ADD COLUMN {} {kind}",
                quoted(name)
            )),
            Some(c) if !c.type_name.eq_ignore_ascii_case(kind) => problems.push(format!(
                "table {table} column {name}, which sluice keeps there, is {}, not {kind}: ALTER TABLE {q} ALTER COLUMN {} TYPE {kind}",
                c.type_name,
                quoted(name)
            )),
            Some(_) => {}
        }
    }
    for c in &found.columns {
        let filled =
            columns.iter().any(|t| t.name == c.name) || extra.iter().any(|(n, _)| *n == c.name);
        if c.required && !filled {
            problems.push(format!(
                "table {table} column {} is NOT NULL without a default, and the spec does not fill it: add it to the spec, give it a default, or drop NOT NULL",
                c.name
            ));
        }
    }
    let mut key: Vec<&str> = l.key.iter().map(String::as_str).collect();
    key.sort_unstable();
    let covered = found.unique.iter().any(|u| {
        let mut u: Vec<&str> = u.iter().map(String::as_str).collect();
        u.sort_unstable();
        u == key
    });
    if !covered {
        let list: Vec<String> = l.key.iter().map(|k| quoted(k)).collect();
        problems.push(format!(
            "table {table} has no unique index on its key ({}): CREATE UNIQUE INDEX ON {q} ({})",
            l.key.join(", "),
            list.join(", ")
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::parse(
            r#"
            name = "shop"
            root = "orders"
            [levels.orders]
            table = "shop.orders"
            key = ["id"]
            columns = [
                { name = "id", type = "bigint" },
                { name = "total", type = "numeric", precision = 12, scale = 2 },
                { name = "placed", type = "timestamptz" },
            ]"#,
        )
        .unwrap()
    }

    fn column(name: &str, type_name: &str) -> FoundColumn {
        FoundColumn {
            name: name.into(),
            type_name: type_name.into(),
            required: false,
        }
    }

    #[test]
    fn a_missing_table_is_created_with_its_key() {
        let sql =
            create_table(&spec(), "orders", &["\"_sluice_import_id\" text NOT NULL"]).unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE \"shop\".\"orders\" (\n    \"id\" bigint NOT NULL,\n    \"total\" numeric(12,2),\n    \"placed\" timestamptz,\n    \"_sluice_import_id\" text NOT NULL,\n    UNIQUE (\"id\")\n)"
        );
    }

    #[test]
    fn a_fitting_table_with_extra_columns_passes() {
        let found = FoundTable {
            columns: vec![
                column("id", "bigint"),
                column("total", "numeric(12,2)"),
                column("placed", "timestamp with time zone"),
                column("note", "text"),
                column("_sluice_import_id", "text"),
            ],
            unique: vec![vec!["id".into()]],
        };
        assert_eq!(
            verify(&spec(), "orders", &found, &[("_sluice_import_id", "text")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_mismatch_is_one_line_with_its_fix() {
        let mut required = column("created_by", "text");
        required.required = true;
        let found = FoundTable {
            columns: vec![
                column("id", "integer"),
                column("total", "numeric(10,2)"),
                required,
            ],
            unique: vec![vec!["id".into(), "total".into()]],
        };
        let problems = verify(&spec(), "orders", &found, &[]);
        assert_eq!(
            problems,
            [
                "table shop.orders column id is integer, the spec says bigint: change the column's type in the spec, or ALTER TABLE \"shop\".\"orders\" ALTER COLUMN \"id\" TYPE bigint",
                "table shop.orders column total is numeric(10,2), the spec says numeric(12,2): change the column's type in the spec, or ALTER TABLE \"shop\".\"orders\" ALTER COLUMN \"total\" TYPE numeric(12,2)",
                "table shop.orders has no column placed (timestamptz): ALTER TABLE \"shop\".\"orders\" ADD COLUMN \"placed\" timestamptz, or leave it out of the spec (save = false)",
                "table shop.orders column created_by is NOT NULL without a default, and the spec does not fill it: add it to the spec, give it a default, or drop NOT NULL",
                "table shop.orders has no unique index on its key (id): CREATE UNIQUE INDEX ON \"shop\".\"orders\" (\"id\")",
            ]
        );
    }

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert!(check_identifier("order_lines").is_ok());
        assert!(check_identifier("accountId").is_err());
        assert!(check_identifier("1st").is_err());
        assert!(check_identifier("a-b").is_err());
        assert!(check_identifier(&"x".repeat(64)).is_err());
        assert!(check_table_name("shop.orders").is_ok());
        assert!(check_table_name("a.b.c").is_err());
        assert_eq!(quoted("shop.orders"), "\"shop\".\"orders\"");
    }
}
