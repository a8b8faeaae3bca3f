//! An import id names one request forever. The first request published
//! under an id claims it (a JetStream key-value bucket, `IMPORT_IDS`, keyed
//! by id, holding a SHA-256 of the request); the same request again is the
//! same import (a redelivery, a republish: an idempotent no-op), and
//! another request under a used id is refused, by the importer with a dead
//! letter that names no import (it must not count against the import that
//! owns the id) and by `sluice import` with an error. JetStream's duplicate
//! window alone would drop the second request's messages silently within
//! the window and mix them into the first import after it.

use async_nats::jetstream::{self, kv};

use crate::StageError;
use sluice_messages::{ImportRequest, Namespace};

/// Whose an id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nobody's until now: this request has it.
    First,
    /// This very request's already.
    Same,
    /// Another request's.
    Taken,
}

/// The registry of import ids.
pub struct ImportIds {
    bucket: kv::Store,
}

/// What a request is, for telling two apart: its URL (the whole of it:
/// a file re-signed under the same id is another request), hashed, so no
/// secret it carries is stored.
pub fn fingerprint(request: &ImportRequest) -> String {
    // The spec is part of the request; the built-in one, named or not,
    // keeps the fingerprints recorded before specs existed.
    let mut said = request.url.trim().to_owned();
    if let Some(spec) = request
        .spec
        .as_deref()
        .filter(|s| *s != sluice_spec::BUILTIN)
    {
        said.push_str("\0spec=");
        said.push_str(spec);
    }
    if let Some(name) = &request.credentials {
        said.push_str("\0credentials=");
        said.push_str(name);
    }
    if let Some(name) = &request.webhook {
        said.push_str("\0webhook=");
        said.push_str(name);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, said.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl ImportIds {
    /// The bucket, created when missing (as the streams are).
    pub async fn open(
        js: &jetstream::Context,
        ns: &Namespace,
        replicas: usize,
    ) -> Result<Self, StageError> {
        let bucket = crate::buckets::open(
            js,
            kv::Config {
                bucket: ns.import_ids_bucket(),
                description: "sluice: the import request each import id names".into(),
                history: 1,
                max_value_size: 128,
                num_replicas: replicas.max(1),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        Ok(ImportIds { bucket })
    }

    /// Claims `id` for `request`, or says whose it is.
    pub async fn claim(&self, id: &str, request: &ImportRequest) -> Result<Claim, StageError> {
        let mine = fingerprint(request);
        match self.bucket.create(id, mine.clone().into()).await {
            Ok(_) => Ok(Claim::First),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self.owner(id, &mine).await,
            Err(e) => Err(StageError::outage(format!(
                "cannot claim import id {id}: {}",
                crate::error_chain(&e)
            ))),
        }
    }

    /// Whose `id` is, without claiming it.
    pub async fn check(&self, id: &str, request: &ImportRequest) -> Result<Claim, StageError> {
        self.owner(id, &fingerprint(request)).await
    }

    async fn owner(&self, id: &str, mine: &str) -> Result<Claim, StageError> {
        let stored = self.bucket.get(id).await.map_err(|e| {
            StageError::outage(format!(
                "cannot read import id {id}: {}",
                crate::error_chain(&e)
            ))
        })?;
        Ok(match stored {
            None => Claim::First,
            Some(theirs) if theirs.as_ref() == mine.as_bytes() => Claim::Same,
            Some(_) => Claim::Taken,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_requests_apart_and_hide_the_url() {
        let request = |url: &str| ImportRequest {
            url: url.into(),
            id: Some("x".into()),
            spec: None,
            credentials: None,
            webhook: None,
        };
        let a = fingerprint(&request("https://u:SECRET@h/a.csv"));
        let with = |spec: &str| ImportRequest {
            spec: Some(spec.into()),
            ..request("https://u:SECRET@h/a.csv")
        };
        assert_eq!(a, fingerprint(&with("accounts")));
        assert_ne!(a, fingerprint(&with("shop")));
        let credentials = ImportRequest {
            credentials: Some("partner-a".into()),
            ..request("https://u:SECRET@h/a.csv")
        };
        assert_ne!(a, fingerprint(&credentials));
        let webhook = ImportRequest {
            webhook: Some("billing".into()),
            ..request("https://u:SECRET@h/a.csv")
        };
        assert_ne!(a, fingerprint(&webhook));
        assert_eq!(a, fingerprint(&request("https://u:SECRET@h/a.csv\n")));
        assert_ne!(a, fingerprint(&request("https://u:SECRET@h/b.csv")));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("SECRET"));
    }
}
