//! sluice's service API: requests any NATS client may send, and the
//! replies, as the NATS services framework (ADR-32) carries them. The
//! owner of the tracking tables (sluice's saver, or a replacement) answers
//! them, so `sluice status` and outside tools need NATS credentials only,
//! never the database's. `nats micro ls` lists the service.

use serde::{Deserialize, Serialize};

/// The service's name, as `nats micro ls` shows it.
pub const SERVICE: &str = "sluice";

/// An endpoint of the service: its name, and its subject (without
/// namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The most recent imports ([`ImportsRequest`] → [`ImportsReply`]).
    Imports,
    /// One import, with its first conflicts, clashes and reported rows
    /// ([`ImportRequest`] → [`ImportReply`]).
    Import,
    /// Cancels a running import ([`ImportRequest`] → [`ImportReply`], the
    /// import as it ended): no stage works on its messages any more, no
    /// row of it is written after its completion event, `cancelled`.
    Cancel,
    /// The newest dead letters, of one import or all
    /// ([`DeadLettersRequest`] → [`DeadLettersReply`]).
    DeadLetters,
    /// Replays dead letters by sequence, or every one of an import, with
    /// the rules `sluice dead-letters replay` follows
    /// ([`ReplayRequest`] → [`ReplayReply`]).
    Replay,
    /// Each stage's consumer and what it has still to do
    /// (empty request → [`StagesReply`]).
    Stages,
}

impl Endpoint {
    /// Every endpoint the service answers.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Imports,
        Endpoint::Import,
        Endpoint::Cancel,
        Endpoint::DeadLetters,
        Endpoint::Replay,
        Endpoint::Stages,
    ];

    /// Its name, as `nats micro info` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Imports => "imports",
            Endpoint::Import => "import",
            Endpoint::Cancel => "cancel",
            Endpoint::DeadLetters => "dead-letters",
            Endpoint::Replay => "replay",
            Endpoint::Stages => "stages",
        }
    }

    /// `sluice.api.<name>`.
    pub fn base_subject(self) -> String {
        format!("sluice.api.{}", self.name())
    }
}

/// The error codes a request may be answered with (in the
/// `Nats-Service-Error-Code` header, ADR-32, with the reason in
/// `Nats-Service-Error`).
pub mod code {
    /// The request is not valid JSON of its schema, or a field is out of
    /// range.
    pub const BAD_REQUEST: usize = 400;
    /// No record of the import named (yet).
    pub const NOT_FOUND: usize = 404;
    /// The import ended already: there is nothing left to cancel.
    pub const CONFLICT: usize = 409;
    /// The tracking tables cannot be read now (the database is down).
    pub const UNAVAILABLE: usize = 503;
}

/// The most recent imports, newest first. An empty body asks for the
/// default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportsRequest {
    /// How many (1 to 100; 10 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub limit: Option<u32>,
}

impl ImportsRequest {
    /// How many imports a request without `limit` gets.
    pub const DEFAULT_LIMIT: u32 = 10;
    /// The most one request may ask for.
    pub const MAX_LIMIT: u32 = 100;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
/// The imports asked for, newest first.
pub struct ImportsReply {
    /// Newest first.
    pub imports: Vec<ImportRow>,
}

/// One import by its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The import's id.
    pub id: String,
}

/// One import, and the first [`ImportReply::SHOWN`] of each kind of row
/// it reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImportReply {
    /// Its progress.
    pub import: ImportRow,
    /// Rows the import repeated (transactions of the built-in shape).
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
    /// Rows another import had saved with another amount.
    #[serde(default)]
    pub clashes: Vec<Clash>,
    /// For an import run with a spec: rows its tables' conflict policies
    /// reported.
    #[serde(default)]
    pub reports: Vec<RowReport>,
    /// Messages of the import a stage dead-lettered (the dead letters
    /// stream holds each whole, for `sluice dead-letters`).
    #[serde(default)]
    pub failures: Vec<Failure>,
    /// Rows the import's fetched accounts announced so far (what `sluice
    /// import --wait` estimates the total from).
    #[serde(default)]
    pub transactions_announced: i64,
}

impl ImportReply {
    /// How many of each kind of row a reply shows at most.
    pub const SHOWN: i64 = 20;
}

/// One import's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ImportRow {
    /// The import's id.
    pub id: String,
    /// The accounts CSV's URL, redacted.
    pub url: Option<String>,
    /// `running`, `completed` or `completed_with_errors`.
    pub status: String,
    /// `None` until the whole accounts CSV was read.
    pub accounts_listed: Option<i64>,
    /// Accounts (files, for an import run with a spec) read whole or
    /// dead-lettered.
    pub accounts_settled: i64,
    /// Accounts (files) dead-lettered.
    pub accounts_failed: i64,
    /// Rows saved (transactions of the built-in shape).
    pub transactions_saved: i64,
    /// Malformed rows dead-lettered.
    pub rows_rejected: i64,
    /// Messages of the import dead-lettered.
    pub dead_letters: i64,
    /// Later occurrences of an `(account, id)` the import already had.
    pub conflicts: i64,
    /// Rows another import had saved with another amount (that one kept).
    pub clashes: i64,
    /// RFC 3339, UTC: `2026-12-03T07:43:07Z`.
    pub started_at: Option<String>,
    /// RFC 3339, UTC; `None` while running.
    pub finished_at: Option<String>,
    /// The spec an import run with one reads its files with (`name@revision`).
    pub spec: Option<String>,
    /// Rows of another import's this one overwrote (`update`).
    pub updated: i64,
    /// Rows the `error` policy refused.
    pub refused: i64,
    /// Transactions files that changed between two attempts and were read
    /// again from their first row (their rows are the new version's).
    #[serde(default)]
    pub files_changed: i64,
    /// The webhook target the import named, and how its delivery stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookDelivery>,
}

/// How the completion event's delivery to a webhook target stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookDelivery {
    /// The target's name.
    pub target: String,
    /// RFC 3339, UTC, once the target answered 2xx; `None` until then.
    pub delivered_at: Option<String>,
    /// POSTs made so far.
    pub attempts: i64,
    /// Why the last attempt failed (the target's URL redacted).
    pub error: Option<String>,
}

/// A message of an import that a stage gave up on (dead-lettered).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Failure {
    /// The message's key (an account's `<import>/<line>`, a window's
    /// `<account key>/rows-<first>-<last>`, …).
    pub key: String,
    /// The stage that gave up: `importer`, `fetcher`, `saver`, `tracker`.
    pub stage: String,
    /// `permanent`, `transient` (retries spent), `malformed-row`, …
    pub kind: String,
    /// Why, as the dead letter says it (secrets redacted).
    pub error: String,
}

/// A row of an import run with a spec that its table's conflict policy
/// reported: a conflict, a clash, an update of another import's row, or a
/// refusal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RowReport {
    /// The table the row was for.
    pub table: String,
    /// `conflict`, `clash`, `updated` or `refused`.
    pub kind: String,
    /// The file (redacted) and the row's line in it.
    pub url: Option<String>,
    /// The row's line in its file.
    pub line: i64,
    /// The key, as `(column, …) = (value, …)`, with where the other row of
    /// a pair within the import is.
    pub key: String,
}

/// A row an import listed again: the first in file order was kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Conflict {
    /// The row's account.
    pub account_id: i64,
    /// The row's id within its account.
    pub id: i64,
    /// The row ignored: its transactions CSV (redacted).
    pub url: Option<String>,
    /// The row ignored: its line in that file.
    pub line: i64,
    /// The row ignored: its account's line in the accounts CSV.
    pub account_line: i64,
    /// The row kept: its transactions CSV (redacted).
    pub kept_url: Option<String>,
    /// The row kept: its line.
    pub kept_line: i64,
    /// The row kept: its account's line.
    pub kept_account_line: i64,
}

/// A row the import gave another amount than the one another import had
/// saved: that one was kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Clash {
    /// The row's account.
    pub account_id: i64,
    /// The row's id within its account.
    pub id: i64,
    /// Where this import lists it: the file (redacted).
    pub url: Option<String>,
    /// Its line in that file.
    pub line: i64,
    /// Its account's line in the accounts CSV.
    pub account_line: i64,
    /// The amount this import gives.
    pub amount: String,
    /// The import whose row was kept.
    pub kept_import_id: String,
    /// The amount kept.
    pub kept_amount: String,
    /// Where that import listed it (redacted).
    pub kept_url: Option<String>,
    /// Its line there.
    pub kept_line: Option<i64>,
}

/// The newest dead letters, among the newest 5,000 of the stream. An
/// empty body asks for the newest 50 of every import.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DeadLettersRequest {
    /// Only this import's letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_id: Option<String>,
    /// How many (1 to 200; 50 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 200)))]
    pub limit: Option<u32>,
}

impl DeadLettersRequest {
    /// How many letters a request without `limit` gets.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// The most one request may ask for.
    pub const MAX_LIMIT: u32 = 200;
}

/// Dead letters, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeadLettersReply {
    /// Newest first, at most the limit asked for.
    pub dead_letters: Vec<StoredDeadLetter>,
    /// Letters in the stream, of every import.
    pub in_stream: u64,
}

/// A dead letter as the service shows it: where it is stored and why it
/// was given up, without its body (the stream keeps that for the replay).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StoredDeadLetter {
    /// Its sequence in `DEAD_LETTERS`: what a replay names.
    pub sequence: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// The stage that gave up: `importer`, `fetcher`, `saver`, `tracker`.
    pub stage: String,
    /// `permanent`, `exhausted`, `malformed-row` or `conflict`.
    pub kind: String,
    /// Its import, when known.
    pub import_id: Option<String>,
    /// Why (secrets redacted).
    pub error: String,
    /// The subject a replay publishes it on.
    pub subject: String,
    /// The file of a row report (redacted), and the row's line.
    pub url: Option<String>,
    /// The line of `url`.
    pub line: Option<u64>,
    /// Whether a replay would publish it: row reports and letters cut
    /// short hold no message to replay.
    pub replayable: bool,
}

/// Which dead letters to replay: `sequences`, or every one of `import_id`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// These letters (at most 200).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<u64>,
    /// This import's letters: the newest 200 among the newest 5,000 of
    /// the stream (ask again for more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_id: Option<String>,
}

impl ReplayRequest {
    /// The most letters one request may name.
    pub const MAX_SEQUENCES: usize = 200;
}

/// What a replay did with each letter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReplayReply {
    /// Published again on their stage's input, and deleted.
    pub replayed: Vec<u64>,
    /// Row reports: no message to replay (fix the file, replay the message
    /// that read it, or import again).
    pub skipped: Vec<u64>,
    /// Letters a replay refuses (forged, cut short), with why.
    pub refused: Vec<Refusal>,
    /// Sequences with no letter (replayed already, or never there).
    pub missing: Vec<u64>,
}

/// A letter not replayed, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Refusal {
    /// The letter's sequence.
    pub sequence: u64,
    /// Why it was not replayed.
    pub reason: String,
}

/// Every stage's consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StagesReply {
    /// The importer, fetcher, saver and tracker, in pipeline order.
    pub stages: Vec<StageLag>,
}

/// One stage's durable consumer, as JetStream counts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StageLag {
    /// The consumer's name (the stage's).
    pub consumer: String,
    /// The stream it reads.
    pub stream: String,
    /// `None` when the consumer cannot be read (not created yet).
    pub lag: Option<Lag>,
}

/// What a consumer has still to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Lag {
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: u64,
    /// Of those, on their second delivery or later.
    pub redelivered: u64,
    /// Replicas pulling now.
    pub waiting: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_body_asks_for_the_default_and_strangers_are_refused() {
        let empty: ImportsRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.limit, None);
        assert!(serde_json::from_str::<ImportsRequest>(r#"{"lmit": 5}"#).is_err());
        assert!(serde_json::from_str::<ImportRequest>(r#"{}"#).is_err());
    }

    #[test]
    fn subjects_are_named_by_endpoint() {
        assert_eq!(Endpoint::Imports.base_subject(), "sluice.api.imports");
        assert_eq!(Endpoint::Import.base_subject(), "sluice.api.import");
        assert_eq!(
            Endpoint::DeadLetters.base_subject(),
            "sluice.api.dead-letters"
        );
    }
}
