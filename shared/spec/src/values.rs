//! Reading one CSV field as its column's type.
//!
//! A value travels as text in the canonical form PostgreSQL reads back
//! exactly (`COPY` text input), or as NULL: integers without a sign or
//! leading zeros to doubt, decimals as written (never through a float),
//! booleans as `true`/`false`, dates as `YYYY-MM-DD`, timestamps as RFC
//! 3339 in UTC, UUIDs hyphenated in lowercase, JSON as given once it
//! parses. Anything else is refused here, with the column and the value,
//! rather than by the database a batch later.

use time::{
    format_description::{well_known::Rfc3339, OwnedFormatItem},
    OffsetDateTime, PrimitiveDateTime,
};

use crate::{Column, ColumnType, Empty};

/// A field that is not a value of its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The column's header name.
    pub column: String,
    /// The field, cut to 64 characters and with control characters shown
    /// escaped, so a hostile file cannot flood or steer a terminal.
    pub value: String,
    /// What the column takes.
    pub expected: String,
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "column {}: {:?} is not {}",
            self.column, self.value, self.expected
        )
    }
}

impl std::error::Error for ValueError {}

/// How a field is shown in an error.
fn shown(field: &str) -> String {
    let mut out: String = field
        .chars()
        .take(64)
        .flat_map(char::escape_debug)
        .collect();
    if field.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// How one column's fields are read beyond its type: the spec's, level's
/// and column's settings, resolved once per column.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Unquoted fields that mean NULL (the empty field is `empty`'s).
    pub nulls: Vec<String>,
    /// The decimal separator.
    pub decimal: char,
    /// The thousands separator, if numbers have one.
    pub thousands: Option<char>,
    /// Whether the column is part of a key (its table's, or a
    /// descendant's that comes from it): then it never reads as NULL.
    pub key: bool,
    /// The column's `format`, parsed (dates and timestamps).
    pub format: Option<OwnedFormatItem>,
    /// The time zone of timestamps written without an offset, if one was
    /// declared: then ISO 8601 date-times without an offset are read too.
    pub zone: Option<jiff::tz::TimeZone>,
}

impl Default for Rules {
    /// RFC 4180 defaults: no marker but the empty field, `.` decimals, no
    /// thousands separator, not a key.
    fn default() -> Self {
        Rules {
            nulls: Vec::new(),
            decimal: '.',
            thousands: None,
            key: false,
            format: None,
            zone: None,
        }
    }
}

/// A column's `format`, parsed (`None` if it has none, or a bad one, which
/// the spec's checks refuse).
pub fn format_of(column: &Column) -> Option<OwnedFormatItem> {
    column
        .format
        .as_deref()
        .and_then(|f| time::format_description::parse_owned::<2>(f).ok())
}

/// A time zone name that names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTimeZone(String);

impl std::fmt::Display for UnknownTimeZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.starts_with(['+', '-']) {
            true => write!(f, "timezone {:?} is not an offset like +01:00", self.0),
            false => write!(
                f,
                "timezone {:?} is not a time zone: write an IANA name like \"Europe/Berlin\", \"UTC\", or an offset like \"+01:00\"",
                self.0
            ),
        }
    }
}

impl std::error::Error for UnknownTimeZone {}

/// A time zone by name: an IANA name (`Europe/Berlin`), `UTC`, or a fixed
/// offset (`+01:00`, `-0530`).
pub fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, UnknownTimeZone> {
    let unknown = || UnknownTimeZone(name.to_owned());
    let offset = time::macros::format_description!(
        version = 2,
        "[first [[offset_hour]:[offset_minute]] [[offset_hour][offset_minute]] [[offset_hour]]]"
    );
    if name.starts_with(['+', '-']) {
        // Zones on Earth are at most 14 hours from UTC.
        return time::UtcOffset::parse(name, &offset)
            .ok()
            .filter(|o| o.whole_hours().abs() <= 14)
            .and_then(|o| jiff::tz::Offset::from_seconds(o.whole_seconds()).ok())
            .map(jiff::tz::TimeZone::fixed)
            .ok_or_else(unknown);
    }
    jiff::tz::TimeZone::get(name).map_err(|_| unknown())
}

impl Rules {
    /// The rules of `column` of `level` in `spec`.
    pub fn of(spec: &crate::Spec, level: &crate::Level, column: &Column, key: bool) -> Rules {
        let one = |s: &str| s.chars().next();
        Rules {
            nulls: column
                .null
                .clone()
                .unwrap_or_else(|| spec.null.clone())
                .into_iter()
                .filter(|m| !m.is_empty())
                .collect(),
            decimal: column
                .decimal
                .as_deref()
                .and_then(one)
                .or_else(|| one(&level.csv.decimal))
                .unwrap_or('.'),
            thousands: match &column.thousands {
                Some(t) => one(t),
                None => level.csv.thousands.as_deref().and_then(one),
            },
            key,
            format: format_of(column),
            zone: column
                .timezone
                .as_deref()
                .or(level.csv.timezone.as_deref())
                .filter(|_| column.kind == crate::ColumnType::Timestamptz)
                .and_then(|z| time_zone(z).ok()),
        }
    }
}

/// Reads `field` as a value of `column` under `rules`: `Ok(None)` is NULL.
/// A `quoted` field is always a value, never a NULL marker (`"NA"` is the
/// text NA); an empty field, quoted or not, is what the column's `empty`
/// says, and an error in a key column.
pub fn read(
    column: &Column,
    field: &str,
    quoted: bool,
    rules: &Rules,
) -> Result<Option<String>, ValueError> {
    let fail = |expected: String| ValueError {
        column: column.name.clone(),
        value: shown(field),
        expected,
    };
    if field.is_empty() {
        return match (column.empty, rules.key) {
            (_, true) => Err(fail("empty: a key column needs a value".into())),
            (Empty::Null, false) => Ok(None),
            (Empty::Error, false) => Err(fail("empty: this column needs a value".into())),
            (Empty::EmptyString, false) => Ok(Some(String::new())),
        };
    }
    if !quoted && rules.nulls.iter().any(|m| m == field) {
        return match rules.key {
            true => Err(fail("a NULL marker: a key column needs a value".into())),
            false => Ok(None),
        };
    }
    let number = || localized(field, rules).ok_or_else(|| fail(number_format(rules)));
    let value = match column.kind {
        ColumnType::Bigint => number()?
            .parse::<i64>()
            .map(|v| v.to_string())
            .map_err(|_| fail("a 64-bit integer".into()))?,
        ColumnType::Integer => number()?
            .parse::<i32>()
            .map(|v| v.to_string())
            .map_err(|_| fail("a 32-bit integer".into()))?,
        ColumnType::Numeric => numeric(&number()?, column.precision, column.scale)
            .ok_or_else(|| fail(numeric_expected(column.precision, column.scale)))?,
        // PostgreSQL text cannot hold a NUL character.
        ColumnType::Text if field.contains('\0') => {
            return Err(fail("text without NUL characters".into()))
        }
        ColumnType::Text => field.to_owned(),
        ColumnType::Boolean => match field.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => "true".to_owned(),
            "false" | "f" | "no" | "n" | "off" | "0" => "false".to_owned(),
            _ => {
                return Err(fail(
                    "a boolean (true/false, t/f, yes/no, y/n, on/off, 1/0)".into(),
                ))
            }
        },
        ColumnType::Date => date(field, rules.format.as_ref())
            .ok_or_else(|| fail(date_expected(column.format.as_deref())))?,
        ColumnType::Timestamptz => {
            timestamp(field, rules).ok_or_else(|| fail(timestamp_expected(column, rules)))?
        }
        ColumnType::Uuid => uuid::Uuid::try_parse(field)
            .map(|u| u.hyphenated().to_string())
            .map_err(|_| fail("a UUID".into()))?,
        ColumnType::Jsonb => {
            serde_json::from_str::<serde::de::IgnoredAny>(field)
                .map_err(|_| fail("a JSON document".into()))?;
            // jsonb refuses the NUL character, escaped or not.
            if field.contains('\0') || field.contains("\\u0000") {
                return Err(fail("a JSON document without NUL characters".into()));
            }
            field.to_owned()
        }
    };
    Ok(Some(value))
}

/// A number written with `rules`' separators, rewritten with none for
/// thousands and `.` for decimals; `None` when its thousands groups are not
/// groups of three (with `.` for thousands, `1.5` must not read as 15).
fn localized(field: &str, rules: &Rules) -> Option<String> {
    if rules.decimal == '.' && rules.thousands.is_none() {
        return Some(field.to_owned());
    }
    let (whole, fraction) = match field.split_once(rules.decimal) {
        Some((w, f)) => (w, Some(f)),
        None => (field, None),
    };
    // A point in a decimal-comma number with no thousands separator
    // declared is a thousands point nobody declared: refused, not read.
    if rules.decimal != '.' && rules.thousands.is_none() && whole.contains('.') {
        return None;
    }
    let whole = match rules.thousands {
        Some(t) if whole.contains(t) => {
            let unsigned = whole.trim_start_matches(['-', '+']);
            let mut groups = unsigned.split(t);
            let first = groups.next()?;
            let grouped = (1..=3).contains(&first.len()) && groups.all(|g| g.len() == 3);
            if !grouped || fraction.is_some_and(|f| f.contains(t)) {
                return None;
            }
            whole.replace(t, "")
        }
        _ => whole.to_owned(),
    };
    Some(match fraction {
        Some(f) => format!("{whole}.{f}"),
        None => whole,
    })
}

fn number_format(rules: &Rules) -> String {
    match rules.thousands {
        Some(t) => format!(
            "a number with {:?} for thousands and {:?} for decimals",
            t, rules.decimal
        ),
        None => format!("a number with {:?} for decimals", rules.decimal),
    }
}

fn numeric_expected(precision: Option<u32>, scale: Option<u32>) -> String {
    match precision {
        Some(p) => format!(
            "an exact decimal of at most {p} digits, {} after the point",
            scale.unwrap_or(0)
        ),
        None => "an exact decimal (digits, an optional point and digits)".to_owned(),
    }
}

/// An exact decimal: optional sign, digits, optional point and digits; no
/// exponent, no spaces, no thousands separators. With a precision, the
/// digits before the point are at most `precision - scale` and after it at
/// most `scale` (more would be rounded by the database: refused instead).
fn numeric(field: &str, precision: Option<u32>, scale: Option<u32>) -> Option<String> {
    let unsigned = field.strip_prefix(['-', '+']).unwrap_or(field);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !digits(whole)
        || !digits(fraction)
        || (unsigned.ends_with('.') && whole.is_empty())
    {
        return None;
    }
    // Zeros that change no value count for nothing: `1.50` fits a scale
    // of 1, `007` a precision of 1.
    let significant_whole = whole.trim_start_matches('0').len();
    let significant_fraction = fraction.trim_end_matches('0').len();
    let fits = match precision {
        Some(p) => {
            let s = scale.unwrap_or(0);
            significant_whole as u32 <= p.saturating_sub(s) && significant_fraction as u32 <= s
        }
        // PostgreSQL's own limits for an unconstrained numeric.
        None => significant_whole <= 131_072 && significant_fraction <= 16_383,
    };
    fits.then(|| field.strip_prefix('+').unwrap_or(field).to_owned())
}

fn date_expected(format: Option<&str>) -> String {
    match format {
        None => "an ISO 8601 date (YYYY-MM-DD)".to_owned(),
        Some(f) => format!("a date in the format {f}"),
    }
}

/// A date as `YYYY-MM-DD`, from ISO 8601 or the column's `format` (checked
/// with the spec).
fn date(field: &str, format: Option<&OwnedFormatItem>) -> Option<String> {
    let iso = time::macros::format_description!("[year]-[month]-[day]");
    let date = match format {
        None => time::Date::parse(field, &iso).ok()?,
        Some(format) => time::Date::parse(field, format).ok()?,
    };
    // PostgreSQL reads years 1 to 9999 as written; year 0 and earlier
    // would need BC.
    if date.year() < 1 {
        return None;
    }
    date.format(&iso).ok()
}

fn timestamp_expected(column: &Column, rules: &Rules) -> String {
    match (&column.format, &rules.zone) {
        (None, None) => "an RFC 3339 timestamp (2026-12-03T14:05:00Z)".to_owned(),
        (None, Some(_)) => {
            "an ISO 8601 timestamp (2026-12-03 14:05:00, or with an offset)".to_owned()
        }
        (Some(f), _) => format!("a timestamp in the format {f}"),
    }
}

/// A timestamp as RFC 3339 in UTC, from RFC 3339 or the column's `format`;
/// one written without an offset is in the declared zone (UTC if none).
fn timestamp(field: &str, rules: &Rules) -> Option<String> {
    let local = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day][first [T] [ ]][hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    let parsed = match &rules.format {
        None => match OffsetDateTime::parse(field, &Rfc3339) {
            Ok(t) => t,
            Err(_) if rules.zone.is_some() => {
                in_zone(PrimitiveDateTime::parse(field, &local).ok()?, rules)?
            }
            Err(_) => return None,
        },
        // A format with an offset says it; one without is in the zone.
        Some(format) => match OffsetDateTime::parse(field, format) {
            Ok(t) => t,
            Err(_) => in_zone(PrimitiveDateTime::parse(field, format).ok()?, rules)?,
        },
    };
    let utc = parsed.to_offset(time::UtcOffset::UTC);
    // PostgreSQL keeps microseconds and years from 1: anything finer would
    // be rounded (a leap second, read as .999999999, into the next day).
    if utc.nanosecond() % 1_000 != 0 || utc.year() < 1 || parsed.year() < 1 {
        return None;
    }
    utc.format(&Rfc3339).ok()
}

/// A wall-clock time in the declared zone (UTC if none). In a repeated
/// hour it is the first; in a skipped one, moved forward by the gap (as
/// java.time and RFC 5545 resolve them).
fn in_zone(t: PrimitiveDateTime, rules: &Rules) -> Option<OffsetDateTime> {
    let Some(zone) = &rules.zone else {
        return Some(t.assume_utc());
    };
    let civil = jiff::civil::DateTime::new(
        i16::try_from(t.year()).ok()?,
        u8::from(t.month()) as i8,
        t.day() as i8,
        t.hour() as i8,
        t.minute() as i8,
        t.second() as i8,
        t.nanosecond() as i32,
    )
    .ok()?;
    let instant = zone.to_timestamp(civil).ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(instant.as_nanosecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(kind: &str, extra: &str) -> (Column, Rules) {
        let spec = format!(
            r#"name = "t"
            root = "l"
            [levels.l]
            columns = [{{ name = "c", type = "{kind}" {extra} }}]"#
        );
        let spec = crate::Spec::parse(&spec).unwrap();
        let level = &spec.levels["l"];
        let column = level.columns[0].clone();
        let rules = Rules::of(&spec, level, &column, false);
        (column, rules)
    }

    fn ok(kind: &str, extra: &str, field: &str) -> Option<String> {
        let (column, rules) = column(kind, extra);
        read(&column, field, false, &rules).unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(kind: &str, extra: &str, field: &str) -> String {
        let (column, rules) = column(kind, extra);
        read(&column, field, false, &rules)
            .expect_err(field)
            .to_string()
    }

    #[test]
    fn null_markers_are_unquoted_fields_and_empty_text_can_stay_apart() {
        let rules = Rules {
            nulls: vec!["NA".into(), "\\N".into()],
            ..Rules::default()
        };
        let text = column("text", "").0;
        assert_eq!(read(&text, "NA", false, &rules).unwrap(), None);
        assert_eq!(read(&text, "\\N", false, &rules).unwrap(), None);
        // Namibia, quoted: a value.
        assert_eq!(
            read(&text, "NA", true, &rules).unwrap().as_deref(),
            Some("NA")
        );
        let kept = column("text", r#", empty = "empty-string""#).0;
        assert_eq!(read(&kept, "", true, &rules).unwrap().as_deref(), Some(""));
        let key = Rules { key: true, ..rules };
        assert!(read(&column("bigint", "").0, "NA", false, &key)
            .unwrap_err()
            .to_string()
            .contains("a NULL marker: a key column needs a value"));
    }

    #[test]
    fn timestamps_without_an_offset_are_read_in_the_declared_zone() {
        let berlin = r#", timezone = "Europe/Berlin""#;
        for (local, utc) in [
            // Winter, summer, and values that say their own offset.
            ("2026-12-03 14:05:00", "2026-12-03T13:05:00Z"),
            ("2026-07-01T14:05:00.25", "2026-07-01T12:05:00.25Z"),
            ("2026-07-01 14:05", "2026-07-01T12:05:00Z"),
            ("2026-07-01T14:05:00Z", "2026-07-01T14:05:00Z"),
            // The repeated hour of October is its first; March's skipped
            // one moves on by the gap.
            ("2026-10-25 02:30:00", "2026-10-25T00:30:00Z"),
            ("2026-03-29 02:30:00", "2026-03-29T01:30:00Z"),
        ] {
            assert_eq!(
                ok("timestamptz", berlin, local).as_deref(),
                Some(utc),
                "{local}"
            );
        }
        let format = r#", format = "[day].[month].[year] [hour]:[minute]", timezone = "-05:30""#;
        assert_eq!(
            ok("timestamptz", format, "03.12.2026 14:05").as_deref(),
            Some("2026-12-03T19:35:00Z")
        );
        // Without a declared zone a value without an offset is refused
        // (unless a format without an offset says so: UTC, tested below).
        assert!(refused("timestamptz", "", "2026-12-03 14:05:00").contains("RFC 3339"));
        assert!(refused("timestamptz", berlin, "03/12/2026").contains("ISO 8601 timestamp"));
        for (zone, said) in [
            ("Mars/Olympus", "is not a time zone"),
            ("+25:00", "is not an offset"),
        ] {
            let spec = format!(
                "name = \"t\"\nroot = \"l\"\n[levels.l]\ncolumns = [{{ name = \"c\", type = \"timestamptz\", timezone = \"{zone}\" }}]"
            );
            let refused = crate::Spec::parse(&spec).unwrap_err().to_string();
            assert!(refused.contains(said), "{refused}");
        }
    }

    #[test]
    fn numbers_read_with_their_declared_separators() {
        let european = Rules {
            decimal: ',',
            thousands: Some('.'),
            ..Rules::default()
        };
        let numeric = column("numeric", "").0;
        let read_as = |field: &str| read(&numeric, field, false, &european);
        assert_eq!(read_as("1.234,56").unwrap().as_deref(), Some("1234.56"));
        assert_eq!(read_as("-12,5").unwrap().as_deref(), Some("-12.5"));
        assert_eq!(read_as("1234").unwrap().as_deref(), Some("1234"));
        // A point that is no thousands group is refused, not read as 15.
        let e = read_as("1.5").unwrap_err().to_string();
        assert!(e.contains("'.' for thousands and ',' for decimals"), "{e}");
        assert!(read_as("12.34.567").is_err());
        let swiss = Rules {
            thousands: Some('\''),
            ..Rules::default()
        };
        assert_eq!(
            read(&column("bigint", "").0, "1'000'000", false, &swiss)
                .unwrap()
                .as_deref(),
            Some("1000000")
        );
    }

    #[test]
    fn each_type_reads_its_values_canonically() {
        assert_eq!(
            ok("bigint", "", "-9223372036854775808").as_deref(),
            Some("-9223372036854775808")
        );
        assert_eq!(ok("bigint", "", "+7").as_deref(), Some("7"));
        assert_eq!(
            ok("integer", "", "2147483647").as_deref(),
            Some("2147483647")
        );
        assert_eq!(
            ok("numeric", "", "+12345678901234567890.123").as_deref(),
            Some("12345678901234567890.123")
        );
        assert_eq!(
            ok("numeric", ", precision = 5, scale = 2", "123.45").as_deref(),
            Some("123.45")
        );
        assert_eq!(ok("numeric", "", ".5").as_deref(), Some(".5"));
        assert_eq!(
            ok("numeric", ", precision = 3, scale = 1", "01.50").as_deref(),
            Some("01.50")
        );
        assert_eq!(
            ok("timestamptz", "", "2026-12-03T14:05:00.123456Z").as_deref(),
            Some("2026-12-03T14:05:00.123456Z")
        );
        assert_eq!(ok("text", "", " as is ").as_deref(), Some(" as is "));
        assert_eq!(ok("boolean", "", "Yes").as_deref(), Some("true"));
        assert_eq!(ok("boolean", "", "0").as_deref(), Some("false"));
        assert_eq!(ok("date", "", "2026-12-03").as_deref(), Some("2026-12-03"));
        assert_eq!(
            ok("date", r#", format = "[day]/[month]/[year]""#, "03/12/2026").as_deref(),
            Some("2026-12-03")
        );
        assert_eq!(
            ok("timestamptz", "", "2026-12-03T15:05:00+01:00").as_deref(),
            Some("2026-12-03T14:05:00Z")
        );
        assert_eq!(
            ok(
                "timestamptz",
                r#", format = "[year]-[month]-[day] [hour]:[minute]""#,
                "2026-12-03 14:05"
            )
            .as_deref(),
            Some("2026-12-03T14:05:00Z")
        );
        assert_eq!(
            ok("uuid", "", "{67E55044-10B1-426F-9247-BB680E5FE0C8}").as_deref(),
            Some("67e55044-10b1-426f-9247-bb680e5fe0c8")
        );
        assert_eq!(
            ok("jsonb", "", r#"{"a": [1, 2]}"#).as_deref(),
            Some(r#"{"a": [1, 2]}"#)
        );
        assert_eq!(ok("bigint", "", ""), None);
        assert_eq!(ok("text", "", ""), None);
    }

    #[test]
    fn a_refused_value_names_its_column_and_what_it_takes() {
        assert_eq!(
            refused("bigint", "", "12.5"),
            r#"column c: "12.5" is not a 64-bit integer"#
        );
        assert_eq!(
            refused("integer", "", "2147483648"),
            r#"column c: "2147483648" is not a 32-bit integer"#
        );
        for bad in ["1e5", "1,5", " 1", "", "-", ".", "1.2.3", "0x10", "NaN"] {
            if !bad.is_empty() {
                assert!(
                    refused("numeric", "", bad).contains("exact decimal"),
                    "{bad}"
                );
            }
        }
        assert!(refused("numeric", ", precision = 5, scale = 2", "1234.5")
            .contains("at most 5 digits, 2 after"));
        assert!(
            refused("numeric", ", precision = 5, scale = 2", "1.234").contains("at most 5 digits")
        );
        assert!(refused("boolean", "", "maybe").contains("a boolean"));
        assert!(refused("date", "", "2026-02-30").contains("ISO 8601 date"));
        assert!(refused("timestamptz", "", "2026-12-03 14:05").contains("RFC 3339"));
        assert!(refused("uuid", "", "not-a-uuid").contains("a UUID"));
        assert!(refused("text", "", "a\0b").contains("without NUL"));
        assert!(refused("jsonb", "", r#""a\u0000b""#).contains("without NUL"));
        assert!(refused("date", "", "0000-01-01").contains("ISO 8601 date"));
        assert!(refused("timestamptz", "", "2026-12-03T14:05:00.0000005Z").contains("RFC 3339"));
        assert!(refused("timestamptz", "", "2016-12-31T23:59:60Z").contains("RFC 3339"));
        assert!(refused("jsonb", "", "{").contains("a JSON document"));
        assert!(refused("bigint", r#", empty = "error""#, "").contains("this column needs a value"));
        let key = read(
            &column("text", "").0,
            "",
            false,
            &Rules {
                key: true,
                ..Rules::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(key.contains("a key column needs a value"), "{key}");
        // A hostile field is cut short and its control characters escaped.
        let long = format!("\u{1b}[2J{}", "x".repeat(500));
        let shown = refused("bigint", "", &long);
        assert!(shown.len() < 140 && !shown.contains('\u{1b}'), "{shown}");
    }
}
