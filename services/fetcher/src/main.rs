use std::process::ExitCode;

use clap::Parser;
use sluice_download::DownloadArgs;
use sluice_fetcher::Fetcher;
use sluice_stage::{run_service, FlatMap, Runtime, StageArgs};

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
            let runtime = Runtime::start(Fetcher::NAME, config.stage, stop).await?;
            fetcher.check_fits(runtime.max_payload())?;
            runtime.run_flat_map(fetcher).await
        },
    )
}
