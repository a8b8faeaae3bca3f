//! JSON Schemas of every message sluice publishes, generated from the types
//! the services themselves encode and decode, and the catalog that places
//! each on its stream and subject. `shared/messages/schema/` holds the
//! committed copies; a test fails when they differ from these.

use schemars::{generate::SchemaSettings, JsonSchema, Schema};
use serde::Serialize;
use serde_json::Value;

use crate::{
    AccountUpdate, DeadLetter, FileTask, ImportCompleted, ImportProgress, ImportRequest, RowBatch,
    Stream, TransactionBatch,
};

/// The contract's version. It changes only with an incompatible change
/// (a field removed, renamed or retyped, a meaning changed); adding an
/// optional field keeps it, since readers ignore fields they do not know.
pub const CONTRACT_VERSION: u32 = 1;

/// The rule of `validate_import_id`, for every field holding an import id.
const IMPORT_ID_PATTERN: &str = "^[A-Za-z0-9_:-]{1,128}$";

/// How a stage names what it publishes. Every output's `Nats-Msg-Id` starts
/// with the key of the input it came from: the input's `Sluice-Replay-Of`
/// header when it is a replayed dead letter, else its own `Nats-Msg-Id`.
/// So a replay republishes exactly the ids the first attempt did.
pub const KEY_RULE: &str =
    "The key of a message is its `Sluice-Replay-Of` header when present (a replayed \
     dead letter), else its `Nats-Msg-Id`. Every output's `Nats-Msg-Id` is derived from the key of \
     the input it came from, so a re-run or a replay republishes the same ids and JetStream drops \
     the duplicates. Every message downstream of `imports` carries its import id in the \
     `Sluice-Import-Id` header.";

/// One kind of message: where it travels and what it holds.
#[derive(Debug, Serialize)]
pub struct MessageKind {
    /// Its name, as its schema file is named (`transaction-batch`).
    pub name: &'static str,
    /// The stream that stores it.
    pub stream: &'static str,
    /// Without namespace; `<…>` marks a token that varies.
    pub subject: &'static str,
    /// Who publishes it.
    pub producer: &'static str,
    /// Its schema file under `schema/`.
    pub schema: String,
    /// How the `Nats-Msg-Id` header is made (JetStream drops a second
    /// message with the same id within the stream's duplicate window).
    pub msg_id: &'static str,
    /// Headers besides `Nats-Msg-Id`.
    pub headers: &'static [&'static str],
    /// Anything else a consumer must know about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    #[serde(skip)]
    body: fn() -> Schema,
}

impl MessageKind {
    /// The schema of the body, as committed under `schema/`.
    pub fn body_schema(&self) -> Value {
        committed(self.name, self.body)
    }
}

fn schema_of<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
}

const IMPORT_ID_HEADER: &[&str] = &[crate::HEADER_IMPORT_ID];

/// Every message sluice publishes.
pub fn catalog() -> Vec<MessageKind> {
    let kind = |name: &'static str,
                stream: Stream,
                subject: &'static str,
                producer: &'static str,
                msg_id: &'static str,
                body: fn() -> Schema| MessageKind {
        name,
        stream: stream.base_name(),
        subject,
        producer,
        schema: format!("{name}.schema.json"),
        msg_id,
        headers: IMPORT_ID_HEADER,
        note: None,
        body,
    };
    vec![
        MessageKind {
            headers: &[],
            note: Some(
                "The body may also be the URL alone as plain text (what `nats pub imports URL` \
                 sends); surrounding whitespace is ignored. A `Sluice-Import-Id` header names \
                 the import when the body has no id.",
            ),
            ..kind(
                "import-request",
                Stream::Imports,
                "imports",
                "users, `sluice import`",
                "optional; `sluice import` sets `import-<id>`",
                schema_of::<ImportRequest>,
            )
        },
        kind(
            "account-update",
            Stream::AccountUpdates,
            "account-updates",
            "importer",
            "`<import id>/<line>`: the account's line in the accounts CSV, e.g. `42/7`; \
             this id is the account's key",
            schema_of::<AccountUpdate>,
        ),
        kind(
            "transactions",
            Stream::Transactions,
            "transactions.<account_id>",
            "fetcher",
            "`<account key>/rows-<first>-<last>`: window `w` of N = \
             SLUICE_TRANSACTIONS_PER_MESSAGE rows spans rows 1+w·N to (w+1)·N, rows \
             counted after the header (malformed ones included, empty lines not); every \
             window up to the last row read is published. A fetcher may window by file \
             lines instead: `<account key>/lines-<2+w·N>-<1+(w+1)·N>`, empty windows \
             included",
            schema_of::<TransactionBatch>,
        ),
        MessageKind {
            note: Some(
                "Published for an import run with a spec of the user's (`spec` in the request): \
                 one per row linking to a file, by the stage that read that row (the importer \
                 for the root file, the fetcher below it).",
            ),
            ..kind(
                "file-task",
                Stream::AccountUpdates,
                "import-files",
                "importer, fetcher",
                "`<key of the file read>/<line>`: the linking row's line, e.g. `42/7` below the \
                 root and `42/7/3` below that; with several child links in a row, \
                 `<key>/<line>-<n>` for the n-th (from 2); this id is the file's key",
                schema_of::<FileTask>,
            )
        },
        MessageKind {
            note: Some(
                "Published for an import run with a spec of the user's. `<table>` is the \
                 spec's table name (`schema.name` takes two tokens). Windows are cut as for \
                 transactions; a file whose level has no table publishes none.",
            ),
            ..kind(
                "rows",
                Stream::Transactions,
                "rows.<table>",
                "importer (root file), fetcher",
                "`<file key>/rows-<first>-<last>`, windows of N = \
                 SLUICE_TRANSACTIONS_PER_MESSAGE rows as for `transactions`",
                schema_of::<RowBatch>,
            )
        },
        MessageKind {
            note: Some(
                "The last subject token equals the body's `fact`. `started` and `listed` come \
                 from the importer, `fetched` from the fetcher, `read` from whichever stage read \
                 a file of an import run with a spec (instead of `listed` and `fetched`), \
                 `failed` from whichever stage dead-lettered a message of the import.",
            ),
            ..kind(
                "import-progress",
                Stream::ImportEvents,
                "import-progress.<import id>.<fact>",
                "importer, fetcher, any stage's dead-lettering",
                "`<import id>/started` and `<import id>/listed`; `<account key>/fetched`; \
                 `<file key>/read`; \
                 `<Nats-Msg-Id of the message given up on>/failed` (its `key` field is that \
                 message's key)",
                schema_of::<ImportProgress>,
            )
        },
        MessageKind {
            note: Some(
                "Published once per import by the saver's tracker; `sluice import --wait` and \
                 `nats sub 'import-events.>'` read it.",
            ),
            ..kind(
                "import-completed",
                Stream::ImportEvents,
                "import-events.<import id>",
                "saver",
                "`import-completed/<import id>`",
                schema_of::<ImportCompleted>,
            )
        },
        MessageKind {
            note: Some(
                "A `malformed-row` letter names the file (`url`, redacted) and `line`; the \
                 others carry the original message (`subject`, `body` or `body_base64`, \
                 `headers`).",
            ),
            ..kind(
                "dead-letter",
                Stream::DeadLetters,
                "dead-letters.<stage>",
                "any stage",
                "`<Nats-Msg-Id of the message given up on>/dead-letter`; for a malformed row \
                 `<key of the message being read>/rejected-line-<line>`",
                schema_of::<DeadLetter>,
            )
        },
    ]
}

/// One endpoint of the service API (`crate::api`): where it is asked,
/// and the schemas of its request and reply.
#[derive(Debug, Serialize)]
pub struct EndpointKind {
    /// As `nats micro info` shows it.
    pub name: &'static str,
    /// Without namespace (a namespace prefixes it: `<ns>.sluice.api.…`).
    pub subject: String,
    /// Its request's schema file under `schema/`.
    pub request: String,
    /// Its reply's schema file under `schema/`.
    pub reply: String,
    /// What it answers, in words.
    pub note: &'static str,
    #[serde(skip)]
    bodies: [fn() -> Schema; 2],
}

/// Every endpoint of the service API.
pub fn service_catalog() -> Vec<EndpointKind> {
    use crate::api::{
        DeadLettersReply, DeadLettersRequest, Endpoint, ImportReply, ImportRequest, ImportsReply,
        ImportsRequest, ReplayReply, ReplayRequest, StagesReply,
    };
    let endpoint = |e: Endpoint, note, bodies| EndpointKind {
        name: e.name(),
        subject: e.base_subject(),
        request: format!("api-{}-request.schema.json", e.name()),
        reply: format!("api-{}-reply.schema.json", e.name()),
        note,
        bodies,
    };
    vec![
        endpoint(
            Endpoint::Imports,
            "The most recent imports, newest first; an empty body asks for 10.",
            [schema_of::<ImportsRequest>, schema_of::<ImportsReply>],
        ),
        endpoint(
            Endpoint::Import,
            "One import, with the first 20 of its conflicts, clashes and reported rows; \
             error 404 while nothing of it is recorded.",
            [schema_of::<ImportRequest>, schema_of::<ImportReply>],
        ),
        endpoint(
            Endpoint::Cancel,
            "Cancels a running import and answers with it as it ended (status `cancelled`); \
             cancelling a cancelled import answers the same; error 404 while nothing of it is \
             recorded, 409 once it completed.",
            [schema_of::<ImportRequest>, schema_of::<ImportReply>],
        ),
        endpoint(
            Endpoint::DeadLetters,
            "The newest dead letters (50 unless `limit` says), of every import or of \
             `import_id`, without their bodies.",
            [
                schema_of::<DeadLettersRequest>,
                schema_of::<DeadLettersReply>,
            ],
        ),
        endpoint(
            Endpoint::Replay,
            "Replays dead letters (`sequences`, or every one of `import_id`) on their stage's \
             input, as `sluice dead-letters replay` does: row reports are skipped, forged or \
             cut-short letters refused; answers what happened to each.",
            [schema_of::<ReplayRequest>, schema_of::<ReplayReply>],
        ),
        endpoint(
            Endpoint::Stages,
            "Each stage's durable consumer and what it has still to do; an empty request.",
            [schema_of::<Empty>, schema_of::<StagesReply>],
        ),
    ]
}

/// A request with no field (an empty body or `{}`).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// A schema with its `$id`, as committed under `schema/`.
fn committed(name: &str, schema: fn() -> Schema) -> Value {
    let mut schema = schema();
    schema.insert(
        "$id".into(),
        format!("urn:sluice:v{CONTRACT_VERSION}:{name}").into(),
    );
    let mut value = schema.to_value();
    constrain_import_ids(&mut value);
    value
}

/// The files under `schema/`: one body schema per message kind and per
/// service request and reply, and the catalog (`messages.json`) that
/// places them.
pub fn files() -> Vec<(String, String)> {
    let catalog = catalog();
    let mut files: Vec<(String, String)> = catalog
        .iter()
        .map(|kind| (kind.schema.clone(), pretty(&kind.body_schema())))
        .collect();
    let service = service_catalog();
    for endpoint in &service {
        for (file, body) in [&endpoint.request, &endpoint.reply]
            .into_iter()
            .zip(endpoint.bodies)
        {
            let name = file.trim_end_matches(".schema.json");
            files.push((file.clone(), pretty(&committed(name, body))));
        }
    }
    let index = serde_json::json!({
        "contract_version": CONTRACT_VERSION,
        "key_rule": KEY_RULE,
        "messages": catalog,
        "service": {
            "name": crate::api::SERVICE,
            "framework": "NATS services (ADR-32): `nats micro ls`, `info`, `stats`; errors in the \
                          `Nats-Service-Error` and `Nats-Service-Error-Code` headers (400 bad \
                          request, 404 no such import, 503 tracking tables unreadable)",
            "endpoints": service,
        },
    });
    files.push(("messages.json".into(), pretty(&index)));
    files
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("schemas encode");
    text.push('\n');
    text
}

/// Import ids are plain `String`s in the types; the schema states their
/// rule wherever one appears.
fn constrain_import_ids(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get_mut("properties") {
                for (name, prop) in props.iter_mut() {
                    if name == "import_id" {
                        constrain(prop);
                    }
                }
            }
            for child in map.values_mut() {
                constrain_import_ids(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(constrain_import_ids),
        _ => {}
    }
}

fn constrain(prop: &mut Value) {
    let Value::Object(map) = prop else { return };
    // `Option<String>` comes out as `"type": ["string", "null"]`.
    map.insert("pattern".into(), IMPORT_ID_PATTERN.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_schema_with_an_id() {
        for kind in catalog() {
            let schema = kind.body_schema();
            assert_eq!(
                schema["$id"],
                format!("urn:sluice:v{CONTRACT_VERSION}:{}", kind.name)
            );
            assert!(schema.get("$schema").is_some(), "{}", kind.name);
        }
    }
}
