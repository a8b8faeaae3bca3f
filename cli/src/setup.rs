use anyhow::Context;
use sluice_stage::{
    topology::{self, ConsumerSpec},
    ConsumerArgs, NatsArgs,
};

use crate::explain;

#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    consumer: ConsumerArgs,
    /// The saver's database; created if it does not exist (the saver migrates its schema).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/sluice"
    )]
    database_url: String,
    /// Leave the database alone.
    #[arg(long)]
    skip_database: bool,
}

pub async fn run(args: SetupArgs) -> anyhow::Result<()> {
    let (client, js) = crate::explain::connect_nats(&args.nats, "sluice-setup").await?;
    declare(&js, &args.nats, &args.consumer).await?;
    for stream in sluice_messages::Stream::ALL {
        outln!("stream {} ready", args.nats.namespace.stream(stream));
    }
    let _ = client.flush().await;
    if !args.skip_database {
        ensure_database(&args.database_url).await?;
        check_spec_tables(&js, &args.nats, &args.database_url).await?;
    }
    Ok(())
}

/// Every stored spec's tables: the missing ones created, the others
/// checked; fails naming each table that does not fit, with its fix.
async fn check_spec_tables(
    js: &async_nats::jetstream::Context,
    nats: &NatsArgs,
    url: &str,
) -> anyhow::Result<()> {
    let (specs, unreadable) =
        sluice_stage::specs::Specs::open(js, &nats.namespace, usize::from(nats.stream_replicas))
            .await?
            .list()
            .await?;
    let database: sluice_postgres::Database = url.parse().context("DATABASE_URL is invalid")?;
    let db = database
        .connect()
        .await
        .map_err(|e| explain::postgres("connect to the database", url, &e))?;
    let mut unfit = unreadable;
    for stored in specs.iter().filter(|s| s.revision > 0) {
        let reports = sluice_saver::tables::ensure_tables(&db, &stored.spec)
            .await
            .map_err(|e| explain::postgres("check the specs' tables", url, &e))?;
        for report in reports {
            if report.fits() {
                outln!("spec {}: {report}", stored.spec.name);
            } else {
                unfit.push(format!("spec {}: {report}", stored.spec.name));
            }
        }
    }
    if unfit.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "some tables do not fit their specs (nothing was altered):\n{}",
            unfit.join("\n")
        ))
    }
}

/// The streams and the durable consumers, exactly as the services declare
/// them.
pub async fn declare(
    js: &async_nats::jetstream::Context,
    nats: &NatsArgs,
    consumer: &ConsumerArgs,
) -> anyhow::Result<()> {
    topology::ensure_streams(js, nats).await?;
    for name in topology::CONSUMERS {
        let spec = ConsumerSpec::of(name, consumer).expect("known consumer");
        topology::ensure_consumer(js, &nats.namespace, &spec).await?;
    }
    let replicas = usize::from(nats.stream_replicas);
    sluice_stage::import_ids::ImportIds::open(js, &nats.namespace, replicas).await?;
    // The bucket only; the budget itself is the fetcher's setting.
    sluice_stage::row_budget::RowBudget::open(js, &nats.namespace, replicas, 0).await?;
    sluice_stage::checkpoints::Checkpoints::open(js, &nats.namespace, replicas).await?;
    sluice_stage::cancellations::open(js, &nats.namespace, replicas).await?;
    sluice_stage::specs::Specs::open(js, &nats.namespace, replicas).await?;
    Ok(())
}

/// Creates the database `url` names, connecting to the server's `postgres`
/// database to do it, unless it exists.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let database: sluice_postgres::Database = url.parse().context("DATABASE_URL is invalid")?;
    let name = database
        .config()
        .get_dbname()
        .unwrap_or("postgres")
        .to_owned();
    let admin = database
        .with_dbname("postgres")
        .connect()
        .await
        .map_err(|e| explain::postgres("connect to the server's postgres database", url, &e))?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| explain::postgres("list databases", url, &e))?
        .is_some();
    if exists {
        outln!("database {name} ready");
    } else {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        admin
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
            .map_err(|e| explain::postgres(&format!("create database {name}"), url, &e))?;
        outln!("database {name} created");
    }
    // The saver migrates at start-up too; doing it here means `status` and
    // `doctor` find the schema before the first saver runs.
    let db = database
        .connect()
        .await
        .map_err(|e| explain::postgres("connect to the database", url, &e))?;
    match sluice_saver::migrate(&db).await {
        Ok(()) => {}
        Err(sluice_saver::MigrateError::Postgres(e)) => {
            return Err(explain::postgres("migrate the schema", url, &e).into())
        }
        Err(sluice_saver::MigrateError::Ahead(ahead)) => return Err(anyhow::anyhow!(ahead)),
    }
    outln!("schema at version {}", sluice_saver::SCHEMA_VERSION);
    Ok(())
}
