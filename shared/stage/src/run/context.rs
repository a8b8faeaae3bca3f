//! What every task of a running stage shares: a leaf module, so that the
//! stage kinds, the fate of messages and the emitters can all use it.

use std::{sync::atomic::AtomicU64, time::Duration};

use async_nats::jetstream;
use sluice_messages::Namespace;

use crate::config::ConsumerArgs;

/// What every task of a running stage needs.
pub(crate) struct StageContext {
    pub js: jetstream::Context,
    pub ns: Namespace,
    pub stage: &'static str,
    pub consumer: ConsumerArgs,
    /// The largest message the server takes.
    pub max_payload: usize,
    /// Messages handed back unfinished because this replica is stopping:
    /// each costs one more delivery, and the stop's log line says how many.
    pub handed_back: AtomicU64,
    /// Imports an operator cancelled: their messages are dropped.
    pub cancellations: crate::cancellations::Cancellations,
}

impl StageContext {
    /// How often in-progress acks go out: every second (or a sixth of
    /// `ack_wait` if that is shorter), so one lost or late tick never lets
    /// the message be redelivered.
    pub fn progress_interval(&self) -> Duration {
        // Often: a cluster that loses quorum keeps only the last progress
        // it stored, so the fresher it is, the longer an outage held work
        // survives without being redelivered to another replica. Each is
        // one small replicated write per message in hand (a few dozen per
        // second per replica at most).
        (self.consumer.ack_wait / 6).min(Duration::from_secs(1))
    }
}
