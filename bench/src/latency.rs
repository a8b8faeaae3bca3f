//! Small-import latency: imports of 2 accounts and 5 transactions, one at a
//! time against warm services, each timed from its publish to its
//! completion event.

use std::time::{Duration, Instant};

use sluice_devkit::Dataset;

use crate::files::Files;
use sluice_operator::imports::{derived_import_id_at, wait_for_completion};

/// Median and 99th percentile of the small imports' latencies.
pub struct Latency {
    pub imports: usize,
    pub median: Duration,
    pub p99: Duration,
}

/// `imports` small imports one after another (each a fresh file, so none
/// is a repeat of another), after one that warms the services up.
pub async fn small_imports(server: &Files, imports: usize) -> Result<Latency, String> {
    let (sandbox, mut deployment, js) =
        crate::pipeline::start_services("bench-latency", 100, 1, &[]).await?;
    crate::settle::settle(&sandbox.db().await).await?;
    let mut took = Vec::with_capacity(imports);
    for n in 0..=imports {
        let prefix = format!("/small-{n}");
        let data = Dataset::generate_from(1 + 10 * n as i64, &prefix, 2, 5, n as u64);
        server.add_dataset(&data);
        let url = server.url(&format!("{prefix}/accounts.csv"));
        let started = Instant::now();
        let ack = js
            .publish(sandbox.namespace.imports(), url.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let id = derived_import_id_at(&js, &sandbox.namespace, ack.sequence)
            .await
            .map_err(|e| sluice_stage::error_chain(&e))?;
        let event = tokio::time::timeout(
            Duration::from_secs(60),
            wait_for_completion(&js, &sandbox.namespace, &id),
        )
        .await
        .map_err(|_| format!("small import {id} did not complete within a minute"))?
        .map_err(|e| sluice_stage::error_chain(&e))?;
        if event.transactions_saved != data.expected.len() as u64 {
            return Err(format!("small import {id}: {event:?}"));
        }
        // The first warms the services (connections, prepared statements).
        if n > 0 {
            took.push(started.elapsed());
        }
    }
    deployment
        .stop(Duration::from_secs(30))
        .await
        .map_err(|e| format!("{e:#}"))?;
    deployment.keep_logs(false);
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    Ok(Latency {
        imports,
        median: at(0.5),
        p99: at(0.99),
    })
}
