//! The HTTP client: the address guard on every connection, per-host
//! download slots, redirects, and the body limits on every response.

use std::{io, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use url::Url;

use crate::objects::ObjectStores;
use crate::resume::{content_range, same_validator, validator_of, Reopened, Stopped};
use crate::{
    address,
    hosts::{HostLimits, HostSlot, Outcome},
    limits, AddressPolicy, Body, BodyLimits, Columns, Credential, Credentials, CsvFile, CsvFormat,
    DownloadError, DownloadOptions, LimitExceeded,
};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;
/// Hedges one request may send, each paid for by the host's answers.
const HEDGES_PER_REQUEST: usize = 2;

#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    limits: BodyLimits,
    min_rate: u64,
    read_timeout: Duration,
    addresses: Arc<AddressPolicy>,
    hosts: HostLimits,
    credentials: Credentials,
    objects: ObjectStores,
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
    slot: HostSlot,
    /// The credential the import named, sent where it is scoped.
    credential: Option<Arc<Credential>>,
}

/// The HTTP client could not be built (its TLS roots, say): a setting or
/// the machine, never a message.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client")]
pub struct ClientError(#[source] pub(crate) reqwest::Error);

impl sluice_messages::Failure for ClientError {
    fn is_transient(&self) -> bool {
        false
    }
}

/// An HTTP client whose every connection passes `policy` (names through
/// its resolver; an address written as such the caller checks), through
/// no proxy (a proxy would resolve names past the guard, whatever
/// HTTP_PROXY says), following no redirect by itself.
pub(crate) fn guarded(
    policy: Arc<AddressPolicy>,
    connect_timeout: Duration,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .dns_resolver(Arc::new(address::GuardedResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
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
        // Redirects are followed by `body`, hop by hop: each is checked
        // against the guard, and a credential goes only where it is scoped.
        let client = guarded(addresses.clone(), options.connect_timeout)
            .read_timeout(options.read_timeout)
            .build()
            .map_err(ClientError)?;
        Ok(Downloader {
            objects: ObjectStores::new(
                client.clone(),
                addresses.clone(),
                options.s3_buckets.clone(),
            ),
            client,
            limits: options.limits,
            min_rate: options.min_rate,
            read_timeout: options.read_timeout,
            addresses,
            hosts: HostLimits::new(options.min_per_host, options.per_host),
            credentials: options.credentials.clone(),
        })
    }

    /// Checks `url` and waits for a download slot on its host. `credential`:
    /// the name of the credential the import asked for, if any.
    pub async fn reserve(
        &self,
        url: &str,
        credential: Option<&str>,
    ) -> Result<Reserved, DownloadError> {
        let credential = credential
            .map(|name| self.credentials.get(name))
            .transpose()?;
        let url = Url::parse(url).map_err(|reason| DownloadError::InvalidUrl {
            url: url.to_owned(),
            reason,
        })?;
        let host = match url.scheme() {
            "http" | "https" => format!(
                "{}:{}",
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(0)
            ),
            // One store answers for every bucket: its limit is shared.
            "s3" => "s3".to_owned(),
            _ => return Err(DownloadError::UnsupportedScheme { url }),
        };
        let slot = self.hosts.acquire(&host).await;
        Ok(Reserved {
            url,
            slot,
            credential,
        })
    }

    /// How many downloads `host` (`name:port`) may have at once now.
    pub fn host_limit(&self, host: &str) -> usize {
        self.hosts.limit(host)
    }

    /// Reserves a slot for `url` and opens it: for callers with nothing
    /// better to do while the host is busy.
    pub async fn open(
        &self,
        url: &str,
        credential: Option<&str>,
        columns: &[&str],
    ) -> Result<CsvFile, DownloadError> {
        let reserved = self.reserve(url, credential).await?;
        self.open_csv(reserved, columns).await
    }

    /// Starts downloading and reads the header, which must name every one
    /// of `columns` (matched ignoring case and surrounding spaces).
    pub async fn open_csv(
        &self,
        reserved: Reserved,
        columns: &[&str],
    ) -> Result<CsvFile, DownloadError> {
        Ok(self.open_csv_after(reserved, columns, None).await?.0)
    }

    /// The first `max_bytes` of `url`'s body (decompressed), under every
    /// guard a download has; the rest is never read. For drafting a spec
    /// from a file (`sluice spec infer`).
    pub async fn sample(
        &self,
        url: &str,
        credential: Option<&str>,
        max_bytes: usize,
    ) -> Result<(Url, Bytes), DownloadError> {
        let reserved = self.reserve(url, credential).await?;
        let mut body = limits::bounded(self.body(&reserved).await?, self.limits);
        let mut sample = BytesMut::new();
        while sample.len() < max_bytes {
            match body.next().await {
                Some(chunk) => sample.extend_from_slice(
                    &chunk.map_err(|source| DownloadError::body(&reserved.url, source))?,
                ),
                None => break,
            }
        }
        sample.truncate(max_bytes);
        Ok((reserved.url.clone(), sample.freeze()))
    }

    /// Sends the request, following redirects, and checks the answer: the
    /// body as it streams in, decompressed, rate-checked. How the host
    /// answered tunes its limit.
    async fn body(&self, reserved: &Reserved) -> Result<Body, DownloadError> {
        Ok(self.response(reserved, None).await?.body)
    }

    /// Like `body`, asking for the rest of the file from `resume`'s offset
    /// if it is still the file its validator names (`Range` + `If-Range`).
    async fn response(
        &self,
        reserved: &Reserved,
        resume: Option<&ResumeAt>,
    ) -> Result<Opened, DownloadError> {
        if reserved.url.scheme() == "s3" {
            return self.object(reserved, resume).await;
        }
        let mut url = reserved.url.clone();
        let mut hops = 0;
        let (response, url, sent) = loop {
            if let Some(Err(reason)) = literal_ip(&url).map(|ip| self.addresses.check(ip)) {
                return Err(DownloadError::Refused { url, reason });
            }
            let credential = reserved.credential.as_deref().filter(|c| c.covers(&url));
            // The credential is the request's only authorization: a user
            // and password in the URL would be a second Authorization header.
            let mut target = url.clone();
            if credential.is_some() {
                let _ = target.set_username("");
                let _ = target.set_password(None);
            }
            let mut request = self.client.get(target);
            request = match resume {
                // A range of the file as stored: gzip would make it a range
                // of something else.
                Some(at) => request
                    .header(reqwest::header::ACCEPT_ENCODING, "identity")
                    .header(reqwest::header::RANGE, format!("bytes={}-", at.offset))
                    .header(reqwest::header::IF_RANGE, at.validator.as_str()),
                None => request.header(reqwest::header::ACCEPT_ENCODING, "gzip"),
            };
            for (name, value) in credential.map(Credential::headers).unwrap_or_default() {
                request = request.header(name, value);
            }
            let response = send_hedged(request, &reserved.slot)
                .await
                .inspect_err(|source| {
                    if source.is_timeout() || source.is_connect() || source.is_request() {
                        reserved.slot.report(Outcome::Failed);
                    }
                })
                .map_err(|source| match address::refusal_in(&source) {
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
            match response.status().as_u16() {
                301 | 302 | 303 | 307 | 308 => {}
                _ => break (response, url, credential.is_some()),
            }
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .ok_or_else(|| DownloadError::NoLocation {
                    url: url.clone(),
                    status: response.status().as_u16(),
                })?;
            hops += 1;
            let refused = if hops > MAX_REDIRECTS {
                Some(": more redirects than the 10 followed")
            } else if !matches!(to.scheme(), "http" | "https") {
                Some(", not http or https")
            } else if to.scheme() == "http" && url.scheme() == "https" {
                // What came over TLS must not continue in the clear.
                Some(": from https to http is not followed")
            } else {
                None
            };
            if let Some(reason) = refused {
                return Err(DownloadError::Redirect {
                    url,
                    to: Box::new(to),
                    reason,
                });
            }
            url = to;
        };
        let status = response.status();
        reserved.slot.report(match status.as_u16() {
            429 | 503 => Outcome::Refused(
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::hosts::retry_after),
            ),
            _ => Outcome::Answered,
        });
        if resume.is_some() && !status.is_success() {
            // A 416 (the file is shorter now), or any refusal of the range:
            // read it whole, where the validators tell what changed.
            return Box::pin(self.response(reserved, None)).await;
        }
        if !status.is_success() {
            return Err(DownloadError::Status {
                url,
                status: status.as_u16(),
                credential: reserved
                    .credential
                    .as_ref()
                    .map(|c| (c.name().to_owned(), sent)),
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
        let mut validator = validator_of(response.headers());
        let from = match (status.as_u16(), resume) {
            (206, Some(at)) => {
                let range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range);
                // The rest of the file asked for, to its end, of the file
                // the earlier attempt read (a server may ignore If-Range).
                let whole_rest = range.is_some_and(|(first, last, size)| {
                    first == at.offset && last.checked_add(1) == Some(size)
                });
                let same = validator
                    .as_deref()
                    .is_none_or(|v| same_validator(v, &at.validator));
                let encoded = encoding.as_deref().is_some_and(|e| e != "identity");
                if !whole_rest || !same || encoded {
                    return Box::pin(self.response(reserved, None)).await;
                }
                validator = Some(at.validator.clone());
                at.offset
            }
            _ => 0,
        };
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
        let raw: Body = limits::min_rate(
            Box::pin(response.bytes_stream().map_err(io::Error::other)),
            self.min_rate,
            self.read_timeout,
        );
        let (body, identity) = match encoding.as_deref() {
            None | Some("" | "identity") => (raw, true),
            Some("gzip" | "x-gzip") => (limits::gunzip(raw, self.limits), false),
            Some(other) => {
                return Err(DownloadError::UnsupportedEncoding {
                    url: url.clone(),
                    encoding: other.to_owned(),
                })
            }
        };
        Ok(Opened {
            body,
            validator,
            identity,
            from,
        })
    }

    /// Opens the file as [`Downloader::open_csv`] does, or, given where an
    /// earlier attempt stopped, only the rest of it when the server can
    /// send a range of the same file.
    pub async fn open_csv_after(
        &self,
        reserved: Reserved,
        columns: &[&str],
        stopped: Option<&Stopped>,
    ) -> Result<(CsvFile, Reopened), DownloadError> {
        let format = CsvFormat {
            trim: true,
            ..CsvFormat::default()
        };
        self.open_formatted_after(reserved, &format, Columns::Named(columns), stopped)
            .await
    }

    /// Starts downloading a file written as `format` says and reads its
    /// header, if it has one (files an import spec describes), going on
    /// where an earlier attempt stopped as [`Downloader::open_csv_after`] does.
    pub async fn open_formatted_after(
        &self,
        reserved: Reserved,
        format: &CsvFormat,
        columns: Columns<'_>,
        stopped: Option<&Stopped>,
    ) -> Result<(CsvFile, Reopened), DownloadError> {
        let resume = stopped.and_then(|s| {
            s.validator
                .as_ref()
                .filter(|v| crate::resume::ranges_with(v))
                .map(|validator| ResumeAt {
                    offset: s.offset,
                    validator: validator.clone(),
                })
        });
        let opened = self.response(&reserved, resume.as_ref()).await?;
        let (mut file, how) = match stopped {
            Some(stopped) if opened.from > 0 => {
                // The header as the first attempt read it, then the rest.
                let header = Bytes::from(format!("{}\n", stopped.header));
                let body: Body = Box::pin(
                    futures_util::stream::once(async move { Ok(header) }).chain(opened.body),
                );
                let mut file = CsvFile::read(
                    reserved.url.clone(),
                    limits::bounded(body, self.limits),
                    format,
                    columns,
                )
                .await?;
                file.resumed(opened.from, stopped.header.len() as u64 + 1, stopped.line);
                (file, Reopened::Resumed)
            }
            _ => {
                let body = limits::bounded(opened.body, self.limits);
                let mut file = CsvFile::read(reserved.url.clone(), body, format, columns).await?;
                file.fresh(opened.identity);
                let how = match (stopped.map(|s| s.validator.as_deref()), &opened.validator) {
                    (None, _) => Reopened::Fresh,
                    (Some(Some(then)), Some(now)) if same_validator(then, now) => {
                        Reopened::ReadPast
                    }
                    // Another validator, or none now: not the same file, as
                    // far as can be told. (No checkpoint is taken without one.)
                    _ => Reopened::Changed,
                };
                (file, how)
            }
        };
        file.validator = opened.validator;
        file.slot = Some(reserved.slot);
        Ok((file, how))
    }
}

impl Downloader {
    /// An object of an S3-compatible store, under the limits an HTTP body
    /// has.
    async fn object(
        &self,
        reserved: &Reserved,
        resume: Option<&ResumeAt>,
    ) -> Result<Opened, DownloadError> {
        let url = &reserved.url;
        let resume = resume.map(|at| (at.offset, at.validator.as_str()));
        let object = self.objects.get(url, resume).await.inspect_err(|e| {
            if e.is_transient() {
                reserved.slot.report(Outcome::Failed);
            }
        })?;
        reserved.slot.report(Outcome::Answered);
        let gzip = match object.encoding.as_deref() {
            None | Some("" | "identity") => url.path().ends_with(".gz"),
            Some("gzip" | "x-gzip") => true,
            Some(other) => {
                return Err(DownloadError::UnsupportedEncoding {
                    url: url.clone(),
                    encoding: other.to_owned(),
                })
            }
        };
        if !gzip && object.size.saturating_sub(object.from) > self.limits.max_size {
            return Err(DownloadError::Limit {
                url: url.clone(),
                limit: LimitExceeded::Size {
                    limit: self.limits.max_size,
                },
            });
        }
        let raw = limits::min_rate(object.body, self.min_rate, self.read_timeout);
        Ok(Opened {
            body: if gzip {
                limits::gunzip(raw, self.limits)
            } else {
                raw
            },
            validator: object.etag,
            identity: !gzip,
            from: object.from,
        })
    }
}

/// A response about to stream, and what a later attempt needs to resume it.
struct Opened {
    body: Body,
    /// A strong `ETag`, else `Last-Modified`: what `If-Range` takes.
    validator: Option<String>,
    /// Sent as stored (no content encoding): byte offsets are the file's.
    identity: bool,
    /// The file offset the body starts at (a range was granted).
    from: u64,
}

struct ResumeAt {
    offset: u64,
    validator: String,
}

/// The address a URL names directly, without a lookup.
pub(crate) fn literal_ip(url: &Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

/// Sends `request`; while it has no answer, sends it again after each of
/// the host's hedge delays that the host has a hedge to spend on (at most
/// [`HEDGES_PER_REQUEST`] times), and takes the first answer (the others
/// are dropped, their connections closed). A hedge can meet the same full
/// accept queue as the first request, and a host out of hedges earns more
/// with every answer, so one missed chance is not the last. An error waits
/// for the requests still out, and is returned only if all fail.
async fn send_hedged(
    request: reqwest::RequestBuilder,
    slot: &HostSlot,
) -> Result<reqwest::Response, reqwest::Error> {
    let (client, request) = request.build_split();
    let request = request?;
    let (Some(spare), Some(after)) = (request.try_clone(), slot.hedge_after()) else {
        return client.execute(request).await;
    };
    let mut out = futures_util::stream::FuturesUnordered::new();
    out.push(client.execute(request));
    let mut hedges_left = HEDGES_PER_REQUEST;
    let mut first_error = None;
    let next_hedge = tokio::time::sleep(after);
    tokio::pin!(next_hedge);
    loop {
        tokio::select! {
            // An answer first: a hedge sent beside it would be paid for and dropped.
            biased;
            Some(answer) = out.next() => match answer {
                Ok(response) => return Ok(response),
                Err(e) if out.is_empty() => return Err(first_error.unwrap_or(e)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            },
            () = &mut next_hedge, if hedges_left > 0 => {
                if let Some(hedge) = spare.try_clone().filter(|_| slot.take_hedge()) {
                    out.push(client.execute(hedge));
                    hedges_left -= 1;
                }
                next_hedge.as_mut().reset(tokio::time::Instant::now() + after);
            }
        }
    }
}
