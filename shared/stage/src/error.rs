use std::{error::Error, fmt};

/// Why a stage could not finish a message, and whose fault that is.
///
/// The runtime turns this into the message's fate: a permanent error goes
/// straight to the dead letters; a transient one is retried later (`Nak`
/// with backoff) until deliveries run out; an outage is not the message's
/// fault at all, so the stage keeps the message and waits for the
/// dependency instead of spending a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageError {
    kind: ErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Permanent,
    Transient,
    Outage,
}

impl StageError {
    /// Worth retrying, and maybe about this message: timeouts, 5xx, a
    /// connection reset by the file's server.
    pub fn transient(reason: impl fmt::Display) -> Self {
        StageError {
            kind: ErrorKind::Transient,
            message: reason.to_string(),
        }
    }

    /// Retrying cannot help: a 404, a file that is not CSV, an undecodable body.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        StageError {
            kind: ErrorKind::Permanent,
            message: reason.to_string(),
        }
    }

    /// A dependency every message needs is down (the database, NATS): wait
    /// for it; the message is not at fault.
    pub fn outage(reason: impl fmt::Display) -> Self {
        StageError {
            kind: ErrorKind::Outage,
            message: reason.to_string(),
        }
    }

    /// Wraps an error that already knows whether it is transient, keeping its
    /// whole cause chain in the message.
    pub fn classified(transient: bool, error: &(dyn Error + 'static)) -> Self {
        if transient {
            StageError::transient(error_chain(error))
        } else {
            StageError::permanent(error_chain(error))
        }
    }

    /// Worth trying again (an outage included).
    pub fn is_transient(&self) -> bool {
        self.kind != ErrorKind::Permanent
    }

    pub fn is_outage(&self) -> bool {
        self.kind == ErrorKind::Outage
    }

    /// The same kind of error, its message prefixed with `context`.
    pub fn context(self, context: &str) -> StageError {
        StageError {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
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

/// JetStream not storing a publish is an outage (NATS down, no stream
/// leader, timeouts), except for a message too large, which is its own fault.
pub(crate) fn publish_error(e: &async_nats::jetstream::context::PublishError) -> StageError {
    let chain = error_chain(e);
    if matches!(
        e.kind(),
        async_nats::jetstream::context::PublishErrorKind::MaxPayloadExceeded
    ) {
        StageError::permanent(format!("publish failed: {chain}"))
    } else {
        StageError::outage(format!("publish failed: {chain}"))
    }
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
