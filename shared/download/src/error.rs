//! Why a download failed, and whether trying again can help.

use std::io;

use url::Url;

use crate::{limits, AddressRefused, LimitExceeded};

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{:?} is not a valid URL: {reason}", shown_text(.url))]
    InvalidUrl {
        url: String,
        reason: url::ParseError,
    },
    #[error("{}: only http, https and s3 URLs can be imported", shown(.url))]
    UnsupportedScheme { url: Url },
    #[error("GET {} refused: {reason}", shown(.url))]
    Refused { url: Url, reason: AddressRefused },
    #[error("GET {} failed", shown(.url))]
    Request {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {} answered HTTP {status}{}", shown(.url), credential_note(.status, .credential))]
    Status {
        url: Url,
        status: u16,
        /// The credential the import named, and whether it was sent here.
        credential: Option<(String, bool)>,
    },
    #[error("GET {}: {reason}", shown(.url))]
    Object {
        url: Url,
        reason: String,
        transient: bool,
    },
    #[error("{0}")]
    UnknownCredential(#[from] crate::UnknownCredential),
    #[error("GET {} redirects to {}{reason}", shown(.url), shown(.to))]
    Redirect {
        url: Url,
        /// Boxed: the error stays small on the happy path's `Result`s.
        to: Box<Url>,
        reason: &'static str,
    },
    #[error("GET {} answered HTTP {status} without a usable Location", shown(.url))]
    NoLocation { url: Url, status: u16 },
    #[error("{} has Content-Encoding {encoding:?}: only gzip is accepted", shown(.url))]
    UnsupportedEncoding { url: Url, encoding: String },
    #[error("reading {} failed", shown(.url))]
    Body {
        url: Url,
        #[source]
        source: io::Error,
    },
    #[error("{} is too slow: {rate}", shown(.url))]
    TooSlow { url: Url, rate: limits::TooSlow },
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
            DownloadError::Object { transient, .. } => *transient,
            DownloadError::InvalidUrl { .. }
            | DownloadError::UnsupportedScheme { .. }
            | DownloadError::Refused { .. }
            | DownloadError::UnsupportedEncoding { .. }
            | DownloadError::Limit { .. }
            | DownloadError::HeaderLineBreak { .. }
            | DownloadError::MissingColumns { .. }
            | DownloadError::UnknownCredential(_)
            | DownloadError::Redirect { .. }
            | DownloadError::NoLocation { .. } => false,
        }
    }

    /// A broken body, or one that broke a limit (which is permanent).
    pub(crate) fn body(url: &Url, source: io::Error) -> DownloadError {
        if let Some(rate) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<limits::TooSlow>())
        {
            return DownloadError::TooSlow {
                url: url.clone(),
                rate: rate.clone(),
            };
        }
        match limits::limit_of(&source) {
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

/// What an error says of the credential an import named, where the server
/// refused the request: an operator's first question.
fn credential_note(status: &u16, credential: &Option<(String, bool)>) -> String {
    match credential {
        Some((name, false)) if matches!(status, 401 | 403) => {
            format!(" (credential {name:?} is not scoped to this URL, so it was not sent)")
        }
        Some((name, true)) if matches!(status, 401 | 403) => {
            format!(" to credential {name:?}")
        }
        _ => String::new(),
    }
}

/// A file URL as errors show it: no userinfo, query or fragment, since
/// presigned URLs carry their secrets there.
pub(crate) fn shown(url: &Url) -> String {
    sluice_messages::redact_file_url(url.as_str())
}

pub(crate) fn shown_text(url: &str) -> String {
    sluice_messages::redact_file_url(url)
}
