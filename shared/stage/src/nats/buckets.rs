//! The JetStream key-value buckets sluice keeps beside its streams: the
//! import id registry and the row budget. Each is created by whichever
//! process needs it first (as the streams are), with the deployment's
//! replication.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use crate::StageError;

/// What opens a bucket: a future of it.
type Opener<T> = Box<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StageError>> + Send>>
        + Send
        + Sync,
>;

/// A bucket opened (created when missing) the first time it is needed: a
/// process that never needs it neither waits for it at start-up nor
/// creates it. A failed opening is tried again at the next need.
pub struct Lazy<T> {
    cell: tokio::sync::OnceCell<T>,
    open: Opener<T>,
}

impl<T> Lazy<T> {
    /// A bucket `open` opens.
    pub fn new<F, Fut>(open: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, StageError>> + Send + 'static,
    {
        Lazy {
            cell: tokio::sync::OnceCell::new(),
            open: Box::new(move || Box::pin(open())),
        }
    }

    /// The bucket, opened now if it was not yet.
    pub async fn get(&self) -> Result<&T, StageError> {
        self.cell.get_or_try_init(|| (self.open)()).await
    }
}

/// The bucket `config.bucket`, created when missing, and moved to
/// `config.num_replicas` servers when it has another count (a deployment
/// that grew into a cluster), as the streams are: a bucket left on one
/// server stops every import that needs it when that server does.
pub(crate) async fn open(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, StageError> {
    let name = config.bucket.clone();
    if let Ok(bucket) = js.get_key_value(&name).await {
        replicate(js, &name, config.num_replicas).await?;
        return Ok(bucket);
    }
    match js.create_key_value(config).await {
        Ok(bucket) => Ok(bucket),
        // Another process created it meanwhile.
        Err(e) => js.get_key_value(&name).await.map_err(|_| {
            StageError::outage(format!(
                "cannot create the key-value bucket {name}: {}",
                crate::error_chain(&e)
            ))
        }),
    }
}

/// Sets the replication of bucket `name`'s stream to `replicas`.
async fn replicate(js: &jetstream::Context, name: &str, replicas: usize) -> Result<(), StageError> {
    let unreadable = |e: &(dyn std::error::Error + 'static)| {
        StageError::outage(format!(
            "cannot read the key-value bucket {name}: {}",
            crate::error_chain(e)
        ))
    };
    let mut found = js
        .get_stream(format!("KV_{name}"))
        .await
        .map_err(|e| unreadable(&e))?;
    let mut config = found
        .info()
        .await
        .map_err(|e| unreadable(&e))?
        .config
        .clone();
    if config.num_replicas == replicas.max(1) {
        return Ok(());
    }
    config.num_replicas = replicas.max(1);
    js.update_stream(config).await.map(drop).map_err(|e| {
        StageError::outage(format!(
            "cannot move the key-value bucket {name} to {replicas} servers: {}",
            crate::error_chain(&e)
        ))
    })
}

/// Runs `open` until it succeeds, up to 20 tries a second apart: at a
/// service's start JetStream answered a moment ago, so a failure is a
/// cluster electing a leader, worth waiting for before giving up.
pub async fn open_patiently<T, F, Fut>(what: &str, mut open: F) -> Result<T, StageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StageError>>,
{
    let mut tries = 0;
    loop {
        match open().await {
            Ok(opened) => return Ok(opened),
            Err(e) if tries < 20 => {
                tries += 1;
                tracing::warn!(error = %e, "cannot open {what} yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A key-value key for any text (an import id, a message key): a SHA-256
/// prefix in hex, as keys take only a few characters, and so no secret a
/// key might carry is stored.
pub(crate) fn key_of(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
