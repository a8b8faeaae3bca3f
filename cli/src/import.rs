use anyhow::{anyhow, Context};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use sluice_messages::{validate_import_id, ImportCompleted, ImportRequest, ImportStatus};
use sluice_operator::{
    dead_letters::{DeadLetters, Filter},
    imports::wait_for_completion,
};
use sluice_stage::{
    import_ids::{Claim, ImportIds},
    telemetry::{self, KeyValue, TraceHeaders},
    ConsumerArgs, NatsArgs,
};

use crate::imports::{self, group, DatabaseArgs, OptionalDatabaseArgs};
use crate::progress::{Progress, Total, Watch};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: OptionalDatabaseArgs,
    /// How the consumers are declared if the topology does not exist yet.
    #[command(flatten)]
    consumer: ConsumerArgs,
    /// The root file, http, https or s3://bucket/key: an accounts CSV
    /// (`accountId,transactionsUrl`) for the built-in spec, else a file of
    /// the root level of `--spec`.
    url: String,
    /// The import spec to read the files with (`sluice spec list`); the
    /// built-in `accounts` when not given.
    #[arg(long)]
    spec: Option<String>,
    /// Your id for this import (default: its position in the IMPORTS stream).
    /// An id names one request forever: the same URL again is the same
    /// import (a no-op), another URL under a used id is refused.
    #[arg(long)]
    id: Option<String>,
    /// The download credential the files are fetched with: the name of one
    /// configured on the importer and the fetcher
    /// (`SLUICE_DOWNLOAD_CREDENTIALS`); only the name travels.
    #[arg(long)]
    credentials: Option<String>,
    /// The webhook target told of the completion (a signed POST of the
    /// completion event): the name of one configured on the importer and
    /// the saver (`SLUICE_WEBHOOKS`); only the name travels.
    #[arg(long)]
    webhook: Option<String>,
    /// Show progress until the import completes; exit 0 only if it
    /// completed without errors, 1 with a summary of what failed otherwise.
    #[arg(long)]
    wait: bool,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let parsed =
        url::Url::parse(&args.url).with_context(|| format!("{:?} is not a URL", args.url))?;
    if !matches!(parsed.scheme(), "http" | "https" | "s3") {
        return Err(anyhow!(
            "{} is not an http, https or s3 URL",
            sluice_messages::redact_file_url(&args.url)
        ));
    }
    if let Some(id) = &args.id {
        validate_import_id(id)?;
    }
    if let Some(name) = &args.credentials {
        sluice_messages::validate_credential_name(name)?;
    }
    if let Some(name) = &args.webhook {
        sluice_messages::validate_webhook_name(name)?;
    }
    if args.wait {
        // Following an import reads the saver's tables: refuse a schema a
        // newer release wrote before publishing anything. A database that
        // is not reachable yet is waited for, as the import itself is.
        if let Some(database) = args.database.get() {
            if let Ok(db) = database.connect().await {
                imports::readable(&db).await?;
            }
        }
    }
    let (client, js) = crate::explain::connect_nats(&args.nats, "sluice-import").await?;
    if let Some(name) = args.spec.as_deref().filter(|n| *n != sluice_spec::BUILTIN) {
        // The importer would refuse a name nobody stored: say so now.
        let specs = sluice_stage::specs::Specs::open(
            &js,
            &args.nats.namespace,
            usize::from(args.nats.stream_replicas),
        )
        .await?;
        if specs.get(name).await.map_err(|e| anyhow!("{e}"))?.is_none() {
            return Err(anyhow!(
                "no import spec is named {name:?}: store it with `sluice spec put FILE` \
                 (`sluice spec list` shows those stored)"
            ));
        }
    }
    let request = ImportRequest {
        url: args.url.clone(),
        id: args.id.clone(),
        spec: args.spec.clone(),
        credentials: args.credentials.clone(),
        webhook: args.webhook.clone(),
    };
    let (span, headers) = root_span(&args.url);
    let mut message = PublishMessage::build()
        .payload(serde_json::to_vec(&request).expect("encodes").into())
        .headers(headers);
    if let Some(id) = &args.id {
        message = message.message_id(format!("import-{id}"));
    }
    let interrupted = crate::progress::interrupted();
    ensure_topology(&js, &args.nats, &args.consumer).await?;
    // An id names one request forever: refuse another request under it,
    // loudly, rather than publish what the importer would refuse.
    let mut republished = false;
    if let Some(id) = &args.id {
        let ids = ImportIds::open(
            &js,
            &args.nats.namespace,
            usize::from(args.nats.stream_replicas),
        )
        .await?;
        match ids.check(id, &request).await? {
            Claim::Taken => {
                return Err(anyhow!(
                    "import id {id} already names another request (another URL or spec): an id names one \
                     request forever; publish this one under a new id"
                ))
            }
            Claim::Same => republished = true,
            Claim::First => {}
        }
    }
    let subject = args.nats.namespace.imports();
    let started = Instant::now();
    let ack = js
        .send_publish(subject.clone(), message)
        .await
        .with_context(|| format!("cannot publish on {subject}"))?
        .await
        .map_err(|e| {
            format!("JetStream did not store the import on {subject}: {e} (run `sluice setup`?)")
        })
        .map_err(anyhow::Error::msg)?;
    let id = match args.id.clone() {
        Some(id) => id,
        None => {
            sluice_operator::imports::derived_import_id_at(&js, &args.nats.namespace, ack.sequence)
                .await?
        }
    };
    telemetry::annotate(
        &span,
        [
            KeyValue::new("sluice.import.id", id.clone()),
            KeyValue::new("messaging.destination.name", subject.clone()),
            // As the importer names it: the Nats-Msg-Id, else the stream position.
            KeyValue::new(
                "messaging.message.id",
                match &args.id {
                    Some(id) => format!("import-{id}"),
                    None => format!("{}:{}", ack.stream, ack.sequence),
                },
            ),
        ],
    );
    drop(span);
    if ack.duplicate || republished {
        eprintln!("import {id} was already published with this URL: it is the same import");
    }
    outln!("{id}");
    let _ = client.flush().await;
    if !args.wait {
        return Ok(());
    }

    let (stop_progress, stopped) = tokio::sync::oneshot::channel();
    let mut progress = tokio::spawn(show_progress(
        args.database.get(),
        client.clone(),
        js.clone(),
        args.nats.namespace.clone(),
        id.clone(),
        stopped,
    ));
    let completion = tokio::select! {
        completion = wait_for_completion(&js, &args.nats.namespace, &id) => completion,
        _ = interrupted => {
            progress.abort();
            eprintln!("\nstopped following import {id}; it goes on without you: follow it again with `sluice status {id}`");
            return Err(crate::progress::Interrupted.into());
        }
    };
    // The progress says what no longer waits and clears its bar.
    let _ = stop_progress.send(());
    if tokio::time::timeout(Duration::from_secs(1), &mut progress)
        .await
        .is_err()
    {
        progress.abort();
    }
    let event = match completion {
        Ok(event) => event,
        Err(e) => {
            let events = args
                .nats
                .namespace
                .stream(sluice_messages::Stream::ImportEvents);
            return Err(
                if crate::progress::stream_is_missing(
                    &js,
                    &args.nats.namespace,
                    sluice_messages::Stream::ImportEvents,
                )
                .await
                {
                    anyhow!("cannot follow import {id}: stream {events} does not exist: run sluice setup")
                } else {
                    anyhow!("cannot follow import {id}: {e}")
                },
            );
        }
    };
    outln!("{}", summary(&event, started.elapsed()));
    match event.status {
        ImportStatus::Completed => return Ok(()),
        ImportStatus::Cancelled => return Err(anyhow!("import {id} was cancelled")),
        ImportStatus::CompletedWithErrors => {}
    }
    let mut letters = DeadLetters::open(&js, &args.nats.namespace).await?;
    let filter = Filter {
        import_id: Some(id.clone()),
        ..Filter::default()
    };
    for stored in letters.list(&filter).await? {
        let letter = stored.letter;
        outln!(
            "  {} {}: {}",
            letter.stage,
            letter.kind.as_str(),
            letter.error
        );
    }
    Err(anyhow!(
        "import {id} completed with errors (details: sluice dead-letters list --import {id})"
    ))
}

/// The root span of an import's trace, which every stage continues, and
/// the headers that carry it on the request.
pub(crate) fn root_span(url: &str) -> (tracing::Span, async_nats::HeaderMap) {
    let span = telemetry::messaging_span("publish imports", "producer", "publish");
    telemetry::record_ids(&span);
    telemetry::annotate(
        &span,
        [KeyValue::new(
            "sluice.file.url",
            sluice_messages::redact_file_url(url),
        )],
    );
    let mut headers = async_nats::HeaderMap::new();
    TraceHeaders::of(&span).apply(&mut headers);
    (span, headers)
}

/// Declares the streams and consumers, as `sluice setup` does, when the
/// IMPORTS stream does not exist yet: an import sent before any service has
/// started then waits durably until they do. An existing topology is left
/// as its operator configured it.
async fn ensure_topology(
    js: &async_nats::jetstream::Context,
    nats: &NatsArgs,
    consumer: &ConsumerArgs,
) -> anyhow::Result<()> {
    use async_nats::jetstream::{context::GetStreamErrorKind, ErrorCode};
    let imports = nats.namespace.stream(sluice_messages::Stream::Imports);
    match js.get_stream(&imports).await {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            eprintln!(
                "stream {imports} does not exist yet; declaring sluice's streams and consumers"
            );
            crate::setup::declare(js, nats, consumer).await
        }
        Err(e) => Err(anyhow!("cannot look up stream {imports}: {e}")),
    }
}

/// The last line of `--wait`.
fn summary(event: &ImportCompleted, elapsed: Duration) -> String {
    let status = match event.status {
        ImportStatus::Completed => "completed",
        ImportStatus::CompletedWithErrors => "completed with errors",
        ImportStatus::Cancelled => "cancelled",
    };
    if let Some(spec) = &event.spec {
        let tables: Vec<String> = event
            .tables
            .iter()
            .map(|(table, t)| {
                let mut said = format!(
                    "{table} {} rows ({} new",
                    group(t.rows.into()),
                    group(t.inserted.into())
                );
                for (n, what) in [
                    (t.conflicts, "conflicts"),
                    (t.clashes, "clashes"),
                    (t.updated, "updated"),
                    (t.refused, "refused"),
                ] {
                    if n > 0 {
                        said.push_str(&format!(", {} {what}", group(n.into())));
                    }
                }
                said + ")"
            })
            .collect();
        return format!(
            "import {} {status} with spec {spec}: {} files ({} failed); {}; {} rows rejected, {} dead letters, {:.1} s",
            event.import_id,
            group(event.files.into()),
            group(event.files_failed.into()),
            if tables.is_empty() { "no rows saved".to_owned() } else { tables.join(", ") },
            group(event.rows_rejected.into()),
            group(event.dead_letters.into()),
            elapsed.as_secs_f64()
        );
    }
    let changed = match event.files_changed {
        0 => String::new(),
        n => format!(", {} files changed and read again", group(n.into())),
    };
    format!(
        "import {} {status}: {} accounts ({} failed), {} transactions saved, {} rows rejected, {} dead letters{changed}, {:.1} s",
        event.import_id,
        group(event.accounts.into()),
        group(event.accounts_failed.into()),
        group(event.transactions_saved.into()),
        group(event.rows_rejected.into()),
        group(event.dead_letters.into()),
        elapsed.as_secs_f64()
    )
}

/// Progress from the saver's records: rows saved of the rows the import is
/// expected to have (the rows fetched accounts announced, scaled to every
/// listed account until all are fetched), the rate, the ETA and the stage
/// that is behind; and, from the start, what the import waits on that a
/// person must fix: a stage with work and nobody pulling it, a stream or
/// consumer that does not exist.
async fn show_progress(
    database: Option<DatabaseArgs>,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    ns: sluice_messages::Namespace,
    id: String,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut progress = Progress::new();
    let mut watch = Watch::new();
    let mut db = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = &mut stop => {
                // The import completed: nothing waits any more.
                watch.settle(&progress);
                progress.finish();
                return;
            }
        }
        let health = watch.check(&js, &ns, &progress).await;
        let mut unanswered = None;
        let recorded = match &database {
            Some(database) => {
                // PostgreSQL restarted: connect again.
                if db.as_ref().is_some_and(tokio_postgres::Client::is_closed) {
                    db = None;
                }
                if db.is_none() {
                    db = tokio::time::timeout(Duration::from_secs(2), database.connect())
                        .await
                        .ok()
                        .and_then(Result::ok);
                }
                match &db {
                    Some(db) => {
                        tokio::time::timeout(Duration::from_secs(2), recorded(db, &id, database))
                            .await
                            .ok()
                            .flatten()
                    }
                    None => None,
                }
            }
            None => match asked(&client, &ns, &id).await {
                Ok(recorded) => recorded,
                Err(problem) => {
                    unanswered = Some(problem);
                    None
                }
            },
        };
        let note = health.note();
        match recorded {
            Some((row, announced)) => {
                let saved = row.transactions_saved.max(0) as u64;
                let settled = row.accounts_settled.max(0) as u64;
                let listed = row.accounts_listed.map(|n| n.max(0) as u64);
                let total = Total::estimate(saved, announced, listed, settled);
                let listed = listed.map_or_else(|| "…".to_owned(), |n| group(n.into()));
                progress.show(
                    saved,
                    total,
                    &format!(
                        "accounts {}/{listed} fetched, {note}",
                        group(settled.into())
                    ),
                );
            }
            // What waits says why there is no record; else say there is none.
            None if !health.waiting.is_empty() => {
                progress.show(0, Total::Unknown { announced: 0 }, &note)
            }
            None if unanswered.is_some() => progress.show(
                0,
                Total::Unknown { announced: 0 },
                &format!("{}, {note}", unanswered.unwrap_or_default()),
            ),
            None => progress.show(
                0,
                Total::Unknown { announced: 0 },
                &format!("the saver has not recorded import {id} yet, {note}"),
            ),
        }
    }
}

/// [`recorded`], asked of the saver over NATS: `Ok(None)` while it has no
/// record of the import, `Err` with why it did not answer otherwise.
async fn asked(
    client: &async_nats::Client,
    ns: &sluice_messages::Namespace,
    id: &str,
) -> Result<Option<(imports::ImportRow, u64)>, String> {
    use sluice_messages::api::{Endpoint, ImportReply, ImportRequest};
    let request = ImportRequest { id: id.to_owned() };
    let reply = crate::api::ask::<ImportReply>(client, ns.api(Endpoint::Import), &request)
        .await
        .map_err(|problem| problem.what)?;
    Ok(reply.map(|reply| (reply.import, reply.transactions_announced.max(0) as u64)))
}

/// The saver's row of import `id` and the rows its fetched accounts
/// announced; `None` while there is none (or the database does not answer).
async fn recorded(
    client: &tokio_postgres::Client,
    id: &str,
    database: &DatabaseArgs,
) -> Option<(imports::ImportRow, u64)> {
    let row = imports::one(client, id, &database.database_url)
        .await
        .ok()
        .flatten()?;
    let announced = imports::announced_transactions(client, id)
        .await
        .unwrap_or(0);
    Some((row, announced.max(0) as u64))
}
