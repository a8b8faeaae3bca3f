//! Finding each column of a level in a file's header.

use crate::Level;

/// Where each of a level's columns is in one file: `fields[i]` is the
/// header position of the level's column `i`, `None` for an optional
/// column the file lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Per column of the level, its field in each record.
    pub fields: Vec<Option<usize>>,
}

/// A header that cannot be read with a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Required columns the header lacks (with their aliases).
    Missing(Vec<String>),
    /// Two header fields name the same column.
    Twice {
        /// The column.
        column: String,
        /// The two header names found for it.
        found: (String, String),
    },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Missing(columns) => {
                write!(
                    f,
                    "the header lacks required column(s) {}",
                    columns.join(", ")
                )
            }
            HeaderError::Twice { column, found } => write!(
                f,
                "the header names column {column} twice ({:?} and {:?})",
                found.0, found.1
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

impl Level {
    /// Where each column is in files without a header row: its `position`
    /// (a checked spec gives every column one).
    pub fn positions(&self) -> Header {
        Header {
            fields: self
                .columns
                .iter()
                .map(|c| c.position.map(|p| p.saturating_sub(1) as usize))
                .collect(),
        }
    }

    /// Matches a file's header against this level's columns: by name, then
    /// by alias, ignoring case and surrounding spaces, as sluice always has
    /// (a UTF-8 byte order mark before the first field is not part of its
    /// name). Fields no column names are ignored.
    pub fn header<S: AsRef<str>>(&self, fields: &[S]) -> Result<Header, HeaderError> {
        let names: Vec<&str> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = f.as_ref();
                let f = if i == 0 {
                    f.strip_prefix('\u{feff}').unwrap_or(f)
                } else {
                    f
                };
                f.trim()
            })
            .collect();
        let mut found = Vec::with_capacity(self.columns.len());
        let mut missing = Vec::new();
        for column in &self.columns {
            let mut at: Option<usize> = None;
            for candidate in std::iter::once(&column.name).chain(&column.aliases) {
                for (i, name) in names.iter().enumerate() {
                    if name.eq_ignore_ascii_case(candidate.trim()) {
                        if let Some(first) = at.filter(|first| *first != i) {
                            return Err(HeaderError::Twice {
                                column: column.name.clone(),
                                found: (names[first].to_owned(), name.to_string()),
                            });
                        }
                        at = Some(i);
                    }
                }
            }
            if at.is_none() && column.required {
                missing.push(match column.aliases.is_empty() {
                    true => column.name.clone(),
                    false => format!("{} (or {})", column.name, column.aliases.join(", ")),
                });
            }
            found.push(at);
        }
        if missing.is_empty() {
            Ok(Header { fields: found })
        } else {
            Err(HeaderError::Missing(missing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Spec;

    fn level() -> Level {
        Spec::parse(
            r#"
            name = "t"
            root = "l"
            [levels.l]
            columns = [
                { name = "id", aliases = ["identifier", "key"], type = "bigint" },
                { name = "note", type = "text", required = false },
                { name = "amount", type = "numeric" },
            ]"#,
        )
        .unwrap()
        .levels["l"]
            .clone()
    }

    #[test]
    fn columns_are_found_by_name_or_alias_in_any_order() {
        let header = level().header(&["\u{feff}Amount ", "other", "ID"]).unwrap();
        assert_eq!(header.fields, vec![Some(2), None, Some(0)]);
    }

    #[test]
    fn a_missing_required_column_or_a_column_named_twice_is_refused() {
        let missing = level().header(&["note"]).unwrap_err().to_string();
        assert_eq!(
            missing,
            "the header lacks required column(s) id (or identifier, key), amount"
        );
        let twice = level()
            .header(&["id", "Amount", "ID"])
            .unwrap_err()
            .to_string();
        assert_eq!(twice, r#"the header names column id twice ("id" and "ID")"#);
    }
}
