//! The operator's first five minutes: what `sluice status` and `sluice
//! doctor` say when something is missing, word for word; `doctor` on a
//! healthy pipeline; progress in a real terminal; clean interrupts.

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use sluice_devkit::{binary_dir, sandbox, Sandbox};
use sluice_e2e::{free_port, Dataset, Pipeline, PrivateNats, PrivatePostgres};
use tokio::{io::AsyncBufReadExt, process::Command};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn sluice(args: &[&str], env: &[(&str, String)]) -> Run {
    let out = Command::new(binary_dir().join("sluice"))
        .args(args)
        .env_remove("SLUICE_NAMESPACE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("sluice runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Each first-run failure: `status` shows what it can, says what it could
/// not read with the cause and the fix, and exits 1; `doctor` marks it ✗
/// with the same cause and fix.
#[tokio::test]
async fn first_run_failures_name_their_cause_and_fix() {
    let nats = sandbox::nats_url();
    let admin = sandbox::admin_database_url();
    let healthy = Sandbox::new("firstrun").await;
    let namespace = healthy.namespace.name().unwrap().to_owned();
    let server_url = admin.rsplit_once('/').unwrap().0.to_owned();
    // A namespace and database that `sluice setup` has prepared.
    let prepared = sluice(
        &["setup"],
        &[
            ("NATS_URL", nats.clone()),
            ("SLUICE_NAMESPACE", namespace.clone()),
            ("DATABASE_URL", healthy.database_url()),
        ],
    )
    .await;
    assert_eq!(prepared.code, Some(0), "{}", prepared.stderr);

    let no_nats_port = free_port();
    let plain_nats = PrivateNats::start_without_jetstream().await;
    let locked_pg = PrivatePostgres::start_with_password("right").await;
    let schemaless = Sandbox::new("schemaless").await;

    // (scenario, settings, what status says, its fix, doctor's ✗ line)
    type Scenario<'a> = (&'a str, Vec<(&'a str, String)>, String, String, String);
    let scenarios: Vec<Scenario> = vec![
        (
            "no NATS",
            vec![("NATS_URL", format!("nats://127.0.0.1:{no_nats_port}"))],
            format!("could not read consumers: cannot connect to NATS at nats://127.0.0.1:{no_nats_port} (NATS_URL): IO error: Connection refused (os error 111)"),
            "  fix: start a NATS server with JetStream there (`just services` starts one), or point NATS_URL at yours".into(),
            format!("✗ NATS: cannot connect to NATS at nats://127.0.0.1:{no_nats_port} (NATS_URL): IO error: Connection refused (os error 111)"),
        ),
        (
            "NATS without JetStream",
            vec![("NATS_URL", plain_nats.url())],
            format!("could not read consumers: NATS at {} (NATS_URL) does not answer JetStream requests: JetStream unavailable: requested JetStream resource does not exist", plain_nats.url()),
            "  fix: is JetStream enabled on the server? (`nats-server -js`)".into(),
            format!("✗ JetStream: NATS at {} (NATS_URL) does not answer JetStream requests: JetStream unavailable: requested JetStream resource does not exist", plain_nats.url()),
        ),
        (
            "streams missing",
            vec![("SLUICE_NAMESPACE", "nothing-here".into())],
            "could not read consumers: stream nothing_here_DEAD_LETTERS does not exist".into(),
            "  fix: run `sluice setup` (or start the services: each declares the streams it needs)".into(),
            "✗ stream nothing_here_DEAD_LETTERS: does not exist".into(),
        ),
        (
            "no database",
            vec![("DATABASE_URL", format!("{server_url}/no_such_database"))],
            format!("could not read imports: cannot connect to the saver's database: PostgreSQL at {server_url}/no_such_database (DATABASE_URL) says SQLSTATE 3D000: database \"no_such_database\" does not exist"),
            "  fix: run `sluice setup`: it creates the database and its schema".into(),
            format!("✗ PostgreSQL: cannot connect to the saver's database: PostgreSQL at {server_url}/no_such_database (DATABASE_URL) says SQLSTATE 3D000: database \"no_such_database\" does not exist"),
        ),
        (
            "database without the schema",
            vec![("DATABASE_URL", schemaless.database_url())],
            format!("could not read imports: cannot read imports: PostgreSQL at {} (DATABASE_URL) says SQLSTATE 42P01: relation \"imports\" does not exist", schemaless.database_url()),
            "  fix: the saver's schema is not there: run `sluice setup` (or start the saver)".into(),
            format!("✗ schema: cannot read the schema version: PostgreSQL at {} (DATABASE_URL) says SQLSTATE 42P01: relation \"sluice_migrations\" does not exist", schemaless.database_url()),
        ),
        (
            "wrong password",
            vec![(
                "DATABASE_URL",
                format!("postgres://postgres:wrong@127.0.0.1:{}/postgres", locked_pg.port),
            )],
            format!("could not read imports: cannot connect to the saver's database: PostgreSQL at postgres://postgres:***@127.0.0.1:{}/postgres (DATABASE_URL) says SQLSTATE 28P01: password authentication failed for user \"postgres\"", locked_pg.port),
            "  fix: check the user and password in DATABASE_URL".into(),
            format!("✗ PostgreSQL: cannot connect to the saver's database: PostgreSQL at postgres://postgres:***@127.0.0.1:{}/postgres (DATABASE_URL) says SQLSTATE 28P01: password authentication failed for user \"postgres\"", locked_pg.port),
        ),
    ];

    for (name, overrides, cause, fix, doctor_line) in scenarios {
        let mut env = vec![
            ("NATS_URL", nats.clone()),
            ("SLUICE_NAMESPACE", namespace.clone()),
            ("DATABASE_URL", healthy.database_url()),
        ];
        for (key, value) in overrides {
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        }
        let status = sluice(&["status"], &env).await;
        assert_eq!(
            status.code,
            Some(1),
            "{name}: {}{}",
            status.stdout,
            status.stderr
        );
        let lines: Vec<&str> = status.stdout.lines().collect();
        let at = lines
            .iter()
            .position(|l| *l == cause)
            .unwrap_or_else(|| panic!("{name}: status says\n{}\nnot\n{cause}", status.stdout));
        assert_eq!(lines[at + 1], fix, "{name}");
        assert_eq!(
            status.stderr,
            "sluice: status is incomplete: 1 part(s) could not be read (see above)\n",
            "{name}"
        );
        assert!(
            !status.stdout.contains("wrong@"),
            "{name}: a password is shown"
        );

        let doctor = sluice(&["doctor"], &env).await;
        assert_eq!(doctor.code, Some(1), "{name}: {}", doctor.stdout);
        let doctor_lines: Vec<&str> = doctor.stdout.lines().collect();
        let at = doctor_lines
            .iter()
            .position(|l| *l == doctor_line)
            .unwrap_or_else(|| {
                panic!("{name}: doctor says\n{}\nnot\n{doctor_line}", doctor.stdout)
            });
        assert_eq!(doctor_lines[at + 1], format!("  {fix}"), "{name}");
        assert!(
            !doctor.stdout.contains("wrong@"),
            "{name}: a password is shown"
        );
    }
}

/// A healthy pipeline passes every check; a stopped service is named.
#[tokio::test]
async fn doctor_passes_a_healthy_pipeline_and_names_a_missing_service() {
    let mut p = Pipeline::start("doctor", &[]).await;
    let env: Vec<(String, String)> = p.sandbox.service_env();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let setup = sluice(&["setup"], &env).await;
    assert_eq!(setup.code, Some(0), "{}", setup.stderr);

    let doctor = sluice(&["doctor"], &env).await;
    assert_eq!(doctor.code, Some(0), "{}{}", doctor.stdout, doctor.stderr);
    let lines: Vec<&str> = doctor.stdout.lines().collect();
    // NATS, JetStream, 5 streams, 4 consumers, the service API, PostgreSQL,
    // its TLS, schema, downloads.
    assert_eq!(lines.len(), 16, "{}", doctor.stdout);
    // The download guard it shows is its own; the fetcher's is in its log.
    assert!(
        lines.iter().any(|l| l.starts_with(
            "✓ downloads (this command's environment, not the fetcher's): refused: 0.0.0.0/8"
        )),
        "{}",
        doctor.stdout
    );
    assert!(
        p.logs()
            .contains("download guard: refusing connections to the denied networks"),
        "{}",
        p.logs()
    );
    assert!(
        lines.iter().all(|l| l.starts_with("✓ ")),
        "{}",
        doctor.stdout
    );

    let json = sluice(&["doctor", "--json"], &env).await;
    assert_eq!(json.code, Some(0));
    let checks: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(checks.as_array().unwrap().len(), 16);
    assert!(checks.as_array().unwrap().iter().all(|c| c["ok"] == true));

    // Settings other than the ones the topology was made with: drift.
    let mut drifted = env.clone();
    drifted.push(("SLUICE_ACK_WAIT", "45s".into()));
    let doctor = sluice(&["doctor"], &drifted).await;
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let importer_line = doctor
        .stdout
        .lines()
        .find(|l| l.starts_with("✗ consumer importer on "))
        .unwrap_or_else(|| panic!("{}", doctor.stdout));
    assert!(
        importer_line
            .ends_with(": differs from what `sluice setup` creates: ack wait is 30s, expected 45s"),
        "{importer_line}"
    );

    let fetcher = p
        .service("fetcher")
        .terminate(Duration::from_secs(30))
        .await;
    assert!(fetcher.is_some_and(|s| s.success()));
    let doctor = sluice(&["doctor"], &env).await;
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    let failed: Vec<&str> = doctor
        .stdout
        .lines()
        .filter(|l| l.starts_with("✗ "))
        .collect();
    assert_eq!(failed.len(), 1, "{}", doctor.stdout);
    assert!(
        failed[0].starts_with("✗ consumer fetcher on ")
            && failed[0].contains(": no replica is pulling"),
        "{}",
        failed[0]
    );
    assert!(doctor.stdout.contains("    fix: start `fetcher`\n"));
    assert_eq!(doctor.stderr, "sluice: 1 of 16 checks failed\n");
}

fn demo_env() -> Vec<(&'static str, String)> {
    vec![
        ("NATS_URL", sandbox::nats_url()),
        ("DATABASE_URL", sandbox::admin_database_url()),
    ]
}

/// Ctrl-C or a closed terminal during `sluice demo`: the services stop, the
/// database and the streams are removed, and it says so.
#[tokio::test]
async fn an_interrupted_demo_removes_what_it_created() {
    for signal in [libc::SIGINT, libc::SIGHUP] {
        let mut demo = Command::new(binary_dir().join("sluice"))
            .args(["demo", "--accounts", "50", "--transactions", "3000000"])
            .env_remove("SLUICE_NAMESPACE")
            .envs(demo_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("demo starts");
        let mut stdout = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
        let started = loop {
            let line = stdout
                .next_line()
                .await
                .unwrap()
                .expect("the demo starts the services");
            if line.starts_with("started importer, fetcher, saver") {
                break line;
            }
        };
        // "… (namespace demo-…, database sluice_demo_…, logs in …)"
        let namespace = started
            .split("namespace ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned();
        let database = started
            .split("database ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_owned();
        tokio::time::sleep(Duration::from_millis(500)).await;
        sluice_devkit::process::send_signal(demo.id().unwrap(), signal);
        let out = tokio::time::timeout(Duration::from_secs(60), demo.wait_with_output())
            .await
            .expect("the demo exits after the interrupt")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "signal {signal}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted: stopping the services, removing database {database} and namespace {namespace}")),
            "{stderr}"
        );
        assert!(
            stderr.ends_with(&format!(
                "removed database {database} and namespace {namespace}\n"
            )),
            "{stderr}"
        );

        let (admin, conn) =
            tokio_postgres::connect(&sandbox::admin_database_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&database],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "database {database} is gone");
        let js =
            async_nats::jetstream::new(async_nats::connect(sandbox::nats_url()).await.unwrap());
        let prefix = format!("{}_", namespace.replace('-', "_"));
        use futures_util::StreamExt;
        let names: Vec<String> = js.stream_names().map(|n| n.unwrap()).collect().await;
        assert!(
            names.iter().all(|n| !n.starts_with(&prefix)),
            "streams of {namespace} are gone: {names:?}"
        );
    }
}

/// `sluice demo` in a real terminal shows the rate, the ETA and which stage
/// is behind.
#[tokio::test]
async fn demo_progress_in_a_terminal_shows_rate_and_eta() {
    let session = format!("sluice-progress-{}", sluice_devkit::unique_suffix());
    let env: String = demo_env()
        .into_iter()
        .map(|(k, v)| format!("{k}={v} "))
        .collect();
    let command = format!(
        "env -u SLUICE_NAMESPACE {env}{} demo --accounts 40 --transactions 600000; sleep 30",
        binary_dir().join("sluice").display()
    );
    let started = std::process::Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "20",
            &command,
        ])
        .status()
        .expect("tmux runs");
    assert!(started.success());
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let pane = std::process::Command::new("tmux")
                .args(["capture-pane", "-p", "-t", &session])
                .output()
                .expect("capture-pane");
            seen = String::from_utf8_lossy(&pane.stdout).into_owned();
            if seen.lines().any(|l| {
                l.contains("saved ")
                    && l.contains("/s")
                    && l.contains("ETA ")
                    && (l.contains("behind: ") || l.contains("no stage behind"))
            }) {
                return true;
            }
            if seen.contains("every row is exactly") {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let _ = std::process::Command::new("tmux")
        .args(["send-keys", "-t", &session, "C-c", ""])
        .status();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = std::process::Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    assert_eq!(found, Ok(true), "the pane showed no rate and ETA:\n{seen}");
    let line = seen
        .lines()
        .find(|l| l.contains("ETA ") && l.contains("behind"))
        .unwrap();
    assert!(line.contains("rows"), "{line}");
    assert!(
        line.contains("behind: ") || line.contains("no stage behind"),
        "{line}"
    );
}

/// `sluice import --wait` interrupted says how to follow the import again.
#[tokio::test]
async fn an_interrupted_wait_says_how_to_follow_the_import() {
    let sandbox = Sandbox::new("waitint").await;
    let files = sluice_devkit::FileServer::start().await.unwrap();
    files.add_dataset(&Dataset::generate(1, 10, 1));
    let mut wait = Command::new(binary_dir().join("sluice"))
        .args([
            "import",
            &files.url("/accounts.csv"),
            "--id",
            "followed",
            "--wait",
        ])
        .envs(sandbox.service_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(wait.stdout.take().unwrap()).lines();
    assert_eq!(
        stdout.next_line().await.unwrap().as_deref(),
        Some("followed")
    );
    // No service runs: it would wait forever.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sluice_devkit::process::send_signal(wait.id().unwrap(), libc::SIGINT);
    let out = tokio::time::timeout(Duration::from_secs(10), wait.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stderr).ends_with(
        "stopped following import followed; it goes on without you: follow it again with `sluice status followed`\n"
    ));
}

/// A reader that goes away (`sluice dead-letters list | head -1`) ends the
/// command quietly: no panic, no stack trace, status 0.
#[tokio::test]
async fn a_closed_stdout_is_a_normal_end() {
    let sandbox = Sandbox::new("closedpipe").await;
    let env: Vec<(String, String)> = sandbox.service_env();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let setup = sluice(&["setup"], &env).await;
    assert_eq!(setup.code, Some(0), "{}", setup.stderr);
    for args in [
        &["status"][..],
        &["dead-letters", "list"],
        &["status", "--json"],
    ] {
        let mut child = Command::new(binary_dir().join("sluice"))
            .args(args)
            .env_remove("SLUICE_NAMESPACE")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the first line is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}
