//! Drafting a spec from samples of files (`sluice spec infer`): the
//! delimiter, each column's type, number format and NULL markers, the
//! column that links to child files, and a candidate key, each guess said
//! in a comment with how sure it is. Where the sample cannot decide (a date
//! that reads day-first and month-first alike), the draft asks, and names
//! the line to edit.
//!
//! Pure: the caller fetches bounded samples and parses them with the
//! delimiter [`sniff_delimiter`] found.

use std::collections::HashSet;

/// The first rows of one file (or of a few files of one level).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Where it came from (shown in the draft; redacted by the caller).
    pub url: String,
    /// The header row.
    pub header: Vec<String>,
    /// The rows read, each as many fields as it had.
    pub records: Vec<Vec<String>>,
    /// Which sampled file each record came from (a level's sample may
    /// join a few files); empty: one file.
    pub files: Vec<usize>,
    /// The delimiter the rows were split with.
    pub delimiter: char,
    /// The encoding the bytes were read in: UTF-16 when a byte order mark
    /// says so, UTF-8 when they are valid UTF-8, else Windows-1252 (a guess).
    pub encoding: crate::Encoding,
    /// Child files sampled through a column: (column index, their sample).
    pub children: Vec<(usize, Sample)>,
}

/// The delimiter that splits the first lines into the same number of
/// fields, most often: `,`, `;`, tab or `|` (quoted text not counted).
pub fn sniff_delimiter(text: &str) -> char {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(20)
        .collect();
    let mut best = (',', 0usize);
    for candidate in [',', ';', '\t', '|'] {
        let counts: Vec<usize> = lines
            .iter()
            .map(|l| {
                let mut quoted = false;
                l.chars()
                    .filter(|c| {
                        if *c == '"' {
                            quoted = !quoted;
                        }
                        !quoted && *c == candidate
                    })
                    .count()
            })
            .collect();
        let Some(&first) = counts.first() else {
            continue;
        };
        // Lines agreeing with the header's count, weighted by the count.
        let agreeing = counts.iter().filter(|c| **c == first).count();
        let score = if first == 0 {
            0
        } else {
            agreeing * 100 + first
        };
        if score > best.1 {
            best = (candidate, score);
        }
    }
    best.0
}

/// Markers that mean NULL in exports (R, PostgreSQL, SQL dumps).
const MARKERS: [&str; 6] = ["NA", "N/A", "NULL", "null", "\\N", "NaN"];

/// What the sample says of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Guess {
    kind: &'static str,
    extra: Vec<String>,
    note: String,
    question: Option<String>,
}

fn is_integer(v: &str) -> bool {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A decimal with `decimal` as its separator and optional `thousands`
/// groups of three.
fn is_number(v: &str, decimal: char, thousands: Option<char>) -> bool {
    let rules = crate::values::Rules {
        decimal,
        thousands,
        ..Default::default()
    };
    let column = crate::Column {
        name: String::new(),
        aliases: Vec::new(),
        column: None,
        kind: crate::ColumnType::Numeric,
        required: true,
        empty: crate::Empty::Null,
        precision: None,
        scale: None,
        format: None,
        save: true,
        position: None,
        null: None,
        decimal: None,
        thousands: None,
    };
    crate::values::read(&column, v, false, &rules).is_ok()
}

/// Whether a field looks like the URL of a file: `http(s)://…`, or a
/// path ending in `.csv`, `.csv.gz` or `.tsv`.
pub fn looks_like_url(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let path = lower.split(['?', '#']).next().unwrap_or("");
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || path.ends_with(".csv")
        || path.ends_with(".csv.gz")
        || path.ends_with(".tsv")
}

fn guess(values: &[&str]) -> Guess {
    let sure = |n: usize| format!("all {n} sampled values");
    let n = values.len();
    let guessed = |kind, extra: Vec<String>, note: String| Guess {
        kind,
        extra,
        note,
        question: None,
    };
    if n == 0 {
        return Guess {
            kind: "text",
            extra: Vec::new(),
            note: "no value in the sample".into(),
            question: Some("no value was sampled: check the type".into()),
        };
    }
    if values.iter().all(|v| looks_like_url(v)) {
        return guessed("text", Vec::new(), format!("URLs of files ({})", sure(n)));
    }
    if values.iter().all(|v| is_integer(v)) {
        // Integers past 64 bits stay exact as numeric.
        let kind = if values.iter().all(|v| v.parse::<i64>().is_ok()) {
            "bigint"
        } else {
            "numeric"
        };
        return guessed(kind, Vec::new(), format!("integers ({})", sure(n)));
    }
    if values.iter().all(|v| is_number(v, '.', None)) {
        return guessed(
            "numeric",
            Vec::new(),
            format!("exact decimals ({})", sure(n)),
        );
    }
    for (decimal, thousands) in [
        (',', None),
        (',', Some('.')),
        ('.', Some(',')),
        (',', Some(' ')),
    ] {
        if values.iter().all(|v| is_number(v, decimal, thousands)) {
            let mut extra = vec![format!("decimal = {:?}", decimal.to_string())];
            if let Some(t) = thousands {
                extra.push(format!("thousands = {:?}", t.to_string()));
            }
            return guessed(
                "numeric",
                extra,
                format!("decimals written with {decimal:?} ({})", sure(n)),
            );
        }
    }
    let lower: Vec<String> = values.iter().map(|v| v.to_ascii_lowercase()).collect();
    if lower
        .iter()
        .all(|v| matches!(v.as_str(), "true" | "false" | "t" | "f" | "yes" | "no"))
    {
        return guessed("boolean", Vec::new(), format!("true/false ({})", sure(n)));
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    if values.iter().all(|v| time::Date::parse(v, &date).is_ok()) {
        return guessed("date", Vec::new(), format!("ISO dates ({})", sure(n)));
    }
    if values.iter().all(|v| {
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).is_ok()
    }) {
        return guessed(
            "timestamptz",
            Vec::new(),
            format!("RFC 3339 timestamps ({})", sure(n)),
        );
    }
    if let Some(g) = slashed_dates(values) {
        return g;
    }
    if values.iter().all(|v| uuid::Uuid::try_parse(v).is_ok()) {
        return guessed("uuid", Vec::new(), format!("UUIDs ({})", sure(n)));
    }
    if values.iter().all(|v| {
        (v.starts_with('{') || v.starts_with('['))
            && serde_json::from_str::<serde::de::IgnoredAny>(v).is_ok()
    }) {
        return guessed("jsonb", Vec::new(), format!("JSON documents ({})", sure(n)));
    }
    guessed("text", Vec::new(), "text".into())
}

/// Dates like `03/12/2026` or `03.12.2026`: day-first when a first part
/// is over 12, month-first when a second is, a question when neither.
fn slashed_dates(values: &[&str]) -> Option<Guess> {
    let sep = ['/', '.', '-']
        .into_iter()
        .find(|s| values.iter().all(|v| v.split(*s).count() == 3))?;
    let parts: Vec<Vec<u32>> = values
        .iter()
        .map(|v| {
            v.split(sep)
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u32>>>()
        })
        .collect::<Option<_>>()?;
    if !parts.iter().all(|p| p[2] >= 1000 && p[0] >= 1 && p[1] >= 1) {
        return None;
    }
    let day_first = parts.iter().any(|p| p[0] > 12);
    let month_first = parts.iter().any(|p| p[1] > 12);
    let format =
        |first: &str, second: &str| format!("format = \"[{first}]{sep}[{second}]{sep}[year]\"");
    match (day_first, month_first) {
        (true, false) => Some(Guess {
            kind: "date",
            extra: vec![format("day", "month")],
            note: "day-first dates (a first part is over 12)".into(),
            question: None,
        }),
        (false, true) => Some(Guess {
            kind: "date",
            extra: vec![format("month", "day")],
            note: "month-first dates (a second part is over 12)".into(),
            question: None,
        }),
        (false, false) => Some(Guess {
            kind: "date",
            extra: vec![format("day", "month")],
            note: "dates".into(),
            question: Some(
                "day-first or month-first? Every sampled date reads both ways: keep [day]/[month] or swap them".into(),
            ),
        }),
        (true, true) => None,
    }
}

/// A table or column name from a header or file name: lowercase letters,
/// digits and `_`.
fn identifier(raw: &str) -> String {
    let mut out = String::new();
    let mut last_underscore = false;
    let chars: Vec<char> = raw.trim().chars().collect();
    for (i, c) in chars.iter().enumerate() {
        // camelCase becomes camel_case.
        if c.is_ascii_uppercase() && i > 0 && chars[i - 1].is_ascii_lowercase() && !last_underscore
        {
            out.push('_');
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
            last_underscore = false;
        } else if !last_underscore && !out.is_empty() {
            out.push('_');
            last_underscore = true;
        }
    }
    let mut out = out.trim_end_matches('_').to_owned();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "c_");
    }
    if out.starts_with(crate::sql::RESERVED_PREFIX) {
        out.insert(0, 'c');
    }
    out.truncate(63);
    out
}

/// The name of a level from its file's URL: `orders` of `…/orders-1.csv`,
/// `tx` of `…/tx/7.csv` (a file named by a number is named by its folder).
fn level_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    // The host is not a name for files.
    let path = path.split_once('/').map_or("", |(_, rest)| rest);
    let stem = path
        .rsplit('/')
        .map(|segment| {
            segment
                .split('.')
                .next()
                .unwrap_or(segment)
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_')
        })
        .find(|stem| !stem.is_empty())
        .unwrap_or("file");
    let name = identifier(stem);
    if crate::sql::RESERVED_TABLES.contains(&name.as_str()) {
        format!("{name}_data")
    } else {
        name
    }
}

/// A TOML string.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Drafts the spec `name` from `root` and the child samples under it.
pub fn draft(name: &str, root: &Sample) -> String {
    let mut out = String::new();
    let mut questions = Vec::new();
    out.push_str(&format!(
        "# Drafted by `sluice spec infer` from the first rows of {}.\n# Each guess says how sure it is; where the sample cannot decide, a comment asks a question.\nformat = 1\nname = {}\n",
        root.url,
        quoted(&identifier(name).replace('_', "-"))
    ));
    let mut levels = Vec::new();
    let mut used = HashSet::new();
    collect(root, None, &mut levels, &mut used);
    out.push_str(&format!("root = {}\n", quoted(&levels[0].name)));
    // NULL markers seen anywhere, unquoted, as whole fields.
    let mut markers: Vec<&str> = MARKERS
        .iter()
        .copied()
        .filter(|m| {
            levels
                .iter()
                .any(|l| l.sample.records.iter().any(|r| r.iter().any(|f| f == m)))
        })
        .collect();
    markers.dedup();
    if !markers.is_empty() {
        out.push_str(&format!(
            "# Fields that mean NULL: seen as whole values in the sample.\nnull = [{}]\n",
            markers
                .iter()
                .map(|m| quoted(m))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for level in &levels {
        write_level(&mut out, level, &levels, &markers, &mut questions);
    }
    if !questions.is_empty() {
        out.push_str(&format!(
            "\n# {} QUESTION(S) above: answer them, then `sluice spec put` this file.\n",
            questions.len()
        ));
    }
    out
}

struct DraftLevel<'a> {
    name: String,
    sample: &'a Sample,
    /// The parent's name and the column linking to this level.
    parent: Option<(String, usize)>,
}

fn collect<'a>(
    sample: &'a Sample,
    parent: Option<(String, usize)>,
    levels: &mut Vec<DraftLevel<'a>>,
    used: &mut HashSet<String>,
) {
    let mut name = level_name(&sample.url);
    while !used.insert(name.clone()) {
        name.push_str("_2");
    }
    levels.push(DraftLevel {
        name: name.clone(),
        sample,
        parent,
    });
    for (column, child) in &sample.children {
        collect(child, Some((name.clone(), *column)), levels, used);
    }
}

fn write_level(
    out: &mut String,
    level: &DraftLevel,
    levels: &[DraftLevel],
    markers: &[&str],
    questions: &mut Vec<String>,
) {
    let sample = level.sample;
    out.push_str(&format!(
        "\n# {} rows sampled from {}\n[levels.{}]\n",
        sample.records.len(),
        sample.url,
        level.name
    ));
    let links: Vec<usize> = sample.children.iter().map(|(c, _)| *c).collect();
    let mut names = HashSet::new();
    let mut columns = Vec::new();
    for (i, header) in sample.header.iter().enumerate() {
        let values: Vec<&str> = sample
            .records
            .iter()
            .filter_map(|r| r.get(i).map(|v| v.trim()))
            .filter(|v| !v.is_empty() && !markers.contains(v))
            .collect();
        let empties = sample.records.len() - values.len();
        let mut column = identifier(header);
        while !names.insert(column.clone()) {
            column.push_str("_2");
        }
        columns.push((header.clone(), column, guess(&values), empties));
    }
    let key = key_column(sample, &links);
    let mut key_columns: Vec<String> = Vec::new();
    // The parent's key column, under its own name unless this level has a
    // column of that name.
    let inherited = level.parent.as_ref().map(|(parent, _)| {
        let from = parent_key_column(levels, parent);
        let name = if columns.iter().any(|c| c.1 == from) {
            identifier(&format!("{parent}_{from}"))
        } else {
            from.clone()
        };
        (name, from)
    });
    if let Some((column, _)) = &inherited {
        key_columns.push(column.clone());
    }
    out.push_str(&format!("table = {}\n", quoted(&level.name)));
    match key {
        Some(i) => {
            key_columns.push(columns[i].1.clone());
            let within = match &level.parent {
                Some(_) => " within each file",
                None => "",
            };
            out.push_str(&format!(
                "# Key (a guess): {} is present and distinct in every sampled row{within}.\n",
                columns[i].1
            ));
        }
        None => {
            out.push_str("# QUESTION: no sampled column is present and distinct in every row: list the columns that identify a row.\n");
            questions.push(format!("level {}: key", level.name));
            if let Some(first) = columns.iter().position(|_| true) {
                key_columns.push(columns[first].1.clone());
            }
        }
    }
    out.push_str(&format!(
        "key = [{}]\n",
        key_columns
            .iter()
            .map(|k| quoted(k))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some((column, from)) = &inherited {
        let parent = &level.parent.as_ref().expect("inherited from a parent").0;
        out.push_str(&format!(
            "inherit = [{{ column = {}, from = {} }}]\n",
            quoted(column),
            quoted(&format!("{parent}.{from}"))
        ));
    }
    out.push_str("columns = [\n");
    for (i, (header, column, g, empties)) in columns.iter().enumerate() {
        let present = match *empties {
            0 => String::new(),
            n => format!("; {n} empty or NULL"),
        };
        out.push_str(&format!("    # {}{present}\n", g.note));
        let in_key = key == Some(i);
        if let Some(q) = &g.question {
            out.push_str(&format!("    # QUESTION: {q}\n"));
            questions.push(format!("level {}: {column}", level.name));
        }
        let mut fields = vec![format!("name = {}", quoted(header))];
        if column != header {
            fields.push(format!("column = {}", quoted(column)));
        }
        fields.push(format!("type = {}", quoted(g.kind)));
        fields.extend(g.extra.iter().cloned());
        if links.contains(&i) {
            fields.push("save = false".into());
        }
        // A column children take their key from must never be empty.
        let feeds_children =
            !links.is_empty() && level_has_children_keyed_on(levels, &level.name, column);
        if (in_key || feeds_children) && *empties == 0 {
            fields.push("empty = \"error\"".into());
        }
        out.push_str(&format!("    {{ {} }},\n", fields.join(", ")));
    }
    out.push_str("]\n");
    if !sample.children.is_empty() {
        let links: Vec<String> = sample
            .children
            .iter()
            .map(|(column, child)| {
                let child_name = levels
                    .iter()
                    .find(|l| std::ptr::eq(l.sample, child))
                    .map(|l| l.name.clone())
                    .unwrap_or_default();
                format!(
                    "{{ url = {}, level = {} }}",
                    quoted(&sample.header[*column]),
                    quoted(&child_name)
                )
            })
            .collect();
        out.push_str(&format!("children = [{}]\n", links.join(", ")));
    }
    if sample.delimiter != ',' || sample.encoding != crate::Encoding::Utf8 {
        out.push_str(&format!("\n[levels.{}.csv]\n", level.name));
        if sample.delimiter != ',' {
            out.push_str(&format!(
                "delimiter = {}\n",
                quoted(&sample.delimiter.to_string())
            ));
        }
        match sample.encoding {
            crate::Encoding::Utf16 => out.push_str(
                "# A byte order mark says UTF-16.\nencoding = \"utf-16\"\n",
            ),
            crate::Encoding::Windows1252 | crate::Encoding::Latin1 => out.push_str(
                "# The bytes are not UTF-8: Windows-1252 is a guess (Latin-1 differs only in 0x80 to 0x9F).\nencoding = \"windows-1252\"\n",
            ),
            crate::Encoding::Utf8 => {}
        }
    }
}

/// The first column (not a link) whose sampled values are all present
/// and distinct, within each file.
fn key_column(sample: &Sample, links: &[usize]) -> Option<usize> {
    (0..sample.header.len()).find(|i| {
        !links.contains(i) && {
            let mut seen = HashSet::new();
            !sample.records.is_empty()
                && sample.records.iter().enumerate().all(|(n, r)| {
                    let file = sample.files.get(n).copied().unwrap_or(0);
                    r.get(*i).is_some_and(|v| {
                        let v = v.trim();
                        !v.is_empty() && !MARKERS.contains(&v) && seen.insert((file, v.to_owned()))
                    })
                })
        }
    })
}

/// Whether a child level of `parent` takes its key from `column`.
fn level_has_children_keyed_on(levels: &[DraftLevel], parent: &str, column: &str) -> bool {
    levels
        .iter()
        .any(|l| l.parent.as_ref().is_some_and(|(p, _)| p == parent))
        && parent_key_column(levels, parent) == column
}

/// The column of `parent` its children inherit: its key's own column.
fn parent_key_column(levels: &[DraftLevel], parent: &str) -> String {
    let Some(level) = levels.iter().find(|l| l.name == parent) else {
        return String::new();
    };
    let links: Vec<usize> = level.sample.children.iter().map(|(c, _)| *c).collect();
    let i = key_column(level.sample, &links).unwrap_or(0);
    level
        .sample
        .header
        .get(i)
        .map(|h| identifier(h))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Spec;

    fn sample(url: &str, delimiter: char, header: &[&str], rows: &[&[&str]]) -> Sample {
        Sample {
            url: url.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            records: rows
                .iter()
                .map(|r| r.iter().map(|f| f.to_string()).collect())
                .collect(),
            files: Vec::new(),
            delimiter,
            encoding: crate::Encoding::Utf8,
            children: Vec::new(),
        }
    }

    #[test]
    fn the_delimiter_is_the_one_that_splits_every_line_alike() {
        assert_eq!(sniff_delimiter("a;b;c\n1;2,5;x\n2;3,5;y\n"), ';');
        assert_eq!(sniff_delimiter("a,b\n1,\"x;y\"\n"), ',');
        assert_eq!(sniff_delimiter("a\tb\n1\t2\n"), '\t');
    }

    #[test]
    fn a_european_file_drafts_a_spec_that_puts_as_is() {
        let s = sample(
            "http://h/bookings.csv",
            ';',
            &["Buchung", "Kunde", "Betrag", "Datum", "Notiz"],
            &[
                &["1", "Müller", "1.234,56", "03/12/2026", "NA"],
                &["2", "Jäger", "-7,50", "24/12/2026", "ok"],
                &["3", "Weiß", "0,99", "01/01/2027", "NA"],
            ],
        );
        let draft = draft("bookings", &s);
        let spec = Spec::parse(&draft).unwrap_or_else(|e| panic!("{e}\n{draft}"));
        assert!(!draft.contains("QUESTION"), "{draft}");
        assert_eq!(spec.null, ["NA"]);
        let level = &spec.levels["bookings"];
        assert_eq!(level.csv.delimiter, ";");
        assert_eq!(level.key, ["buchung"]);
        let betrag = &level.columns[2];
        assert_eq!(betrag.kind, crate::ColumnType::Numeric);
        assert_eq!(betrag.decimal.as_deref(), Some(","));
        assert_eq!(betrag.thousands.as_deref(), Some("."));
        let datum = &level.columns[3];
        assert_eq!(datum.format.as_deref(), Some("[day]/[month]/[year]"));
    }

    #[test]
    fn nested_files_draft_levels_with_an_inherited_key() {
        let mut root = sample(
            "http://h/accounts.csv",
            ',',
            &["accountId", "transactionsUrl"],
            &[&["7", "tx/7.csv"], &["8", "tx/8.csv"]],
        );
        let mut child = sample(
            "http://h/tx/7.csv",
            ',',
            &["id", "amount"],
            &[&["1", "1.50"], &["2", "2.00"], &["1", "3.00"]],
        );
        // Ids repeat across files, not within one.
        child.files = vec![0, 0, 1];
        root.children.push((1, child));
        let draft = draft("accounts-draft", &root);
        let spec = Spec::parse(&draft).unwrap_or_else(|e| panic!("{e}\n{draft}"));
        assert_eq!(spec.root, "accounts");
        let tx = &spec.levels["tx"];
        assert_eq!(tx.key, ["account_id", "id"]);
        assert_eq!(tx.inherit[0].from, "accounts.account_id");
        assert_eq!(spec.levels["accounts"].children[0].level, "tx");
        assert!(!spec.levels["accounts"].columns[1].save);
    }

    #[test]
    fn a_date_that_reads_both_ways_is_a_question() {
        let s = sample(
            "http://h/events.csv",
            ',',
            &["id", "day"],
            &[&["1", "03/04/2026"], &["2", "05/06/2026"]],
        );
        let draft = draft("events", &s);
        assert!(
            draft.contains("# QUESTION: day-first or month-first?"),
            "{draft}"
        );
        assert!(draft.contains("1 QUESTION(S) above"), "{draft}");
        // Still a spec: answering is a one-line edit.
        Spec::parse(&draft).unwrap_or_else(|e| panic!("{e}\n{draft}"));
    }
}
