//! Where the reading of a file stopped, so that the next attempt (after a
//! crash, a `kill -9`, a hand-back at shutdown) continues after what
//! JetStream already stored instead of reading the file again from line 1.
//!
//! A JetStream key-value bucket, `FILE_CHECKPOINTS`: one key per input
//! message (a hash of its key), holding what its stage needs to resume,
//! written only once every output before that point is stored. The key is
//! deleted when the file is done. A checkpoint is a saving, never a
//! condition: one that cannot be read or written costs a re-read, not the
//! file, so its errors are logged and the work goes on.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{de::DeserializeOwned, Serialize};
use sluice_messages::Namespace;

use crate::{buckets, StageError};

/// How long a checkpoint is kept: past any redelivery of its input.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// The checkpoints of one stage's inputs.
#[derive(Clone)]
pub struct Checkpoints {
    bucket: kv::Store,
}

impl Checkpoints {
    /// The bucket, created when missing.
    pub async fn open(
        js: &jetstream::Context,
        ns: &Namespace,
        replicas: usize,
    ) -> Result<Self, StageError> {
        let bucket = buckets::open(
            js,
            kv::Config {
                bucket: ns.file_checkpoints_bucket(),
                description: "sluice: where the reading of each file stopped, to resume it".into(),
                history: 1,
                max_value_size: 128 * 1024,
                max_age: KEEP,
                num_replicas: replicas.max(1),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        Ok(Checkpoints { bucket })
    }

    /// The checkpoint of input `key`, if one was written (and reads).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        match self.bucket.get(buckets::key_of(key)).await {
            Ok(Some(value)) => serde_json::from_slice(&value)
                .inspect_err(|e| tracing::warn!(key, error = %e, "unreadable checkpoint: the file is read from its start"))
                .ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(key, error = %crate::error_chain(&e), "cannot read a checkpoint: the file is read from its start");
                None
            }
        }
    }

    /// Records `checkpoint` for input `key`.
    pub async fn put<T: Serialize>(&self, key: &str, checkpoint: &T) {
        let value = serde_json::to_vec(checkpoint).expect("checkpoints encode");
        if let Err(e) = self.bucket.put(buckets::key_of(key), value.into()).await {
            tracing::warn!(key, error = %crate::error_chain(&e), "cannot write a checkpoint: a retry would read the file from its start");
        }
    }

    /// Forgets input `key`'s checkpoint: its file is done.
    pub async fn remove(&self, key: &str) {
        if let Err(e) = self.bucket.purge(buckets::key_of(key)).await {
            tracing::warn!(key, error = %crate::error_chain(&e), "cannot delete a checkpoint (it expires in 7 days)");
        }
    }
}
