//! Bounds on what a hostile or broken server can make a body do: how many
//! bytes it may produce (after decompression), how far gzip may expand,
//! how slowly it may trickle, and how long one record may grow.

use std::{
    io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::Body;

/// Size limits on a response body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes a file may have once decompressed.
    pub max_size: u64,
    /// Most bytes between two line ends.
    pub max_line: u64,
    /// Most a gzip body may expand (decompressed / compressed bytes).
    pub max_ratio: u64,
}

/// A body that broke a limit; travels inside an `io::Error` through the CSV
/// reader and comes out as a permanent download error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "it is larger than {limit} bytes (SLUICE_MAX_DOWNLOAD_SIZE, counted after decompression)"
    )]
    Size { limit: u64 },
    #[error(
        "the record starting on line {line} is longer than {limit} bytes (SLUICE_MAX_ROW_LENGTH)"
    )]
    Line { line: u64, limit: u64 },
    #[error("its gzip body expands more than {limit} times (SLUICE_MAX_COMPRESSION_RATIO): a decompression bomb?")]
    Ratio { limit: u64 },
}

/// Gzip may expand this much regardless of ratio: tiny files compress oddly.
const RATIO_GRACE: u64 = 1 << 20;

/// Decompresses a gzip body (all members), refusing to expand past the
/// ratio. The ratio counts the compressed payload only: the header's
/// optional fields (a name, a comment, extra data: up to gigabytes of
/// filler that expands to nothing) would otherwise let a bomb pass.
// The one place a download is decompressed (clippy.toml denies it elsewhere).
#[allow(clippy::disallowed_methods)]
pub(crate) fn gunzip(compressed: Body, limits: BodyLimits) -> Body {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let mut header = GzipHeader::default();
    let compressed = compressed.inspect_ok(move |chunk| {
        let payload = chunk.len() as u64 - header.consume(chunk);
        counter.fetch_add(payload, Ordering::Relaxed);
    });
    let mut decoder = GzipDecoder::new(StreamReader::new(compressed));
    decoder.multiple_members(true);
    let mut produced = 0u64;
    Box::pin(
        ReaderStream::with_capacity(decoder, 64 * 1024).map(move |chunk| {
            let chunk = chunk?;
            produced += chunk.len() as u64;
            let input = received.load(Ordering::Relaxed);
            if produced > RATIO_GRACE && produced > input.saturating_mul(limits.max_ratio) {
                return Err(limit_error(LimitExceeded::Ratio {
                    limit: limits.max_ratio,
                }));
            }
            Ok(chunk)
        }),
    )
}

/// Where the first member's header ends: its 10 fixed bytes, then the
/// optional extra field (2-byte length), file name and comment (each ended
/// by a zero byte) and header CRC that its flags announce (RFC 1952).
#[derive(Debug, Default)]
struct GzipHeader {
    state: HeaderState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum HeaderState {
    /// Bytes of the fixed part seen, and the flags once read.
    #[default]
    Fixed,
    FixedAt(u8, u8),
    ExtraLength(u8, Option<u8>),
    Extra(u8, u16),
    Name(u8),
    Comment(u8),
    Crc(u8, u8),
    Done,
}

const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;

impl GzipHeader {
    /// How many bytes at the start of `chunk` belong to the header.
    fn consume(&mut self, chunk: &[u8]) -> u64 {
        use HeaderState::*;
        let mut used = 0u64;
        for &byte in chunk {
            let next_after = |flags: u8, from: u8| -> HeaderState {
                // The optional fields in their order, after the one just done.
                if from < FEXTRA && flags & FEXTRA != 0 {
                    ExtraLength(flags, None)
                } else if from < FNAME && flags & FNAME != 0 {
                    Name(flags)
                } else if from < FCOMMENT && flags & FCOMMENT != 0 {
                    Comment(flags)
                } else if from < 32 && flags & FHCRC != 0 {
                    Crc(flags, 0)
                } else {
                    Done
                }
            };
            self.state = match self.state {
                Done => return used,
                Fixed => FixedAt(1, 0),
                // Byte 3 holds the flags; the fixed part is 10 bytes.
                FixedAt(3, _) => FixedAt(4, byte),
                FixedAt(9, flags) => next_after(flags, 0),
                FixedAt(n, flags) => FixedAt(n + 1, flags),
                ExtraLength(flags, None) => ExtraLength(flags, Some(byte)),
                ExtraLength(flags, Some(low)) => match u16::from_le_bytes([low, byte]) {
                    0 => next_after(flags, FEXTRA),
                    length => Extra(flags, length),
                },
                Extra(flags, 1) => next_after(flags, FEXTRA),
                Extra(flags, left) => Extra(flags, left - 1),
                Name(flags) if byte == 0 => next_after(flags, FNAME),
                Comment(flags) if byte == 0 => next_after(flags, FCOMMENT),
                state @ (Name(_) | Comment(_)) => state,
                Crc(_, 1) => Done,
                Crc(flags, n) => Crc(flags, n + 1),
            };
            used += 1;
        }
        used
    }
}

/// A server sending slower than the minimum rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{bytes} bytes in {waited:?} of waiting, under SLUICE_MIN_DOWNLOAD_RATE ({min_rate} bytes/s)"
)]
pub struct TooSlow {
    pub bytes: u64,
    pub waited: std::time::Duration,
    pub min_rate: u64,
}

/// Fails a body that, over any `window` spent waiting on the server,
/// averages under `min_rate` bytes per second. Only time waiting for the
/// network counts: a stage that stops reading (paused for an outage, a full
/// publish window) does not make the server look slow.
pub(crate) fn min_rate(mut body: Body, min_rate: u64, window: std::time::Duration) -> Body {
    if min_rate == 0 {
        return body;
    }
    let mut waiting_since: Option<tokio::time::Instant> = None;
    let mut waited = std::time::Duration::ZERO;
    let mut bytes = 0u64;
    Box::pin(futures_util::stream::poll_fn(move |cx| {
        let started = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
        let polled = body.as_mut().poll_next(cx);
        if polled.is_pending() {
            // The read timeout stops a server that sends nothing at all.
            return polled;
        }
        waiting_since = None;
        waited += started.elapsed();
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            bytes += chunk.len() as u64;
        }
        if waited >= window {
            let expected = min_rate as f64 * waited.as_secs_f64();
            if (bytes as f64) < expected {
                let slow = TooSlow {
                    bytes,
                    waited,
                    min_rate,
                };
                return std::task::Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    slow,
                ))));
            }
            (waited, bytes) = (std::time::Duration::ZERO, 0);
        }
        polled
    }))
}

/// Stops a body that grows past the size limit or has an overlong record,
/// so neither a huge file nor one endless record is ever buffered.
pub(crate) fn bounded(body: Body, limits: BodyLimits) -> Body {
    let mut total = 0u64;
    let mut records = RecordBound::new(limits.max_line);
    Box::pin(body.map(move |chunk: io::Result<Bytes>| {
        let chunk = chunk?;
        total += chunk.len() as u64;
        if total > limits.max_size {
            return Err(limit_error(LimitExceeded::Size {
                limit: limits.max_size,
            }));
        }
        records.scan(&chunk).map_err(limit_error)?;
        Ok(chunk)
    }))
}

/// Measures CSV records as the parser will see them: a quoted field may
/// span lines, so the bound is on the bytes from a record's start to its
/// unquoted line end, not between any two `\n`. Quotes open a field only
/// at its start and `""` inside quotes is one quote, as in csv-core.
pub(crate) struct RecordBound {
    limit: u64,
    /// Bytes of a leading UTF-8 BOM matched so far: the parser never sees
    /// it, so neither may the quoting state.
    bom: usize,
    state: Quoting,
    /// Bytes of the current record so far.
    length: u64,
    /// The line the current record started on, and the line being read.
    start_line: u64,
    line: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or half of `""`.
    QuoteInQuoted,
}

impl RecordBound {
    pub(crate) fn new(limit: u64) -> Self {
        RecordBound {
            limit,
            bom: 0,
            state: Quoting::FieldStart,
            length: 0,
            start_line: 1,
            line: 1,
        }
    }

    pub(crate) fn scan(&mut self, bytes: &[u8]) -> Result<(), LimitExceeded> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        for &byte in bytes {
            if self.bom < BOM.len() {
                if self.length == 0 && self.line == 1 && byte == BOM[self.bom] {
                    self.bom += 1;
                    continue;
                }
                // Not a BOM after all (or past the start): never look again.
                self.bom = BOM.len();
            }
            use Quoting::*;
            if byte == b'\n' {
                self.line += 1;
            }
            self.state = match (self.state, byte) {
                (Quoted, b'"') => QuoteInQuoted,
                (Quoted, _) => Quoted,
                (QuoteInQuoted, b'"') => Quoted,
                (FieldStart, b'"') => Quoted,
                (FieldStart | Unquoted | QuoteInQuoted, b'\n') => {
                    self.length = 0;
                    self.start_line = self.line;
                    FieldStart
                }
                (_, b',') => FieldStart,
                (_, _) => Unquoted,
            };
            if self.state != FieldStart || byte != b'\n' {
                self.length += 1;
                if self.length > self.limit {
                    return Err(LimitExceeded::Line {
                        line: self.start_line,
                        limit: self.limit,
                    });
                }
            }
        }
        Ok(())
    }
}

fn limit_error(e: LimitExceeded) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The limit a body error stands for, if it is one.
pub(crate) fn limit_of(e: &io::Error) -> Option<&LimitExceeded> {
    e.get_ref()?.downcast_ref::<LimitExceeded>()
}

/// Collects a stream for tests.
#[cfg(test)]
pub(crate) async fn collect(body: Body) -> io::Result<Vec<u8>> {
    body.try_fold(Vec::new(), |mut all, chunk| async move {
        all.extend_from_slice(&chunk);
        Ok(all)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use std::io::Write;

    fn body(chunks: Vec<Vec<u8>>) -> Body {
        Box::pin(stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))))
    }

    const LIMITS: BodyLimits = BodyLimits {
        max_size: 1_000,
        max_line: 10,
        max_ratio: 100,
    };

    #[test]
    fn a_gzip_header_is_not_counted_as_payload() {
        use std::io::Write;
        let comment = vec![b'x'; 5000];
        let mut encoder = flate2::GzBuilder::new()
            .filename("f.csv")
            .comment(comment)
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"id,amount\n1,1.00\n").unwrap();
        let gz = encoder.finish().unwrap();
        let header = 10 + 2 + 3 + "f.csv".len() + 1 + 5000 + 1;
        // Whole, and a byte at a time.
        assert_eq!(GzipHeader::default().consume(&gz), header as u64);
        let mut parser = GzipHeader::default();
        let counted: u64 = gz.chunks(1).map(|b| parser.consume(b)).sum();
        assert_eq!(counted, header as u64);
        // A plain header: 10 bytes.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"x").unwrap();
        assert_eq!(
            GzipHeader::default().consume(&encoder.finish().unwrap()),
            10
        );
    }

    #[tokio::test]
    async fn lines_are_counted_across_chunks() {
        let ok = body(vec![b"0123456789\n01234".to_vec(), b"56789\n".to_vec()]);
        assert_eq!(collect(bounded(ok, LIMITS)).await.unwrap().len(), 22);
        let long = body(vec![b"abc\n0123456".to_vec(), b"7890\n".to_vec()]);
        let err = collect(bounded(long, LIMITS)).await.unwrap_err();
        assert!(
            matches!(
                limit_of(&err),
                Some(LimitExceeded::Line { line: 2, limit: 10 })
            ),
            "{err}"
        );
    }

    #[test]
    fn a_record_is_bounded_whole_however_many_lines_its_quotes_span() {
        let scan = |text: &[u8]| RecordBound::new(10).scan(text);
        assert!(scan(b"1234567890\n1234567890\n").is_ok());
        // Eleven bytes of one record over three lines, inside quotes.
        assert_eq!(
            scan(b"id\n\"12\n34\n56789\"\n"),
            Err(LimitExceeded::Line { line: 2, limit: 10 })
        );
        // Escaped quotes stay inside the field; the record ends at line 3.
        assert!(scan(b"\"a\"\"\nb\",1\n\"x\"\n").is_ok());
        assert_eq!(
            scan(b"\"a\"\"\nb\",1\n1234567890X\n"),
            Err(LimitExceeded::Line { line: 3, limit: 10 })
        );
        // A quote inside an unquoted field is text, as the parser reads it:
        // it does not turn the rest of the file into one record.
        assert!(scan(b"12\"4,5\n12345\n12345\n12345\n").is_ok());
        // A BOM is not text: a quote right after it opens a quoted field.
        assert_eq!(
            scan(b"\xEF\xBB\xBF\"id\n1\n2\n3\n4\n5\n\",x\n"),
            Err(LimitExceeded::Line { line: 1, limit: 10 })
        );
        // Split anywhere, the count is the same.
        let mut split = RecordBound::new(10);
        assert!(split.scan(b"id\n\"12\n3").is_ok());
        assert_eq!(
            split.scan(b"4\n56789\"\n"),
            Err(LimitExceeded::Line { line: 2, limit: 10 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_server_fails_and_a_paused_reader_does_not() {
        use std::time::Duration;
        let trickle = |gap: Duration| -> Body {
            Box::pin(futures_util::stream::unfold(0, move |n| async move {
                (n < 100).then_some(())?;
                tokio::time::sleep(gap).await;
                Some((Ok(Bytes::from_static(b"x")), n + 1))
            }))
        };
        // One byte every 2 s: 15 bytes in 30 s of waiting, far under 1 KiB/s.
        let err = collect(min_rate(
            trickle(Duration::from_secs(2)),
            1024,
            Duration::from_secs(30),
        ))
        .await
        .unwrap_err();
        let slow = err.get_ref().unwrap().downcast_ref::<TooSlow>().unwrap();
        assert_eq!((slow.bytes, slow.waited), (15, Duration::from_secs(30)));
        // A fast server whose reader pauses for minutes is not slow.
        let mut fast = min_rate(
            Box::pin(futures_util::stream::iter(
                (0..50).map(|_| Ok(Bytes::from(vec![b'x'; 4096]))),
            )),
            1024,
            Duration::from_secs(30),
        );
        let mut total = 0;
        while let Some(chunk) = fast.next().await {
            total += chunk.unwrap().len();
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        assert_eq!(total, 50 * 4096);
    }

    #[tokio::test]
    async fn size_counts_every_byte() {
        let big = body(vec![b"123456789\n".repeat(60), b"123456789\n".repeat(60)]);
        let err = collect(bounded(big, LIMITS)).await.unwrap_err();
        assert!(matches!(
            limit_of(&err),
            Some(LimitExceeded::Size { limit: 1_000 })
        ));
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn gzip_bombs_stop_early_and_honest_gzip_passes() {
        let text = b"id,amount\n1,2.50\n".repeat(1_000);
        let plain = collect(gunzip(body(vec![gzip(&text)]), LIMITS))
            .await
            .unwrap();
        assert_eq!(plain, text);

        let bomb = gzip(&vec![b'0'; 64 << 20]);
        let err = collect(gunzip(body(vec![bomb]), LIMITS)).await.unwrap_err();
        assert!(
            matches!(limit_of(&err), Some(LimitExceeded::Ratio { limit: 100 })),
            "{err}"
        );
    }

    #[tokio::test]
    async fn truncated_gzip_is_an_error_not_a_short_file() {
        let whole = gzip(&b"id,amount\n1,2\n".repeat(100));
        let cut = whole[..whole.len() / 2].to_vec();
        assert!(collect(gunzip(body(vec![cut]), LIMITS)).await.is_err());
    }
}
