//! The sluice contract: what travels between stages and what outside tools
//! rely on. Subjects, stream names, header names and message bodies live here
//! and nowhere else; services share this crate and nothing more.

#![warn(missing_docs)]

mod amount;
pub mod api;
mod invalid;
mod names;
mod redact;
#[cfg(feature = "schema")]
pub mod schema;
pub mod units;
pub mod windows;

pub use amount::{Amount, InvalidAmount};
pub use invalid::Invalid;
pub use names::{InvalidNamespace, Namespace, Stream};
pub use redact::{redact_file_url, redact_url};

use serde::{Deserialize, Serialize};

/// Header carrying the import id on every message downstream of `imports`.
pub const HEADER_IMPORT_ID: &str = "Sluice-Import-Id";
/// JetStream's de-duplication header; every message sluice publishes has one.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";

/// On a replayed dead letter: the `Nats-Msg-Id` of the message it replays.
/// Outputs derive their ids from it, so a replay republishes the very ids a
/// partly finished first attempt did and JetStream drops those duplicates.
pub const HEADER_REPLAY_OF: &str = "Sluice-Replay-Of";

/// Durable consumer (and dead-letter stage) names, one per service.
pub mod stage {
    /// The importer's consumer.
    pub const IMPORTER: &str = "importer";
    /// The fetcher's consumer.
    pub const FETCHER: &str = "fetcher";
    /// The saver's consumer.
    pub const SAVER: &str = "saver";
    /// The saver's second consumer: it records import progress facts and
    /// decides when each import is complete.
    pub const TRACKER: &str = "tracker";
}

/// A request to import one file, as published on `imports`.
///
/// The body is either the URL as plain text (what `nats pub imports URL`
/// sends) or JSON `{"url": "...", "id": "...", "spec": "...", "credentials": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The root file: an accounts CSV (`accountId,transactionsUrl`) for
    /// the built-in spec, else the root level of the spec named.
    pub url: String,
    /// A publisher-chosen import id; sluice derives one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The import spec to read the files with (`sluice spec list`); the
    /// built-in `accounts` when absent. The import pins the revision
    /// current when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// The download credential the import's files are fetched with: the
    /// name of one the operator configured on the importer and the fetcher
    /// (`SLUICE_DOWNLOAD_CREDENTIALS`). It is sent only to the URLs it is
    /// scoped to; the request and every message carry its name, never a
    /// secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// The webhook target told of the import's completion: the name of one
    /// the operator configured (`SLUICE_WEBHOOKS`, on the importer and the
    /// saver), never a URL. The target receives the completion event by
    /// POST, signed, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

impl ImportRequest {
    /// Reads either body form. Surrounding whitespace (a trailing newline from
    /// `echo`) is not part of the URL.
    pub fn parse(body: &[u8]) -> Result<Self, Invalid> {
        let text = std::str::from_utf8(body)
            .map_err(|e| Invalid::caused_by(format!("import request is not UTF-8: {e}"), e))?
            .trim();
        if text.is_empty() {
            return Err(Invalid::new(
                "import request is empty: expected a URL or {\"url\": ...}",
            ));
        }
        let request = if text.starts_with('{') {
            serde_json::from_str::<ImportRequest>(text).map_err(|e| {
                Invalid::caused_by(format!("import request is not valid JSON: {e}"), e)
            })?
        } else {
            ImportRequest {
                url: text.to_owned(),
                id: None,
                spec: None,
                credentials: None,
                webhook: None,
            }
        };
        if let Some(id) = &request.id {
            validate_import_id(id)?;
        }
        if let Some(name) = &request.credentials {
            validate_credential_name(name)?;
        }
        if let Some(name) = &request.webhook {
            validate_webhook_name(name)?;
        }
        Ok(request)
    }
}

/// Import ids appear in subjects (`import-events.<id>`), `Nats-Msg-Id`s and
/// headers: no dots, spaces or wildcards.
pub fn validate_import_id(id: &str) -> Result<(), Invalid> {
    plain_name("import id", id, 128, b"-_:")
}

/// Webhook target names travel in messages and show in errors: short and plain.
pub fn validate_webhook_name(name: &str) -> Result<(), Invalid> {
    plain_name("webhook target name", name, 64, b"-_.")
}

/// Credential names travel in messages and show in errors: short and plain.
pub fn validate_credential_name(name: &str) -> Result<(), Invalid> {
    plain_name("credential name", name, 64, b"-_.")
}

/// `text` is 1 to `max` ASCII letters, digits and `extra` bytes.
fn plain_name(what: &str, text: &str, max: usize, extra: &[u8]) -> Result<(), Invalid> {
    let ok = !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if ok {
        return Ok(());
    }
    let extra: Vec<String> = extra.iter().map(|b| char::from(*b).to_string()).collect();
    Err(Invalid::new(format!(
        "{what} {text:?} is invalid: use 1 to {max} characters of A-Z a-z 0-9 {}",
        extra.join(" ")
    )))
}

/// Every import id a message carries is checked as it is decoded: an id
/// that could not be a subject token would fail later, far from its cause.
fn checked_import_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let id = String::deserialize(d)?;
    validate_import_id(&id).map_err(serde::de::Error::custom)?;
    Ok(id)
}

fn checked_optional_import_id<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(id) => validate_import_id(&id)
            .map(|()| Some(id))
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// One account listed by an accounts CSV, published on `account-updates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AccountUpdate {
    /// The import this account belongs to.
    #[serde(deserialize_with = "checked_import_id")]
    pub import_id: String,
    /// The accounts CSV's `accountId`, a 64-bit integer.
    pub account_id: i64,
    /// Absolute: relative links were resolved against the accounts CSV URL.
    pub transactions_url: String,
    /// The download credential the import named (its name only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// Some consecutive transactions of one account, published on
/// `transactions.<account_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TransactionBatch {
    /// The import this window of rows belongs to.
    #[serde(deserialize_with = "checked_import_id")]
    pub import_id: String,
    /// The account, as in the subject `transactions.<account_id>`.
    pub account_id: i64,
    /// The window's valid rows in file order; empty when it has none.
    pub transactions: Vec<Transaction>,
}

/// One row of a transactions CSV, as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Transaction {
    /// The transactions CSV's `id`, a 64-bit integer, unique per account.
    pub id: i64,
    /// An exact decimal, carried as its text so no float ever touches it.
    pub amount: Amount,
    /// The file line the row starts on. When an import lists the same
    /// `(account, id)` twice, the first in file order is kept and the
    /// others are reported as conflicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// A file an import spec says to read, published on `import-files` by
/// the stage that read the row linking to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileTask {
    /// The import this file belongs to.
    #[serde(deserialize_with = "checked_import_id")]
    pub import_id: String,
    /// The spec the import reads its files with.
    pub spec: String,
    /// The spec's revision the import pinned when it started.
    pub revision: u64,
    /// The level of the spec this file is read with.
    pub level: String,
    /// Absolute: a relative link was resolved against the linking file's URL.
    pub url: String,
    /// The file lines of the rows this file descends from, root first: the
    /// row that links to it is the last. A row's `_sluice_position` is
    /// this path followed by its own line.
    pub path: Vec<u64>,
    /// The values the level inherits, in the order of its `inherit` list
    /// (`null`: NULL).
    #[serde(default)]
    pub inherited: Vec<Option<String>>,
    /// The download credential the import named (its name only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// Some consecutive rows of one file for one table, as an import spec
/// reads them, published on `rows.<table>`.
///
/// Values travel as text in the column's canonical form (an exact decimal,
/// RFC 3339 in UTC, `true`/`false`, a lowercase UUID, a JSON document),
/// checked against the column's type before they are sent; PostgreSQL
/// casts them on insert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RowBatch {
    /// The import these rows belong to.
    #[serde(deserialize_with = "checked_import_id")]
    pub import_id: String,
    /// The spec the import reads its files with.
    pub spec: String,
    /// The spec's revision the import pinned.
    pub revision: u64,
    /// The level the file is read with.
    pub level: String,
    /// The table the rows go to, as the spec names it.
    pub table: String,
    /// The table columns each row gives, in order: the values the level
    /// inherits, then its own saved columns.
    pub columns: Vec<String>,
    /// The file lines of the rows the file descends from, root first.
    pub path: Vec<u64>,
    /// The file the rows come from, redacted for display (letters and
    /// reports name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Each row's file line, in the order of `rows`.
    pub lines: Vec<u64>,
    /// The rows: one value per column (`null`: NULL).
    pub rows: Vec<Vec<Option<String>>>,
}

/// What a stage could not process, published on `dead-letters.<stage>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeadLetter {
    /// The stage that gave up: `importer`, `fetcher` or `saver`.
    pub stage: String,
    /// Why, as a stable machine-readable word (see [`DeadLetterKind`]).
    pub kind: DeadLetterKind,
    /// Human-readable reason, with the cause chain.
    pub error: String,
    /// The import this belongs to, when known.
    #[serde(
        default,
        deserialize_with = "checked_optional_import_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub import_id: Option<String>,
    /// The original message's subject.
    pub subject: String,
    /// The original body: UTF-8 text as is, anything else in `body_base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The original body, base64-encoded, when it is not UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// The original headers (name → values).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Vec<String>>,
    /// How many times the original was delivered.
    pub delivered: i64,
    /// The file and line, for a malformed row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The line of `url` the malformed row starts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// RFC 3339, UTC.
    pub time: String,
    /// The letter would not fit in one NATS message: `error` and the body
    /// were cut short to fit. Such a letter cannot be replayed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Why a message was dead-lettered, as `kind` says it in letters, facts and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterKind {
    /// The message failed for a reason retrying cannot fix.
    Permanent,
    /// The message kept failing until it ran out of deliveries.
    Exhausted,
    /// One row of a CSV file was unusable; the rest of the file was processed.
    MalformedRow,
    /// One row its table's conflict policy `error` refused: its key is held
    /// at another file position of the import, or by another import with
    /// other values. A report (`url`, `line`), not a message to replay.
    Conflict,
}

impl DeadLetterKind {
    /// The word letters, facts and metrics use (`permanent`, `exhausted`, `malformed-row`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Permanent => "permanent",
            DeadLetterKind::Exhausted => "exhausted",
            DeadLetterKind::MalformedRow => "malformed-row",
            DeadLetterKind::Conflict => "conflict",
        }
    }
}

/// A failure that knows whether retrying can help: transient failures
/// are retried with backoff, permanent ones dead-lettered at once (docs/architecture.md,
/// Delivery semantics). Components of sluice that fail (a download, say)
/// implement it so every stage treats their failures alike.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    /// Whether trying again may succeed.
    fn is_transient(&self) -> bool;
}

/// The id of an import whose request named none: its position in `IMPORTS`
/// and the second JetStream stored it (`42-20261128T035601Z`). Stable across
/// redeliveries, and unique even if `IMPORTS` is recreated (sequences start
/// again at 1) while the database keeps the earlier imports.
pub fn derived_import_id(sequence: u64, stored: time::OffsetDateTime) -> String {
    let t = stored.to_offset(time::UtcOffset::UTC);
    format!(
        "{sequence}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_request_accepts_plain_text_and_json() {
        let plain = ImportRequest::parse(b"https://h/a.csv\n").unwrap();
        assert_eq!(plain.url, "https://h/a.csv");
        assert_eq!(plain.id, None);
        let json = ImportRequest::parse(br#"{"url":"https://h/a.csv","id":"nightly-42"}"#).unwrap();
        assert_eq!(json.id.as_deref(), Some("nightly-42"));
        assert!(ImportRequest::parse(b"  ").is_err());
        assert!(ImportRequest::parse(br#"{"url":1}"#).is_err());
        assert!(ImportRequest::parse(br#"{"url":"x","id":"a b"}"#).is_err());
    }

    #[test]
    fn transaction_batch_round_trips_exact_amounts() {
        let batch = TransactionBatch {
            import_id: "7".into(),
            account_id: 12,
            transactions: vec![Transaction {
                id: 1,
                amount: "12345678901.99".parse().unwrap(),
                line: Some(2),
            }],
        };
        let json = serde_json::to_string(&batch).unwrap();
        assert!(json.contains(r#""amount":"12345678901.99""#), "{json}");
        assert_eq!(
            serde_json::from_str::<TransactionBatch>(&json).unwrap(),
            batch
        );
        assert!(serde_json::from_str::<Transaction>(r#"{"id":1,"amount":"1e5"}"#).is_err());
    }

    #[test]
    fn every_message_refuses_an_import_id_that_is_no_subject_token() {
        let bad = [
            r#"{"import_id":"a b","account_id":1,"transactions_url":"http://h/x"}"#,
            r#"{"import_id":"a.b","account_id":1,"transactions":[]}"#,
            r#"{"fact":"listed","import_id":"a b","accounts":1,"rejected_rows":0}"#,
        ];
        assert!(serde_json::from_str::<AccountUpdate>(bad[0]).is_err());
        assert!(serde_json::from_str::<TransactionBatch>(bad[1]).is_err());
        assert!(serde_json::from_str::<ImportProgress>(bad[2]).is_err());
        let fine = r#"{"fact":"listed","import_id":"nightly-42","accounts":1,"rejected_rows":0}"#;
        assert!(serde_json::from_str::<ImportProgress>(fine).is_ok());
        let letter = r#"{"stage":"fetcher","kind":"permanent","error":"e","import_id":"x y",
            "subject":"s","delivered":1,"time":"t"}"#;
        assert!(serde_json::from_str::<DeadLetter>(letter).is_err());
    }
}

/// What the stages report about an import as they go, published on
/// `import-progress.<id>.<fact>`. The saver's tracker records these facts,
/// keyed so that a redelivered fact never counts twice, and decides when the
/// import is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "fact", rename_all = "kebab-case")]
pub enum ImportProgress {
    /// The importer began reading the root file.
    Started {
        /// The import.
        #[serde(deserialize_with = "checked_import_id")]
        import_id: String,
        /// The root file (the accounts CSV), redacted for display.
        url: String,
        /// RFC 3339, UTC.
        time: String,
        /// The spec the import reads its files with, when not the built-in
        /// `accounts`, as `<name>@<revision>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spec: Option<String>,
        /// The webhook target the request named, when the importer knows
        /// it: the saver POSTs the completion event there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook: Option<String>,
    },
    /// The importer read the whole accounts CSV: `accounts` account
    /// messages are stored, `rejected_rows` rows were dead-lettered.
    Listed {
        /// The import.
        #[serde(deserialize_with = "checked_import_id")]
        import_id: String,
        /// Accounts listed (account messages stored).
        accounts: u64,
        /// Rows of the accounts CSV dead-lettered as malformed.
        rejected_rows: u64,
    },
    /// The fetcher read one account's whole transactions CSV: `messages`
    /// transaction messages holding `transactions` transactions are stored.
    Fetched {
        /// The import.
        #[serde(deserialize_with = "checked_import_id")]
        import_id: String,
        /// The account message's key (`<import>/<line>`).
        account_key: String,
        /// The account, as the accounts CSV gives it.
        account_id: i64,
        /// The transactions messages published for the account, one per
        /// window of N = `lines_per_message` rows, with ids
        /// `<account_key>/rows-<first>-<last>`: window `w` spans rows
        /// `1 + w·N` to `(w+1)·N` (rows counted after the header, malformed
        /// ones included, empty lines not). The contract's other form,
        /// windows of file lines (`<account_key>/lines-<2+w·N>-<1+(w+1)·N>`,
        /// empty windows included), is matched too.
        messages: u64,
        /// N: the rows each transactions message (window) holds at most.
        lines_per_message: u64,
        /// Transactions published for the account (valid rows).
        transactions: u64,
        /// Rows of the transactions CSV dead-lettered as malformed.
        rejected_rows: u64,
        /// The transactions CSV, redacted for display (conflict reports
        /// name it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// Which version of the file the messages were read from: 1, or
        /// `n` when the file changed between attempts and was read again
        /// from its first row, the `n`th time. Windows of version `n` ≥ 2
        /// are named `<account_key>/v<n>-rows-<first>-<last>`, and the
        /// rows earlier versions saved are replaced by this one's.
        #[serde(
            default = "windows::first_version",
            skip_serializing_if = "windows::is_first_version"
        )]
        version: u32,
    },
    /// A stage read one whole file of an import run with a spec: the
    /// importer the root file, the fetcher every file below it.
    Read {
        /// The import.
        #[serde(deserialize_with = "checked_import_id")]
        import_id: String,
        /// The file's key: the import id for the root file, else the key of
        /// its `import-files` message (`<import>/<line>/…`).
        file_key: String,
        /// The level it was read with.
        level: String,
        /// The rows messages published for the file, windows of
        /// `lines_per_message` rows named `<file_key>/rows-<first>-<last>`
        /// as for transactions (none when the level has no table).
        messages: u64,
        /// N: the rows each message (window) holds at most.
        lines_per_message: u64,
        /// Rows published (valid rows, for the level's table).
        rows: u64,
        /// Rows dead-lettered as malformed.
        rejected_rows: u64,
        /// The files its rows link to, each published on `import-files`.
        files: u64,
        /// The file, redacted for display.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// A stage dead-lettered a message of this import.
    Failed {
        /// The import.
        #[serde(deserialize_with = "checked_import_id")]
        import_id: String,
        /// The stage that gave the message up.
        stage: String,
        /// The key of the message given up on.
        key: String,
        /// Why, as in the dead letter.
        kind: DeadLetterKind,
        /// The reason, as in the dead letter.
        error: String,
    },
}

impl ImportProgress {
    /// The import the fact is about.
    pub fn import_id(&self) -> &str {
        match self {
            ImportProgress::Started { import_id, .. }
            | ImportProgress::Listed { import_id, .. }
            | ImportProgress::Fetched { import_id, .. }
            | ImportProgress::Read { import_id, .. }
            | ImportProgress::Failed { import_id, .. } => import_id,
        }
    }

    /// The position part of its message id: the fact, and for a file
    /// read again after it changed, its version (`fetched-v2`), so the
    /// new version's fact is not taken for a duplicate of the earlier one.
    pub fn position(&self) -> String {
        match self {
            ImportProgress::Fetched { version, .. } if *version > 1 => {
                format!("{}-v{version}", self.fact())
            }
            _ => self.fact().to_owned(),
        }
    }

    /// The last token of its subject.
    pub fn fact(&self) -> &'static str {
        match self {
            ImportProgress::Started { .. } => "started",
            ImportProgress::Listed { .. } => "listed",
            ImportProgress::Fetched { .. } => "fetched",
            ImportProgress::Read { .. } => "read",
            ImportProgress::Failed { .. } => "failed",
        }
    }
}

/// How an import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Every transaction listed is saved; nothing was rejected.
    Completed,
    /// Everything is settled, but some rows were rejected or conflicted,
    /// or some messages were dead-lettered (`sluice dead-letters list
    /// --import ID`, `sluice status ID`).
    CompletedWithErrors,
    /// An operator cancelled it (`sluice cancel ID`, the service API's
    /// `cancel`): the counts say what was saved before, and no row of it
    /// is written after this event.
    Cancelled,
}

/// Published once per import on `import-events.<id>` when every
/// transaction of it is committed in PostgreSQL or dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImportCompleted {
    /// The import.
    #[serde(deserialize_with = "checked_import_id")]
    pub import_id: String,
    /// How it ended.
    pub status: ImportStatus,
    /// The accounts CSV, redacted for display.
    pub url: Option<String>,
    /// Accounts listed by the accounts CSV (well-formed rows).
    pub accounts: u64,
    /// Accounts whose transactions CSV could not be read (dead-lettered).
    pub accounts_failed: u64,
    /// Transactions committed for this import (including ones an earlier
    /// import had already saved).
    pub transactions_saved: u64,
    /// CSV rows rejected as malformed, in both files.
    pub rows_rejected: u64,
    /// Messages of this import dead-lettered (other than rejected rows).
    pub dead_letters: u64,
    /// Rows that repeated an `(account, id)` of this import with a later
    /// file position: the first in file order was kept
    /// (`sluice status ID` names them).
    #[serde(default)]
    pub conflicts: u64,
    /// Rows this import lists that another import had saved already with
    /// another amount: that import's row was kept (`sluice status ID` names
    /// them). An import with clashes is `completed_with_errors`.
    #[serde(default)]
    pub clashes: u64,
    /// Files that changed between two attempts at reading them (another
    /// `ETag` or `Last-Modified`): each was read again from its first row,
    /// and its rows are the new version's (the rows an earlier version
    /// saved are replaced). Not an error: the import can be `completed`.
    #[serde(default)]
    pub files_changed: u64,
    /// RFC 3339, UTC.
    pub started_at: Option<String>,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// The spec the import read its files with, as `<name>@<revision>`;
    /// absent for the built-in `accounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// Files read, the root included (an import run with a spec; the
    /// built-in spec counts `accounts`).
    #[serde(default)]
    pub files: u64,
    /// Of those, files that could not be read (dead-lettered).
    #[serde(default)]
    pub files_failed: u64,
    /// What each table got, by table name (`transactions` for the built-in
    /// spec).
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, TableCounts>,
}

/// What one table got from an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TableCounts {
    /// Rows the import's files gave for the table (valid rows).
    pub rows: u64,
    /// Rows inserted: keys the table did not hold.
    pub inserted: u64,
    /// Rows that repeated a key of this import at another file position
    /// (the conflict policy chose the row kept).
    #[serde(default)]
    pub conflicts: u64,
    /// Rows another import had saved already with other values, kept as
    /// they were (`keep-first`, `keep-last`).
    #[serde(default)]
    pub clashes: u64,
    /// Rows another import had saved with other values, overwritten by
    /// this one (`update`).
    #[serde(default)]
    pub updated: u64,
    /// Rows refused by the `error` policy: their key was held at another
    /// position or by another import with other values.
    #[serde(default)]
    pub refused: u64,
}

#[cfg(test)]
mod derived_id_tests {
    #[test]
    fn derived_ids_carry_the_position_and_the_stored_second() {
        // 03:56:01 in UTC+1.
        let stored = time::OffsetDateTime::from_unix_timestamp(1795834561)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(1, 0, 0).unwrap());
        let id = crate::derived_import_id(42, stored);
        assert_eq!(id, "42-20261128T025601Z");
        assert!(crate::validate_import_id(&id).is_ok());
    }
}
