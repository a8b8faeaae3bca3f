//! A wrong setting is no outage: a service says once what is wrong and how
//! to fix it, then exits 1, so an operator's crash loop shows the cause. A
//! schema newer than the binary is refused everywhere. `doctor` never hangs
//! on a server that stops answering, and prints each check as it completes.
//! A deleted stream is named in words.

use std::time::{Duration, Instant};

use sluice_devkit::{binary_dir, sandbox::admin_database_url, unique_suffix, Process, Sandbox};
use sluice_e2e::{Pipeline, PrivateNats, PrivatePostgres};
use sluice_messages::Stream;
use tokio::io::AsyncBufReadExt;

/// Waits for `process` to exit, at most `within`; its exit code and log.
async fn exit_of(process: &mut Process, within: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = process.try_status() {
            break status;
        }
        if started.elapsed() > within {
            let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
            panic!("still running after {within:?} with a wrong setting:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
    (status.code(), log)
}

fn log_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sluice-{name}-{}", unique_suffix()))
}

/// A wrong password, a database that does not exist, a NATS without
/// JetStream: one error line with the fix, few warnings, exit 1 after the
/// grace period; never the password.
#[tokio::test]
async fn a_wrong_setting_stops_the_service_with_one_line_and_its_fix() {
    let sandbox = Sandbox::new("misconfig").await;
    let locked_pg = PrivatePostgres::start_with_password("right").await;
    let plain_nats = PrivateNats::start_without_jetstream().await;
    let server_url = admin_database_url().rsplit_once('/').unwrap().0.to_owned();
    let env_with = |key: &str, value: String| {
        let mut env = sandbox.service_env();
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value));
        env
    };
    let dir = log_dir("misconfig");
    // (what, service, its environment, the cause and the fix its log names)
    let cases = [
        (
            "a wrong password",
            "saver",
            env_with(
                "DATABASE_URL",
                format!(
                    "postgres://postgres:wrong-S3CRET@127.0.0.1:{}/postgres",
                    locked_pg.port
                ),
            ),
            "SQLSTATE 28P01",
            "check the user and password in DATABASE_URL",
        ),
        (
            "a database that does not exist",
            "saver",
            env_with(
                "DATABASE_URL",
                format!("{server_url}/no_such_database_{}", unique_suffix()),
            ),
            "SQLSTATE 3D000",
            "create the database (`sluice setup` does)",
        ),
        (
            "NATS without JetStream",
            "importer",
            env_with("NATS_URL", plain_nats.url()),
            "does not offer JetStream",
            "enable JetStream on the server",
        ),
    ];
    let mut running = Vec::new();
    for (what, service, env, _, _) in &cases {
        let replica = format!("{service}-{}", what.replace(' ', "-"));
        let process = Process::start_replica(service, &replica, env.clone(), &dir).unwrap();
        running.push(process);
    }
    let started = Instant::now();
    for ((what, _, _, cause, fix), process) in cases.iter().zip(&mut running) {
        let (code, log) = exit_of(process, Duration::from_secs(90)).await;
        assert_eq!(code, Some(1), "{what}: {log}");
        assert_eq!(
            log.matches("refuses sluice; exiting in").count(),
            1,
            "{what}: one line says what is wrong: {log}"
        );
        assert!(log.contains(cause), "{what}: {log}");
        assert!(log.contains(fix), "{what}: {log}");
        let warnings = log.lines().filter(|l| l.contains("WARN")).count();
        assert!(warnings <= 3, "{what}: {warnings} warnings: {log}");
        assert!(
            !log.contains("wrong-S3CRET"),
            "{what}: the password is in the log"
        );
    }
    // Each waited out the grace period, not a minute of retries.
    assert!(started.elapsed() < Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(dir);
}

/// A database migrated by a newer release: `setup`, `doctor`, `status` and
/// the saver all refuse it with the same line, and change nothing.
#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_everywhere() {
    let sandbox = Sandbox::new("schemaahead").await;
    let env = sandbox.service_env();
    let sluice = |args: &'static [&'static str]| {
        let env = env.clone();
        async move {
            tokio::process::Command::new(binary_dir().join("sluice"))
                .args(args)
                .env_remove("SLUICE_NAMESPACE")
                .envs(env)
                .output()
                .await
                .unwrap()
        }
    };
    let setup = sluice(&["setup"]).await;
    assert!(setup.status.success(), "{setup:?}");
    let knows = sluice_saver::SCHEMA_VERSION as i32;
    sandbox
        .db()
        .await
        .execute(
            "INSERT INTO sluice_migrations (version) VALUES ($1), ($2)",
            &[&(knows + 1), &(knows + 2)],
        )
        .await
        .unwrap();
    let refusal = format!(
        "the database schema is at version {}; this binary knows up to version {knows}: upgrade the binary",
        knows + 2
    );

    let setup = sluice(&["setup"]).await;
    let said = String::from_utf8_lossy(&setup.stderr);
    assert_eq!(setup.status.code(), Some(1), "{said}");
    assert!(said.contains(&refusal), "{said}");

    let doctor = sluice(&["doctor"]).await;
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("✗ schema: {refusal}")), "{said}");

    let status = sluice(&["status"]).await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(status.status.code(), Some(1), "{said}");
    assert!(said.contains(&refusal), "{said}");

    // `import --wait` refuses before it publishes anything.
    let import = tokio::process::Command::new(binary_dir().join("sluice"))
        .args(["import", "http://127.0.0.1:9/accounts.csv", "--wait"])
        .env_remove("SLUICE_NAMESPACE")
        .envs(env.clone())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&import.stderr);
    assert_eq!(import.status.code(), Some(1), "{said}");
    assert!(said.contains(&refusal), "{said}");
    assert!(
        import.stdout.is_empty(),
        "an id was printed: nothing may be published"
    );

    let dir = log_dir("schemaahead");
    let mut saver = Process::start("saver", env.clone(), &dir).unwrap();
    let (code, log) = exit_of(&mut saver, Duration::from_secs(90)).await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&refusal), "{log}");
    // Nothing was migrated or written.
    let versions: i64 = sandbox
        .db()
        .await
        .query_one("SELECT count(*) FROM sluice_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, i64::from(knows) + 2);
    let _ = std::fs::remove_dir_all(dir);
}

/// NATS stops answering in the middle of `doctor`: the check under way
/// fails after its deadline, the rest of NATS is skipped in one line, and
/// the command ends; every line appears as soon as its check is done.
#[tokio::test]
async fn doctor_prints_as_it_goes_and_never_hangs() {
    let nats = PrivateNats::start().await;
    let sandbox = Sandbox::create_on("doctorhang", &nats.url(), &admin_database_url())
        .await
        .unwrap();
    let env = sandbox.service_env();
    let setup = tokio::process::Command::new(binary_dir().join("sluice"))
        .arg("setup")
        .envs(env.clone())
        .output()
        .await
        .unwrap();
    assert!(setup.status.success(), "{setup:?}");

    let started = Instant::now();
    let mut doctor = tokio::process::Command::new(binary_dir().join("sluice"))
        .arg("doctor")
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(doctor.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // No service runs: each consumer is watched for a few seconds. The
    // first lines come long before that.
    while let Some(line) = lines.next_line().await.unwrap() {
        let at = started.elapsed();
        let jetstream = line.starts_with("✓ JetStream");
        seen.push((at, line));
        if jetstream {
            nats.freeze();
            break;
        }
    }
    assert!(
        seen.first()
            .is_some_and(|(at, _)| *at < Duration::from_secs(3)),
        "{seen:?}"
    );
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        let mut rest = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push(line);
        }
        rest
    })
    .await;
    nats.thaw();
    let rest = rest.unwrap_or_else(|_| panic!("doctor hangs once NATS stops answering: {seen:?}"));
    let status = doctor.wait().await.unwrap();
    assert_eq!(status.code(), Some(1), "{rest:?}");
    let late: Vec<&String> = rest
        .iter()
        .filter(|l| l.contains("no answer within 5 s"))
        .collect();
    assert_eq!(
        late.len(),
        1,
        "one check says NATS stopped answering: {rest:?}"
    );
    // PostgreSQL is still checked.
    assert!(
        rest.iter().any(|l| l.starts_with("✓ PostgreSQL: ")),
        "{rest:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{rest:?}");
}

/// The stream a stage reads from is deleted under it: its log names the
/// stream and the fix in words, not the client's debug values.
#[tokio::test]
async fn a_deleted_stream_is_named_in_words() {
    let p = Pipeline::start("deletedstream", &[]).await;
    let stream = p.sandbox.namespace.stream(Stream::Transactions);
    p.js.delete_stream(&stream).await.unwrap();
    let said = format!("stream {stream} does not exist (was it deleted?): run `sluice setup`, then restart this stage");
    let started = Instant::now();
    loop {
        let logs = p.logs();
        if logs.contains(&said) {
            assert!(!logs.contains("Some(\""), "{logs}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the saver does not name the deleted stream: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
