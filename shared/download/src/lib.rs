//! Streams CSV files over HTTP(S) or from an S3-compatible object store
//! row by row, never holding a whole file.
//!
//! Accepts what real exports contain: a UTF-8 byte-order mark (however the
//! server splits it across chunks), CRLF, quoted fields, columns in any
//! order with extra ones ignored, and `Content-Encoding: gzip`. A row that
//! cannot be used is reported with its line number and the file goes on.
//!
//! | module | what it holds |
//! | --- | --- |
//! | `options` | the settings ([`DownloadArgs`]) and what they become ([`DownloadOptions`]) |
//! | `client` | the [`Downloader`]: redirects, the guard on every connection |
//! | `hosts` | how many downloads each host gets at once, adapted to how it answers ([`HostLimits`]) |
//! | `credentials` | named credentials an import may ask for, and where each may be sent ([`Credentials`]) |
//! | `address` | which addresses a download may reach ([`AddressPolicy`]) |
//! | `objects` | files in S3-compatible object stores (`s3://bucket/key`) |
//! | `limits` | what a body may do: size, gzip expansion, rate, record length ([`BodyLimits`]) |
//! | `resume` | where an earlier attempt at a file stopped, and how the next one goes on ([`Stopped`], [`Reopened`]) |
//! | `csv_file` | reading a body row by row ([`CsvFile`], [`Row`]) |
//! | `webhooks` | named completion webhook targets, and POSTing signed events to them through the guard ([`WebhookTargets`], [`Poster`]) |
//! | `error` | why a download failed, and whether trying again helps ([`DownloadError`]) |

use std::{io, pin::Pin};

use bytes::Bytes;
use futures_util::Stream;
pub use url::Url;

mod address;
mod client;
mod credentials;
mod csv_file;
mod error;
mod hosts;
mod limits;
mod objects;
mod options;
mod resume;
mod webhooks;

pub use address::{AddressPolicy, AddressRefused, Networks, DEFAULT_DENY};
pub use client::{install_tls_provider, ClientError, Downloader, Reserved};
pub use credentials::{Credential, Credentials, CredentialsError, UnknownCredential};
pub use csv_file::{Columns, CsvFile, CsvFormat, Record, Row};
pub use encoding_rs;
pub use error::DownloadError;
pub use hosts::{metric, HostLimits};
pub use limits::{BodyLimits, LimitExceeded, TooSlow};
pub use options::{DownloadArgs, DownloadOptions};
pub use resume::{Reopened, Stopped};
pub use webhooks::{Poster, Target, Undelivered, WebhookArgs, WebhookTargets, WebhooksError};

/// A response body as it streams in.
pub(crate) type Body = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
