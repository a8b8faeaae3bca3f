//! sluice driven the way its users drive it: the official `nats` CLI
//! (`just tools` builds it into `.local/bin`), on a NATS server of the
//! test's own so the contract's plain names (`imports`, `IMPORTS`) are used
//! exactly as README shows them.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use sluice_devkit::{binary_dir, Sandbox};
use sluice_e2e::{local_setting, Dataset, Pipeline, PrivateNats};
use tokio::{io::AsyncBufReadExt, process::Command};

fn nats_cli() -> PathBuf {
    let path = local_setting("SLUICE_TEST_NATS_CLI")
        .map(PathBuf::from)
        .expect(
            "the nats CLI: run `just tools` (go install github.com/nats-io/natscli/nats@v0.5.0)",
        );
    assert!(
        path.exists(),
        "{} is missing: run `just tools`",
        path.display()
    );
    path
}

/// `nats --server URL ARGS…`, with no user context in the way.
fn nats(server: &str, args: &[&str]) -> Command {
    let mut command = Command::new(nats_cli());
    command
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("NATS_CONTEXT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn nats_ok(server: &str, args: &[&str]) -> String {
    let out = nats(server, args).output().await.expect("nats runs");
    assert!(
        out.status.success(),
        "nats {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

async fn nats_json(server: &str, args: &[&str]) -> Value {
    let text = nats_ok(server, args).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("nats {}: {e}: {text}", args.join(" ")))
}

/// README's lines, verbatim: `nats sub 'import-events.>'` then
/// `nats pub imports URL`. The import completes with every row exact, and
/// `nats stream ls/info/report` and `nats consumer info` show the
/// documented names.
#[tokio::test]
async fn nats_pub_imports_runs_an_import_under_the_contract_names() {
    let server = PrivateNats::start().await;
    let sandbox = Sandbox::create_on(
        "natscli",
        &server.url(),
        &sluice_devkit::sandbox::admin_database_url(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .with_plain_names();
    let p = Pipeline::in_sandbox(sandbox).start().await;
    let data = Dataset::generate(6, 1_200, 17);
    p.server.add_dataset(&data);
    let url = server.url();

    let mut sub = nats(&url, &["sub", "import-events.>", "--count", "1", "--raw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nats sub starts");
    // `nats sub` subscribes before it prints anything; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let published = nats_ok(&url, &["pub", "imports", &p.server.url("/accounts.csv")]).await;
    eprintln!("nats pub printed: {published}");
    p.assert_saves_exactly(&data, Duration::from_secs(120))
        .await;

    let event = tokio::time::timeout(Duration::from_secs(30), async {
        let mut lines = tokio::io::BufReader::new(sub.stdout.take().unwrap()).lines();
        while let Some(line) = lines.next_line().await.expect("nats sub output") {
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                return event;
            }
        }
        panic!("nats sub ended without printing the completion event");
    })
    .await
    .expect("the completion event reaches `nats sub` within 30 s");
    // Derived: the request's position in IMPORTS and the second it was stored.
    let id = event["import_id"].as_str().unwrap_or_default();
    assert!(
        id.starts_with("1-20") && id.ends_with('Z') && id.len() == "1-20261128T035601Z".len(),
        "{event}"
    );
    assert_eq!(event["status"], "completed", "{event}");
    assert_eq!(event["accounts"], 6, "{event}");
    assert_eq!(event["transactions_saved"], 1_200, "{event}");
    assert_eq!(event["dead_letters"], 0, "{event}");
    assert!(sub.wait().await.expect("nats sub exits").success());

    let names = nats_ok(&url, &["stream", "ls", "--names"]).await;
    let mut names: Vec<&str> = names.split_whitespace().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ACCOUNT_UPDATES",
            "DEAD_LETTERS",
            "IMPORTS",
            "IMPORT_EVENTS",
            // The key-value buckets FILE_CHECKPOINTS, IMPORT_IDS and
            // IMPORT_ROWS, as JetStream names their streams (IMPORT_SPECS
            // comes with the first spec: nobody needed it here).
            "KV_FILE_CHECKPOINTS",
            "KV_IMPORT_IDS",
            "KV_IMPORT_ROWS",
            "TRANSACTIONS"
        ]
    );

    let imports = nats_json(&url, &["stream", "info", "IMPORTS", "--json"]).await;
    assert_eq!(imports["config"]["name"], "IMPORTS");
    assert_eq!(
        imports["config"]["subjects"],
        serde_json::json!(["imports"])
    );
    assert_eq!(imports["config"]["retention"], "limits");
    assert_eq!(imports["state"]["messages"], 1, "one import request stored");

    let saver = nats_json(
        &url,
        &["consumer", "info", "TRANSACTIONS", "saver", "--json"],
    )
    .await;
    assert_eq!(saver["stream_name"], "TRANSACTIONS");
    assert_eq!(saver["name"], "saver");
    assert_eq!(saver["config"]["durable_name"], "saver");
    // Every subject of TRANSACTIONS (`transactions.>`, `rows.>`) is the saver's.
    assert!(
        saver["config"]["filter_subject"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{saver}"
    );
    assert_eq!(saver["config"]["ack_policy"], "explicit");
    assert_eq!(saver["num_pending"], 0, "everything delivered: {saver}");
    assert_eq!(saver["num_ack_pending"], 0, "everything acked: {saver}");

    let report = nats_ok(&url, &["stream", "report"]).await;
    eprintln!("nats stream report:\n{report}");
    for stream in [
        "IMPORTS",
        "ACCOUNT_UPDATES",
        "TRANSACTIONS",
        "IMPORT_EVENTS",
    ] {
        assert!(report.contains(stream), "{stream} in the report:\n{report}");
    }
    p.stop().await;
}

/// An import sent before any service runs is stored durably and processed
/// once they start: `sluice import` declares the topology it needs.
#[tokio::test]
async fn sluice_import_before_any_service_waits_in_the_imports_stream() {
    let sandbox = Sandbox::new("early").await;
    let files = sluice_devkit::FileServer::start()
        .await
        .expect("HTTP server");
    let data = Dataset::generate(3, 300, 5);
    files.add_dataset(&data);

    let out = Command::new(binary_dir().join("sluice"))
        .args([
            "import",
            &files.url("/accounts.csv"),
            "--id",
            "before-services",
        ])
        .envs(sandbox.service_env())
        .output()
        .await
        .expect("sluice runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before-services\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("declaring sluice's streams and consumers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing consumes yet: the request waits in IMPORTS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sandbox.saved_count().await, 0);

    let p = Pipeline::in_sandbox(sandbox).start().await;
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;
    let event = p
        .completion("before-services", Duration::from_secs(30))
        .await;
    assert_eq!(event.status, sluice_messages::ImportStatus::Completed);
    assert_eq!(event.transactions_saved, 300);
    assert_eq!(p.completion_count("before-services").await, 1);
    p.stop().await;
}
