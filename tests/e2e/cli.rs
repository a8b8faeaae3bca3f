use std::{process::Command, time::Duration};

use sluice_devkit::binary_dir;
use sluice_e2e::{Dataset, Pipeline};

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
        "sluice: ftp://example/a.csv is not an http or https URL\n"
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
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
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
