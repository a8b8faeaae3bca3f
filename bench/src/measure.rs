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
    pub upsert_time: Duration,
    pub parallel_upsert_time: Duration,
    pub upsert_rate: f64,
    pub naive_rate: f64,
    /// The asyncio script's time on the main run's rows.
    pub asyncio_time: Option<Duration>,
    pub main: PipelineRun,
    pub traced: Option<TracedRuns>,
    pub more: MoreRuns,
    pub nested: Option<NestedMeasured>,
    pub latency: Option<crate::latency::Latency>,
    /// What served the files.
    pub files: &'static str,
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
    pub replicated: Option<PipelineRun>,
    pub concurrent: Option<PipelineRun>,
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
    eprintln!("COPY into staging, then INSERT … ON CONFLICT DO NOTHING…");
    let upsert_time = baselines::idempotent_copy(&copy_rows).await?;
    drop(copy_rows);
    let upsert_rate = total as f64 / upsert_time.as_secs_f64();
    let asyncio_time = match args.asyncio_script {
        true => {
            eprintln!("the asyncio script (aiohttp, asyncpg: 16 downloads, 4 connections)…");
            Some(baselines::asyncio_script(&server, "/main", total).await?.1)
        }
        false => None,
    };

    eprintln!(
        "sluice, {} transactions per message…",
        args.transactions_per_message
    );
    let main = run_pipeline(
        &server,
        &[(&data, "/main")],
        args.transactions_per_message,
        1,
        &[],
    )
    .await?;
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

    let more = more_runs(args, &server, &data).await?;
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
        traced,
        more,
        nested,
    })
}

async fn more_runs(args: &Args, server: &Files, data: &Dataset) -> Result<MoreRuns, String> {
    let replicated = if args.replicas > 1 {
        eprintln!("sluice, {} replicas of every stage…", args.replicas);
        Some(
            run_pipeline(
                server,
                &[(data, "/main")],
                args.transactions_per_message,
                args.replicas,
                &[],
            )
            .await?,
        )
    } else {
        None
    };

    let concurrent = if args.imports > 1 {
        let per_import = (args.accounts / args.imports).max(1);
        let parts: Vec<(Dataset, String)> = (0..args.imports)
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
            .collect();
        eprintln!(
            "sluice, the same rows as {} concurrent imports…",
            args.imports
        );
        let imports: Vec<(&Dataset, &str)> = parts.iter().map(|(d, p)| (d, p.as_str())).collect();
        Some(run_pipeline(server, &imports, args.transactions_per_message, 1, &[]).await?)
    } else {
        None
    };

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

    Ok(MoreRuns {
        replicated,
        concurrent,
        seed,
        large,
    })
}
