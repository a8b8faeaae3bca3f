use std::process::ExitCode;

use clap::Parser;
use sluice_download::DownloadArgs;
use sluice_importer::Importer;
use sluice_stage::{run_service, FlatMap, Runtime, StageArgs};

/// sluice importer: reads each accounts CSV published on `imports` and emits
/// one `account-updates` message per account.
#[derive(Parser, Debug)]
#[command(name = "importer", version)]
struct Config {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    download: DownloadArgs,
}

fn main() -> ExitCode {
    let config: Config = sluice_stage::config::parse(Importer::NAME);
    run_service(
        Importer::NAME,
        &config.stage.observe.clone(),
        |stop| async move {
            let importer = Importer::new(&config.download.options())?;
            Runtime::start(Importer::NAME, config.stage, stop)
                .await?
                .run_flat_map(importer)
                .await
        },
    )
}
