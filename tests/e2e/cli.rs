use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sluice_devkit::binary_dir;
use sluice_e2e::{Dataset, Pipeline};
use tokio::io::{AsyncBufReadExt, BufReader};

fn run(binary: &str, args: &[&str], env: &[(String, String)]) -> std::process::Output {
    Command::new(binary_dir().join(binary))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"))
}

/// A bad setting stops a service at once with one line naming it.
#[test]
fn bad_configuration_exits_at_once_with_one_clear_line() {
    let cases = [
        ("saver", "SLUICE_CONCURRENCY", "0"),
        ("fetcher", "SLUICE_ACK_WAIT", "soon"),
        ("importer", "SLUICE_NAMESPACE", "Not.Valid"),
        ("saver", "DATABASE_URL", "postgres://host:notaport/db"),
    ];
    for (binary, var, value) in cases {
        let out = run(binary, &[], &[(var.to_owned(), value.to_owned())]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{binary} with {var}={value}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("{binary}: configuration error: ")),
            "{stderr}"
        );
        assert!(stderr.contains(var), "names {var}: {stderr}");
    }
}

/// `sluice import --id` prints the id, the import runs, and the same id
/// again is recognised as already published.
#[tokio::test]
async fn sluice_import_publishes_and_prints_the_id() {
    let p = Pipeline::start("cli", &[]).await;
    let data = Dataset::generate(4, 400, 9);
    p.server.add_dataset(&data);
    let env = p.sandbox.service_env();
    let url = p.server.url("/accounts.csv");

    let out = run("sluice", &["import", &url, "--id", "nightly-7"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "nightly-7\n");
    p.sandbox.wait_for_count(400, Duration::from_secs(60)).await;

    let again = run("sluice", &["import", &url, "--id", "nightly-7"], &env);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already published"));
    p.wait_until_idle(Duration::from_secs(30)).await;
    let db = p.sandbox.db().await;
    let by_import: i64 = db
        .query_one(
            "SELECT count(*) FROM transactions WHERE import_id = 'nightly-7'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by_import, 400);

    let bad = run("sluice", &["import", "ftp://example/a.csv"], &env);
    assert!(!bad.status.success());
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "sluice: ftp://example/a.csv is not an http, https or s3 URL\n"
    );
    p.stop().await;
}

/// `sluice setup` declares the streams and consumers, and is idempotent.
#[tokio::test]
async fn sluice_setup_is_idempotent() {
    let sandbox = sluice_devkit::Sandbox::new("setup").await;
    let mut env = sandbox.service_env();
    env.retain(|(k, _)| k != "DATABASE_URL");
    for _ in 0..2 {
        let out = run("sluice", &["setup", "--skip-database"], &env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let js = async_nats::jetstream::new(sandbox.nats().await);
    for stream in sluice_messages::Stream::ALL {
        js.get_stream(sandbox.namespace.stream(stream))
            .await
            .expect("stream exists");
    }
    let imports = js
        .get_stream(sandbox.namespace.stream(sluice_messages::Stream::Imports))
        .await
        .unwrap();
    let consumer = imports
        .consumer_info("importer")
        .await
        .expect("importer consumer exists");
    assert_eq!(consumer.config.max_deliver, -1);
}

/// A service asked to stop while it still waits for NATS has nothing in
/// hand: it exits 0, as README promises for SIGTERM.
#[tokio::test]
async fn sigterm_before_nats_is_ready_exits_zero() {
    let port = sluice_e2e::free_port();
    for binary in ["importer", "saver"] {
        let child = Command::new(binary_dir().join(binary))
            .env("NATS_URL", format!("nats://127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("service starts");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        sluice_devkit::process::send_signal(child.id(), libc::SIGTERM);
        let asked = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{binary} took {:?}",
            asked.elapsed()
        );
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{binary}: {log}");
        assert!(
            log.contains("stopped before NATS was ready"),
            "{binary}: {log}"
        );
    }
}

/// A configuration error names the setting without repeating a secret it
/// holds, and `--help` names each variable without its value.
#[test]
fn configuration_errors_and_help_show_no_secret() {
    let url = "postgres://sluice:PGSECRET@127.0.0.1:1/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
    let out = run("saver", &[], &[("DATABASE_URL".into(), url.into())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("PGSECRET"), "{stderr}");
    assert!(!stderr.contains("sslrootcert"), "{stderr}");

    let env = [
        ("SLUICE_NATS_USER".to_owned(), "opsuser".to_owned()),
        ("SLUICE_NATS_PASSWORD".into(), "NATSSECRET".into()),
        (
            "DATABASE_URL".into(),
            "postgres://sluice:PGSECRET@db/sluice".into(),
        ),
    ];
    for (binary, args) in [
        ("sluice", &["status", "--help"][..]),
        ("sluice", &["dead-letters", "--help"][..]),
        ("sluice", &["import", "--help"][..]),
        ("saver", &["--help"][..]),
    ] {
        let out = run(binary, args, &env);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{binary} {args:?}: {help}");
        assert!(
            help.contains("SLUICE_NATS_USER"),
            "{binary} {args:?}: {help}"
        );
        for secret in ["opsuser", "NATSSECRET", "PGSECRET"] {
            assert!(
                !help.contains(secret),
                "{binary} {args:?} shows {secret}: {help}"
            );
        }
    }
}

/// `sluice import URL --wait`, its standard error read line by line.
struct Following {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Following {
    fn start(p: &Pipeline, url: &str) -> Following {
        let mut child = tokio::process::Command::new(binary_dir().join("sluice"))
            .args(["import", url, "--wait"])
            .envs(p.sandbox.service_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sluice runs");
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Following {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now) that contains `text`, within `timeout`.
    async fn line_with(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                _ => panic!(
                    "no line with {text:?} within {timeout:?}; standard error:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

/// With the importer and fetcher running and no saver, `--wait` says
/// within seconds that no saver runs and where the messages wait, shows
/// progress meanwhile, and says so again when a saver starts; the import
/// then completes, and `sluice status` dates it in RFC 3339.
#[tokio::test]
async fn import_wait_names_the_stage_nobody_runs() {
    let mut p = Pipeline::start("cli-idle", &[]).await;
    let data = Dataset::generate(4, 400, 11);
    p.server.add_dataset(&data);
    let stopped = p.service("saver").terminate(Duration::from_secs(30)).await;
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");

    let started = Instant::now();
    let mut wait = Following::start(&p, &p.server.url("/accounts.csv"));
    let line = wait
        .line_with("no saver is running", Duration::from_secs(10))
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(line.starts_with("waiting: no saver is running ("), "{line}");
    assert!(line.contains("wait on consumer saver"), "{line}");
    assert!(line.ends_with("; start saver"), "{line}");
    // Progress lines, though the saver has recorded nothing.
    let progress = wait.line_with("saved 0 rows", Duration::from_secs(5)).await;
    assert!(progress.contains("rows/s"), "{progress}");
    assert!(!progress.contains('.'), "whole numbers only: {progress}");

    p.service("saver").restart().expect("saver starts again");
    wait.line_with(
        "no longer waiting: saver is running",
        Duration::from_secs(30),
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(60), wait.child.wait_with_output())
        .await
        .expect("--wait ends once the import completes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "sluice import --wait said:\n{}\n{stdout}",
        wait.seen.join("\n")
    );
    assert!(out.status.success(), "{stdout}");
    let id = stdout.lines().next().unwrap().to_owned();
    assert!(
        stdout.contains(&format!("import {id} completed")),
        "{stdout}"
    );
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;

    let status = p.cli(&["status", &id, "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for field in ["started_at", "finished_at"] {
        let time = json["imports"][0][field].as_str().unwrap_or_default();
        let bytes = time.as_bytes();
        assert!(
            bytes.len() == 20
                && bytes[10] == b'T'
                && bytes[19] == b'Z'
                && time.chars().filter(char::is_ascii_digit).count() == 14,
            "{field} is not RFC 3339 UTC to the second: {time:?}"
        );
    }
    let table = String::from_utf8_lossy(&p.cli(&["status", &id]).await.stdout).into_owned();
    let started_at = json["imports"][0]["started_at"].as_str().unwrap();
    assert!(table.contains(started_at), "{table}");
    p.stop().await;
}

/// A stream deleted under running services: `--wait` names it and the fix,
/// and does not blame the stage that cannot publish into it.
#[tokio::test]
async fn import_wait_names_a_missing_stream() {
    let p = Pipeline::start("cli-nostream", &[]).await;
    let data = Dataset::generate(2, 100, 12);
    p.server.add_dataset(&data);
    let transactions = p
        .sandbox
        .namespace
        .stream(sluice_messages::Stream::Transactions);
    p.js.delete_stream(&transactions).await.unwrap();

    let mut wait = Following::start(&p, &p.server.url("/accounts.csv"));
    let line = wait
        .line_with("does not exist", Duration::from_secs(10))
        .await;
    assert_eq!(
        line,
        format!("stream {transactions} does not exist: run sluice setup")
    );
    // Long enough for an idle stage to be named, were it to be.
    wait.line_with("saved 0", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    wait.child.start_kill().unwrap();
    let _ = wait.child.wait().await;
    // What it said until then (the reader ends at the end of the pipe).
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), wait.lines.recv()).await
    {
        wait.seen.push(line);
    }
    let said = wait.seen.join("\n");
    eprintln!("sluice import --wait said:\n{said}");
    assert!(!said.contains("no fetcher"), "{said}");
    assert!(!said.contains("behind: fetcher"), "{said}");
    assert!(
        said.contains(&format!("stream {transactions} does not exist")),
        "{said}"
    );
    p.stop().await;
}
