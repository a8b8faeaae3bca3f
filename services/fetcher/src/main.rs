use std::process::ExitCode;

use clap::Parser;
use sluice_download::DownloadArgs;
use sluice_fetcher::Fetcher;
use sluice_stage::{
    buckets,
    row_budget::{RowBudget, DEFAULT_MAX_ROWS},
    run_service, FlatMap, Runtime, StageArgs,
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
    /// Transactions per published message; 1 reproduces one message per transaction.
    #[arg(long, env = "SLUICE_TRANSACTIONS_PER_MESSAGE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    transactions_per_message: u32,
    /// Most rows one import may produce across all its accounts; past it
    /// the account being read fails and so does every account of that
    /// import started afterwards (counted every 100,000 rows per account,
    /// so it may overshoot by that much per account in work).
    #[arg(long, env = "SLUICE_MAX_ROWS_PER_IMPORT", default_value_t = DEFAULT_MAX_ROWS,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_rows_per_import: u64,
}

fn main() -> ExitCode {
    let config: Config = sluice_stage::config::parse(Fetcher::NAME);
    run_service(
        Fetcher::NAME,
        &config.stage.observe.clone(),
        |stop| async move {
            let fetcher = Fetcher::new(
                &config.download.options(),
                config.transactions_per_message as usize,
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
                    config.max_rows_per_import,
                )
            })
            .await?;
            let fetcher = fetcher.with_budget(budget);
            runtime.run_flat_map(fetcher).await
        },
    )
}
