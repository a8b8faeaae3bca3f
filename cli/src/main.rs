//! `sluice`: the operator's and newcomer's command.

// First, so that `outln!` is in scope in every module after it.
#[macro_use]
mod output;

mod api;
mod cancel;
mod dead_letters;
#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod explain;
mod import;
mod imports;
mod progress;
mod setup;
mod spec;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sluice imports nested CSV data into PostgreSQL as a pipeline of small
/// durable messages on NATS JetStream.
#[derive(Parser, Debug)]
#[command(name = "sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or update the streams and durable consumers (and the database if missing).
    Setup(setup::SetupArgs),
    /// Publish an import of an accounts CSV URL and print its id (`--wait`: and follow it).
    Import(import::ImportArgs),
    /// Each consumer's lag and dead letters, and the progress of imports.
    Status(status::StatusArgs),
    /// Cancel a running import: nothing more of it is saved, and its completion event says cancelled.
    Cancel(cancel::CancelArgs),
    /// List, show and replay what the stages could not process.
    #[command(name = "dead-letters")]
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Run a real import end to end on generated data and show the result.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Check NATS, JetStream, the topology, PostgreSQL and the schema; say how to fix what is wrong.
    Doctor(doctor::DoctorArgs),
    /// Store, list, show and remove import specs: your files and tables (docs/specs.md).
    Spec(spec::SpecArgs),
}

fn main() -> ExitCode {
    let cli: Cli = sluice_stage::config::parse("sluice");
    // Logs only when asked for: the commands' output is for people. Traces
    // whenever an OTLP endpoint is set; declared first, flushed last.
    let _telemetry =
        sluice_stage::telemetry::Telemetry::init("sluice", std::env::var_os("RUST_LOG").is_some());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Setup(args) => setup::run(args).await,
            Command::Import(args) => import::run(args).await,
            #[cfg(feature = "demo")]
            Command::Demo(args) => demo::run(args).await,
            Command::DeadLetters(args) => dead_letters::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Cancel(args) => cancel::run(args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Spec(args) => spec::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<progress::Interrupted>() => ExitCode::from(130),
        Err(e) => {
            // The whole chain, each cause once (many errors repeat their source).
            eprintln!("sluice: {}", sluice_stage::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
