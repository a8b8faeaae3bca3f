use anyhow::{anyhow, Context};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use sluice_messages::{validate_import_id, ImportCompleted, ImportRequest, ImportStatus};
use sluice_operator::{
    dead_letters::{DeadLetters, Filter},
    imports::wait_for_completion,
};
use sluice_stage::{
    telemetry::{self, KeyValue, TraceHeaders},
    ConsumerArgs, NatsArgs,
};

use crate::imports::{self, group, DatabaseArgs};
use crate::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// How the consumers are declared if the topology does not exist yet.
    #[command(flatten)]
    consumer: ConsumerArgs,
    /// The accounts CSV (`accountId,transactionsUrl`), http or https.
    url: String,
    /// Your id for this import (default: its position in the IMPORTS stream).
    /// Publishing the same id again within the duplicate window is a no-op.
    #[arg(long)]
    id: Option<String>,
    /// Show progress until the import completes; exit 0 only if it
    /// completed without errors, 1 with a summary of what failed otherwise.
    #[arg(long)]
    wait: bool,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let parsed =
        url::Url::parse(&args.url).with_context(|| format!("{:?} is not a URL", args.url))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(anyhow!("{} is not an http or https URL", args.url));
    }
    if let Some(id) = &args.id {
        validate_import_id(id).map_err(anyhow::Error::msg)?;
    }
    let (client, js) = crate::explain::connect_nats(&args.nats, "sluice-import").await?;
    let request = ImportRequest {
        url: args.url.clone(),
        id: args.id.clone(),
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
                .await
                .map_err(anyhow::Error::msg)?
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
    if ack.duplicate {
        eprintln!("import {id} was already published; nothing new was queued");
    }
    println!("{id}");
    let _ = client.flush().await;
    if !args.wait {
        return Ok(());
    }

    let progress = tokio::spawn(show_progress(
        args.database.clone(),
        js.clone(),
        args.nats.namespace.clone(),
        id.clone(),
    ));
    let completion = tokio::select! {
        completion = wait_for_completion(&js, &args.nats.namespace, &id) => completion,
        _ = interrupted => {
            progress.abort();
            eprintln!("\nstopped following import {id}; it goes on without you: follow it again with `sluice status {id}`");
            return Err(crate::progress::Interrupted.into());
        }
    };
    progress.abort();
    let _ = progress.await;
    let event = completion.map_err(anyhow::Error::msg)?;
    println!("{}", summary(&event, started.elapsed()));
    if event.status == ImportStatus::Completed {
        return Ok(());
    }
    let mut letters = DeadLetters::open(&js, &args.nats.namespace)
        .await
        .map_err(anyhow::Error::msg)?;
    let filter = Filter {
        import_id: Some(id.clone()),
        ..Filter::default()
    };
    for stored in letters.list(&filter).await.map_err(anyhow::Error::msg)? {
        let letter = stored.letter;
        println!(
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
    };
    format!(
        "import {} {status}: {} accounts ({} failed), {} transactions saved, {} rows rejected, {} dead letters, {:.1} s",
        event.import_id,
        group(event.accounts.into()),
        group(event.accounts_failed.into()),
        group(event.transactions_saved.into()),
        group(event.rows_rejected.into()),
        group(event.dead_letters.into()),
        elapsed.as_secs_f64()
    )
}

/// Progress from the saver's records: rows saved of the rows the fetched
/// accounts announced (it grows until every account is fetched), the rate,
/// the ETA and the stage that is behind.
async fn show_progress(
    database: DatabaseArgs,
    js: async_nats::jetstream::Context,
    ns: sluice_messages::Namespace,
    id: String,
) {
    let mut progress = Progress::new();
    let mut db = None;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if db.is_none() {
            db = database.connect().await.ok();
        }
        let Some(client) = &db else { continue };
        let Ok(Some(row)) = imports::one(client, &id, &database.database_url).await else {
            continue;
        };
        let announced = imports::announced_transactions(client, &id)
            .await
            .unwrap_or(0);
        let behind = crate::progress::behind(&js, &ns).await;
        let listed = row
            .accounts_listed
            .map_or_else(|| "…".to_owned(), |n| group(n.into()));
        progress.update(
            row.transactions_saved as u64,
            announced as u64,
            &format!(
                "accounts {}/{listed} fetched, {behind}",
                group(row.accounts_settled.into())
            ),
        );
    }
}
