//! Where an earlier attempt at a file stopped, and what the server says
//! about the file now: what a later attempt needs to ask for the rest
//! only (`Range` + `If-Range`), or to tell that the file changed.

/// Where an earlier attempt at a file stopped: the start of the first row
/// it did not get stored, and what identifies the file it read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stopped {
    /// The file's validator then (`ETag` or `Last-Modified`), if it had one.
    pub validator: Option<String>,
    /// Byte offset in the file of the first row not stored.
    pub offset: u64,
    /// Its line.
    pub line: u64,
    /// The header line as read (the columns, comma-separated).
    pub header: String,
}

/// How a file was opened given where an earlier attempt stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reopened {
    /// From its first line, with no earlier attempt.
    Fresh,
    /// From where the earlier attempt stopped (a range of the same file).
    Resumed,
    /// From its first line, the same file as far as can be told: the rows
    /// the earlier attempt stored are to be read past.
    ReadPast,
    /// From its first line: the file is not the one the earlier attempt read.
    Changed,
}

/// The validator `If-Range` can take: a strong `ETag`, else `Last-Modified`.
pub(crate) fn validator_of(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let etag = headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|e| e.starts_with('"') || e.starts_with("W/\""));
    let modified = || {
        headers
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    etag.or_else(modified).map(str::to_owned)
}

/// Whether two validators name the same file: ETags compared weakly (a
/// server that compresses may mark the same one weak), Last-Modified as is.
pub(crate) fn same_validator(a: &str, b: &str) -> bool {
    let strong = |v: &str| v.strip_prefix("W/").unwrap_or(v).to_owned();
    strong(a) == strong(b)
}

/// Whether `If-Range` may carry this validator: a weak ETag may not.
pub(crate) fn ranges_with(validator: &str) -> bool {
    !validator.starts_with("W/")
}

/// `Content-Range: bytes FIRST-LAST/SIZE`.
pub(crate) fn content_range(value: &str) -> Option<(u64, u64, u64)> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (span, size) = range.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        size.trim().parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_and_ranges_read_as_servers_write_them() {
        assert!(same_validator("\"abc\"", "W/\"abc\""));
        assert!(!same_validator("\"abc\"", "\"abd\""));
        assert!(!ranges_with("W/\"abc\""));
        assert!(ranges_with("Tue, 01 Dec 2026 00:00:00 GMT"));
        assert_eq!(content_range("bytes 100-199/200"), Some((100, 199, 200)));
        assert_eq!(content_range("bytes 100-199/*"), None);
        assert_eq!(content_range("bytes */200"), None);
    }
}
