//! The operator API's error: what failed, in words, and the error that
//! caused it, kept as its `source()` so a caller prints the whole chain
//! (`sluice_stage::error_chain`) or inspects the cause.

use std::fmt;

/// The cause of an [`Error`], shareable across threads.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug)]
pub struct Error {
    what: String,
    source: Option<Cause>,
}

impl Error {
    /// A failure with no underlying error (a refusal, a bad value).
    pub fn new(what: impl Into<String>) -> Self {
        Error {
            what: what.into(),
            source: None,
        }
    }

    /// `what` failed because of `cause`.
    pub fn caused(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Error {
            what: what.into(),
            source: Some(cause.into()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
