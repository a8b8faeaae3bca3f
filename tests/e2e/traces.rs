//! One import is one trace in a real Jaeger: the services and the `sluice`
//! command export over OTLP HTTP, the trace context travels in NATS
//! headers, and Jaeger's query API shows the tree.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::Value;
use sluice_devkit::jaeger::Jaeger;
use sluice_devkit::{Route, Sandbox};
use sluice_e2e::{get, private_jaeger, rows, Pipeline};

/// `GET` on Jaeger's HTTP query API (the v1 JSON API the UI uses).
async fn jaeger_get(jaeger: &Jaeger, path: &str) -> Value {
    let (status, body) = get(jaeger.query_port, path).await.expect("Jaeger answers");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("Jaeger answers JSON")
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

/// The span a span references with `kind` (`CHILD_OF`, `FOLLOWS_FROM`).
fn references<'a>(span: &'a Value, kind: &str) -> Vec<&'a str> {
    span["references"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["refType"] == kind)
        .filter_map(|r| r["spanID"].as_str())
        .collect()
}

fn parent(span: &Value) -> Option<&str> {
    references(span, "CHILD_OF").first().copied()
}

/// The ids of the traces in which a span names import `id`, looked up
/// through every service (waiting for the first spans to arrive).
async fn traces_holding(jaeger: &Jaeger, id: &str) -> BTreeSet<String> {
    let mut traces = BTreeSet::new();
    for service in [
        "sluice",
        "sluice-importer",
        "sluice-fetcher",
        "sluice-saver",
    ] {
        let mut found = Value::Null;
        for _ in 0..100 {
            found = jaeger_get(jaeger, &format!("/api/traces?service={service}&limit=100")).await;
            if found["data"].as_array().is_some_and(|d| !d.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for trace in found["data"].as_array().expect("traces") {
            let holds_import = trace["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| tag(s, "sluice.import.id").and_then(Value::as_str) == Some(id));
            if holds_import {
                traces.insert(trace["traceID"].as_str().unwrap().to_owned());
            }
        }
    }
    traces
}

#[tokio::test]
async fn one_import_is_one_trace_in_jaeger_across_every_service() {
    let jaeger = private_jaeger();
    let endpoint = jaeger.otlp_endpoint();
    let telemetry = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let sandbox = Sandbox::new("traces").await;
    let mut env = telemetry.to_vec();
    env.extend([
        ("SLUICE_TRANSACTIONS_PER_MESSAGE", "100"),
        ("SLUICE_LOG_FORMAT", "json"),
    ]);
    let mut p = Pipeline::in_sandbox(sandbox).env(&env).start().await;

    // Account 1: 150 rows (2 messages); account 2: 50 rows; account 3's
    // file is missing at first (a dead letter), then replayed.
    let csv = |ids: std::ops::RangeInclusive<i64>| {
        let mut csv = String::from("id,amount\n");
        for id in ids {
            csv.push_str(&format!("{id},{id}.25\n"));
        }
        csv
    };
    p.server.set(
        "/accounts.csv",
        Route::new("accountId,transactionsUrl\n1,t/1.csv\n2,t/2.csv\n3,t/3.csv\n"),
    );
    p.server.set("/t/1.csv", Route::new(csv(1..=150)));
    p.server.set("/t/2.csv", Route::new(csv(1..=50)));
    let sluice = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(sluice_devkit::binary_dir().join("sluice"));
        command
            .args(args)
            .envs(p.sandbox.service_env())
            .envs(telemetry);
        command
    };
    let out = sluice(vec!["import".into(), p.server.url("/accounts.csv")])
        .output()
        .await
        .expect("sluice import runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let completed = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(completed.dead_letters, 1);

    p.server.set("/t/3.csv", Route::new(csv(1..=10)));
    let letter = p.stored_dead_letters().await.remove(0);
    let out = sluice(vec![
        "dead-letters".into(),
        "replay".into(),
        letter.sequence.to_string(),
    ])
    .output()
    .await
    .expect("sluice dead-letters replay runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = Vec::new();
    for (account, count) in [(1, 150), (2, 50), (3, 10)] {
        for n in 1..=count {
            expected.push((account, n, format!("{n}.25")));
        }
    }
    let expected: Vec<(i64, i64, &str)> = expected
        .iter()
        .map(|(a, n, s)| (*a, *n, s.as_str()))
        .collect();
    p.assert_saves(&rows(&expected), Duration::from_secs(60))
        .await;
    // An import published without trace context (`nats pub imports URL`)
    // starts its trace in the importer.
    p.server.set(
        "/plain.csv",
        Route::new("accountId,transactionsUrl\n2,t/2.csv\n"),
    );
    let plain = p.import(&p.server.url("/plain.csv")).await;
    p.completion(&plain, Duration::from_secs(60)).await;
    // A stop flushes every exporter.
    p.stop_services().await;
    let traces = traces_holding(&jaeger, &plain).await;
    assert_eq!(traces.len(), 1, "traces holding import {plain}: {traces:?}");
    let trace_id = traces.into_iter().next().unwrap();
    let trace = &jaeger_get(&jaeger, &format!("/api/traces/{trace_id}")).await["data"][0];
    let roots: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| parent(s).is_none())
        .map(|s| {
            trace["processes"][s["processID"].as_str().unwrap()]["serviceName"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(roots, ["sluice-importer"]);

    // Exactly one trace holds the import.
    let traces = traces_holding(&jaeger, &id).await;
    assert_eq!(traces.len(), 1, "traces holding import {id}: {traces:?}");
    let trace_id = traces.into_iter().next().unwrap();
    let trace = &jaeger_get(&jaeger, &format!("/api/traces/{trace_id}")).await["data"][0];
    let service_of: BTreeMap<&str, &str> = trace["processes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v["serviceName"].as_str().unwrap()))
        .collect();
    let spans: Vec<&Value> = trace["spans"].as_array().unwrap().iter().collect();
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanID"].as_str().unwrap(), *s))
        .collect();
    let service = |s: &Value| service_of[s["processID"].as_str().unwrap()];
    let op = |s: &Value| s["operationName"].as_str().unwrap().to_owned();
    let of = |svc: &str, prefix: &str| -> Vec<&Value> {
        spans
            .iter()
            .copied()
            .filter(|s| service(s) == svc && op(s).starts_with(prefix))
            .collect()
    };

    // The root is the request `sluice import` published.
    let roots: Vec<&Value> = spans
        .iter()
        .copied()
        .filter(|s| parent(s).is_none())
        .collect();
    let names: Vec<(String, &str)> = roots.iter().map(|s| (op(s), service(s))).collect();
    assert_eq!(roots.len(), 1, "one root: {names:?} {roots:#?}");
    let root = roots[0];
    assert_eq!(
        (service(root), op(root).as_str()),
        ("sluice", "publish imports")
    );
    assert_eq!(
        tag(root, "sluice.import.id").and_then(Value::as_str),
        Some(id.as_str())
    );

    // Under it, the importer's processing of the accounts file.
    let importer = of("sluice-importer", "process ");
    assert_eq!(importer.len(), 1);
    let importer = importer[0];
    assert_eq!(parent(importer), root["spanID"].as_str());
    assert_eq!(
        tag(importer, "messaging.system").and_then(Value::as_str),
        Some("nats")
    );
    assert_eq!(
        tag(importer, "sluice.rows.read").and_then(Value::as_i64),
        Some(3)
    );
    assert_eq!(
        tag(importer, "sluice.outcome").and_then(Value::as_str),
        Some("acked")
    );

    // Under that, each account's fetch: three, and the replay's.
    let fetches = of("sluice-fetcher", "process ");
    assert_eq!(fetches.len(), 4, "{fetches:#?}");
    let replays = of("sluice", "publish ");
    let replay = replays
        .iter()
        .find(|s| tag(s, "sluice.replay.of").is_some())
        .expect("the replay's span");
    let dead = fetches
        .iter()
        .find(|s| tag(s, "sluice.outcome").and_then(Value::as_str) == Some("dead-lettered"))
        .expect("the fetch given up on");
    // The replay sits under the fetch that gave the message up, linked to
    // the original message's publisher (the importer).
    assert_eq!(parent(replay), dead["spanID"].as_str());
    assert_eq!(
        references(replay, "FOLLOWS_FROM"),
        vec![importer["spanID"].as_str().unwrap()]
    );
    let (importer_id, replay_id) = (importer["spanID"].as_str(), replay["spanID"].as_str());
    for fetch in &fetches {
        assert!(
            parent(fetch) == importer_id || parent(fetch) == replay_id,
            "{fetch:#?}"
        );
        assert!(tag(fetch, "sluice.account.id").is_some());
    }
    assert_eq!(
        fetches.iter().filter(|s| parent(s) == replay_id).count(),
        1,
        "the replayed account's fetch is under the replay"
    );

    // The saver's commits that hold the import's rows, under the fetches
    // that published them; and the tracker's, under the facts' publishers.
    let commits: Vec<&Value> = of("sluice-saver", "process ")
        .into_iter()
        .filter(|s| op(s).ends_with("TRANSACTIONS"))
        .collect();
    assert!(!commits.is_empty() && commits.len() <= 4, "{commits:#?}");
    let fetch_ids: Vec<&str> = fetches
        .iter()
        .map(|s| s["spanID"].as_str().unwrap())
        .collect();
    for commit in &commits {
        assert!(fetch_ids.contains(&parent(commit).unwrap()), "{commit:#?}");
        assert_eq!(
            tag(commit, "sluice.messages.acked"),
            tag(commit, "messaging.batch.message_count")
        );
    }
    // Every message of a batch is in the trace: as the parent or a link.
    let saved_messages: i64 = commits
        .iter()
        .map(|s| {
            tag(s, "messaging.batch.message_count")
                .and_then(Value::as_i64)
                .unwrap()
        })
        .sum();
    assert_eq!(saved_messages, 4, "2 + 1 + 1 transactions messages");
    for commit in &commits {
        for link in references(commit, "FOLLOWS_FROM") {
            assert!(fetch_ids.contains(&link), "{commit:#?}");
        }
    }

    // The completion, under the importer that started the import.
    let completions = of("sluice-saver", "publish import-events");
    assert!(!completions.is_empty());
    assert_eq!(parent(completions[0]), importer["spanID"].as_str());

    // Bounded by accounts and messages, never by the 210 rows.
    let count = spans.len();
    assert!(count <= 30, "{count} spans");
    for span in &spans {
        if let Some(p) = parent(span) {
            assert!(
                by_id.contains_key(p),
                "a parent outside the trace: {span:#?}"
            );
        }
    }
    println!("import {id}: one trace of {count} spans");

    // Log lines inside a span lead to it.
    let importer_log = std::fs::read_to_string(p.deployment.log_dir.join("importer.log")).unwrap();
    let processed = importer_log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "processed")
        .expect("the importer's `processed` line");
    assert_eq!(processed["span"]["trace_id"], trace_id.as_str());
    assert_eq!(processed["span"]["span_id"], importer["spanID"]);
}
