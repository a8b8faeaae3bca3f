//! What operators and orchestrators read from a running service on
//! `SLUICE_METRICS_ADDR`: Prometheus metrics on `/metrics`, liveness on
//! `/healthz`, readiness on `/readyz`.
//!
//! Metrics are recorded through the `metrics` facade; with no address set
//! no recorder is installed and every update is a no-op.

pub(crate) mod events;
pub mod http;
pub mod misconfiguration;
pub mod repeats;
pub mod telemetry;

use std::{
    convert::Infallible,
    sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Whether a recorder is installed: work done only to feed metrics (reading
/// consumer info) is skipped when nobody reads them.
static METRICS_ON: AtomicBool = AtomicBool::new(false);

/// Whether metrics are being recorded (a listener was configured).
pub fn metrics_on() -> bool {
    METRICS_ON.load(Ordering::Relaxed)
}

/// How often each service reads its consumer's lag for the gauges.
const LAG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads `consumer`'s info every few seconds and publishes its lag as
/// gauges labelled with the consumer, until `stop`. The same figures as
/// `sluice status`, seen from every replica (take `max` across them).
pub(crate) async fn report_lag(
    mut consumer: async_nats::jetstream::consumer::PullConsumer,
    name: &'static str,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Ok(info) = consumer.info().await {
            let lag = crate::topology::Lag::of(info);
            metrics::gauge!(names::CONSUMER_PENDING, "consumer" => name).set(lag.pending as f64);
            metrics::gauge!(names::CONSUMER_ACK_PENDING, "consumer" => name)
                .set(lag.ack_pending as f64);
            metrics::gauge!(names::CONSUMER_REDELIVERED, "consumer" => name)
                .set(lag.redelivered as f64);
            metrics::gauge!(names::CONSUMER_LAG, "consumer" => name).set(lag.total() as f64);
        }
        tokio::select! {
            _ = tokio::time::sleep(LAG_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Metric names, in one place so dashboards, alerts and tests agree.
pub mod names {
    /// Input messages received (counter, by stage).
    pub const RECEIVED: &str = "sluice_messages_received_total";
    /// Input messages acknowledged (counter).
    pub const ACKED: &str = "sluice_messages_acked_total";
    /// Input messages handed back for a retry after a transient failure (counter).
    pub const RETRIED: &str = "sluice_messages_retried_total";
    /// Input messages handed back unfinished at a stop (counter).
    pub const RELEASED: &str = "sluice_messages_released_total";
    /// Messages dead-lettered (counter, by stage and kind).
    pub const DEAD_LETTERED: &str = "sluice_messages_dead_lettered_total";
    /// Output messages JetStream stored (counter).
    pub const PUBLISHED: &str = "sluice_messages_published_total";
    /// CSV rows dead-lettered as malformed (counter).
    pub const ROWS_REJECTED: &str = "sluice_rows_rejected_total";
    /// Time to process one input (histogram).
    pub const PROCESSING_SECONDS: &str = "sluice_processing_seconds";
    /// Inputs being worked on (gauge).
    pub const IN_FLIGHT: &str = "sluice_messages_in_flight";
    /// 1 when `/readyz` answers 200 (gauge).
    pub const READY: &str = "sluice_ready";
    /// Tasks waiting out an outage (gauge).
    pub const PAUSED: &str = "sluice_paused_tasks";
    /// Messages per saver batch (histogram).
    pub const BATCH_MESSAGES: &str = "sluice_batch_messages";
    /// Consumer messages not yet delivered (gauge, by consumer).
    pub const CONSUMER_PENDING: &str = "sluice_consumer_pending_messages";
    /// Consumer messages delivered and not acknowledged (gauge).
    pub const CONSUMER_ACK_PENDING: &str = "sluice_consumer_ack_pending_messages";
    /// Consumer messages on their second delivery or later (gauge).
    pub const CONSUMER_REDELIVERED: &str = "sluice_consumer_redelivered_messages";
    /// Consumer lag: pending plus awaiting acknowledgement (gauge).
    pub const CONSUMER_LAG: &str = "sluice_consumer_lag_messages";
    /// Bytes of publishes awaiting their ack (gauge).
    pub const PUBLISH_WINDOW_USED: &str = "sluice_publish_window_used_bytes";
    /// Bytes per saver batch (histogram).
    pub const BATCH_BYTES: &str = "sluice_batch_bytes";
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The process's view of what it depends on, for `/readyz`.
pub struct Health {
    nats_connected: AtomicBool,
    consumer_bound: AtomicBool,
    draining: AtomicBool,
    /// A sink's destination (the saver's PostgreSQL); unknown for stages
    /// that have none.
    destination: AtomicU8,
    /// Tasks holding their messages while waiting out an outage.
    paused: AtomicUsize,
}

/// While alive, the process counts as paused for an outage.
pub struct Paused(());

impl Drop for Paused {
    fn drop(&mut self) {
        HEALTH.paused.fetch_sub(1, Ordering::Relaxed);
        HEALTH.publish();
    }
}

/// One process runs one service: its health is process-wide.
pub static HEALTH: Health = Health {
    nats_connected: AtomicBool::new(false),
    consumer_bound: AtomicBool::new(false),
    draining: AtomicBool::new(false),
    destination: AtomicU8::new(UNKNOWN),
    paused: AtomicUsize::new(0),
};

impl Health {
    /// Says whether the NATS connection is up.
    pub fn set_nats_connected(&self, connected: bool) {
        self.nats_connected.store(connected, Ordering::Relaxed);
        self.publish();
    }

    /// Says the durable consumer is declared and bound.
    pub fn set_consumer_bound(&self) {
        self.consumer_bound.store(true, Ordering::Relaxed);
        self.publish();
    }

    /// For a process that consumes no stream (the console): readiness
    /// waits for NATS only.
    pub fn set_no_consumer(&self) {
        self.set_consumer_bound();
    }

    /// After SIGTERM: no new work, so no new traffic should be routed here.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.publish();
    }

    /// Says whether the sink's destination (the saver's database) answers.
    pub fn set_destination_reachable(&self, reachable: bool) {
        self.destination
            .store(if reachable { UP } else { DOWN }, Ordering::Relaxed);
        self.publish();
    }

    /// Marks the process paused until the returned guard is dropped.
    pub fn pause(&'static self) -> Paused {
        self.paused.fetch_add(1, Ordering::Relaxed);
        self.publish();
        Paused(())
    }

    /// Ready, or every reason why not.
    pub fn readiness(&self) -> Result<(), Vec<&'static str>> {
        let mut reasons = Vec::new();
        if self.draining.load(Ordering::Relaxed) {
            reasons.push("draining after a shutdown request");
        }
        if !self.nats_connected.load(Ordering::Relaxed) {
            reasons.push("not connected to NATS");
        }
        if !self.consumer_bound.load(Ordering::Relaxed) {
            reasons.push("durable consumer not bound yet");
        }
        if self.destination.load(Ordering::Relaxed) == DOWN {
            reasons.push("cannot reach the database");
        }
        if self.paused.load(Ordering::Relaxed) > 0 {
            reasons.push("paused: waiting out an outage");
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    fn publish(&self) {
        metrics::gauge!(names::READY).set(if self.readiness().is_ok() { 1.0 } else { 0.0 });
        metrics::gauge!(names::PAUSED).set(self.paused.load(Ordering::Relaxed) as f64);
    }
}

/// Installs the Prometheus recorder and serves the endpoints in the
/// background. A taken port is a configuration error, reported at once.
pub async fn serve(args: &crate::config::ObserveArgs) -> Result<(), crate::StageError> {
    let Some(addr) = args.metrics_addr else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::StageError::caused_by(crate::Fault::Permanent, e)
            .context(&format!("cannot listen on SLUICE_METRICS_ADDR {addr}"))
    })?;
    METRICS_ON.store(true, Ordering::Relaxed);
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(names::BATCH_MESSAGES.into()),
                &[1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0],
            )
        })
        .and_then(|b| {
            // The saver's pull bound is max payload + 64 KiB: 1,114,112 for
            // NATS' default 1 MiB.
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(names::BATCH_BYTES.into()),
                &[
                    1024.0, 16384.0, 65536.0, 262144.0, 1048576.0, 1114112.0, 4194304.0, 8388608.0,
                    33554432.0,
                ],
            )
        })
        .and_then(|b| b.install_recorder())
        .map_err(|e| {
            crate::StageError::caused_by(crate::Fault::Permanent, e)
                .context("cannot install the metrics recorder")
        })?;
    describe();
    HEALTH.publish();
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(http::accept(listener, LIMITS, "metrics", move |request| {
        respond(request, handle.clone())
    }));
    Ok(())
}

/// Scrapers and probes need a handful of connections, each short.
const LIMITS: http::Limits = http::Limits {
    max_connections: 64,
    header_timeout: std::time::Duration::from_secs(5),
    lifetime: std::time::Duration::from_secs(60),
};

async fn respond(
    request: Request<Incoming>,
    metrics: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match HEALTH.readiness() {
            Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Err(reasons) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {}\n", reasons.join("; ")),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid"))
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        names::RECEIVED,
        "Input messages delivered to this replica, by stage."
    );
    describe_counter!(
        names::ACKED,
        "Input messages acknowledged after their outputs were stored."
    );
    describe_counter!(
        names::RETRIED,
        "Input messages handed back for a retry after a transient failure."
    );
    describe_counter!(
        names::RELEASED,
        "Input messages handed back unfinished because the replica is stopping."
    );
    describe_counter!(
        names::DEAD_LETTERED,
        "Input messages dead-lettered, by stage and kind."
    );
    describe_counter!(
        names::PUBLISHED,
        "Output messages stored by JetStream (duplicates included), by stage."
    );
    describe_counter!(
        names::ROWS_REJECTED,
        "Malformed CSV rows reported as dead letters, by stage."
    );
    describe_histogram!(
        names::PROCESSING_SECONDS,
        Unit::Seconds,
        "Time from delivery to settling one input message (saver: one batch)."
    );
    describe_histogram!(
        names::BATCH_MESSAGES,
        Unit::Count,
        "Input messages in one sink batch (the saver's writes)."
    );
    describe_histogram!(
        names::BATCH_BYTES,
        Unit::Bytes,
        "Payload bytes in one sink batch (the saver's writes)."
    );
    describe_gauge!(
        names::IN_FLIGHT,
        "Input messages this replica is working on."
    );
    describe_gauge!(names::READY, "1 when /readyz answers 200.");
    describe_gauge!(
        names::CONSUMER_PENDING,
        "Messages the consumer has not delivered yet, read every 5 s."
    );
    describe_gauge!(
        names::CONSUMER_ACK_PENDING,
        "Messages delivered to the consumer's replicas and not acknowledged yet."
    );
    describe_gauge!(
        names::CONSUMER_REDELIVERED,
        "Unacknowledged messages on their second delivery or later."
    );
    describe_gauge!(
        names::CONSUMER_LAG,
        "pending + ack pending + redelivered, as `sluice status` shows it."
    );
    describe_gauge!(
        names::PUBLISH_WINDOW_USED,
        "Bytes of published messages awaiting JetStream's ack in this replica (SLUICE_PUBLISH_WINDOW bounds it)."
    );
    describe_gauge!(
        names::PAUSED,
        "Tasks holding their messages while a dependency is down."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_every_reason() {
        let health = Health {
            nats_connected: AtomicBool::new(false),
            consumer_bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            destination: AtomicU8::new(UNKNOWN),
            paused: AtomicUsize::new(0),
        };
        assert_eq!(
            health.readiness(),
            Err(vec![
                "not connected to NATS",
                "durable consumer not bound yet"
            ])
        );
        health.set_nats_connected(true);
        health.set_consumer_bound();
        assert_eq!(health.readiness(), Ok(()));
        health.set_destination_reachable(false);
        assert_eq!(health.readiness(), Err(vec!["cannot reach the database"]));
        health.set_destination_reachable(true);
        health.set_draining();
        assert_eq!(
            health.readiness(),
            Err(vec!["draining after a shutdown request"])
        );
    }
}
