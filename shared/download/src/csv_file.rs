//! Reading a CSV body row by row: byte-order mark, line ends, quoted
//! fields, columns by name, and each row's line in the file.

use std::{io, sync::Arc};

use bytes::{Buf, Bytes, BytesMut};
use csv_async::{AsyncReader, AsyncReaderBuilder, ByteRecord};
use futures_util::{stream, Stream, StreamExt, TryStreamExt};
use tokio_util::io::StreamReader;
use url::Url;

use crate::{error::shown, resume::Stopped, Body, DownloadError};

/// How a file is written, as an import spec's `[levels.<name>.csv]` says.
/// The default is RFC 4180 in UTF-8 with a header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvFormat {
    /// The field delimiter.
    pub delimiter: u8,
    /// The quote character.
    pub quote: u8,
    /// A quote inside quotes is written `\"`, not `""`.
    pub backslash_escape: bool,
    /// Whether the first row (after `skip_lines`) names the columns.
    pub header: bool,
    /// Lines before the header or first row, skipped whole.
    pub skip_lines: u64,
    /// Lines starting with it are not rows.
    pub comment: Option<u8>,
    /// Drop spaces and tabs around fields.
    pub trim: bool,
    /// The text encoding; UTF-8 (a BOM or not) when `None`.
    pub encoding: Option<&'static encoding_rs::Encoding>,
    /// Whether [`Record::quoted`] tells which fields were quoted (`"NA"`
    /// is text where `NA` means NULL). It costs a pass over the bytes, so
    /// only files whose spec declares NULL markers ask for it.
    pub quoted_fields: bool,
}

impl Default for CsvFormat {
    fn default() -> Self {
        CsvFormat {
            delimiter: b',',
            quote: b'"',
            backslash_escape: false,
            header: true,
            skip_lines: 0,
            comment: None,
            trim: false,
            encoding: None,
            quoted_fields: false,
        }
    }
}

/// Which fields of each record a reader hands out.
#[derive(Debug, Clone, Copy)]
pub enum Columns<'a> {
    /// These columns, found by header name (ignoring case and surrounding
    /// spaces); a header without one of them fails the file.
    Named(&'a [&'a str]),
    /// Every field, in file order; the caller makes sense of the header
    /// ([`CsvFile::header`]).
    All,
}

/// An open CSV download, read row by row with [`CsvFile::next_row`].
pub struct CsvFile {
    url: Url,
    reader: AsyncReader<StreamReader<Body, Bytes>>,
    lines: LineIndex,
    /// The host's download slot, held while the file is read.
    pub(crate) slot: Option<crate::hosts::HostSlot>,
    /// Where each requested column sits in a record; `None`: every field.
    positions: Option<Vec<usize>>,
    /// The header's fields (trimmed); empty for a file without one.
    header: Vec<String>,
    /// Fields every record must have; `None` for a file without a header.
    header_len: Option<usize>,
    trim: bool,
    /// The declared encoding the body was decoded from, if not UTF-8.
    decoded_from: Option<&'static str>,
    /// Whether fields carry the marks of [`Marking`].
    marked: bool,
    record: ByteRecord,
    /// Which of the last row's fields were quoted (when `marked`).
    quoted: Vec<bool>,
    /// For a body whose offsets map onto the file's: the body offset that
    /// is file offset `.1` (after a BOM, or a resumed range).
    origin: Option<(u64, u64)>,
    /// The line the first row is on, when the body starts mid-file.
    first_line: Option<u64>,
    /// Added to every line counted in the body.
    line_shift: u64,
    /// What identifies the file as sent (`ETag`, `Last-Modified`).
    pub(crate) validator: Option<String>,
    delimiter: u8,
    quote: u8,
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

impl Row<'_> {
    /// The file line it starts on.
    pub fn line(&self) -> u64 {
        match self {
            Row::Record(record) => record.line,
            Row::Malformed { line, .. } => *line,
        }
    }
}

/// A well-formed row: the requested columns, as text.
pub struct Record<'a> {
    line: u64,
    fields: Vec<&'a str>,
    quoted: &'a [bool],
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

    /// Every field handed out, in order.
    pub fn fields(&self) -> &[&'a str] {
        &self.fields
    }

    /// Which fields were quoted, in the order of [`Record::fields`]; empty
    /// unless the format asked for [`CsvFormat::quoted_fields`].
    pub fn quoted(&self) -> &[bool] {
        self.quoted
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl CsvFile {
    /// Reads CSV from any byte stream (an HTTP body, a test fixture): the
    /// RFC 4180 files of the built-in spec, fields trimmed.
    pub async fn from_stream(
        url: Url,
        body: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
        columns: &[&str],
    ) -> Result<CsvFile, DownloadError> {
        let format = CsvFormat {
            trim: true,
            ..CsvFormat::default()
        };
        Self::read(url, Box::pin(body), &format, Columns::Named(columns)).await
    }

    /// Reads CSV written as `format` says from any byte stream.
    pub async fn read(
        url: Url,
        body: Body,
        format: &CsvFormat,
        columns: Columns<'_>,
    ) -> Result<CsvFile, DownloadError> {
        let body_error = |source| DownloadError::body(&url, source);
        // Byte offsets are the file's only for UTF-8 read as it is.
        let (body, bom) = match format.encoding {
            Some(encoding) if encoding != encoding_rs::UTF_8 => (decoded(body, encoding), None),
            _ => {
                let (body, had) = strip_bom(body).await.map_err(body_error)?;
                (body, Some(if had { BOM.len() as u64 } else { 0 }))
            }
        };
        let bom = bom.filter(|_| !marks_or_blanks(format));
        let lines = LineIndex::default();
        let escape = format.backslash_escape.then_some(b'\\');
        let body = marked_and_blanked(body, format);
        let body = lines.watch(body);
        let mut reader = AsyncReaderBuilder::new()
            .has_headers(format.header)
            // Wrong field counts are reported per row, not fatal to the file.
            .flexible(true)
            .delimiter(format.delimiter)
            .quote(format.quote)
            .double_quote(!format.backslash_escape)
            .escape(escape)
            // With CRLF, csv-core dates a record from before it consumed the
            // previous line's '\n', so line numbers lag by one. Ending records
            // on '\n' alone keeps them exact; the '\r' is trailing space that
            // fields lose to trimming.
            .terminator(csv_async::Terminator::Any(b'\n'))
            .create_reader(StreamReader::new(body));
        let (header, header_len) = if format.header {
            let fields = reader
                .byte_headers()
                .await
                .map_err(|e| body_error(csv_io_error(e)))?
                .clone();
            let names: Vec<String> = fields
                .iter()
                .map(|h| {
                    let name = String::from_utf8_lossy(h);
                    // csv-core drops a second BOM only when it arrives at the
                    // start of its first read, which marking may move: a
                    // name never starts with one, however the body came.
                    let name = unmarked(&name, format.quoted_fields).0;
                    name.trim().trim_start_matches('\u{feff}').trim().to_owned()
                })
                .collect();
            // A lone CR (or a quoted line break) inside the header would make
            // every row part of it: the columns might match, and no row be read.
            if names.iter().any(|n| n.contains(['\r', '\n'])) {
                return Err(DownloadError::HeaderLineBreak {
                    url,
                    found: shorten(names.join(",")),
                });
            }
            (names, Some(fields.len()))
        } else {
            (Vec::new(), None)
        };
        let positions = match columns {
            Columns::All => None,
            Columns::Named(columns) => {
                let mut positions = Vec::with_capacity(columns.len());
                let mut missing = Vec::new();
                for wanted in columns {
                    match header.iter().position(|n| n.eq_ignore_ascii_case(wanted)) {
                        Some(p) => positions.push(p),
                        None => missing.push(*wanted),
                    }
                }
                if !missing.is_empty() {
                    return Err(DownloadError::MissingColumns {
                        url,
                        expected: columns.join(","),
                        found: shorten(header.join(",")),
                    });
                }
                Some(positions)
            }
        };
        Ok(CsvFile {
            url,
            reader,
            lines,
            slot: None,
            positions,
            header,
            header_len,
            trim: format.trim,
            decoded_from: format
                .encoding
                .filter(|e| *e != encoding_rs::UTF_8)
                .map(|e| match e {
                    // Either byte order: the BOM decides.
                    e if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE => "UTF-16",
                    e => e.name(),
                }),
            marked: format.quoted_fields,
            record: ByteRecord::new(),
            quoted: Vec::new(),
            origin: bom.map(|bom| (0, bom)),
            first_line: None,
            line_shift: 0,
            validator: None,
            delimiter: format.delimiter,
            quote: format.quote,
        })
    }

    /// This file was sent encoded (gzip): its offsets are not the file's.
    pub(crate) fn fresh(&mut self, identity: bool) {
        if !identity {
            self.origin = None;
        }
    }

    /// This body is a header of `header_bytes`, then the file from byte
    /// `from` on, whose first row is on `line`.
    pub(crate) fn resumed(&mut self, from: u64, header_bytes: u64, line: u64) {
        self.origin = self.origin.map(|_| (header_bytes, from));
        self.first_line = Some(line);
    }

    /// Where a later attempt could resume reading to get the row just
    /// returned by [`CsvFile::next_row`] and all after it; `None` when the
    /// file cannot be resumed by byte offset (gzip, another encoding, a
    /// header that would not survive being written back).
    pub fn stop_point(&self, line: u64) -> Option<Stopped> {
        let (stream, file) = self.origin?;
        // Without a validator a later attempt could not tell another file
        // from this one, and would skip rows it never read.
        self.validator.as_ref()?;
        let position = self.record.position()?.byte();
        // The header is written back as the fields joined: none may need quotes.
        let (delimiter, quote) = (char::from(self.delimiter), char::from(self.quote));
        let awkward = |h: &String| h.contains([delimiter, quote, '\r', '\n']);
        if self.header.is_empty() || self.header.iter().any(awkward) {
            return None;
        }
        Some(Stopped {
            validator: self.validator.clone(),
            offset: file + position.checked_sub(stream)?,
            line,
            header: self.header.join(&delimiter.to_string()),
        })
    }

    /// The header's fields, trimmed (empty for a file without a header row).
    pub fn header(&self) -> &[String] {
        &self.header
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
            // (A mark, when fields are marked, is no content either: marking
            // must not change which records are rows.)
            let blank = self.record.len() == 1
                && unmarked_bytes(&self.record[0], self.marked)
                    .iter()
                    .all(u8::is_ascii_whitespace);
            if !blank || self.header_len == Some(1) {
                break;
            }
            if let Some(position) = self.record.position() {
                self.lines.line_at(position.byte());
            }
        }
        // csv-core does not count the empty lines it skips: count them here.
        let mut line = self
            .record
            .position()
            .map_or(0, |p| self.lines.line_at(p.byte()));
        // A resumed file counts on from where the first attempt stopped.
        if let Some(first) = self.first_line.take() {
            self.line_shift = first.saturating_sub(line);
        }
        line += self.line_shift;
        if let Some(expected) = self.header_len.filter(|&n| n != self.record.len()) {
            return Ok(Some(Row::Malformed {
                line,
                reason: format!(
                    "expected {expected} fields as in the header, found {}",
                    self.record.len()
                ),
            }));
        }
        let last = self.record.len().saturating_sub(1);
        let count = self.positions.as_ref().map_or(self.record.len(), Vec::len);
        let mut fields = Vec::with_capacity(count);
        self.quoted.clear();
        for i in 0..count {
            let p = self.positions.as_ref().map_or(i, |positions| positions[i]);
            let text = std::str::from_utf8(&self.record[p]).map(|text| {
                let (text, quoted) = unmarked(text, self.marked);
                if self.marked {
                    self.quoted.push(quoted);
                }
                text
            });
            match text {
                Ok(text) if self.decoded_from.is_some() && text.contains(INVALID) => {
                    return Ok(Some(Row::Malformed {
                        line,
                        reason: format!(
                            "field {} holds bytes that are not {}",
                            p + 1,
                            self.decoded_from.unwrap_or("its encoding")
                        ),
                    }))
                }
                Ok(text) if self.trim => fields.push(text.trim()),
                // Records end on '\n': a CRLF file's last field keeps its '\r'.
                Ok(text) if p == last => fields.push(text.strip_suffix('\r').unwrap_or(text)),
                Ok(text) => fields.push(text),
                Err(_) => {
                    return Ok(Some(Row::Malformed {
                        line,
                        reason: format!("field {} is not valid UTF-8", p + 1),
                    }))
                }
            }
        }
        Ok(Some(Row::Record(Record {
            line,
            fields,
            quoted: &self.quoted,
        })))
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

/// Stands for bytes a declared encoding cannot hold: a noncharacter, which
/// no text interchanged between programs contains.
const INVALID: char = '\u{FDD0}';

/// Decodes a body in `encoding` to UTF-8 as it streams (a BOM, if any,
/// is dropped; UTF-16 reads its byte order from it). A byte sequence the
/// encoding cannot hold becomes [`INVALID`], and its row a malformed one.
fn decoded(body: Body, encoding: &'static encoding_rs::Encoding) -> Body {
    let decoder = Some(encoding.new_decoder());
    Box::pin(stream::unfold(
        (body, decoder),
        |(mut body, mut decoder)| async move {
            let d = decoder.as_mut()?;
            let (input, last) = match body.next().await {
                Some(Ok(chunk)) => (chunk, false),
                Some(Err(e)) => return Some((Err(e), (body, decoder))),
                None => (Bytes::new(), true),
            };
            let room = |d: &encoding_rs::Decoder, n| {
                d.max_utf8_buffer_length_without_replacement(n)
                    .unwrap_or(usize::MAX / 2)
            };
            let mut out = String::with_capacity(room(d, input.len()));
            let mut rest = &input[..];
            loop {
                let (result, read) = d.decode_to_string_without_replacement(rest, &mut out, last);
                rest = &rest[read..];
                match result {
                    encoding_rs::DecoderResult::InputEmpty => break,
                    encoding_rs::DecoderResult::OutputFull => out.reserve(room(d, rest.len()) + 16),
                    // Marked where it was, so the row holding it is refused
                    // rather than stored with a guess.
                    encoding_rs::DecoderResult::Malformed(_, _) => {
                        out.reserve(INVALID.len_utf8() + room(d, rest.len()));
                        out.push(INVALID);
                    }
                }
            }
            let next = if last { None } else { decoder };
            Some((Ok(Bytes::from(out)), (body, next)))
        },
    ))
}

/// Opens a quoted field's text with this mark (a noncharacter, which no
/// text interchanged between programs holds), so the reader can tell `"NA"`
/// from `NA` after the parser has dropped the quotes.
const QUOTED: char = '\u{FDD1}';
/// Opens an unquoted field that starts as a mark would (its first byte is
/// 0xEF), so a field that truly starts with one is read back unchanged.
const LITERAL: char = '\u{FDD2}';

/// A field's text without its mark, and whether it was quoted.
fn unmarked(text: &str, marked: bool) -> (&str, bool) {
    if !marked {
        return (text, false);
    }
    match text.strip_prefix(QUOTED) {
        Some(rest) => (rest, true),
        None => (text.strip_prefix(LITERAL).unwrap_or(text), false),
    }
}

/// [`unmarked`] on a field's bytes.
fn unmarked_bytes(field: &[u8], marked: bool) -> &[u8] {
    let mut mark = [0; 4];
    for m in [QUOTED, LITERAL] {
        if let Some(rest) = field.strip_prefix(m.encode_utf8(&mut mark).as_bytes()) {
            if marked {
                return rest;
            }
        }
    }
    field
}

/// Empties the first `skip_lines` lines of a body (a title, a banner) and
/// every comment line (one starting with `comment` outside quotes), keeping
/// their line ends: the parser skips empty lines, and line numbers stay
/// those of the file. With `quoted_fields`, marks each field's start (see
/// [`QUOTED`]). Quotes are followed as the parser reads them: a quote opens
/// a quoted field only at the start of a field.
/// Whether `marked_and_blanked` changes the body (its offsets then are not
/// the file's).
fn marks_or_blanks(format: &CsvFormat) -> bool {
    format.skip_lines != 0 || format.comment.is_some() || format.quoted_fields
}

fn marked_and_blanked(body: Body, format: &CsvFormat) -> Body {
    if !marks_or_blanks(format) {
        return body;
    }
    let mut state = Marking {
        skip: format.skip_lines,
        comment: format.comment,
        quote: format.quote,
        delimiter: format.delimiter,
        backslash: format.backslash_escape,
        mark: format.quoted_fields,
        field_start: true,
        line_start: true,
        blanking: format.skip_lines > 0,
        quoted: false,
        closing: false,
        escaped: false,
    };
    Box::pin(body.map_ok(move |chunk| state.filter(&chunk)))
}

struct Marking {
    skip: u64,
    comment: Option<u8>,
    quote: u8,
    delimiter: u8,
    backslash: bool,
    mark: bool,
    field_start: bool,
    line_start: bool,
    blanking: bool,
    quoted: bool,
    /// A quote inside quotes: the end of the field, or the first of two.
    closing: bool,
    escaped: bool,
}

impl Marking {
    fn filter(&mut self, chunk: &[u8]) -> Bytes {
        let mut quoted_mark = [0; 4];
        let quoted_mark = QUOTED.encode_utf8(&mut quoted_mark).as_bytes();
        let mut literal_mark = [0; 4];
        let literal_mark = LITERAL.encode_utf8(&mut literal_mark).as_bytes();
        let mut out = BytesMut::with_capacity(chunk.len() + chunk.len() / 8);
        for &b in chunk {
            if self.blanking
                || (self.line_start && !self.quoted && self.skip == 0 && Some(b) == self.comment)
            {
                self.blanking = true;
                if b == b'\n' {
                    out.extend_from_slice(b"\n");
                    self.skip = self.skip.saturating_sub(1);
                    self.blanking = self.skip > 0;
                    self.line_start = true;
                    self.field_start = true;
                }
                continue;
            }
            let mut mark: &[u8] = &[];
            if self.closing {
                self.closing = false;
                if b != self.quote {
                    self.quoted = false;
                }
            } else if self.quoted {
                if self.escaped {
                    self.escaped = false;
                } else if self.backslash && b == b'\\' {
                    self.escaped = true;
                } else if b == self.quote {
                    if self.backslash {
                        self.quoted = false;
                    } else {
                        self.closing = true;
                    }
                }
            } else if self.field_start && b == self.quote {
                self.quoted = true;
                if self.mark {
                    mark = quoted_mark;
                }
            } else if self.field_start && self.mark && b == literal_mark[0] {
                out.extend_from_slice(literal_mark);
            }
            let outside = !self.quoted || self.closing;
            self.line_start = b == b'\n' && outside;
            self.field_start = (b == b'\n' || b == self.delimiter) && outside;
            out.extend_from_slice(&[b]);
            // Inside the quote, so the mark is part of the field's text.
            out.extend_from_slice(mark);
        }
        out.freeze()
    }
}

/// Drops a leading UTF-8 BOM. csv-core only recognises one that arrives whole
/// in its first read, and servers may send it one byte at a time, so gather
/// the first three bytes before the parser sees any.
/// The body without its UTF-8 byte-order mark, and whether it had one.
async fn strip_bom(mut body: Body) -> io::Result<(Body, bool)> {
    let mut head = BytesMut::new();
    while head.len() < BOM.len() {
        match body.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => break,
        }
    }
    let had = head.starts_with(BOM);
    if had {
        head.advance(BOM.len());
    }
    Ok((
        Box::pin(stream::once(async move { Ok(head.freeze()) }).chain(body)),
        had,
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

    /// Found by `just fuzz` (csv_reader): two BOMs, the second kept by the
    /// parser when quoted fields are marked, hid the first column.
    #[tokio::test]
    async fn a_second_bom_never_hides_the_first_column() {
        let data = b"\xEF\xBB\xBF\xEF\xBB\xBFID , Amount\n1,2\n";
        let format = CsvFormat {
            trim: true,
            quoted_fields: true,
            ..CsvFormat::default()
        };
        for chunk in [1, 4, 128] {
            let body: Vec<io::Result<Bytes>> = data
                .chunks(chunk)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let url = Url::parse("http://h/t.csv").unwrap();
            let file = CsvFile::read(
                url,
                Box::pin(stream::iter(body)),
                &format,
                Columns::Named(&["id", "amount"]),
            )
            .await;
            assert!(file.is_ok(), "chunk size {chunk}: {:?}", file.err());
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

    async fn formatted(data: Vec<u8>, format: CsvFormat) -> (Vec<String>, Vec<(u64, Vec<String>)>) {
        let url = Url::parse("http://x/t.csv").unwrap();
        let body: Body = Box::pin(stream::iter(
            data.chunks(3)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let mut file = CsvFile::read(url, body, &format, Columns::All)
            .await
            .unwrap();
        let header = file.header().to_vec();
        let mut rows = vec![];
        while let Some(row) = file.next_row().await.unwrap() {
            match row {
                // A field the reader says was quoted is shown «so».
                Row::Record(r) => rows.push((
                    r.line(),
                    r.fields()
                        .iter()
                        .enumerate()
                        .map(|(i, f)| match r.quoted().get(i) {
                            Some(true) => format!("«{f}»"),
                            _ => f.to_string(),
                        })
                        .collect(),
                )),
                Row::Malformed { line, reason } => rows.push((line, vec![reason])),
            }
        }
        (header, rows)
    }

    #[tokio::test]
    async fn quoted_fields_are_told_apart_and_read_back_unchanged() {
        let data = "id,\"code\",note\r\n1,\"NA\",NA\r\n2,NA,\"a \"\"b\"\"\"\n3,\u{FDD1}x,\"\u{FDD2}y\"\n4,\"\",\u{FEFF}z\n5,x\"NA\",\"\"\"\"\n";
        let format = CsvFormat {
            quoted_fields: true,
            ..CsvFormat::default()
        };
        let (header, rows) = formatted(data.as_bytes().to_vec(), format.clone()).await;
        assert_eq!(header, ["id", "code", "note"]);
        let row = |line, fields: &[&str]| (line, fields.iter().map(|f| f.to_string()).collect());
        assert_eq!(
            rows,
            [
                row(2, &["1", "«NA»", "NA"]),
                row(3, &["2", "NA", "«a \"b\"»"]),
                // Fields that truly start as a mark would keep it.
                row(4, &["3", "\u{FDD1}x", "«\u{FDD2}y»"]),
                row(5, &["4", "«»", "\u{FEFF}z"]),
                row(6, &["5", "x\"NA\"", "«\"»"]),
            ]
        );
        // Trimmed, with another delimiter and quote, and a comment line.
        let data = "# c\n1; 'NA' ;NA\n2;'x;y';'it''s'\n";
        let format = CsvFormat {
            delimiter: b';',
            quote: b'\'',
            header: false,
            comment: Some(b'#'),
            trim: true,
            ..format
        };
        let (_, rows) = formatted(data.as_bytes().to_vec(), format).await;
        assert_eq!(
            rows,
            [
                row(2, &["1", "'NA'", "NA"]),
                row(3, &["2", "«x;y»", "«it's»"]),
            ]
        );
    }

    #[tokio::test]
    async fn a_declared_format_is_read_as_declared_with_physical_line_numbers() {
        let format = CsvFormat {
            delimiter: b';',
            skip_lines: 2,
            comment: Some(b'#'),
            ..CsvFormat::default()
        };
        let data =
            b"Report of 3 Dec\nexported by X\nid; value\r\n# a comment\r\n1;\"a;b\"\r\n2; x \r\n"
                .to_vec();
        let (header, rows) = formatted(data, format).await;
        assert_eq!(header, ["id", "value"]);
        assert_eq!(
            rows,
            [
                (5, vec!["1".to_string(), "a;b".to_string()]),
                // Not trimmed unless asked; the CRLF's '\r' is not part of it.
                (6, vec!["2".to_string(), " x ".to_string()]),
            ]
        );
    }

    #[tokio::test]
    async fn comment_lines_follow_quotes_as_the_parser_does() {
        let format = CsvFormat {
            comment: Some(b'#'),
            ..CsvFormat::default()
        };
        // A quote inside a field is a character; `#` inside quotes is text;
        // a doubled quote stays inside the field.
        let data = b"id,note\n1,5\" pipe\n2,\"a\n#b\"\"c\"\n# real comment\n3,x\n".to_vec();
        let (_, rows) = formatted(data, format).await;
        assert_eq!(
            rows,
            [
                (2, vec!["1".to_string(), "5\" pipe".to_string()]),
                (3, vec!["2".to_string(), "a\n#b\"c".to_string()]),
                (6, vec!["3".to_string(), "x".to_string()]),
            ]
        );
    }

    #[tokio::test]
    async fn files_without_a_header_backslash_escapes_and_other_encodings() {
        let format = CsvFormat {
            header: false,
            backslash_escape: true,
            trim: true,
            ..CsvFormat::default()
        };
        let (header, rows) = formatted(b"1,\"say \\\"hi\\\"\"\n2,b, c\n".to_vec(), format).await;
        assert!(header.is_empty());
        assert_eq!(
            rows[0],
            (1, vec!["1".to_string(), "say \"hi\"".to_string()])
        );
        assert_eq!(rows[1].1, ["2", "b", "c"]);

        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "id,name\n1,Zo\u{eb} \u{20ac}\n".encode_utf16() {
            utf16.extend(unit.to_le_bytes());
        }
        let format = CsvFormat {
            encoding: Some(encoding_rs::UTF_16LE),
            ..CsvFormat::default()
        };
        let (header, rows) = formatted(utf16, format).await;
        assert_eq!(header, ["id", "name"]);
        assert_eq!(
            rows,
            [(2, vec!["1".to_string(), "Zo\u{eb} \u{20ac}".to_string()])]
        );

        let format = CsvFormat {
            encoding: Some(encoding_rs::WINDOWS_1252),
            ..CsvFormat::default()
        };
        let (_, rows) = formatted(b"id,name\n1,Zo\xEB \x80\n".to_vec(), format).await;
        assert_eq!(
            rows,
            [(2, vec!["1".to_string(), "Zo\u{eb} \u{20ac}".to_string()])]
        );
    }
}
