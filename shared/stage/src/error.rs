use std::{error::Error, fmt};

/// Why a stage could not finish a message, and whether trying again can help.
///
/// The runtime turns this into the message's fate: a transient error is
/// retried later (`Nak` with backoff) until deliveries run out; a permanent
/// one goes straight to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageError {
    transient: bool,
    message: String,
}

impl StageError {
    /// Worth retrying: timeouts, lost connections, 5xx, an unavailable database.
    pub fn transient(reason: impl fmt::Display) -> Self {
        StageError {
            transient: true,
            message: reason.to_string(),
        }
    }

    /// Retrying cannot help: a 404, a file that is not CSV, an undecodable body.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        StageError {
            transient: false,
            message: reason.to_string(),
        }
    }

    /// Wraps an error that already knows whether it is transient, keeping its
    /// whole cause chain in the message.
    pub fn classified(transient: bool, error: &(dyn Error + 'static)) -> Self {
        StageError {
            transient,
            message: error_chain(error),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for StageError {}

/// `outer: inner: root`, skipping a source whose text the outer message
/// already repeats (many errors print their source themselves).
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("download failed")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chain_includes_causes_once() {
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(error_chain(&e), "download failed: connection reset");
        let classified = StageError::classified(true, &e);
        assert!(classified.is_transient());
        assert_eq!(classified.to_string(), "download failed: connection reset");
    }
}
