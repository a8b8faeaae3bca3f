use async_nats::jetstream::message::PublishMessage;
use sluice_messages::{validate_import_id, ImportRequest};
use sluice_stage::{connect, NatsArgs};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The accounts CSV (`accountId,transactionsUrl`), http or https.
    url: String,
    /// Your id for this import (default: its position in the IMPORTS stream).
    /// Publishing the same id again within the duplicate window is a no-op.
    #[arg(long)]
    id: Option<String>,
}

pub async fn run(args: ImportArgs) -> Result<(), String> {
    let parsed =
        url::Url::parse(&args.url).map_err(|e| format!("{:?} is not a URL: {e}", args.url))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{} is not an http or https URL", args.url));
    }
    if let Some(id) = &args.id {
        validate_import_id(id)?;
    }
    let (client, js) = connect(&args.nats, "sluice-import", false)
        .await
        .map_err(|e| e.to_string())?;
    let request = ImportRequest {
        url: args.url.clone(),
        id: args.id.clone(),
    };
    let mut message =
        PublishMessage::build().payload(serde_json::to_vec(&request).expect("encodes").into());
    if let Some(id) = &args.id {
        message = message.message_id(format!("import-{id}"));
    }
    let subject = args.nats.namespace.imports();
    let ack = js
        .send_publish(subject.clone(), message)
        .await
        .map_err(|e| format!("cannot publish on {subject}: {e}"))?
        .await
        .map_err(|e| {
            format!("JetStream did not store the import on {subject}: {e} (run `sluice setup`?)")
        })?;
    let id = args.id.unwrap_or_else(|| ack.sequence.to_string());
    if ack.duplicate {
        eprintln!("import {id} was already published; nothing new was queued");
    }
    println!("{id}");
    let _ = client.flush().await;
    Ok(())
}
