//! Everything a spec must satisfy beyond its syntax, each problem said in
//! one line that names the level, the column and the fix.

use std::collections::{BTreeSet, HashSet};

use crate::{sql, ColumnType, Spec, FORMAT};

/// Why a spec was refused: one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Each problem, in one line.
    pub problems: Vec<String>,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for SpecError {}

impl SpecError {
    /// A TOML that does not read as a spec, said in one line with its
    /// line number.
    pub(crate) fn syntax(text: &str, e: &toml::de::Error) -> SpecError {
        let message = e.message().trim().replace('\n', " ");
        let problem = match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {message}")
            }
            None => message,
        };
        SpecError {
            problems: vec![problem],
        }
    }
}

/// A spec's name: what an import request and a bucket key carry.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Spec {
    pub(crate) fn check(&self) -> Result<(), SpecError> {
        let mut problems = Vec::new();
        let mut say = |p: String| problems.push(p);
        if self.format != FORMAT {
            say(format!(
                "format {} is not one this sluice reads: write format = {FORMAT}",
                self.format
            ));
        }
        if !valid_name(&self.name) {
            say(format!(
                "name {:?} is invalid: use 1 to 64 characters of a-z 0-9 - _, starting with a letter",
                self.name
            ));
        }
        if !self.levels.contains_key(&self.root) {
            say(format!(
                "root level {:?} is not among the levels ({})",
                self.root,
                self.level_names()
            ));
        }
        self.check_tree(&mut say);
        let mut tables = HashSet::new();
        for (name, level) in &self.levels {
            if !valid_name(name) {
                say(format!(
                    "level {name:?}: the name is invalid: use 1 to 64 characters of a-z 0-9 - _, starting with a letter"
                ));
            }
            self.check_level(name, level, &mut say);
            if let Some(table) = &level.table {
                // The built-in spec's table is the saver's own.
                if self.name != crate::BUILTIN
                    && sql::RESERVED_TABLES.contains(&sql::canonical_table(table))
                {
                    say(format!(
                        "level {name}: table {table} is one of sluice's own tables: save this level to another table"
                    ));
                }
                if !tables.insert(sql::canonical_table(table).to_owned()) {
                    say(format!(
                        "level {name}: table {table} is already the table of another level: give each level its own table"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError { problems })
        }
    }

    fn level_names(&self) -> String {
        self.levels.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Every level but the root is the child of exactly one level, and
    /// each is reached from the root without coming back to itself.
    fn check_tree(&self, say: &mut impl FnMut(String)) {
        let mut parents: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (name, level) in &self.levels {
            for child in &level.children {
                if !self.levels.contains_key(&child.level) {
                    say(format!(
                        "level {name}: child level {:?} (column {}) is not among the levels ({})",
                        child.level,
                        child.url,
                        self.level_names()
                    ));
                    continue;
                }
                parents.entry(&child.level).or_default().push(name);
            }
        }
        for (child, of) in &parents {
            if of.len() > 1 {
                say(format!(
                    "level {child} is the child of more than one level ({}): a level has one parent; declare a copy of it under another name",
                    of.join(", ")
                ));
            }
        }
        if parents.contains_key(self.root.as_str()) {
            say(format!(
                "the root level {} is also a child level ({}): that is a cycle",
                self.root,
                parents[self.root.as_str()].join(", ")
            ));
        }
        // Walk from the root; a level met twice closes a cycle, a level
        // never met is unreachable.
        let mut seen = BTreeSet::new();
        let mut stack = vec![(self.root.as_str(), vec![self.root.as_str()])];
        while let Some((at, path)) = stack.pop() {
            if !seen.insert(at) {
                continue;
            }
            let Some(level) = self.levels.get(at) else {
                continue;
            };
            for child in &level.children {
                if path.contains(&child.level.as_str()) {
                    if child.level != self.root {
                        say(format!(
                            "levels {} -> {} form a cycle: a file cannot be its own ancestor",
                            path.join(" -> "),
                            child.level
                        ));
                    }
                    continue;
                }
                let mut next = path.clone();
                next.push(&child.level);
                stack.push((&child.level, next));
            }
        }
        for name in self.levels.keys() {
            if !seen.contains(name.as_str()) && self.levels.contains_key(&self.root) {
                let in_cycle = parents.contains_key(name.as_str());
                if !in_cycle {
                    say(format!(
                        "level {name} is never reached from the root level {}: list it in a level's children, or remove it",
                        self.root
                    ));
                }
            }
        }
    }

    fn check_level(&self, name: &str, level: &crate::Level, say: &mut impl FnMut(String)) {
        if level.columns.is_empty() {
            say(format!(
                "level {name}: no columns: list the columns to read"
            ));
        }
        check_dialect(name, &level.csv, say);
        for column in &level.columns {
            let decimal = column.decimal.as_deref().unwrap_or(&level.csv.decimal);
            let thousands = match &column.thousands {
                Some(t) => Some(t.as_str()).filter(|t| !t.is_empty()),
                None => level.csv.thousands.as_deref(),
            };
            // A column that sets its own separators must not clash with the rest.
            if (column.decimal.is_some() || column.thousands.is_some())
                && thousands == Some(decimal)
            {
                say(format!(
                        "level {name}, column {}: the decimal and thousands separators are both {decimal:?}",
                        column.name
                    ));
            }
        }
        let mut positions = HashSet::new();
        for column in &level.columns {
            match (level.csv.header, column.position) {
                (true, Some(_)) => say(format!(
                    "level {name}, column {}: a position is for files without a header row (csv.header = false)",
                    column.name
                )),
                (false, None) => say(format!(
                    "level {name}, column {}: files of this level have no header row: give its position (from 1)",
                    column.name
                )),
                (false, Some(0)) => say(format!(
                    "level {name}, column {}: positions count from 1",
                    column.name
                )),
                (false, Some(p)) if !positions.insert(p) => say(format!(
                    "level {name}, column {}: position {p} is given to two columns",
                    column.name
                )),
                _ => {}
            }
        }
        let mut headers = HashSet::new();
        let mut names = HashSet::new();
        for column in &level.columns {
            for header in std::iter::once(&column.name).chain(&column.aliases) {
                if header.is_empty() {
                    say(format!("level {name}: a column has an empty header name"));
                } else if !headers.insert(header.trim().to_ascii_lowercase()) {
                    say(format!(
                        "level {name}: header name {header:?} is given to two columns: each header name (and alias) may name one column"
                    ));
                }
            }
            self.check_column(name, column, level.table.is_some(), say);
            if !names.insert(column.column_name()) {
                say(format!(
                    "level {name}: column name {} is given twice: rename one with `column = \"...\"`",
                    column.column_name()
                ));
            }
        }
        for child in &level.children {
            if let Some(c) = level.columns.iter().find(|c| c.name == child.url) {
                if c.kind != ColumnType::Text {
                    say(format!(
                        "level {name}: child URL column {} is {}: a URL column is text",
                        c.name,
                        c.kind.as_str()
                    ));
                }
            }
            if !level.columns.iter().any(|c| c.name == child.url) {
                say(format!(
                    "level {name}: child URL column {:?} is not one of its columns ({})",
                    child.url,
                    level
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        for inherit in &level.inherit {
            if !names.insert(&inherit.column) {
                say(format!(
                    "level {name}: inherited column {} is also one of its own columns: rename one",
                    inherit.column
                ));
            }
            if let Err(why) = sql::check_identifier(&inherit.column) {
                say(format!(
                    "level {name}: inherited column {}: {why}",
                    inherit.column
                ));
            } else if inherit.column.starts_with(sql::RESERVED_PREFIX) {
                say(format!(
                    "level {name}: inherited column {}: names starting with {} are sluice's own",
                    inherit.column,
                    sql::RESERVED_PREFIX
                ));
            }
            match inherit.from.split_once('.') {
                None => say(format!(
                    "level {name}: inherit from {:?}: write <level>.<column>",
                    inherit.from
                )),
                Some((ancestor, _)) if !self.ancestors(name).contains(&ancestor) => say(format!(
                    "level {name}: inherit from {:?}: {ancestor} is not an ancestor of {name} (its ancestors: {})",
                    inherit.from,
                    none_if_empty(&self.ancestors(name).join(", "))
                )),
                Some((ancestor, column)) if self.resolve_from(name, &inherit.from).is_none() => {
                    say(format!(
                        "level {name}: inherit from {:?}: level {ancestor} has no column {column}",
                        inherit.from
                    ))
                }
                // Values come down one file at a time: a farther ancestor's
                // must be carried by the parent level.
                Some((ancestor, _)) => {
                    let parent = self.parent_of(name).map(|(p, _)| p);
                    let source = self.resolve_from(name, &inherit.from);
                    let carried = parent == Some(ancestor)
                        || parent.and_then(|p| self.level(p)).is_some_and(|p| {
                            p.inherit.iter().any(|i| {
                                let via = self.resolve_from(parent.unwrap_or_default(), &i.from);
                                matches!((via, source), (Some(a), Some(b)) if std::ptr::eq(a, b))
                            })
                        });
                    if !carried {
                        say(format!(
                            "level {name}: inherit from {:?}: its parent level {} does not carry that value; inherit it there too and take it from {}.<that column>",
                            inherit.from,
                            parent.unwrap_or("(none)"),
                            parent.unwrap_or("(none)")
                        ));
                    }
                }
            }
        }
        match &level.table {
            None => {
                if !level.key.is_empty() {
                    say(format!(
                        "level {name}: a key without a table: add `table = \"...\"` or remove the key"
                    ));
                }
            }
            Some(table) => {
                if let Err(why) = sql::check_table_name(table) {
                    say(format!("level {name}: table {table:?}: {why}"));
                }
                if level.key.is_empty() {
                    say(format!(
                        "level {name}: table {table} has no key: list the columns that identify a row, e.g. key = [\"id\"]"
                    ));
                }
                // Named even where an inherited column does not resolve
                // (said above), so one mistake is one line.
                let columns: Vec<&str> = level
                    .inherit
                    .iter()
                    .map(|i| i.column.as_str())
                    .chain(
                        level
                            .columns
                            .iter()
                            .filter(|c| c.save)
                            .map(|c| c.column_name()),
                    )
                    .collect();
                for key in &level.key {
                    if !columns.contains(&key.as_str()) {
                        say(format!(
                            "level {name}: key column {key} is not a column of table {table} ({})",
                            columns.join(", ")
                        ));
                    } else if let Some(own) = level
                        .columns
                        .iter()
                        .find(|c| c.save && c.column_name() == key)
                    {
                        if !own.required {
                            say(format!(
                                "level {name}: key column {key} is optional (required = false): a key column must be in every file"
                            ));
                        }
                    } else if let Some(inherit) = level.inherit.iter().find(|i| i.column == *key) {
                        // An inherited key is only as present as its source.
                        if let Some(source) = self.resolve_from(name, &inherit.from) {
                            if !source.required {
                                say(format!(
                                    "level {name}: key column {key} comes from {}, which is optional (required = false): a column a key comes from must be in every file",
                                    inherit.from
                                ));
                            }
                        }
                    }
                }
                let mut keys = HashSet::new();
                for key in &level.key {
                    if !keys.insert(key) {
                        say(format!("level {name}: key column {key} is listed twice"));
                    }
                }
            }
        }
    }

    fn check_column(
        &self,
        level: &str,
        column: &crate::Column,
        saved: bool,
        say: &mut impl FnMut(String),
    ) {
        let at = format!("level {level}, column {}", column.name);
        if saved && column.save {
            if let Err(why) = sql::check_identifier(column.column_name()) {
                say(format!(
                    "{at}: table column {:?}: {why} (name it with `column = \"...\"`)",
                    column.column_name()
                ));
            } else if column.column_name().starts_with(sql::RESERVED_PREFIX) {
                say(format!(
                    "{at}: table column {}: names starting with {} are sluice's own",
                    column.column_name(),
                    sql::RESERVED_PREFIX
                ));
            }
        }
        let numeric = column.kind == ColumnType::Numeric;
        match (column.precision, column.scale) {
            (Some(_), _) | (_, Some(_)) if !numeric => say(format!(
                "{at}: precision and scale are for numeric columns, not {}",
                column.kind.as_str()
            )),
            (None, Some(_)) => say(format!("{at}: a scale needs a precision")),
            (Some(p), _) if !(1..=1000).contains(&p) => {
                say(format!("{at}: precision {p} is outside 1 to 1000"))
            }
            (Some(p), Some(s)) if s > p => {
                say(format!("{at}: scale {s} is larger than precision {p}"))
            }
            _ => {}
        }
        let number = matches!(
            column.kind,
            ColumnType::Bigint | ColumnType::Integer | ColumnType::Numeric
        );
        if (column.decimal.is_some() || column.thousands.is_some()) && !number {
            say(format!(
                "{at}: decimal and thousands separators are for number columns, not {}",
                column.kind.as_str()
            ));
        }
        if let Some(d) = &column.decimal {
            if !DECIMALS.contains(&d.as_str()) {
                say(format!("{at}: decimal {d:?} is not one of \".\" \",\""));
            }
        }
        if let Some(t) = &column.thousands {
            if !t.is_empty() && !THOUSANDS.contains(&t.as_str()) {
                say(format!(
                    "{at}: thousands {t:?} is not one of \",\" \".\" \" \" \"'\" \"_\" (or \"\": none)"
                ));
            }
        }
        if column.empty == crate::Empty::EmptyString && column.kind != ColumnType::Text {
            say(format!(
                "{at}: empty = \"empty-string\" is for text columns, not {}",
                column.kind.as_str()
            ));
        }
        if let Some(zone) = &column.timezone {
            match column.kind {
                ColumnType::Timestamptz => {
                    if let Err(e) = crate::values::time_zone(zone) {
                        say(format!("{at}: {e}"));
                    }
                }
                other => say(format!(
                    "{at}: a timezone is for timestamptz columns, not {}",
                    other.as_str()
                )),
            }
        }
        if let Some(format) = &column.format {
            match column.kind {
                ColumnType::Date | ColumnType::Timestamptz => {
                    if let Err(e) = time::format_description::parse_borrowed::<2>(format) {
                        say(format!(
                            "{at}: format {format:?} is not a format description: {e}"
                        ));
                    }
                }
                other => say(format!(
                    "{at}: a format is for date and timestamptz columns, not {}",
                    other.as_str()
                )),
            }
        }
    }
}

const DELIMITERS: [&str; 4] = [",", ";", "\t", "|"];
const DECIMALS: [&str; 2] = [".", ","];
const THOUSANDS: [&str; 5] = [",", ".", " ", "'", "_"];

/// A level's dialect: each setting one of the forms files really come in.
fn check_dialect(name: &str, csv: &crate::Dialect, say: &mut impl FnMut(String)) {
    if let Some(Err(e)) = csv.timezone.as_deref().map(crate::values::time_zone) {
        say(format!("level {name}: csv.{e}"));
    }
    if !DELIMITERS.contains(&csv.delimiter.as_str()) {
        say(format!(
            "level {name}: csv.delimiter {:?} is not one of \",\" \";\" \"\\t\" \"|\"",
            csv.delimiter
        ));
    }
    let one_ascii = |s: &str| s.len() == 1 && s.bytes().all(|b| b.is_ascii_graphic());
    if !one_ascii(&csv.quote) || csv.quote == csv.delimiter {
        say(format!(
            "level {name}: csv.quote {:?} must be one printable ASCII character, other than the delimiter",
            csv.quote
        ));
    }
    if let Some(comment) = &csv.comment {
        if !one_ascii(comment) || *comment == csv.delimiter || *comment == csv.quote {
            say(format!(
                "level {name}: csv.comment {comment:?} must be one printable ASCII character, other than the delimiter and the quote"
            ));
        }
    }
    if !DECIMALS.contains(&csv.decimal.as_str()) {
        say(format!(
            "level {name}: csv.decimal {:?} is not one of \".\" \",\"",
            csv.decimal
        ));
    }
    if let Some(t) = &csv.thousands {
        if !THOUSANDS.contains(&t.as_str()) {
            say(format!(
                "level {name}: csv.thousands {t:?} is not one of \",\" \".\" \" \" \"'\" \"_\""
            ));
        } else if *t == csv.decimal {
            say(format!(
                "level {name}: csv.thousands and csv.decimal are both {t:?}"
            ));
        }
    }
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::Spec;

    fn problems(text: &str) -> Vec<String> {
        match Spec::parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    const GOOD: &str = r#"
        name = "orders"
        root = "orders"
        [levels.orders]
        table = "orders"
        key = ["id"]
        columns = [{ name = "id", type = "bigint" }, { name = "lines", type = "text", save = false }]
        children = [{ url = "lines", level = "lines" }]
        [levels.lines]
        table = "order_lines"
        key = ["order_id", "n"]
        inherit = [{ column = "order_id", from = "orders.id" }]
        columns = [{ name = "n", type = "integer" }]
    "#;

    #[test]
    fn a_good_spec_has_no_problem() {
        assert_eq!(problems(GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_bad_spec_gets_one_line_naming_what_and_where() {
        let cases = [
            (
                GOOD.replace(r#"type = "integer""#, r#"type = "money""#),
                "line 13: unknown variant `money`, expected one of",
            ),
            (
                GOOD.replace(r#"key = ["order_id", "n"]"#, r#"key = ["order_id", "m"]"#),
                "level lines: key column m is not a column of table order_lines (order_id, n)",
            ),
            (
                GOOD.replace(r#"url = "lines", level"#, r#"url = "line", level"#),
                "level orders: child URL column \"line\" is not one of its columns (id, lines)",
            ),
            (
                GOOD.replace(
                    r#"columns = [{ name = "n", type = "integer" }]"#,
                    r#"columns = [{ name = "n", type = "integer" }, { name = "more", type = "text", save = false }]
                    children = [{ url = "more", level = "orders" }]"#,
                ),
                "the root level orders is also a child level (lines): that is a cycle",
            ),
            (
                GOOD.replace(r#"from = "orders.id""#, r#"from = "orders.nope""#),
                "level lines: inherit from \"orders.nope\": level orders has no column nope",
            ),
            (
                GOOD.replace(r#"name = "orders""#, r#"name = "Orders!""#),
                "name \"Orders!\" is invalid",
            ),
            (
                GOOD.replace(r#"table = "orders""#, r#"table = "order lines""#),
                "level orders: table \"order lines\": ",
            ),
            (
                GOOD.replace(r#"type = "bigint""#, r#"type = "bigint", scale = 2"#),
                "level orders, column id: precision and scale are for numeric columns, not bigint",
            ),
        ];
        for (text, expected) in cases {
            let found = problems(&text);
            assert_eq!(found.len(), 1, "{found:#?}");
            assert!(
                found[0].starts_with(expected),
                "{:?} does not start with {expected:?}",
                found[0]
            );
            assert!(!found[0].contains('\n'));
        }
    }

    #[test]
    fn a_value_from_a_farther_ancestor_must_be_carried_by_the_parent() {
        let text = r#"
            name = "deep"
            root = "a"
            [levels.a]
            columns = [{ name = "id", type = "bigint" }, { name = "u", type = "text" }]
            children = [{ url = "u", level = "b" }]
            [levels.b]
            columns = [{ name = "u", type = "text" }]
            children = [{ url = "u", level = "c" }]
            [levels.c]
            table = "c"
            key = ["a_id"]
            inherit = [{ column = "a_id", from = "a.id" }]
            columns = [{ name = "x", type = "text" }]
        "#;
        let found = problems(text);
        assert_eq!(
            found,
            ["level c: inherit from \"a.id\": its parent level b does not carry that value; inherit it there too and take it from b.<that column>"]
        );
        let carried = text.replace(
            "[levels.b]\n",
            "[levels.b]\n            inherit = [{ column = \"a\", from = \"a.id\" }]\n",
        );
        assert_eq!(problems(&carried), Vec::<String>::new());
    }

    #[test]
    fn dialects_that_cannot_be_read_are_refused() {
        let with = |csv: &str, columns: &str| {
            problems(&format!(
                "name = \"d\"\nroot = \"l\"\n[levels.l]\ncolumns = [{columns}]\n[levels.l.csv]\n{csv}\n"
            ))
        };
        let plain = r#"{ name = "a", type = "numeric" }"#;
        assert_eq!(
            with(
                "delimiter = \";\"\ndecimal = \",\"\nthousands = \".\"",
                plain
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            with("delimiter = \":\"", plain),
            ["level l: csv.delimiter \":\" is not one of \",\" \";\" \"\\t\" \"|\""]
        );
        // Quoted in the file, a decimal comma can share the delimiter.
        assert_eq!(with("decimal = \",\"", plain), Vec::<String>::new());
        assert_eq!(
            with("decimal = \",\"\nthousands = \",\"", plain),
            ["level l: csv.thousands and csv.decimal are both \",\""]
        );
        assert_eq!(
            with("header = false", plain),
            ["level l, column a: files of this level have no header row: give its position (from 1)"]
        );
        assert_eq!(
            with(
                "header = false",
                r#"{ name = "a", type = "text", position = 1 }, { name = "b", type = "text", position = 1 }"#
            ),
            ["level l, column b: position 1 is given to two columns"]
        );
        assert_eq!(
            with(
                "trim = true",
                r#"{ name = "a", type = "bigint", empty = "empty-string" }"#
            ),
            ["level l, column a: empty = \"empty-string\" is for text columns, not bigint"]
        );
    }

    #[test]
    fn a_cycle_below_the_root_and_an_unreached_level_are_named() {
        let text = r#"
            name = "loop"
            root = "a"
            [levels.a]
            columns = [{ name = "x", type = "text" }]
            [levels.b]
            columns = [{ name = "u", type = "text" }]
            children = [{ url = "u", level = "c" }]
            [levels.c]
            columns = [{ name = "u", type = "text" }]
            children = [{ url = "u", level = "b" }]
            [levels.d]
            columns = [{ name = "x", type = "text" }]
        "#;
        let found = problems(text);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("level d is never reached")),
            "{found:#?}"
        );
        let text = r#"
            name = "loop"
            root = "a"
            [levels.a]
            columns = [{ name = "u", type = "text" }]
            children = [{ url = "u", level = "b" }]
            [levels.b]
            columns = [{ name = "u", type = "text" }]
            children = [{ url = "u", level = "c" }]
            [levels.c]
            columns = [{ name = "u", type = "text" }]
            children = [{ url = "u", level = "b" }]
        "#;
        let found = problems(text);
        assert!(
            found
                .iter()
                .any(|p| p.contains("is the child of more than one level")),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|p| p.contains("form a cycle")),
            "{found:#?}"
        );
    }
}
