//! sluice driven the way its users drive it: the official `nats` CLI
//! (`just tools` builds it into `.local/bin`), on a NATS server of the
//! test's own so the contract's plain names (`imports`, `IMPORTS`) are used
//! exactly as README shows them.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;
use sluice_devkit::{binary_dir, Sandbox};
use sluice_e2e::{local_setting, Dataset, Pipeline, PrivateNats, Route};
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
            // The key-value buckets CANCELLED_IMPORTS, FILE_CHECKPOINTS,
            // IMPORT_IDS and IMPORT_ROWS, as JetStream names their streams
            // (IMPORT_SPECS comes with the first spec: nobody needed it
            // here).
            "KV_CANCELLED_IMPORTS",
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

/// `sluice …` with the sandbox's NATS settings and none of the database's.
async fn sluice_without_database(p: &Pipeline, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = Command::new(binary_dir().join("sluice"));
    command.args(args).env_remove("SLUICE_NAMESPACE");
    for (key, value) in p.sandbox.service_env() {
        if key != "DATABASE_URL" && !key.starts_with("PG") {
            command.env(key, value);
        }
    }
    let out = command
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("sluice runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether any object in `value` has `"name": name`.
fn names(value: &Value, name: &str) -> bool {
    match value {
        Value::Object(map) => {
            map.get("name").and_then(Value::as_str) == Some(name)
                || map.values().any(|v| names(v, name))
        }
        Value::Array(items) => items.iter().any(|v| names(v, name)),
        _ => false,
    }
}

/// The saver answers sluice's service API (NATS services, ADR-32): `nats
/// micro ls` and `info` show it with its endpoints, `sluice status` with no
/// database setting at all shows the import from it, exactly, `nats micro
/// stats` counts those requests, and with no saver running status names
/// what is missing.
#[tokio::test]
async fn status_asks_the_saver_over_the_service_api_without_database_settings() {
    let server = PrivateNats::start().await;
    let sandbox = Sandbox::create_on(
        "microapi",
        &server.url(),
        &sluice_devkit::sandbox::admin_database_url(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .with_plain_names();
    let mut p = Pipeline::in_sandbox(sandbox).start().await;
    let data = Dataset::generate(4, 400, 5);
    p.import_and_wait(&data).await;
    let url = server.url();

    let (code, out, err) = sluice_without_database(&p, &["status", "--json"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let shown: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let import = &shown["imports"][0];
    assert_eq!(
        shown["imports"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    assert_eq!(import["status"], "completed", "{shown}");
    assert_eq!(import["accounts_listed"], 4, "{shown}");
    assert_eq!(import["transactions_saved"], 400, "{shown}");
    assert_eq!(import["dead_letters"], 0, "{shown}");
    let id = import["id"].as_str().expect("an id").to_owned();

    let (code, out, err) = sluice_without_database(&p, &["status", &id]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no row for {id}: {out}"));
    assert!(
        row.contains("completed") && row.contains("4/4") && row.contains(" 400 "),
        "{row}"
    );

    let (code, out, err) = sluice_without_database(&p, &["status", "never-imported"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("the saver has no record of import never-imported (yet)"),
        "{out}{err}"
    );

    let listed = nats_json(&url, &["micro", "ls", "--json"]).await;
    assert!(names(&listed, "sluice"), "{listed}");
    let info = nats_json(&url, &["micro", "info", "sluice", "--json"]).await;
    let text = info.to_string();
    for subject in [
        "sluice.api.imports",
        "sluice.api.import",
        "sluice.api.cancel",
        "sluice.api.dead-letters",
        "sluice.api.replay",
        "sluice.api.stages",
    ] {
        assert!(
            text.contains(&format!("\"{subject}\"")),
            "{subject}: {info}"
        );
    }
    let stats = nats_json(&url, &["micro", "stats", "sluice", "--json"]).await;
    let mut requests = 0;
    let mut errors = 0;
    fn sum(value: &Value, key: &str, total: &mut i64) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k == key, v.as_i64()) {
                        (true, Some(n)) => *total += n,
                        _ => sum(v, key, total),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| sum(v, key, total)),
            _ => {}
        }
    }
    sum(&stats, "num_requests", &mut requests);
    sum(&stats, "num_errors", &mut errors);
    assert_eq!((requests, errors), (3, 1), "{stats}");

    // `import --wait` follows an import through the API too, and `doctor`
    // checks the API instead of a database it was not given.
    let more = Dataset::generate_from(5_000, "/more", 3, 300, 6);
    p.server.add_dataset(&more);
    let (code, out, err) = sluice_without_database(
        &p,
        &["import", &p.server.url("/more/accounts.csv"), "--wait"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(" completed: 3 accounts (0 failed), 300 transactions saved, 0 rows rejected, 0 dead letters"),
        "{out}{err}"
    );
    let (code, out, err) = sluice_without_database(&p, &["doctor"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.lines().any(|l| l.starts_with(
            "✓ service API sluice (sluice.api.imports): a saver answers; the latest import is "
        )),
        "{out}"
    );
    assert!(!out.contains("PostgreSQL"), "{out}");

    // An import's dead-lettered messages, from the saver too.
    p.server.set(
        "/broken/accounts.csv",
        Route::new("accountId,transactionsUrl\n7001,missing.csv\n"),
    );
    let (code, out, err) = sluice_without_database(
        &p,
        &[
            "import",
            &p.server.url("/broken/accounts.csv"),
            "--id",
            "broken-1",
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}{err}");
    let (code, out, err) = sluice_without_database(&p, &["status", "broken-1", "--json"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let shown: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        shown["imports"][0]["status"], "completed_with_errors",
        "{shown}"
    );
    let failures = shown["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{shown}");
    assert_eq!(failures[0]["stage"], "fetcher", "{shown}");
    assert_eq!(failures[0]["kind"], "permanent", "{shown}");
    assert_eq!(failures[0]["key"], "broken-1/2", "{shown}");
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("404"),
        "{shown}"
    );
    let (_, out, _) = sluice_without_database(&p, &["status", "broken-1"]).await;
    assert!(
        out.contains("1 message(s) of import broken-1 were dead-lettered"),
        "{out}"
    );

    // The API stops with the saver, which exits cleanly.
    let stopped = p.service("saver").terminate(Duration::from_secs(30)).await;
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    let (code, out, err) = sluice_without_database(&p, &["status"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("no saver answers sluice's service API (sluice.api.imports)"),
        "{out}{err}"
    );
    p.service("saver").restart().unwrap();
    p.stop().await;
}
