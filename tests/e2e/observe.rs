//! Metrics and probes as Prometheus and Kubernetes read them: each service
//! on its own `SLUICE_METRICS_ADDR`, scraped during a known import and
//! parsed by a second implementation (Python's `prometheus_client`).

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;
use sluice_devkit::Sandbox;
use sluice_e2e::{free_port, get, local_setting, wait_until, Dataset, Pipeline};

/// Every sample as `name{label="value",…}` → value, by the reference parser.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let python =
        local_setting("SLUICE_TEST_PYTHON").expect("`just tools` records the venv's python");
    let script = r##"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
        out.setdefault("__types__", {})[family.name] = family.type
print(json.dumps(out))
"##;
    let out = run_with_input(&python, &["-c", script], text);
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition:\n{text}"
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let types = parsed["__types__"].clone();
    for (family, kind) in types.as_object().into_iter().flatten() {
        let expected = if family.starts_with("sluice_download_host_") {
            "gauge"
        } else if family.ends_with("_seconds")
            || family == "sluice_batch_bytes"
            || family == "sluice_batch_messages"
        {
            "histogram"
        } else if family.starts_with("sluice_messages_in_flight")
            || family == "sluice_ready"
            || family == "sluice_paused_tasks"
            || family.starts_with("sluice_consumer_")
            || family == "sluice_publish_window_used_bytes"
        {
            "gauge"
        } else {
            "counter"
        };
        assert_eq!(kind, expected, "type of {family}");
    }
    parsed
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
        .collect()
}

/// Runs `program args…` with `input` on its standard input.
fn run_with_input(program: &str, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .expect("input written");
    child.wait_with_output().expect("output")
}

/// `promtool check metrics` on a scrape: Prometheus' own linter for names,
/// units, types and help texts.
fn promtool_accepts(text: &str) {
    let promtool = local_setting("SLUICE_TEST_PROMTOOL").expect("`just tools` records promtool");
    let out = run_with_input(&promtool, &["check", "metrics"], text);
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sample(metrics: &BTreeMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_a_known_import_and_readyz_fails_on_sigterm() {
    let ports: BTreeMap<&str, u16> = sluice_e2e::SERVICES
        .iter()
        .map(|s| (*s, free_port()))
        .collect();
    let sandbox = Sandbox::new("observe").await;
    let mut p = Pipeline::in_sandbox(sandbox)
        .env(&[("SLUICE_TRANSACTIONS_PER_MESSAGE", "100")])
        .per_replica(|name| {
            vec![(
                "SLUICE_METRICS_ADDR".into(),
                format!("127.0.0.1:{}", ports[name]),
            )]
        })
        .start()
        .await;
    for (name, port) in &ports {
        wait_until(
            Duration::from_secs(20),
            &format!("{name} ready"),
            || async { get(*port, "/readyz").await.is_some_and(|(s, _)| s == 200) },
        )
        .await;
        assert_eq!(get(*port, "/healthz").await, Some((200, "ok\n".into())));
        assert_eq!(get(*port, "/nope").await.map(|r| r.0), Some(404));
    }

    // 4 accounts of 250 rows: 3 messages of at most 100 rows each.
    let data = Dataset::generate(4, 1_000, 3);
    p.server.add_dataset(&data);
    let id = p.import(&p.server.url("/accounts.csv")).await.to_string();
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;
    p.completion(&id, Duration::from_secs(30)).await;

    for port in ports.values() {
        promtool_accepts(&get(*port, "/metrics").await.unwrap().1);
    }
    let importer = parse_metrics(&get(ports["importer"], "/metrics").await.unwrap().1);
    assert_eq!(
        sample(
            &importer,
            r#"sluice_messages_received_total{stage="importer"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &importer,
            r#"sluice_messages_acked_total{stage="importer"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &importer,
            r#"sluice_processing_seconds_count{stage="importer"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&importer, r#"sluice_messages_in_flight{stage="importer"}"#),
        0.0
    );
    assert_eq!(sample(&importer, "sluice_ready{}"), 1.0);

    let fetcher = parse_metrics(&get(ports["fetcher"], "/metrics").await.unwrap().1);
    assert_eq!(
        sample(
            &fetcher,
            r#"sluice_messages_received_total{stage="fetcher"}"#
        ),
        4.0
    );
    assert_eq!(
        sample(&fetcher, r#"sluice_messages_acked_total{stage="fetcher"}"#),
        4.0
    );
    let dead: f64 = fetcher
        .iter()
        .filter(|(k, _)| k.starts_with("sluice_messages_dead_lettered_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(dead, 0.0);

    let saver = parse_metrics(&get(ports["saver"], "/metrics").await.unwrap().1);
    assert_eq!(
        sample(&saver, r#"sluice_messages_acked_total{stage="saver"}"#),
        12.0
    );
    assert_eq!(
        sample(&saver, r#"sluice_messages_received_total{stage="saver"}"#),
        12.0
    );
    assert_eq!(sample(&saver, "sluice_ready{}"), 1.0);
    eprintln!("fetcher metrics: {fetcher:#?}");
    assert_eq!(
        sample(
            &fetcher,
            r#"sluice_messages_published_total{stage="fetcher"}"#
        ),
        12.0 + 4.0,
        "12 transaction messages and one `fetched` fact per account"
    );
    // Everything published was acked: none of the window is in use.
    assert_eq!(
        sample(
            &fetcher,
            r#"sluice_publish_window_used_bytes{stage="fetcher"}"#
        ),
        0.0
    );
    assert!(fetcher.contains_key(r#"sluice_consumer_lag_messages{consumer="fetcher"}"#));

    // SIGTERM: /readyz says 503 before the process is gone.
    let port = ports["fetcher"];
    let fetcher = p.service("fetcher");
    let watch = async {
        loop {
            match get(port, "/readyz").await {
                Some((503, body)) => return body,
                Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                None => panic!("the fetcher stopped serving before /readyz turned 503"),
            }
        }
    };
    let (status, body) = tokio::join!(fetcher.terminate(Duration::from_secs(30)), watch);
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(body.contains("draining"), "{body}");
}

/// A backlog larger than one batch's bytes is written in several batches,
/// each within the bound (SLUICE_BATCH_MAX_BYTES, raised to what admits the
/// largest message), even when the message count alone would take it all,
/// one after another without a pause.
#[tokio::test]
async fn saver_batches_are_bounded_in_bytes() {
    let port = free_port();
    let sandbox = Sandbox::new("batch-bytes").await;
    let mut p = Pipeline::in_sandbox(sandbox)
        .env(&[
            ("SLUICE_BATCH_SIZE", "10000"),
            ("SLUICE_BATCH_MAX_BYTES", "1"),
            ("SLUICE_BATCH_WAIT", "1s"),
            // 1,000 messages of about 3 KB: the counts below are of messages.
            ("SLUICE_TRANSACTIONS_PER_MESSAGE", "100"),
        ])
        .per_replica(|name| {
            if name == "saver" {
                vec![("SLUICE_METRICS_ADDR".into(), format!("127.0.0.1:{port}"))]
            } else {
                Vec::new()
            }
        })
        .start()
        .await;
    // Let a backlog of about 3 MB build up in TRANSACTIONS first.
    p.service("saver").terminate(Duration::from_secs(30)).await;
    let data = Dataset::generate(10, 100_000, 8);
    p.server.add_dataset(&data);
    p.import(&p.server.url("/accounts.csv")).await;
    let transactions = p
        .sandbox
        .namespace
        .stream(sluice_messages::Stream::Transactions);
    wait_until(
        Duration::from_secs(60),
        "1,000 messages in TRANSACTIONS",
        || async {
            let mut stream = p.js.get_stream(&transactions).await.unwrap();
            stream.info().await.unwrap().state.messages >= 1_000
        },
    )
    .await;
    p.service("saver").restart().unwrap();
    // The backlog shows as the saver's consumer lag, read at start-up and
    // every 5 s, until it is gone.
    let lag = |metrics: &BTreeMap<String, f64>| {
        sample(metrics, r#"sluice_consumer_lag_messages{consumer="saver"}"#)
    };
    wait_until(
        Duration::from_secs(10),
        "the backlog in the lag gauge",
        || async {
            match get(port, "/metrics").await {
                Some((200, text)) => lag(&parse_metrics(&text)) >= 1_000.0,
                _ => false,
            }
        },
    )
    .await;
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(15), "lag 0 once saved", || async {
        let text = get(port, "/metrics").await.map(|r| r.1).unwrap_or_default();
        let metrics = parse_metrics(&text);
        lag(&metrics) == 0.0
            && sample(
                &metrics,
                r#"sluice_consumer_pending_messages{consumer="saver"}"#,
            ) == 0.0
    })
    .await;

    let saver = parse_metrics(&get(port, "/metrics").await.unwrap().1);
    let batches = sample(&saver, r#"sluice_batch_bytes_count{stage="saver"}"#);
    let bytes = sample(&saver, r#"sluice_batch_bytes_sum{stage="saver"}"#);
    assert!(bytes > 3_000_000.0, "{bytes}");
    assert!(batches >= 3.0, "{batches} batches for {bytes} bytes");
    assert_eq!(
        sample(
            &saver,
            r#"sluice_batch_bytes_bucket{le="1114112",stage="saver"}"#
        ),
        batches,
        "every batch within max payload + 64 KiB: {:?}",
        saver
            .keys()
            .filter(|k| k.contains("batch_bytes"))
            .collect::<Vec<_>>()
    );
    // A batch that fills by bytes ends there (the server's 409 "Message
    // Size Exceeds MaxBytes"): nothing to back off from.
    let logs = p.logs();
    assert!(!logs.contains("cannot pull"), "{logs}");
    p.stop().await;
}

/// 300 idle connections to the metrics port hold at most 64 of the
/// importer's file descriptors, are closed after the header timeout, and
/// an import meanwhile completes with nothing dead-lettered; the probe
/// answers again once the idle ones are gone.
#[tokio::test]
async fn idle_connections_cannot_starve_a_stage() {
    let port = free_port();
    let sandbox = Sandbox::new("idle-conns").await;
    let mut p = Pipeline::in_sandbox(sandbox)
        .per_replica(|name| {
            if name == "importer" {
                vec![("SLUICE_METRICS_ADDR".into(), format!("127.0.0.1:{port}"))]
            } else {
                Vec::new()
            }
        })
        .start()
        .await;
    let pid = p.service("importer").pid().expect("the importer runs");
    let open_files = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = open_files();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = open_files();
    assert!(
        held <= before + 64 + 2,
        "{held} descriptors open, {before} before 300 idle connections"
    );
    // The work goes on meanwhile.
    let data = Dataset::generate(5, 500, 61);
    p.import_and_wait(&data).await;
    assert!(p.dead_letters().await.is_empty());
    // Idle connections are dropped after the 5 s header timeout; then a
    // probe gets its answer.
    wait_until(Duration::from_secs(15), "/readyz to answer", || async {
        matches!(get(port, "/readyz").await, Some((200, _)))
    })
    .await;
    drop(idle);
    p.stop().await;
}
