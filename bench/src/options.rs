//! The command-line options of `sluice-bench`: the size of the data set and
//! which runs to make, each with its default.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "sluice-bench")]
pub struct Args {
    /// Accounts in the generated data set.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Transactions per account.
    #[arg(long, default_value_t = 1_000)]
    pub transactions: usize,
    /// Transactions per message in the main run (the services' default).
    #[arg(long, default_value_t = sluice_messages::windows::DEFAULT_ROWS_PER_WINDOW)]
    pub transactions_per_message: u32,
    /// Transactions for the seed's literal mode (one per message); 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    pub seed_mode_transactions: usize,
    /// Also run the main mode on this many accounts (of the same size), to
    /// check that peak RSS stays flat as the input grows (0: skip).
    #[arg(long, default_value_t = 0)]
    pub flat_check_accounts: usize,
    /// Replicas of every stage for the scaling run (0 skips it).
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// The main run's rows as this many concurrent imports (0 skips it).
    #[arg(long, default_value_t = 4)]
    pub imports: usize,
    /// PostgreSQL sessions of the parallel idempotent COPY baseline.
    #[arg(long, default_value_t = 2)]
    pub copy_sessions: usize,
    /// Also time the asyncio script a user would write instead
    /// (`bench/asyncio_import.py`; aiohttp and asyncpg, which `just bench`
    /// installs) on the main run's files.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub asyncio_script: bool,
    /// Rows the naive job inserts before its rate is extrapolated.
    #[arg(long, default_value_t = 10_000)]
    pub naive_sample: usize,
    /// Rounds of the idempotent COPY, the asyncio script, sluice's main run
    /// and its runs with replicas and with concurrent imports, taken in
    /// turn; each is reported as its median (of an even count, the slower
    /// middle round).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// Also time the main mode with every span exported (100% sampling) to
    /// a real Jaeger, which `just tools` builds, against the same without.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub traced: bool,
    /// Order lines for the nested mode: a 3-level spec (customers → orders
    /// → order lines, 10 columns of mixed types at the leaf) end to end,
    /// beside an idempotent COPY into the same tables (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub nested_rows: usize,
    /// Also run the nested mode's rows written as European spreadsheets
    /// export them (semicolons, decimal commas, Windows-1252), beside the
    /// default dialect.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub dialect_bench: bool,
    /// Small imports (2 accounts, 5 transactions) timed one after another
    /// against warm services, from publish to completion event (0 skips).
    #[arg(long, default_value_t = 20)]
    pub small_imports: usize,
    /// What serves the files: `python` (Python's http.server, an ordinary
    /// server, as users' files are served) or `builtin` (the test suite's
    /// Rust server).
    #[arg(long, default_value = "python", value_parser = ["python", "builtin"])]
    pub files: String,
    /// Where the report is written ("-": nowhere).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub output: PathBuf,
}
