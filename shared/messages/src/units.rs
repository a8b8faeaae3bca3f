//! The units sluice's settings are written in, as docs/configuration.md's
//! documents them: durations like `30s`, sizes like `64KiB`. Every
//! component parses its settings with these, so they read alike.

use std::time::Duration;

use crate::Invalid;

/// `30s`, `500ms`, `7d`: humantime's syntax, and never zero.
pub fn parse_duration(s: &str) -> Result<Duration, Invalid> {
    let d = humantime::parse_duration(s)
        .map_err(|e| Invalid::caused_by(format!("{e} (write it like 30s, 500ms or 7d)"), e))?;
    if d.is_zero() {
        return Err(Invalid::new("must be more than zero"));
    }
    Ok(d)
}

/// A byte size: `1048576`, `64KiB`, `512MiB`, `2GB`, `4GiB`.
pub fn parse_size(text: &str) -> Result<u64, Invalid> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|e| {
        Invalid::caused_by(format!("{text:?} is not a size like 64KiB or 512MiB"), e)
    })?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(Invalid::new(format!(
                "{text:?} has an unknown unit: use B, KB, KiB, MB, MiB, GB or GiB"
            )))
        }
    };
    number
        .checked_mul(scale)
        .filter(|&n| n > 0)
        .ok_or_else(|| Invalid::new(format!("{text:?} is out of range")))
}

/// A size where `0` means no limit at all.
pub fn parse_limit(text: &str) -> Result<u64, Invalid> {
    match text.trim() {
        "0" => Ok(0),
        other => parse_size(other),
    }
}

/// 1234567 → "1,234,567".
pub fn group(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}
