//! Reading the records of one file with its level: each record becomes the
//! row its table gets (inherited values first, then its own saved columns,
//! as [`Spec::table_columns`] orders them), the child files it links to,
//! and, for each child, the values that child level inherits.
//!
//! Pure: the stages stream records in, and carry what a record yields to
//! the next file or the saver.

use crate::{
    header::{Header, HeaderError},
    values::{self, Rules, ValueError},
    Level, Spec,
};

/// Reads one file's records with one level of a spec.
#[derive(Debug)]
pub struct LevelReader<'s> {
    spec: &'s Spec,
    name: &'s str,
    level: &'s Level,
    header: Header,
    /// Per own column: how its fields are read.
    rules: Vec<Rules>,
}

/// What one record yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRow {
    /// The level's own columns, in the order the spec lists them (NULL
    /// for an optional column the file lacks).
    pub values: Vec<Option<String>>,
    /// The row for the level's table, if it has one: inherited values,
    /// then its saved own columns.
    pub table_row: Option<Vec<Option<String>>>,
    /// The child files this row links to, with what each inherits.
    pub children: Vec<ChildFile>,
}

/// A child file a row links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildFile {
    /// The level it is read with.
    pub level: String,
    /// Its URL as written in the row (relative URLs are resolved by the
    /// caller against the file's own).
    pub url: String,
    /// The values the child level inherits, in the order of its `inherit`
    /// list.
    pub inherited: Vec<Option<String>>,
}

impl<'s> LevelReader<'s> {
    /// A reader for a file of level `name` whose header is `fields` (for a
    /// level whose files have no header row, `fields` is ignored: columns
    /// are found by position).
    pub fn new<S: AsRef<str>>(
        spec: &'s Spec,
        name: &'s str,
        fields: &[S],
    ) -> Result<Self, HeaderError> {
        let level = spec
            .level(name)
            .expect("the level comes from the spec it is read with");
        let header = match level.csv.header {
            true => level.header(fields)?,
            false => level.positions(),
        };
        // A column is keyed when its table's key has it, or a descendant's
        // key comes from it: an empty field there is an error, not NULL.
        let feeds_a_key = |column: &crate::Column| {
            spec.levels.iter().any(|(n, l)| {
                l.table.is_some()
                    && l.inherit.iter().any(|i| {
                        l.key.contains(&i.column)
                            && spec
                                .resolve_from(n, &i.from)
                                .is_some_and(|source| std::ptr::eq(source, column))
                    })
            })
        };
        let rules = level
            .columns
            .iter()
            .map(|c| {
                let keyed = level.table.is_some()
                    && c.save
                    && level.key.iter().any(|k| k == c.column_name())
                    || feeds_a_key(c);
                Rules::of(spec, level, c, keyed)
            })
            .collect();
        Ok(LevelReader {
            spec,
            name,
            level,
            header,
            rules,
        })
    }

    /// Reads one record; `quoted` says which of its fields were quoted
    /// (never a NULL marker; empty: none was), and `inherited` are the
    /// values this level inherits (in the order of its `inherit` list), as
    /// its parent row passed them down. The first field that is not a value
    /// of its column fails the record. A child link whose field is empty
    /// leads to no file.
    pub fn read<S: AsRef<str>>(
        &self,
        record: &[S],
        quoted: &[bool],
        inherited: &[Option<String>],
    ) -> Result<ReadRow, ValueError> {
        let mut values = Vec::with_capacity(self.level.columns.len());
        for (i, column) in self.level.columns.iter().enumerate() {
            let at = self.header.fields[i];
            let field = at
                .and_then(|at| record.get(at))
                .map(|f| f.as_ref())
                .unwrap_or("");
            let was_quoted = at.is_some_and(|at| quoted.get(at).copied().unwrap_or(false));
            values.push(values::read(column, field, was_quoted, &self.rules[i])?);
        }
        for (i, inherit) in self.level.inherit.iter().enumerate() {
            let key = self.level.key.contains(&inherit.column);
            if key && inherited.get(i).is_none_or(Option::is_none) {
                return Err(ValueError {
                    column: inherit.column.clone(),
                    value: String::new(),
                    expected: format!(
                        "a value inherited from {} (a key column needs one)",
                        inherit.from
                    ),
                });
            }
        }
        let table_row = self.level.table.as_ref().map(|_| {
            let mut row: Vec<Option<String>> = self
                .level
                .inherit
                .iter()
                .enumerate()
                .map(|(i, _)| inherited.get(i).cloned().flatten())
                .collect();
            row.extend(
                self.level
                    .columns
                    .iter()
                    .zip(&values)
                    .filter(|(c, _)| c.save)
                    .map(|(_, v)| v.clone()),
            );
            row
        });
        let mut children = Vec::new();
        for child in &self.level.children {
            let at = self
                .level
                .columns
                .iter()
                .position(|c| c.name == child.url)
                .expect("a checked spec's child URL column is one of its columns");
            let Some(url) = values[at].clone() else {
                continue;
            };
            let inherited = self.passed_down(&child.level, &values, inherited);
            children.push(ChildFile {
                level: child.level.clone(),
                url,
                inherited,
            });
        }
        Ok(ReadRow {
            values,
            table_row,
            children,
        })
    }

    /// What level `child` inherits from this row: for each entry of its
    /// `inherit` list, the value at the level it names, found in this
    /// row's own columns (by table name) or among what this level
    /// inherited itself; farther ancestors' values come down that way.
    fn passed_down(
        &self,
        child: &str,
        values: &[Option<String>],
        inherited: &[Option<String>],
    ) -> Vec<Option<String>> {
        let Some(level) = self.spec.level(child) else {
            return Vec::new();
        };
        level
            .inherit
            .iter()
            .map(|inherit| self.value_of(&inherit.from, values, inherited))
            .collect()
    }

    /// The value `from` (`<level>.<column>`) names, seen from this row.
    fn value_of(
        &self,
        from: &str,
        values: &[Option<String>],
        inherited: &[Option<String>],
    ) -> Option<String> {
        let (level, column) = from.split_once('.')?;
        if level == self.name {
            if let Some(i) = self
                .level
                .columns
                .iter()
                .position(|c| c.column_name() == column)
            {
                return values[i].clone();
            }
            let i = self.level.inherit.iter().position(|i| i.column == column)?;
            return inherited.get(i).cloned().flatten();
        }
        // A farther ancestor: this level must carry it down, under some
        // inherited column of its own that resolves to the same source.
        let source = self.spec.resolve_from(self.name, from)?;
        let i = self.level.inherit.iter().position(|i| {
            self.spec
                .resolve_from(self.name, &i.from)
                .is_some_and(|c| std::ptr::eq(c, source))
        })?;
        inherited.get(i).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"
        name = "shop"
        root = "customers"
        [levels.customers]
        table = "customers"
        key = ["customer_id"]
        columns = [{ name = "id", column = "customer_id", type = "bigint" },
                   { name = "orders", type = "text", save = false }]
        children = [{ url = "orders", level = "orders" }]
        [levels.orders]
        table = "orders"
        key = ["customer_id", "order_id"]
        inherit = [{ column = "customer_id", from = "customers.customer_id" }]
        columns = [{ name = "order_id", type = "bigint" },
                   { name = "lines", type = "text", save = false }]
        children = [{ url = "lines", level = "lines" }]
        [levels.lines]
        table = "order_lines"
        key = ["order_id", "n"]
        inherit = [{ column = "order_id", from = "orders.order_id" },
                   { column = "customer", from = "orders.customer_id" }]
        columns = [{ name = "n", type = "integer" }, { name = "sku", type = "text" }]
    "#;

    #[test]
    fn a_key_is_carried_two_levels_down() {
        let spec = Spec::parse(SHOP).unwrap();
        let customers = LevelReader::new(&spec, "customers", &["orders", "id"]).unwrap();
        let row = customers.read(&["o/7.csv", "+7"], &[], &[]).unwrap();
        assert_eq!(row.table_row, Some(vec![Some("7".into())]));
        assert_eq!(
            row.children,
            vec![ChildFile {
                level: "orders".into(),
                url: "o/7.csv".into(),
                inherited: vec![Some("7".into())],
            }]
        );

        let orders = LevelReader::new(&spec, "orders", &["order_id", "lines"]).unwrap();
        let row = orders
            .read(&["70", "l/70.csv"], &[], &row.children[0].inherited)
            .unwrap();
        assert_eq!(
            row.table_row,
            Some(vec![Some("7".into()), Some("70".into())])
        );
        // order_id from the order row, the customer from what the order
        // inherited: two levels down.
        assert_eq!(
            row.children[0].inherited,
            vec![Some("70".into()), Some("7".into())]
        );

        let lines = LevelReader::new(&spec, "lines", &["sku", "n"]).unwrap();
        let row = lines
            .read(&["", "3"], &[], &row.children[0].inherited)
            .unwrap();
        assert_eq!(
            row.table_row,
            Some(vec![
                Some("70".into()),
                Some("7".into()),
                Some("3".into()),
                None
            ])
        );
        assert!(row.children.is_empty());
    }

    #[test]
    fn a_bad_field_fails_its_record_and_an_empty_link_leads_nowhere() {
        let spec = Spec::parse(SHOP).unwrap();
        let customers = LevelReader::new(&spec, "customers", &["id", "orders"]).unwrap();
        let e = customers.read(&["seven", "o.csv"], &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"column id: "seven" is not a 64-bit integer"#
        );
        let e = customers.read(&["", "o.csv"], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("a key column needs a value"), "{e}");
        let orders = LevelReader::new(&spec, "orders", &["order_id", "lines"]).unwrap();
        let e = orders
            .read(&["", "l.csv"], &[], &[Some("7".into())])
            .unwrap_err();
        assert!(e.to_string().contains("a key column needs a value"), "{e}");
        let row = customers.read(&["8", ""], &[], &[]).unwrap();
        assert!(row.children.is_empty());
        // A short record: missing fields are empty.
        let row = customers.read(&["9"], &[], &[]).unwrap();
        assert_eq!(row.values, vec![Some("9".into()), None]);
        let lines = LevelReader::new(&spec, "lines", &["n", "sku"]).unwrap();
        let e = lines.read(&["1", "x"], &[], &[None, None]).unwrap_err();
        assert!(
            e.to_string().contains("inherited from orders.order_id"),
            "{e}"
        );
    }

    #[test]
    fn a_headerless_file_reads_by_position_with_its_markers_and_separators() {
        let spec = Spec::parse(
            r#"
            name = "r"
            root = "l"
            null = ["NA"]
            [levels.l]
            table = "readings"
            key = ["id"]
            columns = [
                { name = "id", type = "bigint", position = 2 },
                { name = "country", type = "text", position = 1 },
                { name = "value", type = "numeric", position = 3 },
            ]
            [levels.l.csv]
            delimiter = ";"
            header = false
            decimal = ","
            thousands = "."
            "#,
        )
        .unwrap();
        let reader = LevelReader::new(&spec, "l", &[] as &[&str]).unwrap();
        let row = reader.read(&["NA", "7", "1.234,5"], &[], &[]).unwrap();
        assert_eq!(
            row.table_row,
            Some(vec![Some("7".into()), None, Some("1234.5".into())])
        );
        // Namibia, quoted, is a country.
        let row = reader
            .read(&["NA", "8", "NA"], &[true, false, false], &[])
            .unwrap();
        assert_eq!(
            row.table_row,
            Some(vec![Some("8".into()), Some("NA".into()), None])
        );
        let e = reader.read(&["x", "NA", "1"], &[], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("a NULL marker: a key column needs a value"),
            "{e}"
        );
    }
}
