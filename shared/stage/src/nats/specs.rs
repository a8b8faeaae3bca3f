//! The import specs every service reads the same way: a JetStream
//! key-value bucket, `IMPORT_SPECS`, one key per spec name holding its
//! TOML text as it was put. Each `put` is a new revision, and the bucket
//! keeps the last 64 of each spec, so an import can pin the revision it
//! started with while the spec is edited. The built-in spec `accounts` is
//! not stored: it is part of every binary and cannot be replaced.

use async_nats::jetstream::{self, kv};
use futures_util::TryStreamExt;
use sluice_messages::Namespace;
use sluice_spec::{Spec, SpecError};

use crate::StageError;

/// The largest spec text stored: a spec is a page, not a data file.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// Revisions of one spec kept (JetStream's most).
const HISTORY: i64 = 64;

/// A spec as stored: its text, what it says, and its revision.
#[derive(Debug, Clone)]
pub struct StoredSpec {
    /// The spec.
    pub spec: Spec,
    /// Its text, comments included, as it was put.
    pub text: String,
    /// The bucket's revision of this version (0: the built-in spec).
    pub revision: u64,
}

/// Why a spec could not be stored or found.
#[derive(Debug)]
pub enum SpecsError {
    /// The spec itself is wrong: one line per problem.
    Invalid(SpecError),
    /// A request no bucket state can satisfy (the built-in name, a spec
    /// too large, a name nobody stored).
    Refused(String),
    /// JetStream did not answer or failed.
    Unavailable(StageError),
}

impl std::fmt::Display for SpecsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecsError::Invalid(e) => write!(f, "the spec is invalid:\n{e}"),
            SpecsError::Refused(why) => f.write_str(why),
            SpecsError::Unavailable(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SpecsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpecsError::Invalid(e) => Some(e),
            SpecsError::Refused(_) => None,
            SpecsError::Unavailable(e) => Some(e),
        }
    }
}

fn unavailable(what: &str, e: &(dyn std::error::Error + 'static)) -> SpecsError {
    SpecsError::Unavailable(StageError::outage(format!(
        "cannot {what} the import specs: {}",
        crate::error_chain(e)
    )))
}

/// The registry of import specs.
pub struct Specs {
    bucket: kv::Store,
}

impl Specs {
    /// The bucket, created when missing.
    pub async fn open(
        js: &jetstream::Context,
        ns: &Namespace,
        replicas: usize,
    ) -> Result<Self, StageError> {
        let bucket = crate::buckets::open(
            js,
            kv::Config {
                bucket: ns.import_specs_bucket(),
                description: "sluice: import specs by name (TOML), each edit a revision".into(),
                history: HISTORY,
                max_value_size: MAX_SPEC_BYTES as i32,
                num_replicas: replicas.max(1),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        Ok(Specs { bucket })
    }

    /// Checks `text` and stores it under the name it declares; returns the
    /// stored spec with its new revision.
    pub async fn put(&self, text: &str) -> Result<StoredSpec, SpecsError> {
        if text.len() > MAX_SPEC_BYTES {
            return Err(SpecsError::Refused(format!(
                "the spec is {} bytes, more than the {MAX_SPEC_BYTES} a spec may have",
                text.len()
            )));
        }
        let spec = Spec::parse(text).map_err(SpecsError::Invalid)?;
        if spec.name == sluice_spec::BUILTIN {
            return Err(SpecsError::Refused(format!(
                "{} is the built-in spec's name and cannot be replaced: give yours another name",
                sluice_spec::BUILTIN
            )));
        }
        let revision = self
            .bucket
            .put(&spec.name, text.to_owned().into_bytes().into())
            .await
            .map_err(|e| unavailable("store", &e))?;
        Ok(StoredSpec {
            spec,
            text: text.to_owned(),
            revision,
        })
    }

    /// The current version of spec `name` (the built-in one for
    /// `accounts`), or `None`.
    pub async fn get(&self, name: &str) -> Result<Option<StoredSpec>, SpecsError> {
        if name == sluice_spec::BUILTIN {
            return Ok(Some(builtin()));
        }
        if !valid_key(name) {
            return Ok(None);
        }
        let entry = self
            .bucket
            .entry(name)
            .await
            .map_err(|e| unavailable("read", &e))?;
        stored(entry)
    }

    /// Revision `revision` of spec `name`, as an import pinned it; `None`
    /// once 64 later revisions pushed it out.
    pub async fn get_revision(
        &self,
        name: &str,
        revision: u64,
    ) -> Result<Option<StoredSpec>, SpecsError> {
        if name == sluice_spec::BUILTIN {
            return Ok(Some(builtin()));
        }
        if !valid_key(name) {
            return Ok(None);
        }
        // Through the key's own history: async-nats's entry_for_revision
        // prints to stdout when the revision belongs to another key.
        let mut history = self
            .bucket
            .history(name)
            .await
            .map_err(|e| unavailable("read", &e))?;
        while let Some(entry) = history
            .try_next()
            .await
            .map_err(|e| unavailable("read", &e))?
        {
            if entry.revision == revision {
                return stored(Some(entry));
            }
        }
        Ok(None)
    }

    /// The revision of `name` that was current at `time`: the last put at
    /// or before it (or, for a spec first put after `time`, its first
    /// revision), `None` if it was removed then or never stored. The same
    /// answer however often it is asked, whatever is put later.
    pub async fn as_of(
        &self,
        name: &str,
        time: time::OffsetDateTime,
    ) -> Result<Option<StoredSpec>, SpecsError> {
        if name == sluice_spec::BUILTIN {
            return Ok(Some(builtin()));
        }
        if !valid_key(name) {
            return Ok(None);
        }
        let latest = self
            .bucket
            .entry(name)
            .await
            .map_err(|e| unavailable("read", &e))?;
        match latest {
            None => return Ok(None),
            // No edit since: the common case, one read.
            Some(entry) if entry.created <= time => return stored(Some(entry)),
            Some(_) => {}
        }
        let mut history = self
            .bucket
            .history(name)
            .await
            .map_err(|e| unavailable("read", &e))?;
        let (mut before, mut first) = (None, None);
        while let Some(entry) = history
            .try_next()
            .await
            .map_err(|e| unavailable("read", &e))?
        {
            if entry.created <= time {
                before = Some(entry);
            } else if first.is_none() {
                first = Some(entry);
            }
        }
        stored(before.or(first))
    }

    /// Every stored spec's current version, by name, the built-in first;
    /// and, apart, each stored spec that no longer reads as one (written by
    /// something else, or a later sluice), named with why.
    pub async fn list(&self) -> Result<(Vec<StoredSpec>, Vec<String>), SpecsError> {
        let mut names: Vec<String> = self
            .bucket
            .keys()
            .await
            .map_err(|e| unavailable("list", &e))?
            .try_collect()
            .await
            .map_err(|e| unavailable("list", &e))?;
        names.sort();
        let mut found = vec![builtin()];
        let mut unreadable = Vec::new();
        for name in names {
            match self.get(&name).await {
                Ok(Some(spec)) => found.push(spec),
                Ok(None) => {}
                Err(SpecsError::Unavailable(e)) => return Err(SpecsError::Unavailable(e)),
                Err(e) => unreadable.push(format!("spec {name}: {e}")),
            }
        }
        Ok((found, unreadable))
    }

    /// Removes spec `name` (imports that pinned a revision keep it while
    /// the bucket's history holds it); false if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, SpecsError> {
        if name == sluice_spec::BUILTIN {
            return Err(SpecsError::Refused(format!(
                "{name} is the built-in spec and cannot be removed"
            )));
        }
        // Looked up without reading it as a spec: one that no longer reads
        // can still be removed.
        let exists = valid_key(name)
            && self
                .bucket
                .entry(name)
                .await
                .map_err(|e| unavailable("read", &e))?
                .is_some_and(|e| e.operation == kv::Operation::Put);
        if !exists {
            return Ok(false);
        }
        self.bucket
            .delete(name)
            .await
            .map_err(|e| unavailable("remove from", &e))?;
        Ok(true)
    }
}

/// Specs as imports use them: the current revision when an import starts,
/// then that revision for every file of it, read from the bucket once per
/// process and kept (a revision never changes).
pub struct PinnedSpecs {
    specs: crate::buckets::Lazy<Specs>,
    read: std::sync::Mutex<std::collections::HashMap<(String, u64), std::sync::Arc<StoredSpec>>>,
}

impl PinnedSpecs {
    /// Pins revisions from the bucket of namespace `ns`, opened when the
    /// first import run with a spec needs it.
    pub fn open_when_needed(js: &jetstream::Context, ns: &Namespace, replicas: usize) -> Self {
        let (js, ns) = (js.clone(), ns.clone());
        PinnedSpecs {
            specs: crate::buckets::Lazy::new(move || {
                let (js, ns) = (js.clone(), ns.clone());
                async move { Specs::open(&js, &ns, replicas).await }
            }),
            read: Default::default(),
        }
    }

    /// The revision of `name` current when an import's request was stored
    /// (`requested`): every attempt at the request pins the same one. A
    /// name nobody stored is the request's fault; a bucket that does not
    /// answer is an outage.
    pub async fn current(
        &self,
        name: &str,
        requested: time::OffsetDateTime,
    ) -> Result<std::sync::Arc<StoredSpec>, StageError> {
        match self.specs.get().await?.as_of(name, requested).await {
            Ok(Some(stored)) => Ok(self.keep(stored)),
            Ok(None) => Err(StageError::permanent(format!(
                "no import spec is named {name:?}: store it with `sluice spec put FILE` \
                 (`sluice spec list` shows those stored)"
            ))),
            Err(e) => Err(specs_error(name, e)),
        }
    }

    /// Revision `revision` of `name`, as an import pinned it.
    pub async fn pinned(
        &self,
        name: &str,
        revision: u64,
    ) -> Result<std::sync::Arc<StoredSpec>, StageError> {
        let key = (name.to_owned(), revision);
        if let Some(kept) = self.read.lock().expect("never poisoned").get(&key) {
            return Ok(kept.clone());
        }
        match self.specs.get().await?.get_revision(name, revision).await {
            Ok(Some(stored)) => Ok(self.keep(stored)),
            Ok(None) => Err(StageError::permanent(format!(
                "import spec {name} revision {revision}, which this import pinned, is no longer \
                 stored (the bucket keeps each spec's last {HISTORY} revisions): run the import again"
            ))),
            Err(e) => Err(specs_error(name, e)),
        }
    }

    fn keep(&self, stored: StoredSpec) -> std::sync::Arc<StoredSpec> {
        let stored = std::sync::Arc::new(stored);
        let key = (stored.spec.name.clone(), stored.revision);
        self.read
            .lock()
            .expect("never poisoned")
            .entry(key)
            .or_insert(stored)
            .clone()
    }
}

fn specs_error(name: &str, e: SpecsError) -> StageError {
    match e {
        SpecsError::Unavailable(e) => e,
        other => StageError::permanent(format!("import spec {name}: {other}")),
    }
}

fn builtin() -> StoredSpec {
    StoredSpec {
        spec: Spec::accounts(),
        text: sluice_spec::ACCOUNTS.to_owned(),
        revision: 0,
    }
}

/// A name a spec may have is a valid key; anything else was never stored.
fn valid_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn stored(entry: Option<kv::Entry>) -> Result<Option<StoredSpec>, SpecsError> {
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Ok(None);
    };
    let text = String::from_utf8(entry.value.to_vec()).map_err(|_| {
        SpecsError::Refused(format!("the stored spec {} is not UTF-8 text", entry.key))
    })?;
    // What was stored passed these checks: a spec that fails them now was
    // written by something else, or by a later sluice with more to say.
    let spec = Spec::parse(&text).map_err(SpecsError::Invalid)?;
    Ok(Some(StoredSpec {
        spec,
        text,
        revision: entry.revision,
    }))
}
