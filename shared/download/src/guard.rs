//! Bounds on what a hostile or broken server can make a download do: which
//! addresses it may reach, how many bytes it may produce (after
//! decompression), how far gzip may expand, and how long one line may grow.

use std::{
    fmt, io,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::Body;

/// What downloads never connect to unless `SLUICE_ALLOW_NETWORKS` says so:
/// this host, private and shared address space, link-local (cloud metadata
/// at 169.254.169.254 and fd00:ec2::254), benchmarking, multicast and
/// reserved ranges. The same choices GitLab and Gitea make for URLs their
/// users supply.
pub const DEFAULT_DENY: &str = "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,\
172.16.0.0/12,192.168.0.0/16,198.18.0.0/15,224.0.0.0/3,::/128,::1/128,64:ff9b:1::/48,fc00::/7,fe80::/10,ff00::/8";

/// A comma-separated list of networks, `169.254.0.0/16,fe80::/10`; a bare
/// address is a network of one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

impl Networks {
    pub fn parse(text: &str) -> Result<Networks, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not a network like 10.0.0.0/8 or an address"))
            })
            .collect::<Result<_, _>>()
            .map(Networks)
    }

    fn find(&self, ip: IpAddr) -> Option<&IpNet> {
        self.0.iter().find(|net| net.contains(&ip))
    }
}

impl fmt::Display for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// Which addresses downloads may connect to: anything outside `deny`, and
/// anything inside `allow` even if denied.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    pub deny: Networks,
    pub allow: Networks,
}

/// A download refused because of where it would connect.
#[derive(Debug, Clone, thiserror::Error)]
#[error("address {ip} is in the denied network {network} (SLUICE_DENY_NETWORKS; SLUICE_ALLOW_NETWORKS makes exceptions)")]
pub struct AddressRefused {
    pub ip: IpAddr,
    pub network: IpNet,
}

impl AddressPolicy {
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressRefused> {
        // `::ffff:169.254.169.254` is the same host as `169.254.169.254`.
        let ip = ip.to_canonical();
        for candidate in std::iter::once(ip).chain(embedded_ipv4(ip).map(IpAddr::V4)) {
            if let Some(network) = self.deny.find(candidate) {
                if self.allow.find(candidate).is_none() {
                    return Err(AddressRefused {
                        ip,
                        network: *network,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The IPv4 address an IPv6 one carries and routes to: IPv4-compatible
/// (`::a.b.c.d`), SIIT's IPv4-translated (`::ffff:0:a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`). (IPv4-mapped
/// addresses are canonicalised before; the local-use NAT64 prefix
/// `64:ff9b:1::/48`, whose layout each site chooses, is denied whole.)
fn embedded_ipv4(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let low = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-compatible `::a.b.c.d`, except `::` and `::1`, which are
        // IPv6's own unspecified and loopback addresses (and listed as such).
        [0, 0, 0, 0, 0, 0, _, _] if s[6] != 0 || s[7] > 1 => Some(low),
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(std::net::Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// Resolves host names and drops denied addresses, so the check holds for
/// the address actually connected to (no second lookup to race with DNS).
pub(crate) struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check(addr.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (true, Some(refused)) => {
                    Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>)
                }
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

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

/// Whether an HTTP client error was our resolver refusing an address.
pub(crate) fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<AddressRefused> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(refused) = err.downcast_ref::<AddressRefused>() {
            return Some(refused.clone());
        }
        next = err.source();
    }
    None
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
    use std::io::Write;

    use futures_util::stream;

    use super::*;

    fn body(chunks: Vec<Vec<u8>>) -> Body {
        Box::pin(stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))))
    }

    const LIMITS: BodyLimits = BodyLimits {
        max_size: 1_000,
        max_line: 10,
        max_ratio: 100,
    };

    #[test]
    fn metadata_and_link_local_addresses_are_refused_unless_allowed() {
        let mut policy = AddressPolicy {
            deny: Networks::parse("169.254.0.0/16, fe80::/10").unwrap(),
            allow: Networks::default(),
        };
        for ip in ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1"] {
            assert!(policy.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        for ip in ["127.0.0.1", "10.1.2.3", "::1", "2001:db8::1"] {
            assert!(policy.check(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        policy.allow = Networks::parse("169.254.10.0/24").unwrap();
        assert!(policy.check("169.254.10.7".parse().unwrap()).is_ok());
        assert!(policy.check("169.254.11.7".parse().unwrap()).is_err());
        assert!(Networks::parse("10.0.0.0/33").is_err());
        assert_eq!(Networks::parse("").unwrap(), Networks::default());
    }

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

    #[test]
    fn internal_networks_are_refused_by_default_in_every_spelling() {
        let policy = AddressPolicy {
            deny: Networks::parse(DEFAULT_DENY).unwrap(),
            allow: Networks::default(),
        };
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.100.100.200",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "::ff00",
            "64:ff9b::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "::ffff:0:7f00:1",
            "::ffff:0:10.0.0.1",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:7f00:0:100::",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            let refused = policy.check(ip.parse().unwrap());
            assert!(refused.is_err(), "{ip} must be refused");
            assert!(refused
                .unwrap_err()
                .to_string()
                .contains("SLUICE_ALLOW_NETWORKS"));
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "64:ff9b::101:101",
            "::ffff:0:101:101",
            "2002:101:101::",
        ] {
            assert!(policy.check(ip.parse().unwrap()).is_ok(), "{ip} is public");
        }
        let loopback_allowed = AddressPolicy {
            allow: Networks::parse("127.0.0.0/8,::1").unwrap(),
            ..policy
        };
        assert!(loopback_allowed.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(loopback_allowed.check("::1".parse().unwrap()).is_ok());
        assert!(loopback_allowed.check("10.0.0.1".parse().unwrap()).is_err());
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
