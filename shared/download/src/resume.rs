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
        .filter(|e| e.starts_with('"'));
    let modified = || {
        headers
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    etag.or_else(modified).map(str::to_owned)
}

/// The first byte of `Content-Range: bytes FIRST-LAST/SIZE`.
pub(crate) fn range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}
