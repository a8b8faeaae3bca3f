//! Every measurement of one run: the data set served over HTTP, warm-up, the
//! baselines, then sluice in the main mode and every other mode asked for.

use std::time::Duration;

use sluice_devkit::Dataset;

use crate::files::Files;

use crate::{
    baselines, nested,
    options::Args,
    pipeline::{run_pipeline, PipelineRun},
    traced::{traced_runs, TracedRuns},
};

/// Every figure of one run.
pub struct Measured {
    pub total: usize,
    pub naive_rows: u64,
    pub naive_time: Duration,
    pub copy_time: Duration,
    /// The idempotent COPY, every round.
    pub upsert_time: Rounds,
    pub parallel_upsert_time: Duration,
    /// Rows per second of the median idempotent COPY.
    pub upsert_rate: f64,
    pub naive_rate: f64,
    /// The asyncio script's time on the main run's rows, every round.
    pub asyncio_time: Option<Rounds>,
    /// The main run whose time is the median of its rounds.
    pub main: PipelineRun,
    /// The main run's time, every round.
    pub main_time: Rounds,
    pub traced: Option<TracedRuns>,
    pub more: MoreRuns,
    pub nested: Option<NestedMeasured>,
    pub latency: Option<crate::latency::Latency>,
    /// What served the files.
    pub files: &'static str,
}

/// The times of one measurement taken in `--rounds` rounds, in turn with
/// the others compared with it: on a busy machine one run of each can land
/// up to 20 % from the next, and the median of each is what they are
/// compared by.
pub struct Rounds(Vec<Duration>);

impl Rounds {
    /// The middle time; of an even count, the slower of the two middle ones.
    pub fn median(&self) -> Duration {
        let mut times = self.0.clone();
        times.sort();
        times[times.len() / 2]
    }

    /// `, median of 3 rounds: 2.02–2.24 s`, or nothing for one round.
    pub fn spread(&self) -> String {
        let (fastest, slowest) = (
            self.0.iter().min().expect("at least one round"),
            self.0.iter().max().expect("at least one round"),
        );
        match self.0.len() {
            1 => String::new(),
            n => format!(
                ", median of {n} rounds: {:.2}–{:.2} s",
                fastest.as_secs_f64(),
                slowest.as_secs_f64()
            ),
        }
    }
}

/// The nested mode's figures.
pub struct NestedMeasured {
    pub leaf_rows: u64,
    pub all_rows: u64,
    pub sluice: Duration,
    pub copy: Duration,
    /// The same rows written with semicolons, decimal commas and
    /// Windows-1252, end to end (`--dialect-bench`).
    pub european: Option<Duration>,
}

/// The runs besides the main one, each skipped when its flag says 0.
pub struct MoreRuns {
    /// Each with every round's time, as the main run.
    pub replicated: Option<(PipelineRun, Rounds)>,
    pub concurrent: Option<(PipelineRun, Rounds)>,
    pub seed: Option<PipelineRun>,
    pub large: Option<PipelineRun>,
}

/// Generates the data, warms the servers up, then measures the baselines
/// and sluice in every mode.
pub async fn measure(args: &Args) -> Result<Measured, String> {
    let total = args.accounts * args.transactions;
    eprintln!(
        "generating {} accounts x {} transactions…",
        args.accounts, args.transactions
    );
    let data = Dataset::generate_from(1_000, "/main", args.accounts, total, 7);
    let server = Files::start(&args.files).await?;
    server.add_dataset(&data);
    // Every figure below comes from warm servers: the first pipeline of a
    // run otherwise pays for cold caches and file-store allocation alone.
    eprintln!("warming up NATS and PostgreSQL…");
    let warm = Dataset::generate_from(1_000, "/warm-up", 50, 50 * args.transactions, 6);
    server.add_dataset(&warm);
    run_pipeline(
        &server,
        &[(&warm, "/warm-up")],
        args.transactions_per_message,
        1,
        &[],
    )
    .await?;
    let copy_rows = baselines::copy_data(&data);

    eprintln!("naive job on a {} row sample…", args.naive_sample);
    let (naive_rows, naive_time) =
        baselines::naive_job(&server, "/main", args.naive_sample).await?;
    let naive_rate = naive_rows as f64 / naive_time.as_secs_f64();
    eprintln!("COPY into a keyed table…");
    let copy_time = baselines::raw_copy(&copy_rows).await?;
    // The figures the targets compare, taken in turn round by round, so
    // that drift on a busy machine weighs on all of them alike.
    let parts = concurrent_parts(args, &server);
    let imports: Vec<(&Dataset, &str)> = parts.iter().map(|(d, p)| (d, p.as_str())).collect();
    let rounds = args.rounds;
    let (mut upserts, mut scripts) = (Vec::new(), Vec::new());
    let (mut mains, mut replicated, mut concurrent) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let step = |what: String| eprintln!("round {round} of {rounds}: {what}…");
        step("COPY into staging, then INSERT … ON CONFLICT DO NOTHING".into());
        upserts.push(baselines::idempotent_copy(&copy_rows).await?);
        if args.asyncio_script {
            step("the asyncio script (aiohttp, asyncpg: 16 downloads, 4 connections)".into());
            scripts.push(baselines::asyncio_script(&server, "/main", total).await?.1);
        }
        let per_message = args.transactions_per_message;
        step(format!("sluice, {per_message} transactions per message"));
        let main_import = [(&data, "/main")];
        mains.push(run_pipeline(&server, &main_import, per_message, 1, &[]).await?);
        if args.replicas > 1 {
            step(format!("sluice, {} replicas of every stage", args.replicas));
            let replicas = args.replicas;
            replicated.push(run_pipeline(&server, &main_import, per_message, replicas, &[]).await?);
        }
        if !imports.is_empty() {
            step(format!(
                "sluice, the same rows as {} concurrent imports",
                imports.len()
            ));
            concurrent.push(run_pipeline(&server, &imports, per_message, 1, &[]).await?);
        }
    }
    drop(copy_rows);
    let upsert_time = Rounds(upserts);
    let upsert_rate = total as f64 / upsert_time.median().as_secs_f64();
    let asyncio_time = (!scripts.is_empty()).then_some(Rounds(scripts));
    let (main, main_time) = median_run(mains).expect("at least one round");
    let traced = if args.traced {
        Some(traced_runs(&server, &data, args.transactions_per_message, &main).await?)
    } else {
        None
    };
    eprintln!(
        "COPY to staging + INSERT … ON CONFLICT, {} sessions at once…",
        args.copy_sessions
    );
    let parallel_upsert_time = {
        let rows = baselines::copy_data(&data);
        baselines::parallel_idempotent_copy(&rows, args.copy_sessions.max(1)).await?
    };

    let (seed, large) = seed_and_large_runs(args, &server).await?;
    let more = MoreRuns {
        replicated: median_run(replicated),
        concurrent: median_run(concurrent),
        seed,
        large,
    };
    let nested = if args.nested_rows > 0 {
        let data = nested::generate(args.nested_rows, nested::Dialect::Default);
        data.serve(&server);
        eprintln!(
            "nested: COPY to staging + INSERT … ON CONFLICT into a 3-level spec's tables, {} rows…",
            data.all_rows
        );
        let copy = nested::idempotent_copy(&data).await?;
        eprintln!(
            "sluice end to end, 3-level spec, {} order lines…",
            data.leaf_rows
        );
        let sluice = nested::run_nested(&server, &data, args.transactions_per_message).await?;
        let european = match args.dialect_bench {
            true => {
                let data = nested::generate(args.nested_rows, nested::Dialect::European);
                data.serve(&server);
                eprintln!(
                    "sluice end to end, the same rows with semicolons, decimal commas, Windows-1252…"
                );
                Some(nested::run_nested(&server, &data, args.transactions_per_message).await?)
            }
            false => None,
        };
        Some(NestedMeasured {
            leaf_rows: data.leaf_rows,
            all_rows: data.all_rows,
            sluice,
            copy,
            european,
        })
    } else {
        None
    };
    let latency = match args.small_imports {
        0 => None,
        n => {
            eprintln!("{n} small imports (2 accounts, 5 transactions), one after another…");
            Some(crate::latency::small_imports(&server, n).await?)
        }
    };
    Ok(Measured {
        files: server.name(),
        latency,
        total,
        naive_rows,
        naive_time,
        copy_time,
        upsert_time,
        parallel_upsert_time,
        upsert_rate,
        naive_rate,
        asyncio_time,
        main,
        main_time,
        traced,
        more,
        nested,
    })
}

/// The run of `runs` whose time is their median (its CPU use with it), and
/// all their times. What the checks hold every round to travels with it:
/// the `deadlock detected` lines of all rounds, and each service's highest
/// peak RSS in any round.
fn median_run(mut runs: Vec<PipelineRun>) -> Option<(PipelineRun, Rounds)> {
    if runs.is_empty() {
        return None;
    }
    let rounds = Rounds(runs.iter().map(|run| run.elapsed).collect());
    let median = rounds.median();
    let at = runs.iter().position(|run| run.elapsed == median)?;
    let mut picked = runs.swap_remove(at);
    for other in &runs {
        picked.deadlocks += other.deadlocks;
        for (service, kib) in &other.rss {
            match picked.rss.iter_mut().find(|(name, _)| name == service) {
                Some((_, peak)) => *peak = (*peak).max(*kib),
                None => picked.rss.push((service.clone(), *kib)),
            }
        }
    }
    Some((picked, rounds))
}

/// The main run's data set as `--imports` data sets of its size in all,
/// served; none unless `--imports` is over 1.
fn concurrent_parts(args: &Args, server: &Files) -> Vec<(Dataset, String)> {
    if args.imports <= 1 {
        return Vec::new();
    }
    let per_import = (args.accounts / args.imports).max(1);
    (0..args.imports)
        .map(|k| {
            let prefix = format!("/import-{k}");
            let part = Dataset::generate_from(
                100_000 + (k * per_import) as i64,
                &prefix,
                per_import,
                per_import * args.transactions,
                20 + k as u64,
            );
            server.add_dataset(&part);
            (part, prefix)
        })
        .collect()
}

/// The seed's one-transaction-per-message mode and the peak-RSS flatness
/// run, each skipped when its flag says 0.
async fn seed_and_large_runs(
    args: &Args,
    server: &Files,
) -> Result<(Option<PipelineRun>, Option<PipelineRun>), String> {
    let seed = if args.seed_mode_transactions > 0 {
        let accounts = (args.seed_mode_transactions / args.transactions.max(1)).max(1);
        let seed_data =
            Dataset::generate_from(1_000, "/seed", accounts, accounts * args.transactions, 8);
        server.add_dataset(&seed_data);
        eprintln!(
            "sluice, one transaction per message (the seed's design), {} transactions…",
            seed_data.expected.len()
        );
        Some(run_pipeline(server, &[(&seed_data, "/seed")], 1, 1, &[]).await?)
    } else {
        None
    };

    let large = if args.flat_check_accounts > 0 {
        let rows = args.flat_check_accounts * args.transactions;
        let large_data = Dataset::generate_from(1_000, "/large", args.flat_check_accounts, rows, 9);
        server.add_dataset(&large_data);
        eprintln!(
            "sluice, {} transactions per message, {} transactions, for peak RSS…",
            args.transactions_per_message, rows
        );
        Some(
            run_pipeline(
                server,
                &[(&large_data, "/large")],
                args.transactions_per_message,
                1,
                &[],
            )
            .await?,
        )
    } else {
        None
    };

    Ok((seed, large))
}
