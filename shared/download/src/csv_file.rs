//! Reading a CSV body row by row: byte-order mark, line ends, quoted
//! fields, columns by name, and each row's line in the file.

use std::{io, sync::Arc};

use bytes::{Buf, Bytes, BytesMut};
use csv_async::{AsyncReader, AsyncReaderBuilder, ByteRecord};
use futures_util::{stream, Stream, StreamExt, TryStreamExt};
use tokio_util::io::StreamReader;
use url::Url;

use crate::{error::shown, Body, DownloadError};

/// An open CSV download, read row by row with [`CsvFile::next_row`].
pub struct CsvFile {
    url: Url,
    reader: AsyncReader<StreamReader<Body, Bytes>>,
    lines: LineIndex,
    /// The host's download slot, held while the file is read.
    pub(crate) slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Where each requested column sits in a record.
    positions: Vec<usize>,
    header_len: usize,
    record: ByteRecord,
}

/// One row of a CSV file.
pub enum Row<'a> {
    Record(Record<'a>),
    /// Unusable, with the reason; the file goes on.
    Malformed {
        line: u64,
        reason: String,
    },
}

/// A well-formed row: the requested columns, as text.
pub struct Record<'a> {
    line: u64,
    fields: Vec<&'a str>,
}

impl<'a> Record<'a> {
    /// The line the record starts on (1 is the header).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The `i`-th of the columns asked for in `open_csv`, trimmed.
    pub fn get(&self, i: usize) -> &'a str {
        self.fields[i]
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl CsvFile {
    /// Reads CSV from any byte stream (an HTTP body, a test fixture).
    pub async fn from_stream(
        url: Url,
        body: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
        columns: &[&str],
    ) -> Result<CsvFile, DownloadError> {
        let body_error = |source| DownloadError::body(&url, source);
        let body = strip_bom(Box::pin(body)).await.map_err(body_error)?;
        let lines = LineIndex::default();
        let body = lines.watch(body);
        let mut reader = AsyncReaderBuilder::new()
            .has_headers(true)
            // Wrong field counts are reported per row, not fatal to the file.
            .flexible(true)
            // With CRLF, csv-core dates a record from before it consumed the
            // previous line's '\n', so line numbers lag by one. Ending records
            // on '\n' alone keeps them exact; the '\r' is trailing space that
            // fields lose to trimming.
            .terminator(csv_async::Terminator::Any(b'\n'))
            .create_reader(StreamReader::new(body));
        let header = reader
            .byte_headers()
            .await
            .map_err(|e| body_error(csv_io_error(e)))?
            .clone();
        let names: Vec<String> = header
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_owned())
            .collect();
        // A lone CR (or a quoted line break) inside the header would make
        // every row part of it: the columns might match, and no row be read.
        if names.iter().any(|n| n.contains(['\r', '\n'])) {
            return Err(DownloadError::HeaderLineBreak {
                url,
                found: shorten(names.join(",")),
            });
        }
        let mut positions = Vec::with_capacity(columns.len());
        let mut missing = Vec::new();
        for wanted in columns {
            match names.iter().position(|n| n.eq_ignore_ascii_case(wanted)) {
                Some(p) => positions.push(p),
                None => missing.push(*wanted),
            }
        }
        if !missing.is_empty() {
            return Err(DownloadError::MissingColumns {
                url,
                expected: columns.join(","),
                found: shorten(names.join(",")),
            });
        }
        Ok(CsvFile {
            url,
            reader,
            lines,
            slot: None,
            positions,
            header_len: header.len(),
            record: ByteRecord::new(),
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL fit to show: in dead letters, logs and reports.
    pub fn shown_url(&self) -> String {
        shown(&self.url)
    }

    /// The next row, `None` at the end of the file, or an error if the
    /// download itself broke (which makes the whole file worth retrying).
    pub async fn next_row(&mut self) -> Result<Option<Row<'_>>, DownloadError> {
        loop {
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .await
                .map_err(|e| DownloadError::body(&self.url, csv_io_error(e)))?;
            if !more {
                return Ok(None);
            }
            // A blank line (just "\r" now that '\n' ends records) is no row;
            // its line end still counts.
            let blank =
                self.record.len() == 1 && self.record[0].iter().all(u8::is_ascii_whitespace);
            if !blank || self.header_len == 1 {
                break;
            }
            if let Some(position) = self.record.position() {
                self.lines.line_at(position.byte());
            }
        }
        // csv-core does not count the empty lines it skips: count them here.
        let line = self
            .record
            .position()
            .map_or(0, |p| self.lines.line_at(p.byte()));
        if self.record.len() != self.header_len {
            return Ok(Some(Row::Malformed {
                line,
                reason: format!(
                    "expected {} fields as in the header, found {}",
                    self.header_len,
                    self.record.len()
                ),
            }));
        }
        let mut fields = Vec::with_capacity(self.positions.len());
        for &p in &self.positions {
            match std::str::from_utf8(&self.record[p]) {
                Ok(text) => fields.push(text.trim()),
                Err(_) => {
                    return Ok(Some(Row::Malformed {
                        line,
                        reason: format!("field {} is not valid UTF-8", p + 1),
                    }))
                }
            }
        }
        Ok(Some(Row::Record(Record { line, fields })))
    }
}

/// Line numbers by byte offset, as every `\n` counts, empty lines included.
/// The parser reads a little ahead of the record it returns, so only the
/// line ends between the last record asked about and the read position are
/// kept, and a run of consecutive line ends (empty lines) as one entry: a
/// flood of empty lines costs nothing.
#[derive(Clone, Default)]
struct LineIndex(Arc<std::sync::Mutex<Lines>>);

#[derive(Default)]
struct Lines {
    /// Runs of line ends at or after the last offset asked about: the
    /// offset of the first, and how many follow it byte by byte.
    ends: std::collections::VecDeque<(u64, u64)>,
    /// Line ends before it.
    passed: u64,
    /// Bytes seen so far.
    read: u64,
}

impl LineIndex {
    /// Notes the line ends of everything `body` yields.
    fn watch(&self, body: Body) -> Body {
        let index = self.clone();
        Box::pin(body.inspect_ok(move |chunk| {
            let mut lines = index.0.lock().expect("never poisoned");
            let start = lines.read;
            for end in memchr::memchr_iter(b'\n', chunk).map(|i| start + i as u64) {
                match lines.ends.back_mut() {
                    Some((first, count)) if *first + *count == end => *count += 1,
                    _ => lines.ends.push_back((end, 1)),
                }
            }
            lines.read += chunk.len() as u64;
        }))
    }

    /// The line a record dated at byte `offset` starts on; offsets must not
    /// go backwards. csv-core dates a record from the empty lines it skipped
    /// before it, so a run of line ends right at `offset` is skipped too.
    fn line_at(&self, offset: u64) -> u64 {
        let mut lines = self.0.lock().expect("never poisoned");
        while let Some(&(first, count)) = lines.ends.front() {
            if first + count <= offset || first == offset {
                // Wholly before the record, or the empty lines it starts with.
                lines.ends.pop_front();
                lines.passed += count;
            } else if first < offset {
                // A run reaching into the record: the part before it passed.
                let before = offset - first;
                lines.passed += before;
                let rest = count - before;
                lines.ends[0] = (offset, rest);
            } else {
                break;
            }
        }
        lines.passed + 1
    }
}

/// At most 200 bytes of a header, for a message.
fn shorten(mut text: String) -> String {
    if text.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn csv_io_error(e: csv_async::Error) -> io::Error {
    match e.into_kind() {
        csv_async::ErrorKind::Io(io) => io,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    }
}

/// Drops a leading UTF-8 BOM. csv-core only recognises one that arrives whole
/// in its first read, and servers may send it one byte at a time, so gather
/// the first three bytes before the parser sees any.
async fn strip_bom(mut body: Body) -> io::Result<Body> {
    let mut head = BytesMut::new();
    while head.len() < BOM.len() {
        match body.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => break,
        }
    }
    if head.starts_with(BOM) {
        head.advance(BOM.len());
    }
    Ok(Box::pin(
        stream::once(async move { Ok(head.freeze()) }).chain(body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(data: &'static [u8], size: usize) -> impl Stream<Item = io::Result<Bytes>> + Send {
        stream::iter(data.chunks(size).map(|c| Ok(Bytes::from_static(c))))
    }

    async fn rows(
        data: &'static [u8],
        chunk: usize,
    ) -> Vec<Result<(u64, String, String), (u64, String)>> {
        let url = Url::parse("http://x/t.csv").unwrap();
        let mut file = CsvFile::from_stream(url, chunked(data, chunk), &["id", "amount"])
            .await
            .unwrap();
        let mut out = vec![];
        while let Some(row) = file.next_row().await.unwrap() {
            out.push(match row {
                Row::Record(r) => Ok((r.line(), r.get(0).to_owned(), r.get(1).to_owned())),
                Row::Malformed { line, reason } => Err((line, reason)),
            });
        }
        out
    }

    #[tokio::test]
    async fn bom_is_stripped_even_one_byte_at_a_time() {
        let data = b"\xEF\xBB\xBFid,amount\r\n1,-12.50\r\n2,0.1\r\n";
        for chunk in [1, 2, 3, 64] {
            assert_eq!(
                rows(data, chunk).await,
                vec![
                    Ok((2, "1".into(), "-12.50".into())),
                    Ok((3, "2".into(), "0.1".into()))
                ],
                "chunk size {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn blank_lines_are_skipped_and_lines_stay_exact() {
        let data = b"id,amount\r\n\r\n1,2\r\n\"3\r\nx\",4\r\n5,6\r\n\r\n";
        let got = rows(data, 3).await;
        assert_eq!(got[0], Ok((3, "1".into(), "2".into())));
        assert!(matches!(&got[1], Ok((4, id, _)) if id == "3\r\nx"));
        assert_eq!(got[2], Ok((6, "5".into(), "6".into())));
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn empty_lines_count_as_lines() {
        let got = rows(b"id,amount\n\n1,2\n\n\nx\n5,6\n", 3).await;
        assert_eq!(got[0], Ok((3, "1".into(), "2".into())));
        assert!(matches!(&got[1], Err((6, _))), "{got:?}");
        assert_eq!(got[2], Ok((7, "5".into(), "6".into())));
        let got = rows(b"\n\nid,amount\n1,2\n", 3).await;
        assert_eq!(got, vec![Ok((4, "1".into(), "2".into()))]);
    }

    #[tokio::test]
    async fn a_flood_of_empty_lines_keeps_no_memory_and_counts() {
        let mut data = b"id,amount\n1,2\n".to_vec();
        data.extend(std::iter::repeat_n(b'\n', 100_000));
        data.extend(b"\r\n\r\n \n3,4\n");
        let url = Url::parse("http://x/t.csv").unwrap();
        let body = stream::iter(
            data.chunks(777)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let mut file = CsvFile::from_stream(url, body, &["id", "amount"])
            .await
            .unwrap();
        let mut lines = vec![];
        while let Some(row) = file.next_row().await.unwrap() {
            if let Row::Record(r) = row {
                lines.push(r.line());
            }
            // Runs, not line ends: a handful of entries at most.
            assert!(file.lines.0.lock().unwrap().ends.len() < 16);
        }
        assert_eq!(lines, [2, 3 + 100_000 + 3]);
    }

    #[tokio::test]
    async fn columns_by_name_quotes_and_extra_columns() {
        let data = b"note,amount,id\n\"a, b\",\"12345678901.99\",7\n\"multi\nline\",1,8\n";
        assert_eq!(
            rows(data, 5).await,
            vec![
                Ok((2, "7".into(), "12345678901.99".into())),
                Ok((3, "8".into(), "1".into()))
            ]
        );
    }

    #[tokio::test]
    async fn wrong_field_count_is_reported_and_reading_goes_on() {
        let data = b"id,amount\n1,2\n3\n4,5,6\n7,8\n";
        let got = rows(data, 7).await;
        assert_eq!(got[0], Ok((2, "1".into(), "2".into())));
        assert!(matches!(&got[1], Err((3, r)) if r.contains("found 1")));
        assert!(matches!(&got[2], Err((4, r)) if r.contains("found 3")));
        assert_eq!(got[3], Ok((5, "7".into(), "8".into())));
    }

    #[tokio::test]
    async fn a_header_holding_a_line_break_is_refused_not_read_as_zero_rows() {
        let url = Url::parse("http://x/t.csv").unwrap();
        // Old-Mac line ends: the columns are all there, on one long "line".
        for data in [
            &b"id,amount,note\r1,1.75,n1\r2,2.00,n2\r"[..],
            b"\"id\nx\",amount\n1,2\n",
        ] {
            let err = CsvFile::from_stream(url.clone(), chunked(data, 4), &["id", "amount"])
                .await
                .err()
                .expect("refused");
            assert!(!err.is_transient());
            assert!(
                err.to_string()
                    .starts_with("http://x/t.csv has a line break inside its header"),
                "{err}"
            );
        }
        // CRLF is ordinary.
        assert_eq!(rows(b"id,amount\r\n1,2\r\n", 3).await.len(), 1);
    }

    #[tokio::test]
    async fn missing_columns_name_what_was_found() {
        let url = Url::parse("http://x/t.csv").unwrap();
        let err = CsvFile::from_stream(url, chunked(b"<html>nope</html>\n", 4), &["id", "amount"])
            .await
            .err()
            .unwrap();
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "http://x/t.csv is not a CSV with columns id,amount: its header is \"<html>nope</html>\""
        );
    }
}
