//! `sluice status [ID]`: each consumer's lag and the dead letters, and the
//! progress of imports.

use futures_util::StreamExt;
use serde::Serialize;
use sluice_messages::Stream;
use sluice_stage::{topology, NatsArgs};

use crate::explain::{self, Problem};
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
    /// What could not be read, and why: the rest is shown all the same.
    problems: Vec<String>,
}

pub async fn run(args: StatusArgs) -> Result<(), String> {
    let mut status = Status {
        consumers: Vec::new(),
        imports: Vec::new(),
        problems: Vec::new(),
    };
    match consumers(&args).await {
        Ok(consumers) => status.consumers = consumers,
        Err(problem) => status.problems.push(format!("consumers: {problem}")),
    }
    match imports(&args).await {
        Ok(imports) => status.imports = imports,
        Err(problem) => status.problems.push(format!("imports: {problem}")),
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("encodes")
        );
    } else {
        print_text(&status);
    }
    match status.problems.len() {
        0 => Ok(()),
        n => Err(format!(
            "status is incomplete: {n} part(s) could not be read (see above)"
        )),
    }
}

async fn consumers(args: &StatusArgs) -> Result<Vec<ConsumerStatus>, Problem> {
    let (client, js) = explain::connect_nats(&args.nats, "sluice-status").await?;
    let ns = &args.nats.namespace;
    let letters = dead_letters_by_stage(&js, ns).await?;
    let mut consumers = Vec::new();
    for name in topology::CONSUMERS {
        let info = topology::consumer_info(&js, ns, name).await.map_err(|e| {
            Problem::new(e)
                .fix("run `sluice setup` (or start the services: each declares what it needs)")
        })?;
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
    let _ = client.flush().await;
    Ok(consumers)
}

async fn imports(args: &StatusArgs) -> Result<Vec<ImportRow>, Problem> {
    let db = args.database.connect().await?;
    match &args.id {
        Some(id) => Ok(vec![imports::one(&db, id, &args.database.database_url)
            .await?
            .ok_or_else(|| {
                Problem::new(format!("the saver has no record of import {id} (yet)"))
            })?]),
        None => imports::recent(&db, 10, &args.database.database_url).await,
    }
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
        println!("could not read {problem}");
        println!();
    }
    if !status.consumers.is_empty() {
        print_consumers(status);
    }
    if !status.imports.is_empty() || status.problems.iter().all(|p| !p.starts_with("imports")) {
        print_imports(status);
    }
}

fn print_consumers(status: &Status) {
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
}

fn print_imports(status: &Status) {
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
