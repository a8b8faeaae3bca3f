//! `sluice demo`: one real import, end to end, on this machine.
//!
//! Generates a data set, serves it over real HTTP, starts the three real
//! service binaries against the local NATS and PostgreSQL (in a private
//! namespace and database, removed afterwards), publishes one import, waits
//! for every transaction to be saved and checks the rows are exactly right.

use anyhow::{anyhow, Context};

use std::time::{Duration, Instant};

use sluice_devkit::{data::format_cents, Dataset, Deployment, FileServer, Sandbox};
use sluice_messages::Stream;

use crate::imports::group;
use crate::progress::{self, Progress};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Accounts in the generated data set.
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    /// Transactions, spread over the accounts.
    #[arg(long, default_value_t = 100_000)]
    transactions: usize,
    /// Transactions per message between fetcher and saver (1: one message each).
    #[arg(long, default_value_t = sluice_messages::windows::DEFAULT_ROWS_PER_WINDOW)]
    transactions_per_message: u32,
    /// Give up when nothing new is saved for this long.
    #[arg(long, default_value = "60s", value_parser = sluice_stage::config::parse_duration)]
    stall_timeout: Duration,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.accounts == 0 {
        return Err(anyhow!("--accounts must be at least 1"));
    }
    let interrupted = progress::interrupted();
    let sandbox = Sandbox::create("demo").await?;
    let dataset = Dataset::generate(args.accounts, args.transactions, 42);
    let server = FileServer::start()
        .await
        .context("cannot start HTTP server")?;
    server.add_dataset(&dataset);
    let accounts_url = server.url("/accounts.csv");
    outln!(
        "sluice demo: {} accounts, {} transactions at {accounts_url}",
        group(args.accounts as i128),
        group(dataset.expected.len() as i128)
    );

    let per_message = args.transactions_per_message.to_string();
    let mut deployment = Deployment::start(
        &sandbox,
        &[("SLUICE_TRANSACTIONS_PER_MESSAGE", &per_message)],
    )
    .context("cannot start the services")?;
    outln!(
        "started importer, fetcher, saver (namespace {}, database {}, logs in {})",
        sandbox.namespace.name().unwrap_or(""),
        sandbox.database,
        deployment.log_dir.display()
    );
    let (allow, networks) = Deployment::ALLOW_LOOPBACK;
    outln!(
        "the files are on this machine, so downloads from loopback are allowed: {allow}={networks}"
    );

    let result = tokio::select! {
        result = import_and_verify(&sandbox, &dataset, &accounts_url, &args) => result,
        _ = interrupted => {
            progress::exit_on_second_interrupt();
            eprintln!(
                "\ninterrupted: stopping the services, removing database {} and namespace {} (again to exit at once)",
                sandbox.database,
                sandbox.namespace.name().unwrap_or("")
            );
            Err(progress::Interrupted.into())
        }
    };
    if result
        .as_ref()
        .is_err_and(|e| !e.is::<progress::Interrupted>())
    {
        deployment.keep_logs(true);
    }
    let stopped = deployment.stop(Duration::from_secs(30)).await;
    let (database, namespace) = (sandbox.database.clone(), sandbox.namespace.clone());
    // Dropping the sandbox removes its database and streams.
    drop(sandbox);
    if result
        .as_ref()
        .is_err_and(|e| e.is::<progress::Interrupted>())
    {
        eprintln!(
            "removed database {database} and namespace {}",
            namespace.name().unwrap_or("")
        );
    }
    result.and(stopped)
}

async fn import_and_verify(
    sandbox: &Sandbox,
    dataset: &Dataset,
    accounts_url: &str,
    args: &DemoArgs,
) -> anyhow::Result<()> {
    let nats = sandbox.nats().await;
    let js = async_nats::jetstream::new(nats);
    sluice_operator::consumers::wait_for_consumers(
        &js,
        &sandbox.namespace,
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| anyhow!("{e}; see the service logs"))?;

    let started = Instant::now();
    let (span, headers) = crate::import::root_span(accounts_url);
    let ack = js
        .publish_with_headers(
            sandbox.namespace.imports(),
            headers,
            accounts_url.to_owned().into(),
        )
        .await?
        .await
        .context("import not stored")?;
    let id = sluice_operator::imports::derived_import_id_at(&js, &sandbox.namespace, ack.sequence)
        .await?;
    sluice_stage::telemetry::annotate(
        &span,
        [sluice_stage::telemetry::KeyValue::new(
            "sluice.import.id",
            id.clone(),
        )],
    );
    drop(span);
    outln!("published import {id} of {accounts_url}");

    let expected = dataset.expected.len() as i64;
    let mut progress = Progress::new();
    let (mut last, mut last_change) = (-1, Instant::now());
    loop {
        let saved = sandbox.saved_count().await;
        if saved != last {
            last = saved;
            last_change = Instant::now();
        }
        let behind = progress::behind(&js, &sandbox.namespace).await;
        progress.update(saved as u64, expected as u64, &behind);
        if saved >= expected {
            break;
        }
        if last_change.elapsed() > args.stall_timeout {
            return Err(anyhow!(
                "stalled at {saved} of {expected} transactions for {:?}; see the service logs",
                args.stall_timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    progress.finish();
    let event = tokio::time::timeout(
        args.stall_timeout,
        sluice_operator::imports::wait_for_completion(&js, &sandbox.namespace, &id),
    )
    .await
    .map_err(|_| anyhow!("every row is saved but import {id} was not announced complete"))??;

    let mut want = dataset.expected.clone();
    want.sort();
    let got = sandbox.saved_rows().await;
    let db = sandbox.db().await;
    let sum: String = db
        .query_one(
            "SELECT COALESCE(sum(amount), 0)::text FROM transactions",
            &[],
        )
        .await?
        .get(0);
    let dead_letters = js
        .get_stream(sandbox.namespace.stream(Stream::DeadLetters))
        .await?
        .info()
        .await?
        .state
        .messages;
    let expected_sum = format_cents(dataset.expected_sum_cents() as i64);

    outln!("  accounts          {}", group(dataset.accounts as i128));
    outln!(
        "  transactions      {} saved, {} expected",
        group(got.len() as i128),
        group(want.len() as i128)
    );
    outln!("  sum of amounts    {sum} saved, {expected_sum} expected");
    outln!("  dead letters      {dead_letters}");
    outln!(
        "  completion event  {:?} on {}: {} transactions saved",
        event.status,
        sandbox.namespace.import_events(&id),
        group(event.transactions_saved.into())
    );
    outln!("  elapsed           {:.2} s", elapsed.as_secs_f64());
    outln!(
        "  throughput        {} rows/s",
        group((got.len() as f64 / elapsed.as_secs_f64()) as i128)
    );
    let announced = event.status == sluice_messages::ImportStatus::Completed
        && event.transactions_saved == want.len() as u64;
    if got != want || sum != expected_sum || dead_letters != 0 || !announced {
        return Err(anyhow!("the saved rows differ from the data set"));
    }
    outln!("every row is exactly as in the files: no loss, no duplicates");
    Ok(())
}
