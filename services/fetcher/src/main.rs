use std::process::ExitCode;

use clap::Parser;
use sluice_download::DownloadArgs;
use sluice_fetcher::Fetcher;
use sluice_levels::{LevelFiles, RowsArgs};
use sluice_stage::{
    buckets, checkpoints::Checkpoints, row_budget::RowBudget, run_service, FlatMap, Runtime,
    StageArgs,
};

/// sluice fetcher: downloads each account's transactions CSV and emits its
/// transactions on `transactions.<account_id>`.
#[derive(Parser, Debug)]
#[command(name = "fetcher", version)]
struct Config {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    download: DownloadArgs,
    #[command(flatten)]
    rows: RowsArgs,
    /// Most files one file of an import run with a spec may link to.
    #[arg(long, env = "SLUICE_MAX_ACCOUNTS_PER_IMPORT", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_accounts_per_import: u64,
}

fn main() -> ExitCode {
    let config: Config = sluice_stage::config::parse(Fetcher::NAME);
    run_service(
        Fetcher::NAME,
        &config.stage.observe.clone(),
        |stop| async move {
            let fetcher = Fetcher::new(
                &config.download.options()?,
                config.rows.transactions_per_message as usize,
            )?;
            let replicas = usize::from(config.stage.nats.stream_replicas);
            let runtime = Runtime::start(Fetcher::NAME, config.stage, stop).await?;
            fetcher.check_fits(runtime.max_payload())?;
            let js = runtime.jetstream();
            let budget = buckets::open_patiently("the row budget", || {
                RowBudget::open(
                    &js,
                    runtime.namespace(),
                    replicas,
                    config.rows.max_rows_per_import,
                )
            })
            .await?;
            let checkpoints = buckets::open_patiently("the file checkpoints", || {
                Checkpoints::open(&js, runtime.namespace(), replicas)
            })
            .await?;
            let (specs, files) = LevelFiles::open(
                &runtime,
                replicas,
                &config.rows,
                config.max_accounts_per_import,
            );
            let fetcher = fetcher
                .with_budget(budget)
                .with_checkpoints(checkpoints)
                .with_specs(specs, files);
            runtime.run_flat_map(fetcher).await
        },
    )
}
