//! `just bench`: the real pipeline end to end on generated data, next to
//! what the same machine does without it, measured in the same run.

mod baselines;
mod cpu;
mod files;
mod latency;
mod machine;
mod measure;
mod nested;
mod options;
mod pipeline;
mod report;
mod settle;
mod traced;

use std::process::ExitCode;

use clap::Parser;

use crate::options::Args;

async fn run(args: Args) -> Result<bool, String> {
    let measured = measure::measure(&args).await?;
    report::publish(&args, &measured).await
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("sluice-bench: some targets were missed (see the ❌ lines)");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
