//! Import specs: the small TOML file a user writes to say what their
//! nested CSV files look like and which tables their rows go to.
//!
//! A spec is a tree of **levels**. The root level is the file an import
//! names; each level lists its columns (header name, aliases, type, what an
//! empty field means), which of them hold the URLs of child files (another
//! level), and optionally the table its rows are saved to, with the key
//! that identifies a row and what to do when a row's key is seen again.
//! A level may inherit values from its ancestors' rows (each transaction
//! carries its account's id), across any number of levels.
//!
//! | module | what it holds |
//! | --- | --- |
//! | this one | the format ([`Spec`], [`Level`], [`Column`]) and [`Spec::parse`], which checks it |
//! | [`values`] | reading one CSV field as its column's type |
//! | [`header`] | finding each column in a file's header |
//! | [`infer`] | drafting a spec from samples of files (`sluice spec infer`) |
//! | [`rows`] | reading a file's records with its level: the table row, the child files, what each child inherits |
//! | [`sql`] | the tables a spec needs: `CREATE TABLE`, and checking a table that exists |
//!
//! The built-in spec `accounts` ([`Spec::accounts`]) is the import sluice
//! began with: an accounts CSV listing transactions CSVs.

#![warn(missing_docs)]

mod check;
pub mod header;
pub mod infer;
pub mod rows;
pub mod sql;
pub mod values;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use check::SpecError;

/// What version of the format a spec is written in; a spec names it as
/// `format = 1` (the default) so a later format can tell them apart.
pub const FORMAT: u32 = 1;

/// The name of the spec used when an import names none.
pub const BUILTIN: &str = "accounts";

/// A whole import spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The format version (1).
    #[serde(default = "format_one")]
    pub format: u32,
    /// What imports call it (`"spec": "orders"`): 1 to 64 characters of
    /// a-z, 0-9, `-` and `_`, starting with a letter.
    pub name: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The level of the file an import names.
    pub root: String,
    /// Fields that mean NULL in every column (unless a column says
    /// otherwise), such as `NA` or `\N`, when not quoted: a quoted `"NA"`
    /// is the text NA. The empty field is each column's `empty`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub null: Vec<String>,
    /// Every level, by name.
    pub levels: BTreeMap<String, Level>,
}

/// One kind of file: its columns, its child files and its table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// The columns sluice reads, in any order; a file's other columns are
    /// ignored.
    pub columns: Vec<Column>,
    /// Columns holding the URL of a child file (relative URLs resolve
    /// against this file's URL), each read with another level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
    /// The table this level's rows are saved to (`name` or
    /// `schema.name`); none: its rows only lead to child files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The table columns that identify a row (its unique key, the
    /// idempotency key of a save).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// What a row whose key is already in the table does.
    #[serde(default, skip_serializing_if = "Conflict::is_default")]
    pub conflict: Conflict,
    /// Values taken from an ancestor level's row: saved as columns of this
    /// level's table if it has one, and available to its children (a
    /// farther ancestor's value reaches a level only through its parent's
    /// `inherit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit: Vec<Inherit>,
    /// How this level's files are written: delimiter, quoting, header,
    /// encoding, number format. The defaults are RFC 4180 in UTF-8 with a
    /// header row.
    #[serde(default, skip_serializing_if = "Dialect::is_default")]
    pub csv: Dialect,
}

/// How one level's files are written (`[levels.<name>.csv]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Dialect {
    /// The field delimiter: `,` (default), `;`, `|` or a tab (`"\t"`).
    #[serde(default = "comma")]
    pub delimiter: String,
    /// The quote character (default `"`).
    #[serde(default = "double_quote")]
    pub quote: String,
    /// How a quote is written inside a quoted field: doubled (default) or
    /// after a backslash.
    #[serde(default)]
    pub escape: Escape,
    /// Whether the first row (after `skip_lines`) names the columns
    /// (default true). Without one, each column gives its `position`.
    #[serde(default = "yes")]
    pub header: bool,
    /// Lines to skip before the header (or the first row): a title, a
    /// generator's banner.
    #[serde(default)]
    pub skip_lines: u32,
    /// Lines starting with this are comments, not rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether spaces and tabs around unquoted fields are dropped.
    #[serde(default)]
    pub trim: bool,
    /// The files' character encoding.
    #[serde(default)]
    pub encoding: Encoding,
    /// The decimal separator of numbers in this level's files, `.`
    /// (default) or `,`; a column may say otherwise.
    #[serde(default = "point")]
    pub decimal: String,
    /// The thousands separator of numbers, if they have one: `,`, `.`, a
    /// space, `'` or `_`; a column may say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thousands: Option<String>,
    /// The time zone of timestamps written without an offset in this
    /// level's files: an IANA name (`Europe/Berlin`), `UTC`, or an offset
    /// (`+01:00`); a column may say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect {
            delimiter: comma(),
            quote: double_quote(),
            escape: Escape::Double,
            header: true,
            skip_lines: 0,
            comment: None,
            trim: false,
            encoding: Encoding::Utf8,
            decimal: point(),
            thousands: None,
            timezone: None,
        }
    }
}

impl Dialect {
    fn is_default(&self) -> bool {
        *self == Dialect::default()
    }
}

/// How a quote is written inside a quoted field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Escape {
    /// `""` (RFC 4180).
    #[default]
    Double,
    /// `\"`.
    Backslash,
}

/// A character encoding files may be in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Encoding {
    /// UTF-8, with or without a byte order mark.
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// UTF-16 with a byte order mark (either byte order).
    #[serde(rename = "utf-16")]
    Utf16,
    /// Windows-1252 (Western European; `€` is 0x80).
    #[serde(rename = "windows-1252")]
    Windows1252,
    /// ISO 8859-1.
    #[serde(rename = "latin-1")]
    Latin1,
}

/// One column of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Its name in the file's header (matched exactly).
    pub name: String,
    /// Other header names it may have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Its name in the table; by default `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// How its values are read and stored.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Whether a file's header must have it (default true); a column a
    /// file lacks is NULL in every row of that file.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub required: bool,
    /// What an empty field means (default `null`). A key column's empty
    /// field is always an error.
    #[serde(default, skip_serializing_if = "Empty::is_default")]
    pub empty: Empty,
    /// `numeric`: the most significant digits (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u32>,
    /// `numeric`: the most digits after the point (0 to `precision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<u32>,
    /// `date` and `timestamptz`: the format of values other than ISO 8601
    /// dates and RFC 3339 timestamps, in the `time` crate's format
    /// description syntax (`[day]/[month]/[year]`); a timestamp without an
    /// offset is in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `timestamptz`: the time zone of values written without an offset,
    /// instead of the level's `csv.timezone` (UTC when neither says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Whether it is saved in the level's table (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub save: bool,
    /// Its position in each record, from 1: how a column is found in
    /// files without a header row (`header = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Fields that mean NULL in this column, instead of the spec's `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null: Option<Vec<String>>,
    /// The decimal separator of this column's numbers, instead of the
    /// level's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimal: Option<String>,
    /// The thousands separator of this column's numbers, instead of the
    /// level's (`""`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thousands: Option<String>,
}

impl Column {
    /// Its name in the table.
    pub fn column_name(&self) -> &str {
        self.column.as_deref().unwrap_or(&self.name)
    }
}

/// The types a column may have, named as in PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// A 64-bit integer.
    Bigint,
    /// A 32-bit integer.
    Integer,
    /// An exact decimal (no exponent), with optional precision and scale.
    Numeric,
    /// Any text, as it is.
    Text,
    /// `true`/`false`, `t`/`f`, `yes`/`no`, `y`/`n`, `on`/`off`, `1`/`0`
    /// (any case).
    Boolean,
    /// An ISO 8601 date (`2026-12-03`), or `format`.
    Date,
    /// An RFC 3339 timestamp (`2026-12-03T14:05:00Z`), or `format`.
    Timestamptz,
    /// A UUID, with or without hyphens or braces.
    Uuid,
    /// A JSON document.
    Jsonb,
}

impl ColumnType {
    /// Its name in a spec and in PostgreSQL.
    pub const fn as_str(self) -> &'static str {
        match self {
            ColumnType::Bigint => "bigint",
            ColumnType::Integer => "integer",
            ColumnType::Numeric => "numeric",
            ColumnType::Text => "text",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Uuid => "uuid",
            ColumnType::Jsonb => "jsonb",
        }
    }
}

/// What an empty field means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Empty {
    /// NULL (for `text` too: an empty text field is NULL, not `''`).
    #[default]
    Null,
    /// The row is malformed.
    Error,
    /// The empty text `''`, kept apart from NULL (`text` columns only).
    #[serde(rename = "empty-string")]
    EmptyString,
}

impl Empty {
    fn is_default(&self) -> bool {
        *self == Empty::Null
    }
}

/// What a row whose key is already in the table does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Conflict {
    /// The earliest file position within an import wins; a row another
    /// import saved stays, and a different value is reported as a clash.
    #[default]
    KeepFirst,
    /// The latest file position within an import wins; a row another
    /// import saved stays, and a different value is reported as a clash.
    KeepLast,
    /// This import overwrites (the latest file position within it wins).
    Update,
    /// The row is dead-lettered as a conflict.
    Error,
}

impl Conflict {
    fn is_default(&self) -> bool {
        *self == Conflict::KeepFirst
    }

    /// Its name in a spec.
    pub const fn as_str(self) -> &'static str {
        match self {
            Conflict::KeepFirst => "keep-first",
            Conflict::KeepLast => "keep-last",
            Conflict::Update => "update",
            Conflict::Error => "error",
        }
    }
}

/// A column whose values are URLs of child files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Child {
    /// The column (its header `name`) holding the URL.
    pub url: String,
    /// The level each child file is read with.
    pub level: String,
}

/// A value a level takes from an ancestor's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Inherit {
    /// Its column in this level's table.
    pub column: String,
    /// `<level>.<column>`: an ancestor level and one of its columns (its
    /// table name, or an inherited column of that level).
    pub from: String,
}

fn format_one() -> u32 {
    FORMAT
}

fn comma() -> String {
    ",".into()
}

fn double_quote() -> String {
    "\"".into()
}

fn point() -> String {
    ".".into()
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A column of a level's table: its own saved columns and the inherited
/// ones, as the table holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn<'a> {
    /// Its name in the table.
    pub name: &'a str,
    /// The column it is read as (for an inherited one: the ancestor's).
    pub source: &'a Column,
    /// Whether it came from an ancestor.
    pub inherited: bool,
}

impl Spec {
    /// Reads and checks a spec; every problem found is one line of the
    /// error.
    pub fn parse(text: &str) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError::syntax(text, &e))?;
        spec.check()?;
        Ok(spec)
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a spec always serializes")
    }

    /// The built-in spec: an accounts CSV (`accountId,transactionsUrl`)
    /// whose rows each name a transactions CSV (`id,amount`), saved to the
    /// table `transactions` keyed by account and id.
    pub fn accounts() -> Spec {
        Spec::parse(ACCOUNTS).expect("the built-in spec is valid")
    }

    /// The level named `name`.
    pub fn level(&self, name: &str) -> Option<&Level> {
        self.levels.get(name)
    }

    /// Whether any column of `level` has a NULL marker (its own, or the
    /// spec's): then its files must say which fields were quoted.
    pub fn has_null_markers(&self, level: &Level) -> bool {
        level.columns.iter().any(|c| {
            c.null
                .as_ref()
                .unwrap_or(&self.null)
                .iter()
                .any(|m| !m.is_empty())
        })
    }

    /// The level whose files link to `level`'s, with the link.
    pub fn parent_of(&self, level: &str) -> Option<(&str, &Child)> {
        self.levels.iter().find_map(|(name, l)| {
            l.children
                .iter()
                .find(|c| c.level == level)
                .map(|c| (name.as_str(), c))
        })
    }

    /// `level`'s ancestors, nearest first.
    pub fn ancestors(&self, level: &str) -> Vec<&str> {
        let mut found = Vec::new();
        let mut at = level;
        while let Some((parent, _)) = self.parent_of(at) {
            if found.contains(&parent) || parent == level {
                break;
            }
            found.push(parent);
            at = parent;
        }
        found
    }

    /// The columns of `level`'s table, inherited ones first, in the order
    /// a saved row holds them; `None` for a level without a table or a
    /// reference that does not resolve (a spec that passed [`Spec::parse`]
    /// always resolves).
    pub fn table_columns(&self, level: &str) -> Option<Vec<TableColumn<'_>>> {
        let l = self.level(level)?;
        l.table.as_ref()?;
        let mut columns = Vec::new();
        for inherit in &l.inherit {
            let source = self.resolve_from(level, &inherit.from)?;
            columns.push(TableColumn {
                name: &inherit.column,
                source,
                inherited: true,
            });
        }
        for column in l.columns.iter().filter(|c| c.save) {
            columns.push(TableColumn {
                name: column.column_name(),
                source: column,
                inherited: false,
            });
        }
        Some(columns)
    }

    /// The column `from` (`<level>.<column>`) names, if that level is an
    /// ancestor of `level` and has that column (of its own, by table name,
    /// or inherited in turn).
    pub fn resolve_from(&self, level: &str, from: &str) -> Option<&Column> {
        self.resolve_within(level, from, self.levels.len())
    }

    /// [`Spec::resolve_from`] in at most `steps` hops: levels that form a
    /// cycle (a spec being checked) must not recurse for ever.
    fn resolve_within(&self, level: &str, from: &str, steps: usize) -> Option<&Column> {
        let (ancestor, column) = from.split_once('.')?;
        if steps == 0 || !self.ancestors(level).contains(&ancestor) {
            return None;
        }
        let a = self.level(ancestor)?;
        if let Some(own) = a.columns.iter().find(|c| c.column_name() == column) {
            return Some(own);
        }
        let inherited = a.inherit.iter().find(|i| i.column == column)?;
        self.resolve_within(ancestor, &inherited.from, steps - 1)
    }
}

/// The built-in spec's text, as `sluice spec show accounts` prints it.
pub const ACCOUNTS: &str = r#"# The built-in spec: what an import that names no spec reads.
format = 1
name = "accounts"
description = "An accounts CSV listing one transactions CSV per account; transactions saved by (account_id, id)."
root = "accounts"

[levels.accounts]
columns = [
    { name = "accountId", column = "account_id", type = "bigint", empty = "error" },
    { name = "transactionsUrl", type = "text", empty = "error" },
]
children = [{ url = "transactionsUrl", level = "transactions" }]

[levels.transactions]
table = "transactions"
key = ["account_id", "id"]
conflict = "keep-first"
inherit = [{ column = "account_id", from = "accounts.account_id" }]
columns = [
    { name = "id", type = "bigint" },
    { name = "amount", type = "numeric", empty = "error" },
]
"#;

/// The spec format as JSON Schema (draft 2020-12), committed beside the
/// message schemas as `import-spec.schema.json`: editors validate and
/// complete a spec with it (TOML tools read JSON Schema too).
#[cfg(feature = "schema")]
pub fn json_schema() -> String {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Spec>();
    schema.insert("$id".into(), format!("urn:sluice:spec:v{FORMAT}").into());
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_spec_reads_and_resolves() {
        let spec = Spec::accounts();
        assert_eq!(spec.name, BUILTIN);
        assert_eq!(spec.ancestors("transactions"), vec!["accounts"]);
        let columns: Vec<&str> = spec
            .table_columns("transactions")
            .unwrap()
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(columns, ["account_id", "id", "amount"]);
        assert!(spec.table_columns("accounts").is_none());
        // What `spec show` prints reads back as the same spec.
        assert_eq!(Spec::parse(&spec.to_toml()).unwrap(), spec);
    }

    #[test]
    fn the_reference_shows_the_builtin_spec_as_it_is() {
        let doc = include_str!("../../../docs/specs.md");
        let start = doc.find("```toml\n").expect("a TOML example") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("its end");
        assert_eq!(
            &doc[start..end],
            ACCOUNTS,
            "docs/specs.md shows another built-in spec"
        );
    }

    #[test]
    fn a_value_is_inherited_across_two_levels() {
        let spec = Spec::parse(
            r#"
            name = "shop"
            root = "customers"
            [levels.customers]
            table = "customers"
            key = ["customer_id"]
            columns = [{ name = "id", column = "customer_id", type = "uuid" },
                       { name = "orders", type = "text", save = false }]
            children = [{ url = "orders", level = "orders" }]
            [levels.orders]
            table = "orders"
            key = ["order_id"]
            inherit = [{ column = "customer_id", from = "customers.customer_id" }]
            columns = [{ name = "order_id", type = "bigint" },
                       { name = "lines", type = "text", save = false }]
            children = [{ url = "lines", level = "lines" }]
            [levels.lines]
            table = "order_lines"
            key = ["order_id", "line_no"]
            inherit = [{ column = "order_id", from = "orders.order_id" },
                       { column = "customer", from = "orders.customer_id" }]
            columns = [{ name = "line_no", type = "integer" }]
            "#,
        )
        .unwrap();
        assert_eq!(spec.ancestors("lines"), vec!["orders", "customers"]);
        let customer = spec.resolve_from("lines", "orders.customer_id").unwrap();
        assert_eq!(customer.kind, ColumnType::Uuid);
        let columns: Vec<&str> = spec
            .table_columns("lines")
            .unwrap()
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(columns, ["order_id", "customer", "line_no"]);
    }
}
