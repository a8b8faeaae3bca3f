//! The report of one run: the throughput and memory tables, the targets
//! each met or missed, printed and written as markdown to `--output`.

use std::fmt::Write as _;

use crate::{
    machine::{machine, versions},
    measure::Measured,
    options::Args,
    pipeline::PipelineRun,
};

/// Prints the report of `measured` and, unless `--output -`, writes it to
/// `--output`; whether every target was met.
pub async fn publish(args: &Args, measured: &Measured) -> Result<bool, String> {
    let (nats_version, pg_version) = versions().await;
    let mut report = tables(args, measured);
    let checks = checks(args, measured);
    let _ = writeln!(report);
    for (text, ok) in &checks {
        let _ = writeln!(report, "- {} {text}", if *ok { "✅" } else { "❌" });
    }
    let context = format!(
        "{} accounts × {} transactions ({} rows), served by {} on this machine, all with default settings; importer, fetcher, saver, NATS {nats_version} and PostgreSQL {pg_version} all on one machine: {}.",
        group(args.accounts as f64),
        group(args.transactions as f64),
        group(measured.total as f64),
        measured.files,
        machine()
    );
    println!("\n{context}\n\n{report}");
    if args.output.as_os_str() != "-" {
        write_doc(&args.output, &context, &report, measured.naive_rows)?;
    }
    Ok(checks.iter().all(|(_, ok)| *ok))
}

/// A rate or count, rounded, with thousands separators.
fn group(n: f64) -> String {
    sluice_devkit::data::group(n.round() as i128)
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
        &format!(
            "COPY to staging + INSERT … ON CONFLICT DO NOTHING (idempotent limit){}",
            measured.upsert_time.spread()
        ),
        total as f64,
        measured.upsert_time.median().as_secs_f64(),
    );
    line(
        &format!(
            "COPY to staging + INSERT … ON CONFLICT DO NOTHING, {} sessions in parallel",
            args.copy_sessions.max(1)
        ),
        total as f64,
        measured.parallel_upsert_time.as_secs_f64(),
    );
    if let Some(time) = &measured.asyncio_time {
        line(
            &format!(
                "the asyncio script a user would write (aiohttp, asyncpg: 16 downloads, 4 COPY → upsert connections; not crash-safe){}",
                time.spread()
            ),
            total as f64,
            time.median().as_secs_f64(),
        );
    }
    line(
        &format!(
            "**sluice end to end, {} transactions/message**{}",
            args.transactions_per_message,
            measured.main_time.spread()
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
    if let Some((run, rounds)) = &more.replicated {
        line(
            &format!(
                "sluice end to end, {} replicas of every stage{}",
                args.replicas,
                rounds.spread()
            ),
            run.rows as f64,
            run.elapsed.as_secs_f64(),
        );
    }
    if let Some((run, rounds)) = &more.concurrent {
        line(
            &format!(
                "sluice end to end, the same rows as {} concurrent imports{}",
                args.imports,
                rounds.spread()
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
    cpu_table(&mut report, main, more.seed.as_ref());
    if let Some(n) = &measured.nested {
        let _ = writeln!(report);
        let _ = writeln!(
            report,
            "| 3-level spec: customers → orders → order lines (10 columns at the leaf) | rows (all levels) | order lines | seconds | order lines/s | × idempotent COPY |"
        );
        let _ = writeln!(report, "| --- | ---: | ---: | ---: | ---: | ---: |");
        let copy_rate = n.leaf_rows as f64 / n.copy.as_secs_f64();
        for (name, took) in [
            (
                "COPY to staging + INSERT … ON CONFLICT DO NOTHING into the same tables, one session",
                Some(n.copy),
            ),
            ("**sluice end to end, `--spec`**", Some(n.sluice)),
            (
                "sluice end to end, the same rows with `;`, decimal commas, Windows-1252",
                n.european,
            ),
        ]
        .into_iter()
        .filter_map(|(name, took)| Some((name, took?)))
        {
            let rate = n.leaf_rows as f64 / took.as_secs_f64();
            let _ = writeln!(
                report,
                "| {name} | {} | {} | {:.2} | {} | {:.2} |",
                group(n.all_rows as f64),
                group(n.leaf_rows as f64),
                took.as_secs_f64(),
                group(rate),
                rate / copy_rate
            );
        }
    }
    if let Some(l) = &measured.latency {
        let _ = writeln!(
            report,
            "\nA small import (2 accounts, 5 transactions) against warm services, {} one after another, from publish to completion event: median {:.1} ms, p99 {:.1} ms.",
            l.imports,
            l.median.as_secs_f64() * 1e3,
            l.p99.as_secs_f64() * 1e3
        );
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
        more.replicated.as_ref().map(|(run, _)| run),
        more.concurrent.as_ref().map(|(run, _)| run),
        more.seed.as_ref(),
        more.large.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|r| r.deadlocks)
    .sum();
    // A run's rate as a share of the main run's, held to `target` (a run
    // not made passes, and says so).
    let against_main = |label: String, run: Option<&PipelineRun>, target: f64| {
        let shown = run.map_or("not run".into(), |r| {
            format!("{:.2}", r.rate() / main.rate())
        });
        (
            format!("{label}: {shown}"),
            run.is_none_or(|r| r.rate() >= target * main.rate()),
        )
    };
    vec![
        (
            format!(
                "end to end ≥ 0.9 × idempotent COPY: {:.2}",
                main.rate() / upsert_rate
            ),
            main.rate() >= 0.9 * upsert_rate,
        ),
        {
            let script_rate = measured
                .asyncio_time
                .as_ref()
                .map(|t| measured.total as f64 / t.median().as_secs_f64());
            (
                format!(
                    "end to end ≥ 1.5 × the asyncio script: {}",
                    script_rate.map_or("not run".into(), |r| format!("{:.2}", main.rate() / r))
                ),
                script_rate.is_none_or(|r| main.rate() >= 1.5 * r),
            )
        },
        against_main(
            format!("{} replicas per stage ≥ 0.8 × one replica", args.replicas),
            more.replicated.as_ref().map(|(run, _)| run),
            0.8,
        ),
        against_main(
            format!("{} concurrent imports ≥ 0.9 × one import", args.imports),
            more.concurrent.as_ref().map(|(run, _)| run),
            0.9,
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
        {
            // Same rows, same run: time in the default dialect over time in
            // the European one is the European rate as a share.
            let share = measured
                .nested
                .as_ref()
                .and_then(|n| n.european.map(|e| n.sluice.as_secs_f64() / e.as_secs_f64()));
            (
                format!(
                    "`;`, decimal commas, Windows-1252 ≥ 0.9 × the default dialect: {}",
                    share.map_or("not run".into(), |s| format!("{s:.2}"))
                ),
                share.is_none_or(|s| s >= 0.9),
            )
        },
        (
            format!(
                "a small import's median latency ≤ 50 ms: {}",
                measured
                    .latency
                    .as_ref()
                    .map_or("not run".into(), |l| format!(
                        "{:.1} ms (p99 {:.1} ms)",
                        l.median.as_secs_f64() * 1e3,
                        l.p99.as_secs_f64() * 1e3
                    ))
            ),
            measured
                .latency
                .as_ref()
                .is_none_or(|l| l.median <= std::time::Duration::from_millis(50)),
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
                "seed mode ≥ 50,000 transactions/s: {}",
                more.seed
                    .as_ref()
                    .map_or("not run".into(), |s| group(s.rate()))
            ),
            more.seed.as_ref().is_none_or(|s| s.rate() >= 50_000.0),
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
        "# Benchmarks\n\nWritten by `just bench` (`target/release/sluice-bench`); every figure below comes from one `just bench` run.\n\n{context}\n\n{report}\nThe naive job is the seed's: download the accounts file, then each transactions file, and insert each row with its own statement, in one loop; it runs on the first {} rows and its rate is extrapolated. COPY figures load the same rows from memory into an empty table keyed on `(account_id, id)`. sluice's time runs from publishing the import to its completion event, and the run fails unless every row is saved with the exact sum. A row that gives the median of some rounds was measured that many times, in turn with the other such rows (the CPU table is the median main run's; peak RSS is the highest of any round, and the `deadlock detected` lines are counted over all rounds). The 3-level spec's files are served once as RFC 4180 in UTF-8 and once as European spreadsheets export them (semicolons, decimal commas in totals and prices, Windows-1252 text with umlauts and `€`), read with the same spec plus a `csv` table per level: the same rows, checked the same way.\n",
        group(naive_rows as f64)
    );
    if let Some(dir) = output.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(output, doc).map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    eprintln!("written to {}", output.display());
    Ok(())
}

/// Where the CPU went in the main run (and seed mode): seconds per program,
/// and per million rows, against the machine's cores × wall time.
fn cpu_table(report: &mut String, main: &PipelineRun, seed: Option<&PipelineRun>) {
    for (name, run) in [("main run", Some(main)), ("seed mode", seed)] {
        let Some(run) = run else { continue };
        let cpu = &run.cpu;
        if cpu.programs.is_empty() {
            continue;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let _ = writeln!(report);
        let _ = writeln!(
            report,
            "| CPU, {name} ({} rows, {:.2} s × {cores} cores = {:.2} core-seconds; busy {:.2}) | seconds | per million rows | share of busy |",
            group(run.rows as f64),
            cpu.wall,
            cpu.wall * cores,
            cpu.machine
        );
        let _ = writeln!(report, "| --- | ---: | ---: | ---: |");
        let per_million = 1e6 / run.rows.max(1) as f64;
        let counted: f64 = cpu.programs.iter().take(8).map(|(_, s)| s).sum();
        let rest = (cpu.machine - counted).max(0.0);
        for (program, seconds) in cpu
            .programs
            .iter()
            .take(8)
            .map(|(p, s)| (p.as_str(), *s))
            .chain(std::iter::once(("other (and processes that ended)", rest)))
        {
            let _ = writeln!(
                report,
                "| {program} | {seconds:.2} | {:.2} | {:.0}% |",
                seconds * per_million,
                100.0 * seconds / cpu.machine.max(0.01)
            );
        }
    }
}
