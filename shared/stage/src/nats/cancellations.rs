//! Cancelled imports, so that every stage stops working on one fast: a
//! key-value bucket, `CANCELLED_IMPORTS`, one key per cancelled import (a
//! hash of its id), written by the saver when an operator cancels it.
//!
//! A stage asks before it works on a message, and at most once a second
//! per import while it publishes the outputs of one: a cancelled import's
//! message is acknowledged without its work. The saver's records decide
//! what was saved (it writes nothing of a cancelled import, under a lock),
//! so this bucket only saves work: one that cannot be read costs work done
//! in vain, never a row.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, kv};
use sluice_messages::Namespace;

use crate::{buckets, StageError};

/// How long an import is remembered as cancelled: past the streams'
/// retention, so no message of it is ever worked on again.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long an answer "not cancelled" is taken as still true.
const FRESH: Duration = Duration::from_secs(1);

/// Imports remembered at most, before the memory starts afresh.
const REMEMBERED: usize = 10_000;

/// The bucket, created when missing (by the first cancel).
pub async fn open(
    js: &jetstream::Context,
    ns: &Namespace,
    replicas: usize,
) -> Result<kv::Store, StageError> {
    buckets::open(
        js,
        kv::Config {
            bucket: ns.cancelled_imports_bucket(),
            description: "sluice: imports an operator cancelled".into(),
            history: 1,
            max_value_size: 1024,
            max_age: KEEP,
            num_replicas: replicas.max(1),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        },
    )
    .await
}

/// Records that import `id` is cancelled, for every stage to see.
pub async fn cancel(bucket: &kv::Store, id: &str) -> Result<(), StageError> {
    let value = serde_json::json!({ "import_id": id, "time": crate::now() });
    bucket
        .put(buckets::key_of(id), value.to_string().into())
        .await
        .map(drop)
        .map_err(|e| {
            StageError::outage(format!(
                "cannot record that import {id} is cancelled: {}",
                crate::error_chain(&e)
            ))
        })
}

/// What a stage knows of cancelled imports.
pub struct Cancellations {
    bucket: buckets::Lazy<kv::Store>,
    /// Per import: cancelled or not, and since when that is known.
    known: Mutex<HashMap<String, (bool, Instant)>>,
}

impl Cancellations {
    /// Reads bucket `CANCELLED_IMPORTS` of namespace `ns` when first asked,
    /// once it exists: until the first cancel, nothing is cancelled (and
    /// no import creates the bucket).
    pub fn new(js: jetstream::Context, ns: Namespace) -> Self {
        Cancellations {
            bucket: buckets::Lazy::new(move || {
                let (js, name) = (js.clone(), ns.cancelled_imports_bucket());
                async move {
                    js.get_key_value(&name)
                        .await
                        .map_err(|e| StageError::outage(format!("no bucket {name} (yet): {e}")))
                }
            }),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Whether import `id` is cancelled (as of at most a second ago).
    pub async fn is_cancelled(&self, id: &str) -> bool {
        if let Some(&(cancelled, at)) = self.known.lock().expect("never poisoned").get(id) {
            if cancelled || at.elapsed() < FRESH {
                return cancelled;
            }
        }
        let cancelled = match self.bucket.get().await {
            Ok(bucket) => match bucket.get(buckets::key_of(id)).await {
                Ok(found) => found.is_some(),
                Err(e) => {
                    tracing::debug!(import_id = id, error = %crate::error_chain(&e), "cannot read the cancelled imports");
                    false
                }
            },
            Err(e) => {
                tracing::debug!(import_id = id, error = %e, "cannot open the cancelled imports");
                false
            }
        };
        let mut known = self.known.lock().expect("never poisoned");
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(id.to_owned(), (cancelled, Instant::now()));
        cancelled
    }
}
