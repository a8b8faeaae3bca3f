use std::{error::Error, fmt, sync::Arc};

use sluice_messages::Failure;

/// Why a stage could not finish a message, and whose fault that is.
///
/// The runtime turns this into the message's fate: a permanent error goes
/// straight to the dead letters; a transient one is retried later (`Nak`
/// with backoff) until deliveries run out; an outage is not the message's
/// fault at all, so the stage keeps the message and waits for the
/// dependency instead of spending a delivery.
///
/// The text is the whole story (the cause chain included), as logs and
/// dead letters show it; the cause itself stays reachable as `source()`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    fault: Fault,
    message: String,
    #[source]
    source: Option<Cause>,
    /// Asked to stop before the work could begin: nothing was in hand.
    stopped: bool,
}

/// The error a [`StageError`] came from (shared: stage errors are cloned
/// for every message of a batch).
pub type Cause = Arc<dyn Error + Send + Sync + 'static>;

/// Whose fault a [`StageError`] is: what decides a message's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Retrying cannot help: a 404, a file that is not CSV, an undecodable body.
    Permanent,
    /// Worth retrying, and maybe about this message: timeouts, 5xx, a
    /// connection reset by the file's server.
    Transient,
    /// A dependency every message needs is down (the database, NATS): wait
    /// for it; the message is not at fault.
    Outage,
    /// The message's import was cancelled: it is acknowledged without its
    /// work, neither retried nor dead-lettered.
    Cancelled,
}

impl StageError {
    /// An error of `fault` with no underlying cause.
    pub fn new(fault: Fault, reason: impl fmt::Display) -> Self {
        StageError {
            fault,
            message: reason.to_string(),
            source: None,
            stopped: false,
        }
    }

    /// Worth retrying, and maybe about this message.
    pub fn transient(reason: impl fmt::Display) -> Self {
        StageError::new(Fault::Transient, reason)
    }

    /// Retrying cannot help: the message goes to the dead letters.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        StageError::new(Fault::Permanent, reason)
    }

    /// A dependency every message needs is down: wait for it.
    pub fn outage(reason: impl fmt::Display) -> Self {
        StageError::new(Fault::Outage, reason)
    }

    /// Import `id` was cancelled: drop the rest of this message's work.
    pub fn cancelled(id: &str) -> Self {
        StageError::new(Fault::Cancelled, format!("import {id} was cancelled"))
    }

    /// Wraps an error of `fault`, keeping it as the source and its whole
    /// cause chain in the text.
    pub fn caused_by(fault: Fault, error: impl Error + Send + Sync + 'static) -> Self {
        // This process out of file descriptors is no fault of the message
        // it was working on: wait, as for any dependency that is down.
        let fault = if out_of_descriptors(&error) {
            Fault::Outage
        } else {
            fault
        };
        StageError {
            fault,
            message: error_chain(&error),
            source: Some(Arc::new(error) as Cause),
            stopped: false,
        }
    }

    /// A stop asked for before the stage was ready (`what` it was doing).
    pub(crate) fn stopped(what: &str) -> Self {
        StageError {
            stopped: true,
            ..StageError::transient(format!("stopped {what}"))
        }
    }

    /// Whether this is a stop asked for before the stage was ready.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// Worth trying again (an outage included).
    pub fn is_transient(&self) -> bool {
        matches!(self.fault, Fault::Transient | Fault::Outage)
    }

    /// Its import was cancelled: nothing is wrong, the work is dropped.
    pub fn is_cancelled(&self) -> bool {
        self.fault == Fault::Cancelled
    }

    /// A dependency is down, not the message at fault.
    pub fn is_outage(&self) -> bool {
        self.fault == Fault::Outage
    }

    /// The same error, its text prefixed with `context`.
    pub fn context(mut self, context: &str) -> StageError {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The text, its cause chain included.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A failure that knows whether retrying can help (a download's, say)
/// becomes a stage error of that fault, its source kept.
impl<E: Failure> From<E> for StageError {
    fn from(error: E) -> Self {
        let fault = if error.is_transient() {
            Fault::Transient
        } else {
            Fault::Permanent
        };
        StageError::caused_by(fault, error)
    }
}

/// Whether the process (EMFILE) or the system (ENFILE) ran out of file
/// descriptors somewhere along the cause chain.
fn out_of_descriptors(error: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(23 | 24)) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

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
    use async_nats::jetstream::context::PublishErrorKind;
    let chain = error_chain(e);
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => {
            StageError::permanent(format!("publish failed: {chain}"))
        }
        // What the client reports as a missing stream is NATS's "no
        // responders": no stream takes the subject, or, on a cluster, the
        // stream's leader was lost and the next one is being elected.
        PublishErrorKind::StreamNotFound => StageError::outage(format!(
            "publish failed: no stream answered (none takes the subject, or on a cluster its leader is being elected): {chain}"
        )),
        _ => StageError::outage(format!("publish failed: {chain}")),
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
    fn running_out_of_file_descriptors_is_an_outage() {
        let emfile = Outer(std::io::Error::from_raw_os_error(24));
        assert!(StageError::caused_by(Fault::Permanent, emfile).is_outage());
        let enfile = std::io::Error::from_raw_os_error(23);
        assert!(StageError::caused_by(Fault::Transient, enfile).is_outage());
        let reset = Outer(std::io::Error::from_raw_os_error(104));
        assert!(!StageError::caused_by(Fault::Transient, reset).is_outage());
    }

    #[test]
    fn chain_includes_causes_once() {
        let e = Outer(std::io::Error::other("connection reset"));
        assert_eq!(error_chain(&e), "download failed: connection reset");
        let wrapped = StageError::caused_by(Fault::Transient, e);
        assert!(wrapped.is_transient() && !wrapped.is_outage());
        assert_eq!(wrapped.to_string(), "download failed: connection reset");
        // The cause stays reachable, and the chain does not repeat it.
        let source = Error::source(&wrapped).expect("the cause");
        assert_eq!(source.to_string(), "download failed");
        assert_eq!(error_chain(&wrapped), "download failed: connection reset");
        assert_eq!(
            wrapped.context("account 7").to_string(),
            "account 7: download failed: connection reset"
        );
    }
}
