//! Cancelled imports, so that every stage stops working on one fast: a
//! key-value bucket, `CANCELLED_IMPORTS`, one key per cancelled import (a
//! hash of its id), written by the saver when an operator cancels it.
//!
//! A flatMap stage (the importer, the fetcher) watches it, and asks before
//! it works on a message and on every output it publishes: a cancelled
//! import's message is acknowledged without its work. The saver's records
//! decide what was saved (it writes nothing of a cancelled import, under a
//! lock), so this bucket only saves work: one that cannot be read costs
//! work done in vain, never a row.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use futures_util::StreamExt;

use async_nats::jetstream::{self, kv};
use sluice_messages::Namespace;

use crate::{buckets, StageError};

/// How long an import is remembered as cancelled: past the streams'
/// retention, so no message of it is ever worked on again.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How soon a watch that could not be made or ended is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The bucket, created when missing.
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

/// What a stage knows of cancelled imports: once it watches
/// (`Cancellations::watch`), the bucket (created when missing), from a task
/// of its own, so a check costs no round trip. A watch that cannot be made
/// or ends is made again a second later; what it misses meanwhile costs
/// work, never a row. The set grows by one import per cancel, an
/// operator's act.
pub struct Cancellations {
    cancelled: Arc<RwLock<HashSet<String>>>,
    /// Where the bucket is: `CANCELLED_IMPORTS` of the namespace, on this
    /// many servers.
    bucket: (jetstream::Context, Namespace, usize),
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Cancellations {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.lock().expect("never poisoned").take() {
            watcher.abort();
        }
    }
}

impl Cancellations {
    /// Bucket `CANCELLED_IMPORTS` of namespace `ns`, on `replicas`
    /// servers; nothing is watched yet.
    pub fn new(js: jetstream::Context, ns: Namespace, replicas: usize) -> Self {
        Cancellations {
            cancelled: Arc::new(RwLock::new(HashSet::new())),
            bucket: (js, ns, replicas),
            watcher: Mutex::new(None),
        }
    }

    /// Starts watching the bucket (once): for the stages that drop a
    /// cancelled import's messages.
    pub(crate) fn watch(&self) {
        let mut watcher = self.watcher.lock().expect("never poisoned");
        if watcher.is_none() {
            let (js, ns, replicas) = self.bucket.clone();
            *watcher = Some(tokio::spawn(watch(
                js,
                ns,
                replicas,
                self.cancelled.clone(),
            )));
        }
    }

    /// Whether import `id` is cancelled, as far as the watch has seen.
    pub fn is_cancelled(&self, id: &str) -> bool {
        self.cancelled.read().expect("never poisoned").contains(id)
    }
}

/// Keeps `cancelled` up to date with bucket `name`.
async fn watch(
    js: jetstream::Context,
    ns: Namespace,
    replicas: usize,
    cancelled: Arc<RwLock<HashSet<String>>>,
) {
    let name = ns.cancelled_imports_bucket();
    loop {
        if let Ok(bucket) = open(&js, &ns, replicas).await {
            match bucket.watch_with_history(">").await {
                Ok(mut entries) => {
                    while let Some(entry) = entries.next().await {
                        let Ok(entry) = entry else { break };
                        if entry.operation != kv::Operation::Put {
                            continue;
                        }
                        let Ok(marker) = serde_json::from_slice::<Marker>(&entry.value) else {
                            continue;
                        };
                        cancelled
                            .write()
                            .expect("never poisoned")
                            .insert(marker.import_id);
                    }
                    tracing::debug!(bucket = %name, "the watch of cancelled imports ended; watching again");
                }
                Err(e) => {
                    tracing::debug!(bucket = %name, error = %crate::error_chain(&e), "cannot watch the cancelled imports");
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// A cancelled import, as the bucket holds it.
#[derive(serde::Deserialize)]
struct Marker {
    import_id: String,
}
