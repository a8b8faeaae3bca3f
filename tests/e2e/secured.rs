//! sluice on a NATS that requires what production NATS requires: TLS with
//! client certificates, and a login (user and password, token, NKey). The
//! certificates are made here with `rcgen`, the NKey with `nkeys`; every
//! server is a real nats-server of the test's own.

use std::time::Duration;

use sluice_devkit::{sandbox::admin_database_url, unique_suffix, Dataset, Process, Sandbox};
use sluice_e2e::{pki::Pki, sluice_with_only, Pipeline, PrivateNats, PrivatePostgres};

/// Runs a small import through the three services on `url` with `login`
/// and asserts every row; returns the pipeline to look at afterwards.
async fn import_through(url: &str, login: Vec<(String, String)>) -> Pipeline {
    let sandbox = Sandbox::create_secured("secured", url, login, &admin_database_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    import_into(Pipeline::in_sandbox(sandbox).start().await).await
}

/// `sluice import --wait` of a small data set through `p`; asserts every row.
async fn import_into(p: Pipeline) -> Pipeline {
    p.import_and_wait(&Dataset::generate(3, 300, 17)).await;
    p
}

/// What `sluice status` says with `env`, which must fail.
async fn refused_status(env: Vec<(String, String)>) -> String {
    let (succeeded, said) = sluice_with_only(&["status"], env).await;
    assert!(!succeeded, "{said}");
    said
}

#[tokio::test]
async fn a_pipeline_runs_on_nats_with_tls_client_certificates_and_a_password() {
    let pki = Pki::generate();
    let password = format!("pw-{}", unique_suffix());
    let nats = PrivateNats::start_secured(vec![
        "--tls".into(),
        "--tlscert".into(),
        pki.path("server.pem"),
        "--tlskey".into(),
        pki.path("server-key.pem"),
        "--tlsverify".into(),
        "--tlscacert".into(),
        pki.path("ca.pem"),
        "--user".into(),
        "sluice".into(),
        "--pass".into(),
        password.clone(),
    ])
    .await;
    // The password in the URL, as with the `nats` CLI.
    let url = format!("tls://sluice:{password}@127.0.0.1:{}", nats.port);
    let mut p = import_through(&url, pki.client_login("ca.pem")).await;
    let status = p.cli(&["status"]).await;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    p.stop_services().await;
    let logs = p.logs();
    assert!(logs.contains("connected to NATS"), "{logs}");
    assert!(!logs.contains(&password), "the password is in a log");
    assert!(!String::from_utf8_lossy(&status.stdout).contains(&password));

    // Refusals are named, and show no secret.
    let env_with = |url: String, login: Vec<(String, String)>| {
        let mut env = p.sandbox.service_env();
        env.retain(|(k, _)| k != "NATS_URL" && !k.starts_with("SLUICE_NATS_"));
        env.push(("NATS_URL".into(), url));
        env.extend(login);
        env
    };
    let wrong = format!("tls://sluice:not-{password}@127.0.0.1:{}", nats.port);
    // `status` says what it could not read, then that it is incomplete.
    let said = refused_status(env_with(wrong.clone(), pki.client_login("ca.pem"))).await;
    assert!(said.contains("authorization violation"), "{said}");
    assert!(!said.contains(&password), "the password is in the output");
    let said = refused_status(env_with(url.clone(), pki.client_login("other-ca.pem"))).await;
    assert!(said.contains("certificate"), "{said}");

    // A service NATS keeps refusing says why once, then exits 1: a wrong
    // setting is no outage to wait out.
    let log_dir = p.deployment.log_dir.join("refused");
    let mut importer = Process::start(
        "importer",
        env_with(wrong, pki.client_login("ca.pem")),
        &log_dir,
    )
    .unwrap();
    let started = tokio::time::Instant::now();
    let status = loop {
        if let Some(status) = importer.try_status() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the importer still runs while NATS refuses it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(importer.log_path()).unwrap();
    assert_eq!(
        log.matches("NATS refuses sluice: ").count(),
        1,
        "one line says why: {log}"
    );
    assert!(log.contains("authorization violation"), "{log}");
    assert!(log.contains("has refused sluice for 30s"), "{log}");
    assert!(!log.contains(&password), "the password is in the log");
}

#[tokio::test]
async fn a_pipeline_logs_in_with_a_token_an_nkey_or_a_user_and_password() {
    let scratch = std::env::temp_dir().join(format!("sluice-nkey-{}", unique_suffix()));
    std::fs::create_dir_all(&scratch).unwrap();

    // A token, from SLUICE_NATS_TOKEN.
    let token = format!("tok-{}", unique_suffix());
    let nats = PrivateNats::start_secured(vec!["--auth".into(), token.clone()]).await;
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let p = import_through(&url, vec![("SLUICE_NATS_TOKEN".into(), token.clone())]).await;
    assert!(!p.logs().contains(&token));
    drop(p);
    // The token as the URL's userinfo, as with the `nats` CLI.
    let p = import_through(&format!("nats://{token}@127.0.0.1:{}", nats.port), vec![]).await;
    assert!(!p.logs().contains(&token));
    drop(p);

    // An NKey: the server knows the public key, sluice reads the seed file.
    let user = nkeys::KeyPair::new_user();
    let seed_file = scratch.join("sluice.nk");
    std::fs::write(&seed_file, user.seed().unwrap()).unwrap();
    let config = scratch.join("nkey.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let nats = PrivateNats::start_secured(vec!["-c".into(), config.display().to_string()]).await;
    let url = format!("nats://127.0.0.1:{}", nats.port);
    import_through(
        &url,
        vec![("SLUICE_NATS_NKEY".into(), seed_file.display().to_string())],
    )
    .await;

    // A user and password from SLUICE_NATS_USER and SLUICE_NATS_PASSWORD.
    let password = format!("pw-{}", unique_suffix());
    let nats = PrivateNats::start_secured(vec![
        "--user".into(),
        "sluice".into(),
        "--pass".into(),
        password.clone(),
    ])
    .await;
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let p = import_through(
        &url,
        vec![
            ("SLUICE_NATS_USER".into(), "sluice".into()),
            ("SLUICE_NATS_PASSWORD".into(), password.clone()),
        ],
    )
    .await;
    assert!(!p.logs().contains(&password));
    let _ = std::fs::remove_dir_all(&scratch);
}

#[tokio::test]
async fn a_pipeline_saves_into_a_postgresql_that_takes_verified_tls_only() {
    let pki = Pki::generate();
    let read = |name: &str| std::fs::read_to_string(pki.path(name)).unwrap();
    let pg = PrivatePostgres::start_with_tls(
        &read("server.pem"),
        &read("server-key.pem"),
        &read("ca.pem"),
    )
    .await;
    let url = |query: &str| format!("postgres://postgres@127.0.0.1:{}/postgres?{query}", pg.port);
    // `client` must show a certificate (`cert` in pg_hba.conf).
    let verified = format!(
        "postgres://client@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        pg.port,
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem")
    );
    let sandbox = Sandbox::create_on("pgtls", &sluice_devkit::sandbox::nats_url(), &verified)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The services get DATABASE_URL with its TLS settings, as a user writes it.
    assert!(sandbox.database_url().contains("sslmode=verify-full"));
    let p = import_into(Pipeline::in_sandbox(sandbox).start().await).await;
    // The server takes nothing else (`hostnossl … reject`), so every
    // connection that worked was TLS; `doctor` says so too.
    let doctor = p.cli(&["doctor"]).await;
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.contains("PostgreSQL TLS") && said.contains("in use"),
        "{said}"
    );

    // The sandbox's settings with DATABASE_URL replaced.
    let with_database = |database_url: String| {
        let mut env = p.sandbox.service_env();
        env.retain(|(k, _)| k != "DATABASE_URL");
        env.push(("DATABASE_URL".into(), database_url));
        env
    };
    let in_sandbox = |user: &str, query: &str| {
        let (port, database) = (pg.port, &p.sandbox.database);
        with_database(format!(
            "postgres://{user}@127.0.0.1:{port}/{database}{query}"
        ))
    };

    // The same settings as libpq's variables, the URL bare.
    let mut env = in_sandbox("client", "");
    for (variable, file) in [
        ("PGSSLROOTCERT", "ca.pem"),
        ("PGSSLCERT", "client.pem"),
        ("PGSSLKEY", "client-key.pem"),
    ] {
        env.push((variable.into(), pki.path(file)));
    }
    env.push(("PGSSLMODE".into(), "verify-full".into()));
    let (succeeded, said) = sluice_with_only(&["status"], env).await;
    assert!(succeeded && said.contains("completed"), "{said}");

    // The lenient modes connect too, over TLS since the server takes
    // nothing else.
    for query in [
        "?sslmode=prefer".to_owned(),
        "?sslmode=require".to_owned(),
        format!("?sslmode=verify-ca&sslrootcert={}", pki.path("ca.pem")),
    ] {
        let (succeeded, said) = sluice_with_only(&["status"], in_sandbox("postgres", &query)).await;
        assert!(succeeded && said.contains("completed"), "{query}: {said}");
    }

    // What is refused is named.
    let status_with = |database_url: String| refused_status(with_database(database_url));
    let said = status_with(format!(
        "postgres://client@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        pki.path("ca.pem")
    ))
    .await;
    assert!(said.contains("certificate"), "{said}");
    let said = status_with(url("sslmode=disable")).await;
    assert!(said.contains("pg_hba.conf"), "{said}");
    let said = status_with(url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        pki.path("other-ca.pem")
    )))
    .await;
    assert!(said.contains("certificate"), "{said}");
    let said = status_with(url("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")).await;
    assert!(said.contains("/nonexistent/ca.pem"), "{said}");
}
