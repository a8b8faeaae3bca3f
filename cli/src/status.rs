//! `sluice status [ID]`: each consumer's lag and the dead letters, and the
//! progress of imports.

use futures_util::StreamExt;
use serde::Serialize;
use sluice_messages::Stream;
use sluice_stage::{connect, topology, NatsArgs};

use crate::imports::{self, group, DatabaseArgs, ImportRow};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
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
}

pub async fn run(args: StatusArgs) -> Result<(), String> {
    let (client, js) = connect(&args.nats, "sluice-status", false)
        .await
        .map_err(|e| e.to_string())?;
    let ns = &args.nats.namespace;
    let letters = dead_letters_by_stage(&js, ns).await?;
    let mut consumers = Vec::new();
    for name in topology::CONSUMERS {
        let info = topology::consumer_info(&js, ns, name).await?;
        consumers.push(ConsumerStatus {
            consumer: name.to_owned(),
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
            lag: info.num_pending + info.num_ack_pending as u64 + info.num_redelivered as u64,
            dead_letters: letters
                .iter()
                .find(|(stage, _)| stage == name)
                .map_or(0, |(_, n)| *n),
        });
    }
    let db = args.database.connect().await?;
    let imports = match &args.id {
        Some(id) => vec![imports::one(&db, id)
            .await
            .ok_or_else(|| format!("the saver has no record of import {id} (yet)"))?],
        None => imports::recent(&db, 10).await?,
    };
    let _ = client.flush().await;
    let status = Status { consumers, imports };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("encodes")
        );
    } else {
        print_text(&status);
    }
    Ok(())
}

/// Dead letters per stage, from the stream's per-subject counts.
async fn dead_letters_by_stage(
    js: &async_nats::jetstream::Context,
    ns: &sluice_messages::Namespace,
) -> Result<Vec<(String, u64)>, String> {
    let name = ns.stream(Stream::DeadLetters);
    let mut subjects = js
        .get_stream(&name)
        .await
        .map_err(|e| format!("cannot open stream {name}: {e}"))?
        .info_with_subjects(ns.dead_letters("*"))
        .await
        .map_err(|e| format!("cannot count dead letters: {e}"))?;
    let mut counts = Vec::new();
    while let Some(entry) = subjects.next().await {
        let (subject, n) = entry.map_err(|e| format!("cannot count dead letters: {e}"))?;
        let stage = subject.rsplit('.').next().unwrap_or_default().to_owned();
        counts.push((stage, n as u64));
    }
    Ok(counts)
}

fn print_text(status: &Status) {
    println!(
        "{:<10} {:>10} {:>12} {:>12} {:>10} {:>13}",
        "CONSUMER", "PENDING", "IN FLIGHT", "REDELIVERED", "LAG", "DEAD LETTERS"
    );
    for c in &status.consumers {
        println!(
            "{:<10} {:>10} {:>12} {:>12} {:>10} {:>13}",
            c.consumer,
            group(c.pending.into()),
            group(c.ack_pending as i128),
            group(c.redelivered as i128),
            group(c.lag.into()),
            group(c.dead_letters.into())
        );
    }
    println!();
    println!(
        "{:<16} {:<22} {:>12} {:>14} {:>9} {:>8}  STARTED",
        "IMPORT", "STATUS", "ACCOUNTS", "TRANSACTIONS", "REJECTED", "FAILED"
    );
    for i in &status.imports {
        let listed = i
            .accounts_listed
            .map_or_else(|| "…".to_owned(), |n| group(n.into()));
        println!(
            "{:<16} {:<22} {:>12} {:>14} {:>9} {:>8}  {}",
            i.id,
            i.status,
            format!("{}/{listed}", group(i.accounts_settled.into())),
            group(i.transactions_saved.into()),
            group(i.rows_rejected.into()),
            group(i.dead_letters.into()),
            i.started_at.as_deref().unwrap_or("-")
        );
    }
}
