use std::process::ExitCode;

use clap::Parser;
use sluice_download::{DownloadArgs, WebhookArgs, WebhookTargets};
use sluice_importer::Importer;
use sluice_levels::{LevelFiles, RowsArgs};
use sluice_stage::{buckets, import_ids::ImportIds, run_service, FlatMap, Runtime, StageArgs};

/// sluice importer: reads each accounts CSV published on `imports` and emits
/// one `account-updates` message per account.
#[derive(Parser, Debug)]
#[command(name = "importer", version)]
struct Config {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    download: DownloadArgs,
    /// Most accounts one import may list; past it the accounts file fails
    /// (the accounts before it are still imported).
    #[arg(long, env = "SLUICE_MAX_ACCOUNTS_PER_IMPORT", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_accounts_per_import: u64,
    #[command(flatten)]
    rows: RowsArgs,
    #[command(flatten)]
    webhooks: WebhookArgs,
}

fn main() -> ExitCode {
    let config: Config = sluice_stage::config::parse(Importer::NAME);
    run_service(
        Importer::NAME,
        &config.stage.observe.clone(),
        |stop| async move {
            let replicas = usize::from(config.stage.nats.stream_replicas);
            let runtime = Runtime::start(Importer::NAME, config.stage, stop).await?;
            let js = runtime.jetstream();
            let ids = buckets::open_patiently("the import id registry", || {
                ImportIds::open(&js, runtime.namespace(), replicas)
            })
            .await?;
            let (specs, files) = LevelFiles::open(
                &runtime,
                replicas,
                &config.rows,
                config.max_accounts_per_import,
            );
            // Names only: the importer refuses a request naming another.
            let webhooks = WebhookTargets::load(&config.webhooks.webhooks.0, false)?;
            let importer = Importer::new(
                &config.download.options()?,
                config.max_accounts_per_import,
                ids,
            )?
            .with_specs(specs, files)
            .with_webhooks(webhooks);
            runtime.run_flat_map(importer).await
        },
    )
}
