//! Working on messages: pulling them, running a stage's step on each
//! ([`flat_map`], [`sink`]), publishing its outputs ([`emitter`]), keeping
//! the work owned ([`keep_alive`]), and deciding each message's end
//! ([`fate`]: acked, retried, dead-lettered).

pub(crate) mod backoff;
pub(crate) mod context;
pub(crate) mod dead_letter;
pub(crate) mod delivery;
pub(crate) mod emitter;
pub(crate) mod fate;
pub(crate) mod flat_map;
pub(crate) mod keep_alive;
pub(crate) mod outage;
pub(crate) mod pull;
pub(crate) mod sink;
pub(crate) mod slot;
pub(crate) mod tasks;
