//! A value that does not read as what it should be (a setting, a request,
//! an id): what is wrong with it, and the error underneath when there is
//! one, kept as `source()` so the cause chain survives.

use std::{error::Error, fmt, sync::Arc};

/// What is wrong with a value, and why.
#[derive(Debug, Clone)]
pub struct Invalid {
    message: String,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

impl Invalid {
    /// An invalid value, said in `message`.
    pub fn new(message: impl fmt::Display) -> Self {
        Invalid {
            message: message.to_string(),
            source: None,
        }
    }

    /// An invalid value, said in `message` (which may quote `cause`), with
    /// `cause` kept as the source.
    pub fn caused_by(
        message: impl fmt::Display,
        cause: impl Error + Send + Sync + 'static,
    ) -> Self {
        Invalid {
            message: message.to_string(),
            source: Some(Arc::new(cause)),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Invalid {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// Compares the message, for tests and callers that match on the text.
impl PartialEq for Invalid {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Invalid {}
