//! `just bench`: the real pipeline end to end on generated data, next to
//! what the same machine does without it, measured in the same run.

mod baselines;

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use sluice_devkit::{data::format_cents, Dataset, Deployment, FileServer, Sandbox};
use sluice_messages::ImportStatus;
use sluice_operator::{consumers::wait_for_consumers, imports::wait_for_completion};

#[derive(Parser, Debug)]
#[command(name = "sluice-bench")]
struct Args {
    /// Accounts in the generated data set.
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Transactions per account.
    #[arg(long, default_value_t = 1_000)]
    transactions: usize,
    /// Transactions per message in the main run.
    #[arg(long, default_value_t = 100)]
    transactions_per_message: u32,
    /// Transactions for the seed's literal mode (one per message); 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    seed_mode_transactions: usize,
    /// Also run the main mode on this many accounts (of the same size), to
    /// check that peak RSS stays flat as the input grows (0: skip).
    #[arg(long, default_value_t = 0)]
    flat_check_accounts: usize,
    /// Replicas of every stage for the scaling run (0 skips it).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// The main run's rows as this many concurrent imports (0 skips it).
    #[arg(long, default_value_t = 4)]
    imports: usize,
    /// PostgreSQL sessions of the parallel idempotent COPY baseline.
    #[arg(long, default_value_t = 2)]
    copy_sessions: usize,
    /// Rows the naive job inserts before its rate is extrapolated.
    #[arg(long, default_value_t = 10_000)]
    naive_sample: usize,
    /// Also time the main mode with every span exported (100% sampling) to
    /// a real Jaeger, which `just tools` builds, against the same without.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    traced: bool,
    /// Where the report is written ("-": nowhere).
    #[arg(long, default_value = "docs/benchmarks.md")]
    output: PathBuf,
}

struct PipelineRun {
    rows: u64,
    elapsed: Duration,
    /// Peak RSS of importer, fetcher, saver, in KiB.
    rss: Vec<(String, u64)>,
    /// `deadlock detected` lines in the services' logs.
    deadlocks: usize,
}

impl PipelineRun {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// The three services (`replicas` of each) on their own namespace and
/// database; one import per data set, all published at once, timed from the
/// first publish to the last completion event, and checked: every row
/// saved, the exact sum.
async fn run_pipeline(
    server: &FileServer,
    imports: &[(&Dataset, &str)],
    per_message: u32,
    replicas: usize,
    extra_env: &[(&str, &str)],
) -> Result<PipelineRun, String> {
    let sandbox = Sandbox::create("bench")
        .await
        .map_err(|e| format!("{e:#}"))?;
    let per_message = per_message.to_string();
    let mut env = vec![
        ("SLUICE_TRANSACTIONS_PER_MESSAGE", per_message.as_str()),
        ("RUST_LOG", "warn"),
    ];
    env.extend_from_slice(extra_env);
    let mut deployment = Deployment::start_replicas(&sandbox, &env, replicas.max(1))
        .map_err(|e| format!("cannot start the services: {e}"))?;
    let js = async_nats::jetstream::new(sandbox.nats().await);
    wait_for_consumers(&js, &sandbox.namespace, Duration::from_secs(30))
        .await
        .map_err(|e| format!("{e}; see {}", deployment.log_dir.display()))?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for (_, prefix) in imports {
        let ack = js
            .publish(
                sandbox.namespace.imports(),
                server.url(&format!("{prefix}/accounts.csv")).into(),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        ids.push(
            sluice_operator::imports::derived_import_id_at(&js, &sandbox.namespace, ack.sequence)
                .await
                .map_err(|e| sluice_stage::error_chain(&e))?,
        );
    }
    let mut statuses = Vec::new();
    for id in &ids {
        let event = tokio::time::timeout(
            Duration::from_secs(3_600),
            wait_for_completion(&js, &sandbox.namespace, id),
        )
        .await
        .map_err(|_| "an import did not complete within an hour".to_owned())?
        .map_err(|e| sluice_stage::error_chain(&e))?;
        statuses.push(event.status);
    }
    let elapsed = started.elapsed();
    let rss = deployment
        .services
        .iter()
        .take(3)
        .map(|p| (p.name.clone(), p.peak_rss_kib().unwrap_or(0)))
        .collect();
    deployment
        .stop(Duration::from_secs(30))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let deadlocks = deployment
        .services
        .iter()
        .map(|p| {
            std::fs::read_to_string(p.log_path())
                .unwrap_or_default()
                .matches("deadlock detected")
                .count()
        })
        .sum();

    let (count, sum): (i64, String) = {
        let db = sandbox.db().await;
        let row = db
            .query_one(
                "SELECT count(*), COALESCE(sum(amount), 0)::text FROM transactions",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        (row.get(0), row.get(1))
    };
    let want_rows: usize = imports.iter().map(|(d, _)| d.expected.len()).sum();
    let want_cents: i128 = imports.iter().map(|(d, _)| d.expected_sum_cents()).sum();
    let want_sum = format_cents(want_cents as i64);
    if statuses.iter().any(|s| *s != ImportStatus::Completed)
        || count as usize != want_rows
        || sum != want_sum
    {
        return Err(format!(
            "wrong result: {count} rows summing to {sum}, expected {want_rows} summing to {want_sum} ({statuses:?})"
        ));
    }
    Ok(PipelineRun {
        rows: count as u64,
        elapsed,
        rss,
        deadlocks,
    })
}

/// What tracing costs: the main mode twice with every span exported to a
/// real Jaeger and once more without, alternating with the main run so
/// that drift on a busy machine weighs on both sides alike.
struct TracedRuns {
    /// Rows per second with every span exported, and without.
    traced: f64,
    untraced: f64,
    /// Spans in the trace of one import of the data set.
    spans: usize,
}

async fn traced_runs(
    server: &FileServer,
    data: &Dataset,
    per_message: u32,
    main: &PipelineRun,
) -> Result<TracedRuns, String> {
    let jaeger = sluice_devkit::jaeger::Jaeger::start(
        std::path::Path::new(".local/bin/jaeger"),
        std::path::Path::new("deploy/local/jaeger/config.yaml"),
    )
    .map_err(|e| format!("{e:#}"))?;
    let endpoint = jaeger.otlp_endpoint();
    let traced_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ];
    let (mut traced, mut untraced) = (Vec::new(), vec![main.rate()]);
    for round in 0..2 {
        eprintln!(
            "sluice, every span exported to Jaeger (round {})…",
            round + 1
        );
        traced.push(
            run_pipeline(server, &[(data, "/main")], per_message, 1, &traced_env)
                .await?
                .rate(),
        );
        if round == 0 {
            eprintln!("sluice, untraced again…");
            untraced.push(
                run_pipeline(server, &[(data, "/main")], per_message, 1, &[])
                    .await?
                    .rate(),
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(TracedRuns {
        traced: mean(&traced),
        untraced: mean(&untraced),
        spans: spans_of_one_import(&jaeger).await?,
    })
}

/// The span count of the last trace the importer took part in.
async fn spans_of_one_import(jaeger: &sluice_devkit::jaeger::Jaeger) -> Result<usize, String> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", jaeger.query_url());
        async move {
            http.get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("Jaeger query failed: {e}"))?
                .bytes()
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
                })
        }
    };
    let recent = get("/api/traces?service=sluice-importer&limit=1".into()).await?;
    let id = recent["data"][0]["traceID"]
        .as_str()
        .ok_or("Jaeger holds no trace of the importer")?
        .to_owned();
    let trace = get(format!("/api/traces/{id}")).await?;
    Ok(trace["data"][0]["spans"].as_array().map_or(0, Vec::len))
}

fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_owned();
    let memory = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or("?".to_owned(), |kib| {
            format!("{:.0} GiB", kib as f64 / 1_048_576.0)
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cores} cores ({cpu}), {memory} RAM, Linux {}",
        read("/proc/sys/kernel/osrelease").trim()
    )
}

async fn versions() -> (String, String) {
    let nats = match async_nats::connect(sluice_devkit::sandbox::nats_url()).await {
        Ok(client) => client.server_info().version,
        Err(_) => "?".into(),
    };
    let pg = match Sandbox::create("bench-version").await {
        Ok(sandbox) => sandbox
            .db()
            .await
            .query_one("SHOW server_version", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .unwrap_or_default(),
        Err(_) => "?".into(),
    };
    (nats, pg)
}

/// A rate or count, rounded, with thousands separators.
fn group(n: f64) -> String {
    sluice_devkit::data::group(n.round() as i128)
}

async fn run(args: Args) -> Result<bool, String> {
    let measured = measure(&args).await?;
    let (nats_version, pg_version) = versions().await;
    let mut report = tables(&args, &measured);
    let checks = checks(&args, &measured);
    let _ = writeln!(report);
    for (text, ok) in &checks {
        let _ = writeln!(report, "- {} {text}", if *ok { "✅" } else { "❌" });
    }
    let context = format!(
        "{} accounts × {} transactions ({} rows), served by a local HTTP server; importer, fetcher, saver, NATS {nats_version} and PostgreSQL {pg_version} all on one machine: {}.",
        group(args.accounts as f64),
        group(args.transactions as f64),
        group(measured.total as f64),
        machine()
    );
    println!("\n{context}\n\n{report}");
    if args.output.as_os_str() != "-" {
        write_doc(&args.output, &context, &report, measured.naive_rows)?;
    }
    Ok(checks.iter().all(|(_, ok)| *ok))
}

/// Every figure of one run.
struct Measured {
    total: usize,
    naive_rows: u64,
    naive_time: Duration,
    copy_time: Duration,
    upsert_time: Duration,
    parallel_upsert_time: Duration,
    upsert_rate: f64,
    naive_rate: f64,
    main: PipelineRun,
    traced: Option<TracedRuns>,
    more: MoreRuns,
}

/// The runs besides the main one, each skipped when its flag says 0.
struct MoreRuns {
    replicated: Option<PipelineRun>,
    concurrent: Option<PipelineRun>,
    seed: Option<PipelineRun>,
    large: Option<PipelineRun>,
}

/// Generates the data, warms the servers up, then measures the baselines
/// and sluice in every mode.
async fn measure(args: &Args) -> Result<Measured, String> {
    let total = args.accounts * args.transactions;
    eprintln!(
        "generating {} accounts x {} transactions…",
        args.accounts, args.transactions
    );
    let data = Dataset::generate_from(1_000, "/main", args.accounts, total, 7);
    let server = FileServer::start().await.map_err(|e| e.to_string())?;
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
    Ok(Measured {
        total,
        naive_rows,
        naive_time,
        copy_time,
        upsert_time,
        parallel_upsert_time,
        upsert_rate,
        naive_rate,
        main,
        traced,
        more,
    })
}

async fn more_runs(args: &Args, server: &FileServer, data: &Dataset) -> Result<MoreRuns, String> {
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

/// The throughput and memory tables.
fn tables(args: &Args, measured: &Measured) -> String {
    let (main, more) = (&measured.main, &measured.more);
    let (total, upsert_rate, naive_rate) =
        (measured.total, measured.upsert_rate, measured.naive_rate);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "| measurement | rows | seconds | rows/s | × idempotent COPY | × naive job |"
    );
    let _ = writeln!(report, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut line = |name: &str, rows: f64, seconds: f64| {
        let rate = rows / seconds;
        let _ = writeln!(
            report,
            "| {name} | {} | {seconds:.2} | {} | {:.2} | {:.1} |",
            group(rows),
            group(rate),
            rate / upsert_rate,
            rate / naive_rate
        );
    };
    line(
        "naive job: one INSERT per row (sample, extrapolated)",
        measured.naive_rows as f64,
        measured.naive_time.as_secs_f64(),
    );
    line(
        "PostgreSQL COPY into a keyed table (raw limit)",
        total as f64,
        measured.copy_time.as_secs_f64(),
    );
    line(
        "COPY to staging + INSERT … ON CONFLICT DO NOTHING (idempotent limit)",
        total as f64,
        measured.upsert_time.as_secs_f64(),
    );
    line(
        &format!(
            "COPY to staging + INSERT … ON CONFLICT DO NOTHING, {} sessions in parallel",
            args.copy_sessions.max(1)
        ),
        total as f64,
        measured.parallel_upsert_time.as_secs_f64(),
    );
    line(
        &format!(
            "**sluice end to end, {} transactions/message**",
            args.transactions_per_message
        ),
        main.rows as f64,
        main.elapsed.as_secs_f64(),
    );
    if let Some(t) = &measured.traced {
        line(
            &format!(
                "sluice end to end, every span exported to Jaeger (mean of 2 runs; untraced, mean of 2: {} rows/s)",
                group(t.untraced)
            ),
            main.rows as f64,
            main.rows as f64 / t.traced,
        );
    }
    if let Some(run) = &more.replicated {
        line(
            &format!(
                "sluice end to end, {} replicas of every stage",
                args.replicas
            ),
            run.rows as f64,
            run.elapsed.as_secs_f64(),
        );
    }
    if let Some(run) = &more.concurrent {
        line(
            &format!(
                "sluice end to end, the same rows as {} concurrent imports",
                args.imports
            ),
            run.rows as f64,
            run.elapsed.as_secs_f64(),
        );
    }
    if let Some(seed) = &more.seed {
        line(
            "sluice end to end, 1 transaction/message (seed mode)",
            seed.rows as f64,
            seed.elapsed.as_secs_f64(),
        );
    }
    let _ = writeln!(report);
    let _ = writeln!(report, "| peak RSS (MiB) | importer | fetcher | saver |");
    let _ = writeln!(report, "| --- | ---: | ---: | ---: |");
    let large_name = more
        .large
        .as_ref()
        .map(|l| format!("main mode, {} rows", group(l.rows as f64)))
        .unwrap_or_default();
    for (name, run) in [
        (
            format!("main run, {} rows", group(main.rows as f64)),
            Some(main),
        ),
        ("seed mode".to_owned(), more.seed.as_ref()),
        (large_name, more.large.as_ref()),
    ] {
        if let Some(run) = run {
            let mib: Vec<String> = run
                .rss
                .iter()
                .map(|(_, kib)| format!("{:.1}", *kib as f64 / 1024.0))
                .collect();
            let _ = writeln!(report, "| {name} | {} |", mib.join(" | "));
        }
    }
    if let Some(large) = &more.large {
        let _ = writeln!(
            report,
            "\nsluice end to end on {} rows: {:.2} s, {} rows/s.",
            group(large.rows as f64),
            large.elapsed.as_secs_f64(),
            group(large.rate())
        );
    }

    report
}

/// The targets, each with its figure and whether it was met.
fn checks(args: &Args, measured: &Measured) -> Vec<(String, bool)> {
    let (main, more) = (&measured.main, &measured.more);
    let (upsert_rate, naive_rate) = (measured.upsert_rate, measured.naive_rate);
    let worst_rss = [Some(main), more.seed.as_ref(), more.large.as_ref()]
        .into_iter()
        .flatten()
        .flat_map(|run| run.rss.iter())
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(0);
    // Flat: no service grows by more than 10% from the main run to the large one.
    let growth = more.large.as_ref().map(|large| {
        main.rss
            .iter()
            .zip(&large.rss)
            .map(|((_, small), (_, big))| *big as f64 / (*small).max(1) as f64 - 1.0)
            .fold(f64::MIN, f64::max)
    });
    let deadlocks: usize = [
        Some(main),
        more.replicated.as_ref(),
        more.concurrent.as_ref(),
        more.seed.as_ref(),
        more.large.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|r| r.deadlocks)
    .sum();
    vec![
        (
            format!(
                "end to end ≥ 0.75 × idempotent COPY: {:.2}",
                main.rate() / upsert_rate
            ),
            main.rate() >= 0.75 * upsert_rate,
        ),
        (
            format!(
                "{} replicas per stage ≥ 0.8 × one replica: {}",
                args.replicas,
                more.replicated
                    .as_ref()
                    .map_or("not run".into(), |r| format!(
                        "{:.2}",
                        r.rate() / main.rate()
                    ))
            ),
            more.replicated
                .as_ref()
                .is_none_or(|r| r.rate() >= 0.8 * main.rate()),
        ),
        (
            format!(
                "{} concurrent imports ≥ 0.9 × one import: {}",
                args.imports,
                more.concurrent
                    .as_ref()
                    .map_or("not run".into(), |r| format!(
                        "{:.2}",
                        r.rate() / main.rate()
                    ))
            ),
            more.concurrent
                .as_ref()
                .is_none_or(|r| r.rate() >= 0.9 * main.rate()),
        ),
        (
            format!(
                "traced (100% of spans to Jaeger) ≥ 0.9 × untraced: {}",
                measured
                    .traced
                    .as_ref()
                    .map_or("not run".into(), |t| format!(
                        "{:.2} ({} spans in one import's trace)",
                        t.traced / t.untraced,
                        t.spans
                    ))
            ),
            measured
                .traced
                .as_ref()
                .is_none_or(|t| t.traced >= 0.9 * t.untraced),
        ),
        (
            format!("`deadlock detected` in the service logs: {deadlocks}"),
            deadlocks == 0,
        ),
        (
            format!(
                "end to end ≥ 30 × naive job: {:.1}",
                main.rate() / naive_rate
            ),
            main.rate() >= 30.0 * naive_rate,
        ),
        (
            format!(
                "seed mode ≥ 20,000 transactions/s: {}",
                more.seed
                    .as_ref()
                    .map_or("not run".into(), |s| group(s.rate()))
            ),
            more.seed.as_ref().is_none_or(|s| s.rate() >= 20_000.0),
        ),
        (
            format!(
                "peak RSS ≤ 64 MiB per service: {:.1} MiB",
                worst_rss as f64 / 1024.0
            ),
            worst_rss <= 64 * 1024,
        ),
        (
            format!(
                "peak RSS flat (within 10%) as rows grow: {}",
                growth.map_or("not measured (--flat-check-accounts)".into(), |g| {
                    format!("largest growth {:+.1}%", g * 100.0)
                })
            ),
            growth.is_none_or(|g| g <= 0.10),
        ),
    ]
}

fn write_doc(
    output: &std::path::Path,
    context: &str,
    report: &str,
    naive_rows: u64,
) -> Result<(), String> {
    let doc = format!(
        "# Benchmarks\n\nWritten by `just bench` (`target/release/sluice-bench`); every figure below comes from one run.\n\n{context}\n\n{report}\nThe naive job is the seed's: download the accounts file, then each transactions file, and insert each row with its own statement, in one loop; it runs on the first {} rows and its rate is extrapolated. COPY figures load the same rows from memory into an empty table keyed on `(account_id, id)`. sluice's time runs from publishing the import to its completion event, and the run fails unless every row is saved with the exact sum.\n",
        group(naive_rows as f64)
    );
    if let Some(dir) = output.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(output, doc).map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    eprintln!("written to {}", output.display());
    Ok(())
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
