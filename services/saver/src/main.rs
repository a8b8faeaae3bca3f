use std::{process::ExitCode, time::Duration};

use clap::Parser;
use sluice_download::{Networks, Poster, WebhookArgs, WebhookTargets};
use sluice_saver::{announce_completions, deliver_webhooks, Database, Saver, Tracker, Wakeups};
use sluice_stage::{
    config::parse_duration, run_service, specs::PinnedSpecs, Runtime, Sink, SinkOptions, StageArgs,
};

/// sluice saver: writes the transactions published on `transactions.>` to
/// PostgreSQL, in batches, idempotently.
#[derive(Parser, Debug)]
#[command(name = "saver", version)]
struct Config {
    #[command(flatten)]
    stage: StageArgs,
    /// PostgreSQL connection (URL or key=value form); the schema is migrated at start-up.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/sluice", hide_env_values = true,
          value_parser = parse_database_url, hide_default_value = false)]
    database_url: sluice_postgres::Database,
    /// Most messages written in one statement (one-row messages gain the
    /// most from large batches: one commit for many).
    #[arg(long, env = "SLUICE_BATCH_SIZE", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch_size: u32,
    /// Most bytes of messages written in one statement (at least one message
    /// always fits): what bounds a batch of wide messages, and the
    /// saver's memory.
    #[arg(long, env = "SLUICE_BATCH_MAX_BYTES", default_value = "1MiB",
          value_parser = sluice_stage::config::parse_size)]
    batch_max_bytes: u64,
    /// Longest wait to fill a batch before writing what has arrived: a
    /// lone message waits this long (a small import's latency), a busy
    /// stream fills batches sooner.
    #[arg(long, env = "SLUICE_BATCH_WAIT", default_value = "20ms", value_parser = parse_duration)]
    batch_wait: Duration,
    #[command(flatten)]
    webhooks: WebhookArgs,
    /// Networks webhook POSTs never connect to (the download guard's list).
    #[arg(long, env = "SLUICE_DENY_NETWORKS", default_value = sluice_download::DEFAULT_DENY,
          value_parser = Networks::parse)]
    deny_networks: Networks,
    /// Exceptions to `--deny-networks` (a webhook receiver on your network).
    #[arg(long, env = "SLUICE_ALLOW_NETWORKS", default_value = "", value_parser = Networks::parse)]
    allow_networks: Networks,
}

/// libpq's URL or key=value form, TLS settings (`sslmode`, `sslrootcert`,
/// `sslcert`, `sslkey`) included.
fn parse_database_url(s: &str) -> Result<sluice_postgres::Database, sluice_messages::Invalid> {
    s.parse()
}

fn main() -> ExitCode {
    let config: Config = sluice_stage::config::parse(Saver::NAME);
    run_service(
        Saver::NAME,
        &config.stage.observe.clone(),
        |stop| async move {
            let options = SinkOptions {
                batch_size: config.batch_size as usize,
                batch_max_bytes: usize::try_from(config.batch_max_bytes).unwrap_or(usize::MAX),
                batch_wait: config.batch_wait,
            };
            let database = Database::new(config.database_url);
            let targets = WebhookTargets::load(&config.webhooks.webhooks.0, true)?;
            let poster = Poster::new(config.deny_networks, config.allow_networks)?;
            let webhooks = deliver_webhooks(database.clone(), targets, poster, stop.clone());
            let replicas = usize::from(config.stage.nats.stream_replicas);
            let saver = Runtime::start(Saver::NAME, config.stage.clone(), stop.clone()).await?;
            let tracker = Runtime::start(Tracker::NAME, config.stage, stop.clone()).await?;
            let wakeups = Wakeups::default();
            let stop_api = stop.clone();
            let announcer = announce_completions(
                database.clone(),
                tracker.jetstream(),
                tracker.namespace().clone(),
                wakeups.clone(),
                stop,
            );
            let specs =
                PinnedSpecs::open_when_needed(&saver.jetstream(), saver.namespace(), replicas);
            let writer = Saver::new(database.clone(), wakeups.clone()).with_specs(
                specs,
                saver.jetstream(),
                saver.namespace(),
            );
            let api = sluice_saver::api::serve(
                sluice_saver::api::Api {
                    js: saver.jetstream(),
                    ns: saver.namespace().clone(),
                    database: database.clone(),
                    wakeups: wakeups.clone(),
                    replicas,
                },
                stop_api,
            );
            tokio::try_join!(
                saver.run_sink(writer, options),
                tracker.run_sink(Tracker::new(database, wakeups), options),
                announcer,
                api,
                webhooks,
            )?;
            Ok(())
        },
    )
}
