//! One run of sluice end to end: the three services on their own sandbox,
//! timed from the first publish to the last completion, and checked.

use std::time::{Duration, Instant};

use sluice_devkit::{data::format_cents, Dataset, Deployment, Sandbox};

use crate::files::Files;
use sluice_messages::ImportStatus;
use sluice_operator::{consumers::wait_for_consumers, imports::wait_for_completion};

pub struct PipelineRun {
    pub rows: u64,
    pub elapsed: Duration,
    /// Peak RSS of importer, fetcher, saver, in KiB.
    pub rss: Vec<(String, u64)>,
    /// `deadlock detected` lines in the services' logs.
    pub deadlocks: usize,
    /// CPU time per program from publish to the last completion event.
    pub cpu: crate::cpu::CpuUse,
}

impl PipelineRun {
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// The three services (`replicas` of each, `per_message` rows per
/// message, quiet logs) in a sandbox of their own, once their consumers
/// exist.
pub async fn start_services(
    name: &str,
    per_message: u32,
    replicas: usize,
    extra_env: &[(&str, &str)],
) -> Result<(Sandbox, Deployment, async_nats::jetstream::Context), String> {
    let sandbox = Sandbox::create(name).await.map_err(|e| format!("{e:#}"))?;
    let per_message = per_message.to_string();
    let mut env = vec![
        ("SLUICE_TRANSACTIONS_PER_MESSAGE", per_message.as_str()),
        ("RUST_LOG", "warn"),
    ];
    env.extend_from_slice(extra_env);
    let mut deployment = Deployment::plan(&sandbox)
        .env(&env)
        .replicas(replicas)
        .start()
        .map_err(|e| format!("cannot start the services: {e}"))?;
    let js = async_nats::jetstream::new(sandbox.nats().await);
    // Kept until a measurement that used them succeeds: every error on the
    // way is one someone must read the logs of.
    deployment.keep_logs(true);
    wait_for_consumers(&js, &sandbox.namespace, Duration::from_secs(30))
        .await
        .map_err(|e| format!("{e}; see {}", deployment.log_dir.display()))?;
    Ok((sandbox, deployment, js))
}

/// The three services (`replicas` of each) on their own namespace and
/// database; one import per data set, all published at once, timed from the
/// first publish to the last completion event, and checked: every row
/// saved, the exact sum.
pub async fn run_pipeline(
    server: &Files,
    imports: &[(&Dataset, &str)],
    per_message: u32,
    replicas: usize,
    extra_env: &[(&str, &str)],
) -> Result<PipelineRun, String> {
    let (sandbox, mut deployment, js) =
        start_services("bench", per_message, replicas, extra_env).await?;
    crate::settle::settle(&sandbox.db().await).await?;
    let cpu_before = crate::cpu::Snapshot::take();
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
    let cpu = cpu_before.since();
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
            "wrong result: {count} rows summing to {sum}, expected {want_rows} summing to {want_sum} ({statuses:?}); service logs in {}",
            deployment.log_dir.display()
        ));
    }
    // A deadlock fails the report's check: its logs stay.
    deployment.keep_logs(deadlocks > 0);
    Ok(PipelineRun {
        rows: count as u64,
        elapsed,
        rss,
        deadlocks,
        cpu,
    })
}
