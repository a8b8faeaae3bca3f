//! `sluice status [ID]`: each consumer's lag and the dead letters, and the
//! progress of imports.

use anyhow::anyhow;

use futures_util::StreamExt;
use serde::Serialize;
use sluice_messages::Stream;
use sluice_stage::{topology, NatsArgs};

use crate::api::ask;
use crate::explain::{self, Problem};
use crate::imports::{self, group, DatabaseArgs, ImportRow, OptionalDatabaseArgs};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: OptionalDatabaseArgs,
    /// One import's progress (default: the 10 most recent).
    id: Option<String>,
    /// JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct ConsumerStatus {
    consumer: String,
    /// Messages not yet delivered.
    pending: u64,
    /// Delivered, not yet acknowledged (in flight).
    ack_pending: usize,
    /// Delivered more than once and not yet acknowledged.
    redelivered: usize,
    /// pending + ack_pending + redelivered.
    lag: u64,
    dead_letters: u64,
}

#[derive(Debug, Serialize)]
struct Status {
    consumers: Vec<ConsumerStatus>,
    imports: Vec<ImportRow>,
    /// For one import: its first conflicting rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conflicts: Vec<imports::Conflict>,
    /// For one import: its first clashes with rows other imports saved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    clashes: Vec<imports::Clash>,
    /// For one import run with a spec: the first rows its tables'
    /// conflict policies reported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reports: Vec<sluice_saver::reports::RowReport>,
    /// For one import: the first messages a stage dead-lettered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failures: Vec<sluice_saver::reports::Failure>,
    /// What could not be read, and why: the rest is shown all the same.
    problems: Vec<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let mut status = Status {
        consumers: Vec::new(),
        imports: Vec::new(),
        conflicts: Vec::new(),
        clashes: Vec::new(),
        reports: Vec::new(),
        failures: Vec::new(),
        problems: Vec::new(),
    };
    match consumers(&args).await {
        Ok(consumers) => status.consumers = consumers,
        Err(problem) => status.problems.push(format!("consumers: {problem}")),
    }
    let read = match args.database.get() {
        None => from_api(&args).await,
        Some(database) => from_database(&args, &database).await,
    };
    match read {
        Ok(read) => {
            status.imports = read.imports;
            status.conflicts = read.conflicts;
            status.clashes = read.clashes;
            status.reports = read.reports;
            status.failures = read.failures;
        }
        Err(problem) => status.problems.push(format!("imports: {problem}")),
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&status).expect("encodes")
        );
    } else {
        print_text(&status);
    }
    match status.problems.len() {
        0 => Ok(()),
        n => Err(anyhow!(
            "status is incomplete: {n} part(s) could not be read (see above)"
        )),
    }
}

/// What the saver's tables say, read directly, as the saver answers it.
async fn from_database(args: &StatusArgs, database: &DatabaseArgs) -> Result<Read, Problem> {
    let db = database.connect_readable().await?;
    let url = &database.database_url;
    match &args.id {
        None => Ok(Read {
            imports: imports::recent(&db, 10, url).await?,
            ..Read::default()
        }),
        Some(id) => sluice_saver::reports::import_reply(&db, id)
            .await
            .map_err(|e| explain::postgres("read imports", url, &e))?
            .map(Read::from)
            .ok_or_else(|| no_record(id)),
    }
}

fn no_record(id: &str) -> Problem {
    Problem::new(format!("the saver has no record of import {id} (yet)"))
}

/// What the saver says over NATS: the tables read by their owner.
async fn from_api(args: &StatusArgs) -> Result<Read, Problem> {
    use sluice_messages::api::{
        Endpoint, ImportReply, ImportRequest, ImportsReply, ImportsRequest,
    };
    let (client, _) = explain::connect_nats_server(&args.nats, "sluice-status").await?;
    let ns = &args.nats.namespace;
    let read = match &args.id {
        None => {
            let reply: ImportsReply = ask(
                &client,
                ns.api(Endpoint::Imports),
                &ImportsRequest { limit: Some(10) },
            )
            .await?
            .unwrap_or(ImportsReply {
                imports: Vec::new(),
            });
            Read {
                imports: reply.imports,
                ..Read::default()
            }
        }
        Some(id) => ask::<ImportReply>(
            &client,
            ns.api(Endpoint::Import),
            &ImportRequest { id: id.clone() },
        )
        .await?
        .map(Read::from)
        .ok_or_else(|| no_record(id))?,
    };
    let _ = client.flush().await;
    Ok(read)
}

/// An import's progress and what it reported, from either source.
#[derive(Default)]
struct Read {
    imports: Vec<ImportRow>,
    conflicts: Vec<imports::Conflict>,
    clashes: Vec<imports::Clash>,
    reports: Vec<sluice_saver::reports::RowReport>,
    failures: Vec<sluice_saver::reports::Failure>,
}

impl From<sluice_messages::api::ImportReply> for Read {
    fn from(reply: sluice_messages::api::ImportReply) -> Read {
        Read {
            imports: vec![reply.import],
            conflicts: reply.conflicts,
            clashes: reply.clashes,
            reports: reply.reports,
            failures: reply.failures,
        }
    }
}

async fn consumers(args: &StatusArgs) -> Result<Vec<ConsumerStatus>, Problem> {
    let (client, js) = explain::connect_nats(&args.nats, "sluice-status").await?;
    let ns = &args.nats.namespace;
    let letters = dead_letters_by_stage(&js, ns).await?;
    let mut consumers = Vec::new();
    for name in topology::CONSUMERS {
        let info = topology::consumer_info(&js, ns, name).await.map_err(|e| {
            Problem::new(e.to_string())
                .fix("run `sluice setup` (or start the services: each declares what it needs)")
        })?;
        consumers.push(ConsumerStatus {
            consumer: name.to_owned(),
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
            lag: sluice_stage::topology::Lag::of(&info).total(),
            dead_letters: letters
                .iter()
                .find(|(stage, _)| stage == name)
                .map_or(0, |(_, n)| *n),
        });
    }
    let _ = client.flush().await;
    Ok(consumers)
}

/// Dead letters per stage, from the stream's per-subject counts.
async fn dead_letters_by_stage(
    js: &async_nats::jetstream::Context,
    ns: &sluice_messages::Namespace,
) -> Result<Vec<(String, u64)>, Problem> {
    let name = ns.stream(Stream::DeadLetters);
    let mut subjects = js
        .get_stream(&name)
        .await
        .map_err(|_| explain::stream_missing(&name))?
        .info_with_subjects(ns.dead_letters("*"))
        .await
        .map_err(|e| Problem::new(format!("cannot count dead letters: {e}")))?;
    let mut counts = Vec::new();
    while let Some(entry) = subjects.next().await {
        let (subject, n) =
            entry.map_err(|e| Problem::new(format!("cannot count dead letters: {e}")))?;
        let stage = subject.rsplit('.').next().unwrap_or_default().to_owned();
        counts.push((stage, n as u64));
    }
    Ok(counts)
}

fn print_text(status: &Status) {
    for problem in &status.problems {
        outln!("could not read {problem}");
        outln!();
    }
    if !status.consumers.is_empty() {
        print_consumers(status);
    }
    if !status.imports.is_empty() || status.problems.iter().all(|p| !p.starts_with("imports")) {
        print_imports(status);
    }
}

fn print_consumers(status: &Status) {
    outln!(
        "{:<10} {:>10} {:>12} {:>12} {:>10} {:>13}",
        "CONSUMER",
        "PENDING",
        "IN FLIGHT",
        "REDELIVERED",
        "LAG",
        "DEAD LETTERS"
    );
    for c in &status.consumers {
        outln!(
            "{:<10} {:>10} {:>12} {:>12} {:>10} {:>13}",
            c.consumer,
            group(c.pending.into()),
            group(c.ack_pending as i128),
            group(c.redelivered as i128),
            group(c.lag.into()),
            group(c.dead_letters.into())
        );
    }
    outln!();
}

/// How import `id`'s completion webhook stands, in words.
fn webhook_line(id: &str, hook: &sluice_messages::api::WebhookDelivery) -> String {
    match (&hook.delivered_at, &hook.error) {
        (Some(at), _) => format!(
            "import {id}'s completion event was delivered to webhook target {} at {at}",
            hook.target
        ),
        (None, Some(why)) => format!(
            "import {id}'s completion event is not delivered to webhook target {} yet ({} attempt(s); the last: {why}); it is tried again",
            hook.target, hook.attempts
        ),
        (None, None) => format!(
            "import {id}'s completion event goes to webhook target {} once the import ends",
            hook.target
        ),
    }
}

fn print_imports(status: &Status) {
    for line in imports_table(&status.imports) {
        outln!("{line}");
    }
    print_clashes(status);
    if let Some(one) = status.imports.first().filter(|i| i.files_changed > 0) {
        outln!(
            "\n{} transactions file(s) of import {} changed between two attempts (another ETag or Last-Modified): each was read again from its first row, and its rows are the new version's",
            group(one.files_changed.into()),
            one.id
        );
    }
    if let Some((one, hook)) = (status.imports.first()).and_then(|i| Some((i, i.webhook.as_ref()?)))
    {
        outln!("\n{}", webhook_line(&one.id, hook));
    }
    print_reports(status);
    print_failures(status);
    if let (Some(one), false) = (status.imports.first(), status.conflicts.is_empty()) {
        outln!(
            "\n{} row(s) repeated an (account, id) of import {}; the first in file order was kept:",
            group(one.conflicts.into()),
            one.id
        );
        for c in &status.conflicts {
            let file = |url: &Option<String>, account_line| match url {
                Some(url) => url.clone(),
                None => format!("the file of accounts line {account_line}"),
            };
            let ignored = file(&c.url, c.account_line);
            let kept = if c.kept_account_line == c.account_line {
                format!("line {}", c.kept_line)
            } else {
                format!(
                    "line {} of {}",
                    c.kept_line,
                    file(&c.kept_url, c.kept_account_line)
                )
            };
            outln!(
                "  account {} id {}: line {} of {ignored} repeats {kept}, which was kept",
                c.account_id,
                c.id,
                c.line
            );
        }
    }
}

/// The messages of the one import shown that its stages dead-lettered.
fn print_failures(status: &Status) {
    let (Some(one), false) = (status.imports.first(), status.failures.is_empty()) else {
        return;
    };
    outln!(
        "\n{} message(s) of import {} were dead-lettered (the first {} shown; `sluice dead-letters list --import {}` has each whole):",
        group(one.dead_letters.into()),
        one.id,
        status.failures.len(),
        one.id
    );
    for f in &status.failures {
        outln!("  {} {} {}: {}", f.stage, f.kind, f.key, f.error);
    }
}

/// The rows the conflict policies of the one import shown reported.
fn print_reports(status: &Status) {
    let (Some(one), false) = (status.imports.first(), status.reports.is_empty()) else {
        return;
    };
    outln!(
        "\nrows of import {} its tables' conflict policies reported ({} conflicts, {} clashes, {} updated, {} refused; the first {} shown):",
        one.id,
        group(one.conflicts.into()),
        group(one.clashes.into()),
        group(one.updated.into()),
        group(one.refused.into()),
        status.reports.len()
    );
    for r in &status.reports {
        let file = r.url.as_deref().unwrap_or("the root file");
        outln!(
            "  {} {}: line {} of {file}, {}",
            r.table,
            r.kind,
            r.line,
            r.key
        );
    }
}

/// The clashes of the one import shown: what it gave, and the row of
/// another import that was kept.
fn print_clashes(status: &Status) {
    let (Some(one), false) = (status.imports.first(), status.clashes.is_empty()) else {
        return;
    };
    outln!(
        "\n{} row(s) of import {} were saved before by another import with another amount; those were kept:",
        group(one.clashes.into()),
        one.id
    );
    for c in &status.clashes {
        let given = match &c.url {
            Some(url) => format!("line {} of {url}", c.line),
            None => format!(
                "line {} of the file of accounts line {}",
                c.line, c.account_line
            ),
        };
        let kept_at = match (&c.kept_url, c.kept_line) {
            (Some(url), Some(line)) => format!(" (line {line} of {url})"),
            _ => String::new(),
        };
        outln!(
            "  account {} id {}: {given} gives {}; import {} saved {}{kept_at}, which was kept",
            c.account_id,
            c.id,
            c.amount,
            c.kept_import_id,
            c.kept_amount
        );
    }
}

/// The imports table: the IMPORT column as wide as the widest id shown
/// (ids are up to 128 characters; a narrower column would push every
/// later column out of line).
fn imports_table(imports: &[ImportRow]) -> Vec<String> {
    let width = imports
        .iter()
        .map(|i| i.id.chars().count())
        .chain(["IMPORT".len()])
        .max()
        .unwrap_or_default();
    let mut lines = vec![format!(
        "{:<width$} {:<22} {:>12} {:>14} {:>9} {:>8} {:>9} {:>8}  STARTED",
        "IMPORT",
        "STATUS",
        "ACCOUNTS",
        "TRANSACTIONS",
        "REJECTED",
        "FAILED",
        "CONFLICTS",
        "CLASHES"
    )];
    for i in imports {
        let listed = i
            .accounts_listed
            .map_or_else(|| "…".to_owned(), |n| group(n.into()));
        // An import run with a spec reads files, not accounts: how many.
        let read = match &i.spec {
            Some(_) => format!("{} files", group(i.accounts_settled.into())),
            None => format!("{}/{listed}", group(i.accounts_settled.into())),
        };
        lines.push(format!(
            "{:<width$} {:<22} {:>12} {:>14} {:>9} {:>8} {:>9} {:>8}  {}",
            i.id,
            i.status,
            read,
            group(i.transactions_saved.into()),
            group(i.rows_rejected.into()),
            group(i.dead_letters.into()),
            group((i.conflicts + i.refused).into()),
            group(i.clashes.into()),
            i.started_at.as_deref().unwrap_or("-")
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(id: &str) -> ImportRow {
        ImportRow {
            id: id.into(),
            url: None,
            status: "completed".into(),
            accounts_listed: Some(200),
            accounts_settled: 200,
            accounts_failed: 0,
            transactions_saved: 1_234_567,
            rows_rejected: 0,
            dead_letters: 0,
            conflicts: 0,
            clashes: 0,
            started_at: Some("2026-12-03T07:43:07Z".into()),
            finished_at: Some("2026-12-03T07:44:10Z".into()),
            spec: None,
            updated: 0,
            refused: 0,
            files_changed: 0,
            webhook: None,
        }
    }

    #[test]
    fn long_import_ids_keep_the_columns_in_line() {
        let lines = imports_table(&[
            import("12345-20261203T074307Z"),
            import("march"),
            import("a-rather-long-import-id-chosen-by-a-person-2026"),
        ]);
        // Every column starts where its header does.
        let status_at = lines[0].find("STATUS").unwrap();
        let started_at = lines[0].find("STARTED").unwrap();
        for line in &lines[1..] {
            assert_eq!(line.find("completed"), Some(status_at), "{lines:#?}");
            assert_eq!(
                line.find("2026-12-03T07:43:07Z"),
                Some(started_at),
                "{lines:#?}"
            );
        }
        assert!(lines[3].starts_with("a-rather-long-import-id-chosen-by-a-person-2026 "));
        // Short ids: the column is as wide as its header.
        let short = imports_table(&[import("1")]);
        assert!(short[0].starts_with("IMPORT STATUS"), "{short:#?}");
    }
}
