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
    /// The header row; for a file without one ([`Sample::headerless`]),
    /// a name per column (`column_1`, …).
    pub header: Vec<String>,
    /// Whether the files have no header row (see [`has_header`]).
    pub headerless: bool,
    /// Bytes of the sample that are not UTF-8 though the rest is (read as
    /// UTF-8 all the same: their rows will be refused, not misread).
    pub invalid_utf8: usize,
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

/// Whether a file's first row names its columns: not when, in a column
/// whose other values all read as a number, date, timestamp or the like,
/// the first row's field reads as one too (a header says `amount`, not
/// `12.50`). A file of text columns only is taken to have a header.
pub fn has_header(first: &[String], rows: &[Vec<String>]) -> bool {
    if rows.is_empty() {
        return true;
    }
    !first.iter().enumerate().any(|(i, field)| {
        let field = field.trim();
        let values: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.get(i).map(|v| v.trim()))
            .filter(|v| !v.is_empty() && !MARKERS.contains(v))
            .collect();
        let g = guess(&values);
        !field.is_empty()
            && g.kind != "text"
            && drafted(&g).is_some_and(|(column, rules)| {
                crate::values::read(&column, field, false, &rules).is_ok()
            })
    })
}

/// The column `g` drafts, with the rules it is read by (`None`: the draft
/// is no column).
fn drafted(g: &Guess) -> Option<(crate::Column, crate::values::Rules)> {
    let toml = format!("name = \"x\"\ntype = {:?}\n{}", g.kind, g.extra.join("\n"));
    let column = toml::from_str::<crate::Column>(&toml).ok()?;
    let rules = crate::values::Rules {
        decimal: column
            .decimal
            .as_deref()
            .and_then(|d| d.chars().next())
            .unwrap_or('.'),
        thousands: column.thousands.as_deref().and_then(|t| t.chars().next()),
        format: crate::values::format_of(&column),
        zone: column
            .timezone
            .as_deref()
            .and_then(|z| crate::values::time_zone(z).ok()),
        ..Default::default()
    };
    Some((column, rules))
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
        timezone: None,
        save: true,
        position: None,
        null: None,
        decimal: None,
        thousands: None,
    };
    crate::values::read(&column, v, false, &rules).is_ok()
}

/// Whether a field looks like a link to a CSV file: a URL or path ending
/// in `.csv`, `.csv.gz` or `.tsv` (a website column is not followed).
pub fn looks_like_url(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let path = lower.split(['?', '#']).next().unwrap_or("");
    !path.contains(char::is_whitespace)
        && (path.ends_with(".csv") || path.ends_with(".csv.gz") || path.ends_with(".tsv"))
}

/// The guess for `values`, checked: every sampled value must read as the
/// drafted column, or the column is drafted as text with a question.
fn guess(values: &[&str]) -> Guess {
    let g = unchecked_guess(values);
    if g.kind == "text" {
        return g;
    }
    let Some((column, rules)) = drafted(&g) else {
        return g;
    };
    match values
        .iter()
        .find(|v| crate::values::read(&column, v, false, &rules).is_err())
    {
        None => g,
        Some(v) => Guess {
            kind: "text",
            extra: Vec::new(),
            note: format!("text ({} did not hold for every value)", g.note),
            question: Some(format!(
                "the sampled value {:?} does not read as {}: keep text, or fix the type",
                v.chars().take(40).collect::<String>(),
                g.kind
            )),
        },
    }
}

fn unchecked_guess(values: &[&str]) -> Guess {
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
    // Codes with leading zeros (zip codes, account numbers) keep them.
    let zero_led = |v: &&str| {
        let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
        digits.len() > 1 && digits.starts_with('0')
    };
    if values.iter().all(|v| is_integer(v)) && values.iter().any(zero_led) {
        return guessed(
            "text",
            Vec::new(),
            "digits with leading zeros: codes, kept as text".into(),
        );
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
            // `1,234` is a thousand and a half apart read either way.
            let three_after = |v: &&str| {
                let unsigned = v.trim_start_matches(['-', '+']);
                matches!(unsigned.split_once(','), Some((w, f))
                    if (1..=3).contains(&w.len()) && f.len() == 3 && !f.contains(['.', ' ']))
            };
            if thousands.is_none() && values.iter().all(three_after) {
                return Guess {
                    kind: "numeric",
                    extra: vec!["decimal = \",\"".into()],
                    note: "numbers like 1,234".into(),
                    question: Some(
                        "is the comma a decimal point (1,234 = 1.234) or a thousands separator (1,234 = 1234)? For thousands, write thousands = \",\" instead of decimal".into(),
                    ),
                };
            }
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
    let local = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day][first [T] [ ]][hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    if values
        .iter()
        .all(|v| time::PrimitiveDateTime::parse(v, &local).is_ok())
    {
        return Guess {
            kind: "timestamptz",
            extra: vec!["timezone = \"UTC\"".into()],
            note: format!("timestamps without an offset ({})", sure(n)),
            question: Some(
                "in which time zone were these times written? The file does not say: keep UTC, or write the zone's name (\"Europe/Berlin\") or offset (\"+01:00\")".into(),
            ),
        };
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
    // `3/7/2026` needs the unpadded form; `03/07/2026` reads either way.
    let padded = values
        .iter()
        .all(|v| v.split(sep).take(2).all(|p| p.len() == 2));
    let part = |name: &str| match padded {
        true => format!("[{name}]"),
        false => format!("[{name} padding:none]"),
    };
    let format = |first: &str, second: &str| {
        format!(
            "format = \"{}{sep}{}{sep}[year]\"",
            part(first),
            part(second)
        )
    };
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
                "day-first or month-first? Every sampled date reads both ways: keep day before month, or swap them".into(),
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
pub fn level_name(url: &str) -> String {
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

/// A name made unique among `used` by a counted suffix, within `max` bytes.
fn unique(base: &str, used: &mut HashSet<String>, max: usize) -> String {
    let mut n = 1;
    loop {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("_{n}")
        };
        let mut name = base.to_owned();
        name.truncate(max - suffix.len());
        name.push_str(&suffix);
        if used.insert(name.clone()) {
            return name;
        }
        n += 1;
    }
}

/// Drafts the spec `name` from `root` and the child samples under it. The
/// draft is checked before it is returned: whatever [`crate::Spec::parse`]
/// would refuse is asked as a question at its end.
pub fn draft(name: &str, root: &Sample) -> String {
    let mut out = String::new();
    let mut questions = Vec::new();
    let spec_name = identifier(name).replace('_', "-");
    let spec_name = match spec_name.starts_with(|c: char| c.is_ascii_lowercase()) {
        true => spec_name,
        false => format!("spec-{spec_name}"),
    };
    out.push_str(&format!(
        "# Drafted by `sluice spec infer` from the first rows of {}.\n# Each guess says how sure it is; where the sample cannot decide, a comment asks a question.\nformat = 1\nname = {}\n",
        root.url,
        quoted(&spec_name[..spec_name.len().min(64)])
    ));
    let mut levels = Vec::new();
    let mut used = HashSet::new();
    collect(root, None, &mut levels, &mut used);
    out.push_str(&format!("root = {}\n", quoted(&levels[0].name)));
    // NULL markers seen anywhere as whole fields (the sample cannot tell
    // a quoted one from an unquoted one).
    let markers: Vec<&str> = MARKERS
        .iter()
        .copied()
        .filter(|m| {
            levels.iter().any(|l| {
                l.sample
                    .records
                    .iter()
                    .any(|r| r.iter().any(|f| f.trim() == *m))
            })
        })
        .collect();
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
    // Each level's key, by level: what its children inherit.
    let mut keys: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    for level in &levels {
        let key = write_level(&mut out, level, &keys, &markers, &mut questions);
        keys.insert(level.name.clone(), key);
    }
    if let Err(refused) = crate::Spec::parse(&out) {
        out.push('\n');
        for problem in refused.problems {
            out.push_str(&format!("# QUESTION: {}\n", problem.replace('\n', " ")));
            questions.push(problem);
        }
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
    /// Each link column and the level its files were given.
    children: Vec<(usize, String)>,
}

/// Names `sample`'s level and those below it, parents first; returns the
/// level's name.
fn collect<'a>(
    sample: &'a Sample,
    parent: Option<(String, usize)>,
    levels: &mut Vec<DraftLevel<'a>>,
    used: &mut HashSet<String>,
) -> String {
    let name = unique(&level_name(&sample.url), used, 64);
    let at = levels.len();
    levels.push(DraftLevel {
        name: name.clone(),
        sample,
        parent,
        children: Vec::new(),
    });
    for (column, child) in &sample.children {
        let child = collect(child, Some((name.clone(), *column)), levels, used);
        levels[at].children.push((*column, child));
    }
    name
}

/// One sampled column, as the draft writes it.
struct DraftColumn {
    header: String,
    column: String,
    guess: Guess,
    empties: usize,
}

/// Writes one level; returns its key as (table column, the column a child
/// takes it from): children inherit all of it, so a key stays whole however
/// deep the files go.
fn write_level(
    out: &mut String,
    level: &DraftLevel,
    keys: &std::collections::HashMap<String, Vec<(String, String)>>,
    markers: &[&str],
    questions: &mut Vec<String>,
) -> Vec<(String, String)> {
    let sample = level.sample;
    out.push_str(&format!(
        "\n# {} rows sampled from {}\n[levels.{}]\n",
        sample.records.len(),
        sample.url,
        level.name
    ));
    let links: Vec<usize> = sample.children.iter().map(|(c, _)| *c).collect();
    // Header names match ignoring case: a name met twice is left out.
    let mut headers = HashSet::new();
    let mut names = HashSet::new();
    let mut columns: Vec<Option<DraftColumn>> = Vec::new();
    let mut skipped = Vec::new();
    for (i, header) in sample.header.iter().enumerate() {
        let trimmed = header.trim();
        if trimmed.is_empty() || !headers.insert(trimmed.to_ascii_lowercase()) {
            skipped.push(format!("{:?} (column {})", header, i + 1));
            columns.push(None);
            continue;
        }
        let values: Vec<&str> = sample
            .records
            .iter()
            .filter_map(|r| r.get(i).map(|v| v.trim()))
            .filter(|v| !v.is_empty() && !markers.contains(v))
            .collect();
        let empties = sample.records.len() - values.len();
        let column = unique(&identifier(header), &mut names, 63);
        columns.push(Some(DraftColumn {
            header: header.clone(),
            column,
            guess: guess(&values),
            empties,
        }));
    }
    if !skipped.is_empty() {
        out.push_str(&format!(
            "# Left out: headers that are empty or repeat another's name: {}\n",
            skipped.join(", ")
        ));
    }
    let own_key = key_column(sample, &links).filter(|i| columns[*i].is_some());
    // The parent's whole key, inherited, each under its own name unless
    // this level has a column of that name.
    let inherited: Vec<(String, String)> = match &level.parent {
        Some((parent, _)) => keys
            .get(parent)
            .into_iter()
            .flatten()
            .map(|(parent_column, _)| {
                let name = if names.contains(parent_column) {
                    unique(
                        &identifier(&format!("{parent}_{parent_column}")),
                        &mut names,
                        63,
                    )
                } else {
                    names.insert(parent_column.clone());
                    parent_column.clone()
                };
                (name, format!("{parent}.{parent_column}"))
            })
            .collect(),
        None => Vec::new(),
    };
    out.push_str(&format!("table = {}\n", quoted(&level.name)));
    let mut key: Vec<(String, String)> = inherited
        .iter()
        .map(|(name, _)| (name.clone(), name.clone()))
        .collect();
    match own_key.and_then(|i| columns[i].as_ref()) {
        Some(c) => {
            let within = match &level.parent {
                Some(_) => " within each file",
                None => "",
            };
            out.push_str(&format!(
                "# Key (a guess): {} is present and distinct in every sampled row{within}.\n",
                c.column
            ));
            key.push((c.column.clone(), c.column.clone()));
        }
        None => {
            out.push_str("# QUESTION: no sampled column is present and distinct in every row: list the columns that identify a row.\n");
            questions.push(format!("level {}: key", level.name));
            if let Some(c) = columns.iter().flatten().next() {
                key.push((c.column.clone(), c.column.clone()));
            }
        }
    }
    out.push_str(&format!(
        "key = [{}]\n",
        key.iter()
            .map(|(k, _)| quoted(k))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !inherited.is_empty() {
        out.push_str(&format!(
            "inherit = [{}]\n",
            inherited
                .iter()
                .map(|(column, from)| format!(
                    "{{ column = {}, from = {} }}",
                    quoted(column),
                    quoted(from)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push_str("columns = [\n");
    for (i, c) in columns.iter().enumerate() {
        let Some(c) = c else { continue };
        let present = match c.empties {
            0 => String::new(),
            n => format!("; {n} empty or NULL"),
        };
        out.push_str(&format!("    # {}{present}\n", c.guess.note));
        if let Some(q) = &c.guess.question {
            out.push_str(&format!("    # QUESTION: {q}\n"));
            questions.push(format!("level {}: {}", level.name, c.column));
        }
        let mut fields = vec![format!("name = {}", quoted(&c.header))];
        if c.column != c.header {
            fields.push(format!("column = {}", quoted(&c.column)));
        }
        fields.push(format!("type = {}", quoted(c.guess.kind)));
        fields.extend(c.guess.extra.iter().cloned());
        if sample.headerless {
            fields.push(format!("position = {}", i + 1));
        }
        if links.contains(&i) {
            fields.push("save = false".into());
        }
        // The key column never reads as NULL (children take it too).
        if own_key == Some(i) && c.empties == 0 {
            fields.push("empty = \"error\"".into());
        }
        out.push_str(&format!("    {{ {} }},\n", fields.join(", ")));
    }
    out.push_str("]\n");
    let child_links: Vec<String> = level
        .children
        .iter()
        .filter(|(column, _)| columns[*column].is_some())
        .map(|(column, child)| {
            format!(
                "{{ url = {}, level = {} }}",
                quoted(&sample.header[*column]),
                quoted(child)
            )
        })
        .collect();
    if !child_links.is_empty() {
        out.push_str(&format!("children = [{}]\n", child_links.join(", ")));
    }
    if sample.delimiter != ',' || sample.encoding != crate::Encoding::Utf8 || sample.headerless {
        out.push_str(&format!("\n[levels.{}.csv]\n", level.name));
        if sample.headerless {
            out.push_str("# The first row reads as data (values of the types below): no header row.\nheader = false\n");
        }
        if sample.delimiter != ',' {
            out.push_str(&format!(
                "delimiter = {}\n",
                quoted(&sample.delimiter.to_string())
            ));
        }
        match sample.encoding {
            crate::Encoding::Utf16 => {
                out.push_str("# A byte order mark says UTF-16.\nencoding = \"utf-16\"\n")
            }
            crate::Encoding::Windows1252 | crate::Encoding::Latin1 => out.push_str(
                "# The bytes are not UTF-8: Windows-1252 is a guess (Latin-1 differs only in 0x80 to 0x9F).\nencoding = \"windows-1252\"\n",
            ),
            crate::Encoding::Utf8 => {}
        }
    }
    if sample.invalid_utf8 > 0 {
        out.push_str(&format!(
            "# UTF-8 (the default), though {} byte(s) of the sample are not: their rows will be refused, not misread.\n",
            sample.invalid_utf8
        ));
    }
    key
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
            headerless: false,
            invalid_utf8: 0,
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
    fn a_first_row_of_data_is_no_header() {
        let rows = |r: &[&[&str]]| -> Vec<Vec<String>> {
            r.iter()
                .map(|r| r.iter().map(|f| f.to_string()).collect())
                .collect()
        };
        let data = rows(&[&["2", "Bob", "3,00"], &["3", "Cy", "4,50"]]);
        let first = |r: &[&str]| r.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert!(!has_header(&first(&["1", "Ann", "12,50"]), &data));
        assert!(has_header(&first(&["id", "name", "amount"]), &data));
        // Text only: a header is the likelier reading.
        assert!(has_header(&first(&["Ann", "x"]), &rows(&[&["Bob", "y"]])));

        let mut s = sample(
            "http://h/people.tsv",
            '\t',
            &["column_1", "column_2", "column_3"],
            &[&["1", "Ann", "12,50"], &["2", "Bob", "3,00"]],
        );
        s.headerless = true;
        let draft = draft("people", &s);
        let spec = Spec::parse(&draft).unwrap_or_else(|e| panic!("{e}\n{draft}"));
        let level = &spec.levels["people"];
        assert!(!level.csv.header, "{draft}");
        assert_eq!(level.columns[2].position, Some(3));
    }

    #[test]
    fn an_r_export_drafts_markers_and_asks_for_the_time_zone() {
        let s = sample(
            "http://h/flights.csv",
            ',',
            &["id", "carrier", "delay", "departed"],
            &[
                &["1", "NA", "NA", "2013-01-01 05:17:00"],
                &["2", "UA", "-4", "NA"],
                &["3", "C:\\x", "12", "2013-01-01T06:00"],
            ],
        );
        let draft = draft("flights", &s);
        let spec = Spec::parse(&draft).unwrap_or_else(|e| panic!("{e}\n{draft}"));
        assert_eq!(spec.null, ["NA"]);
        let level = &spec.levels["flights"];
        assert_eq!(level.columns[2].kind, crate::ColumnType::Bigint);
        let departed = &level.columns[3];
        assert_eq!(departed.kind, crate::ColumnType::Timestamptz);
        assert_eq!(departed.timezone.as_deref(), Some("UTC"));
        assert!(draft.contains("# QUESTION: in which time zone"), "{draft}");
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

    #[test]
    fn a_key_stays_whole_three_levels_down() {
        let mut root = sample(
            "http://h/customers.csv",
            ',',
            &["id", "orders"],
            &[&["1", "o/1.csv"], &["2", "o/2.csv"]],
        );
        let mut orders = sample(
            "http://h/o/1.csv",
            ',',
            &["order", "lines"],
            &[&["10", "l/10.csv"], &["10", "l/10b.csv"]],
        );
        orders.files = vec![0, 1];
        let mut lines = sample(
            "http://h/l/10.csv",
            ',',
            &["n", "sku"],
            &[&["1", "a"], &["2", "b"]],
        );
        lines.files = vec![0, 0];
        orders.children.push((1, lines));
        root.children.push((1, orders));
        let draft = draft("shop", &root);
        let spec = Spec::parse(&draft).unwrap_or_else(|e| panic!("{e}\n{draft}"));
        // Order ids repeat across customers: the lines' key keeps the customer.
        assert_eq!(spec.levels["l"].key, ["id", "order", "n"], "{draft}");
        assert_eq!(spec.levels["l"].inherit[0].from, "o.id");
    }

    #[test]
    fn codes_dates_and_headers_that_would_mislead_are_handled() {
        let s = sample(
            "http://h/places.csv",
            ',',
            &["zip", "", "Zip", "since", "amount"],
            &[
                &["01234", "x", "1", "3/7/2026", "1,234"],
                &["98765", "y", "2", "25/12/2026", "2,500"],
            ],
        );
        let draft = draft("places", &s);
        assert!(
            draft.contains(r#"{ name = "zip", type = "text", empty = "error" }"#),
            "{draft}"
        );
        assert!(
            draft.contains("format = \"[day padding:none]/[month padding:none]/[year]\""),
            "{draft}"
        );
        assert!(
            draft.contains("Left out: headers that are empty or repeat"),
            "{draft}"
        );
        assert!(
            draft.contains("# QUESTION: is the comma a decimal point"),
            "{draft}"
        );
        let spec = Spec::parse(&draft).unwrap_or_else(|e| panic!("{e}\n{draft}"));
        let level = &spec.levels["places"];
        let since = &level.columns[1];
        let rules = crate::values::Rules::of(&spec, level, since, false);
        assert_eq!(
            crate::values::read(since, "3/7/2026", false, &rules)
                .unwrap()
                .as_deref(),
            Some("2026-07-03")
        );
    }
}
