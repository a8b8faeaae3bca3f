//! Streams CSV files over HTTP(S) row by row, never holding a whole file.
//!
//! Accepts what real exports contain: a UTF-8 byte-order mark (however the
//! server splits it across chunks), CRLF, quoted fields, columns in any
//! order with extra ones ignored, and `Content-Encoding: gzip`. A row that
//! cannot be used is reported with its line number and the file goes on.

use std::{io, pin::Pin, sync::Arc, time::Duration};

use bytes::{Buf, Bytes, BytesMut};
use csv_async::{AsyncReader, AsyncReaderBuilder, ByteRecord};
use futures_util::{stream, Stream, StreamExt, TryStreamExt};
use tokio_util::io::StreamReader;
pub use url::Url;

mod guard;

pub use guard::{AddressPolicy, AddressRefused, BodyLimits, LimitExceeded, Networks, TooSlow};

/// Download settings as flags and environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct DownloadArgs {
    /// Longest wait to establish an HTTP connection.
    #[arg(long, env = "SLUICE_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before the download fails
    /// (and is retried).
    #[arg(long, env = "SLUICE_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// Largest file accepted, counted after decompression (`512MiB`, `2GB`).
    #[arg(long, env = "SLUICE_MAX_DOWNLOAD_SIZE", default_value = "4GiB", value_parser = sluice_messages::units::parse_size)]
    pub max_download_size: u64,
    /// Longest line accepted; a longer one fails the file.
    #[arg(long, env = "SLUICE_MAX_ROW_LENGTH", default_value = "64KiB", value_parser = sluice_messages::units::parse_size)]
    pub max_row_length: u64,
    /// Most a gzip body may expand (decompressed / compressed size).
    #[arg(long, env = "SLUICE_MAX_COMPRESSION_RATIO", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_compression_ratio: u64,
    /// Slowest average transfer accepted, over each `--read-timeout` spent
    /// waiting on the server (`0` turns the check off): a server that
    /// trickles a byte now and then fails the download (and it is retried)
    /// instead of holding a slot for hours.
    #[arg(long, env = "SLUICE_MIN_DOWNLOAD_RATE", default_value = "1KiB", value_parser = sluice_messages::units::parse_limit)]
    pub min_download_rate: u64,
    /// Downloads from one host at once per replica; the others wait without
    /// taking a processing slot, so one slow host cannot occupy them all.
    #[arg(long, env = "SLUICE_MAX_DOWNLOADS_PER_HOST", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_downloads_per_host: u32,
    /// Networks downloads never connect to: this host, private, shared,
    /// link-local (cloud metadata), multicast and reserved ranges.
    #[arg(long, env = "SLUICE_DENY_NETWORKS", default_value = guard::DEFAULT_DENY,
          value_parser = Networks::parse)]
    pub deny_networks: Networks,
    /// Exceptions to `--deny-networks`.
    #[arg(long, env = "SLUICE_ALLOW_NETWORKS", default_value = "", value_parser = Networks::parse)]
    pub allow_networks: Networks,
}

impl DownloadArgs {
    pub fn options(&self) -> DownloadOptions {
        DownloadOptions {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            limits: BodyLimits {
                max_size: self.max_download_size,
                max_line: self.max_row_length,
                max_ratio: self.max_compression_ratio,
            },
            min_rate: self.min_download_rate,
            per_host: self.max_downloads_per_host as usize,
            addresses: AddressPolicy {
                deny: self.deny_networks.clone(),
                allow: self.allow_networks.clone(),
            },
        }
    }
}

/// How files are fetched.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Longest wait to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response; a stalled server fails the
    /// download (and it is retried) instead of hanging it forever.
    pub read_timeout: Duration,
    pub limits: BodyLimits,
    /// Bytes per second, averaged over each `read_timeout` of waiting; 0: any.
    pub min_rate: u64,
    /// Downloads from one host at once.
    pub per_host: usize,
    pub addresses: AddressPolicy,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            limits: BodyLimits {
                max_size: 4 << 30,
                max_line: 64 << 10,
                max_ratio: 100,
            },
            min_rate: 1024,
            per_host: 4,
            addresses: AddressPolicy {
                deny: Networks::parse(guard::DEFAULT_DENY).expect("valid"),
                allow: Networks::default(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{:?} is not a valid URL: {reason}", shown_text(.url))]
    InvalidUrl {
        url: String,
        reason: url::ParseError,
    },
    #[error("{}: only http and https URLs can be imported", shown(.url))]
    UnsupportedScheme { url: Url },
    #[error("GET {} refused: {reason}", shown(.url))]
    Refused { url: Url, reason: AddressRefused },
    #[error("GET {} failed", shown(.url))]
    Request {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {} answered HTTP {status}", shown(.url))]
    Status { url: Url, status: u16 },
    #[error("{} has Content-Encoding {encoding:?}: only gzip is accepted", shown(.url))]
    UnsupportedEncoding { url: Url, encoding: String },
    #[error("reading {} failed", shown(.url))]
    Body {
        url: Url,
        #[source]
        source: io::Error,
    },
    #[error("{} is too slow: {rate}", shown(.url))]
    TooSlow { url: Url, rate: guard::TooSlow },
    #[error("{} refused: {limit}", shown(.url))]
    Limit { url: Url, limit: LimitExceeded },
    #[error("{} has a line break inside its header ({found:?}): lines must end in LF or CRLF (a file with lone CR line ends, as old Mac exports have, reads as one line)", shown(.url))]
    HeaderLineBreak { url: Url, found: String },
    #[error("{} is not a CSV with columns {expected}: its header is {found:?}", shown(.url))]
    MissingColumns {
        url: Url,
        expected: String,
        found: String,
    },
}

impl DownloadError {
    /// Whether trying the same download again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Request { source, .. } => !source.is_builder() && !source.is_redirect(),
            DownloadError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            // A cut connection, a truncated gzip stream: the next try may get it whole.
            DownloadError::Body { .. } | DownloadError::TooSlow { .. } => true,
            DownloadError::InvalidUrl { .. }
            | DownloadError::UnsupportedScheme { .. }
            | DownloadError::Refused { .. }
            | DownloadError::UnsupportedEncoding { .. }
            | DownloadError::Limit { .. }
            | DownloadError::HeaderLineBreak { .. }
            | DownloadError::MissingColumns { .. } => false,
        }
    }

    /// A broken body, or one that broke a limit (which is permanent).
    fn body(url: &Url, source: io::Error) -> DownloadError {
        if let Some(rate) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<guard::TooSlow>())
        {
            return DownloadError::TooSlow {
                url: url.clone(),
                rate: rate.clone(),
            };
        }
        match guard::limit_of(&source) {
            Some(limit) => DownloadError::Limit {
                url: url.clone(),
                limit: limit.clone(),
            },
            None => DownloadError::Body {
                url: url.clone(),
                source,
            },
        }
    }
}

/// A download failure as the stages see it: retried or dead-lettered.
impl sluice_messages::Failure for DownloadError {
    fn is_transient(&self) -> bool {
        DownloadError::is_transient(self)
    }
}

/// A file URL as errors show it: no userinfo, query or fragment, since
/// presigned URLs carry their secrets there.
fn shown(url: &Url) -> String {
    sluice_messages::redact_file_url(url.as_str())
}

fn shown_text(url: &str) -> String {
    sluice_messages::redact_file_url(url)
}

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    limits: BodyLimits,
    min_rate: u64,
    read_timeout: Duration,
    addresses: Arc<AddressPolicy>,
    hosts: HostSlots,
}

/// The downloads each host may have at once.
#[derive(Debug, Clone)]
struct HostSlots {
    per_host: usize,
    hosts: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>>,
}

impl HostSlots {
    fn semaphore(&self, host: &str) -> Arc<tokio::sync::Semaphore> {
        let mut hosts = self.hosts.lock().expect("never poisoned");
        if hosts.len() > 4096 {
            // Forget hosts nobody is downloading from.
            hosts.retain(|_, s| Arc::strong_count(s) > 1);
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_host)))
            .clone()
    }
}

/// A URL checked and a download slot on its host: what [`Downloader::open_csv`]
/// needs. Waiting for it may take long when the host is busy.
/// Makes ring the process's TLS provider, as async-nats uses it (reqwest
/// is built without a provider of its own, to spare the aws-lc C build).
/// Idempotent; every binary that builds an HTTP client calls it first.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct Reserved {
    url: Url,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// The HTTP client could not be built (its TLS roots, say): a setting or
/// the machine, never a message.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client")]
pub struct ClientError(#[source] reqwest::Error);

impl sluice_messages::Failure for ClientError {
    fn is_transient(&self) -> bool {
        false
    }
}

impl Downloader {
    pub fn new(options: &DownloadOptions) -> Result<Self, ClientError> {
        install_tls_provider();
        // What `sluice doctor` cannot see from its own environment.
        tracing::info!(
            denied = %options.addresses.deny,
            allowed = %options.addresses.allow,
            "download guard: refusing connections to the denied networks (SLUICE_DENY_NETWORKS) except the allowed ones (SLUICE_ALLOW_NETWORKS)"
        );
        let addresses = Arc::new(options.addresses.clone());
        let policy = addresses.clone();
        // Host names are checked by the resolver; literal addresses in a
        // redirect never reach it, so they are checked here.
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match literal_ip(attempt.url()).map(|ip| policy.check(ip)) {
                Some(Err(refused)) => attempt.error(refused),
                _ if !matches!(attempt.url().scheme(), "http" | "https") => {
                    let message =
                        format!("redirect to {} is not http or https", shown(attempt.url()));
                    attempt.error(message)
                }
                // What came over TLS must not continue in the clear.
                _ if attempt.url().scheme() == "http"
                    && attempt
                        .previous()
                        .last()
                        .is_some_and(|u| u.scheme() == "https") =>
                {
                    let message = format!("redirect from https to http ({})", shown(attempt.url()));
                    attempt.error(message)
                }
                _ => attempt.follow(),
            }
        });
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            // A proxy would resolve names past the address guard: none,
            // whatever HTTP_PROXY says.
            .no_proxy()
            .dns_resolver(Arc::new(guard::GuardedResolver {
                policy: addresses.clone(),
            }))
            .redirect(redirects)
            .build()
            .map_err(ClientError)?;
        Ok(Downloader {
            client,
            limits: options.limits,
            min_rate: options.min_rate,
            read_timeout: options.read_timeout,
            addresses,
            hosts: HostSlots {
                per_host: options.per_host.max(1),
                hosts: Default::default(),
            },
        })
    }

    /// Checks `url` and waits for a download slot on its host.
    pub async fn reserve(&self, url: &str) -> Result<Reserved, DownloadError> {
        let url = Url::parse(url).map_err(|reason| DownloadError::InvalidUrl {
            url: url.to_owned(),
            reason,
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DownloadError::UnsupportedScheme { url });
        }
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let slot = self
            .hosts
            .semaphore(&host)
            .acquire_owned()
            .await
            .expect("host semaphores never close");
        Ok(Reserved { url, _slot: slot })
    }

    /// Reserves a slot for `url` and opens it: for callers with nothing
    /// better to do while the host is busy.
    pub async fn open(&self, url: &str, columns: &[&str]) -> Result<CsvFile, DownloadError> {
        let reserved = self.reserve(url).await?;
        self.open_csv(reserved, columns).await
    }

    /// Starts downloading and reads the header, which must name every one
    /// of `columns` (matched ignoring case and surrounding spaces).
    pub async fn open_csv(
        &self,
        reserved: Reserved,
        columns: &[&str],
    ) -> Result<CsvFile, DownloadError> {
        let url = &reserved.url;
        if let Some(Err(reason)) = literal_ip(url).map(|ip| self.addresses.check(ip)) {
            return Err(DownloadError::Refused {
                url: url.clone(),
                reason,
            });
        }
        let response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .map_err(|source| match guard::refusal_in(&source) {
                Some(reason) => DownloadError::Refused {
                    url: url.clone(),
                    reason,
                },
                // reqwest's message would repeat the URL with its secrets.
                None => DownloadError::Request {
                    url: url.clone(),
                    source: source.without_url(),
                },
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(DownloadError::Status {
                url: url.clone(),
                status: status.as_u16(),
            });
        }
        let encoding = response
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .trim()
                    .to_ascii_lowercase()
            });
        // A declared size over the limit is refused before any row is read.
        if let (None, Some(length)) = (&encoding, response.content_length()) {
            if length > self.limits.max_size {
                return Err(DownloadError::Limit {
                    url: url.clone(),
                    limit: LimitExceeded::Size {
                        limit: self.limits.max_size,
                    },
                });
            }
        }
        // The rate is the server's, before decompression.
        let raw: Body = guard::min_rate(
            Box::pin(response.bytes_stream().map_err(io::Error::other)),
            self.min_rate,
            self.read_timeout,
        );
        let body = match encoding.as_deref() {
            None | Some("" | "identity") => raw,
            Some("gzip" | "x-gzip") => guard::gunzip(raw, self.limits),
            Some(other) => {
                return Err(DownloadError::UnsupportedEncoding {
                    url: url.clone(),
                    encoding: other.to_owned(),
                })
            }
        };
        let mut file =
            CsvFile::from_stream(url.clone(), guard::bounded(body, self.limits), columns).await?;
        file.slot = Some(reserved._slot);
        Ok(file)
    }
}

/// The address a URL names directly, without a lookup.
fn literal_ip(url: &Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

pub(crate) type Body = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// An open CSV download, read row by row with [`CsvFile::next_row`].
pub struct CsvFile {
    url: Url,
    reader: AsyncReader<StreamReader<Body, Bytes>>,
    lines: LineIndex,
    /// The host's download slot, held while the file is read.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
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
