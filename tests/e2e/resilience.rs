//! Crashes, signals and outages: whatever stops mid-import (a service
//! killed or told to stop, PostgreSQL or NATS down for longer than the
//! retry budget), the rows end exact, nothing is stored twice and nothing
//! is dead-lettered. A test that breaks a server has servers of its own.

use std::time::Duration;

use sluice_devkit::sandbox::{admin_database_url, nats_url};
use sluice_e2e::{Dataset, Pipeline, PrivateNats, PrivatePostgres, Route};

/// Short ack deadlines, so a killed service's messages come back soon.
const CRASH_ENV: [(&str, &str); 3] = [
    ("SLUICE_ACK_WAIT", "2s"),
    ("SLUICE_TRANSACTIONS_PER_MESSAGE", "10"),
    ("SLUICE_CONCURRENCY", "4"),
];

/// kill -9 of each of the three services three times, in random order at
/// random moments of one import of 50,000 transactions, each restarted at
/// once: the table ends exactly right and nothing was stored twice.
#[tokio::test]
async fn killing_every_service_three_times_loses_and_duplicates_nothing() {
    let mut p = Pipeline::start("kill", &CRASH_ENV).await;
    let data = Dataset::generate(50, 50_000, 11);
    p.serve_slowly(&data, Duration::from_millis(30));
    let seed = fastrand::u64(..);
    eprintln!("kill schedule seed: {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    p.import(&p.server.url("/accounts.csv")).await;

    let mut kills = Vec::new();
    for _round in 0..3 {
        let mut order = sluice_e2e::SERVICES;
        rng.shuffle(&mut order);
        for name in order {
            tokio::time::sleep(Duration::from_millis(rng.u64(150..700))).await;
            let saved = p.sandbox.saved_count().await;
            p.service(name).kill().await;
            kills.push((name, saved));
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.service(name).restart().unwrap();
        }
    }
    eprintln!("killed (service, rows saved at the time): {kills:?}");
    assert!(
        kills.last().unwrap().1 < 50_000,
        "every kill landed mid-import"
    );

    p.assert_saves_exactly(&data, Duration::from_secs(180))
        .await;
    assert!(p.dead_letters().await.is_empty());
    p.assert_each_message_stored_once(50, 5_000).await;
    p.stop().await;
}

/// SIGTERM to the fetcher and SIGINT to the saver in the middle of files:
/// each stops pulling, hands back what it cannot finish within
/// `SLUICE_SHUTDOWN_TIMEOUT` and exits 0 promptly; restarted, they complete
/// the import exactly. With a 30 s ack deadline, work that was not handed
/// back would only return after the assertion's 20 s have passed.
#[tokio::test]
async fn sigterm_and_sigint_mid_import_exit_promptly_and_lose_nothing() {
    let mut p = Pipeline::start(
        "drain",
        &[
            ("SLUICE_SHUTDOWN_TIMEOUT", "1s"),
            ("SLUICE_ACK_WAIT", "30s"),
            ("SLUICE_TRANSACTIONS_PER_MESSAGE", "10"),
        ],
    )
    .await;
    let data = Dataset::generate(4, 8_000, 14);
    p.serve_slowly(&data, Duration::from_millis(50));
    p.import(&p.server.url("/accounts.csv")).await;
    p.sandbox.wait_for_count(500, Duration::from_secs(60)).await;

    for (name, signal) in [("fetcher", libc::SIGTERM), ("saver", libc::SIGINT)] {
        let started = std::time::Instant::now();
        let status = p
            .service(name)
            .stop_with(signal, Duration::from_secs(10))
            .await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} exits 0: {status:?}"
        );
        // Bound: the 1 s shutdown timeout, the last pull request's 2 s expiry,
        // a final flush; slack for a loaded 2-core machine.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    assert!(p.sandbox.saved_count().await < 8_000, "stopped mid-import");
    p.service("fetcher").restart().unwrap();
    p.service("saver").restart().unwrap();
    p.assert_saves_exactly(&data, Duration::from_secs(20)).await;
    p.stop().await;
}

/// Two deliveries with retries 100-200 ms apart: without pausing, any
/// outage of more than a second would exhaust it.
const SHORT_BUDGET: [(&str, &str); 6] = [
    ("SLUICE_ACK_WAIT", "2s"),
    ("SLUICE_TRANSACTIONS_PER_MESSAGE", "10"),
    ("SLUICE_CONCURRENCY", "4"),
    ("SLUICE_MAX_DELIVERIES", "2"),
    ("SLUICE_RETRY_BACKOFF", "100ms"),
    ("SLUICE_RETRY_BACKOFF_MAX", "200ms"),
];

/// Imports 20,000 transactions served slowly, runs `outage` once 2,000 are
/// saved, and checks the import ends exact, complete, with no dead letter.
async fn import_through(p: &Pipeline, seed: u64, outage: impl std::future::Future<Output = ()>) {
    let data = Dataset::generate(20, 20_000, seed);
    for (path, body) in &data.files {
        p.server.set(
            path,
            Route::new(body.clone()).trickle(512, Duration::from_millis(20)),
        );
    }
    let id = p.import(&p.server.url("/accounts.csv")).await.to_string();
    p.sandbox
        .wait_for_count(2_000, Duration::from_secs(60))
        .await;
    outage.await;
    let saved = p.sandbox.saved_count().await;
    assert!(saved < 20_000, "the outage came mid-import ({saved} saved)");
    p.assert_saves_exactly(&data, Duration::from_secs(180))
        .await;
    let letters = p.dead_letters().await;
    assert!(letters.is_empty(), "nothing dead-lettered: {letters:#?}");
    let event = p.completion(&id, Duration::from_secs(30)).await;
    assert_eq!(event.transactions_saved, 20_000);
    assert_eq!(event.dead_letters, 0);
}

#[tokio::test]
async fn a_read_only_database_for_longer_than_the_retry_budget_loses_nothing() {
    let pg = PrivatePostgres::start().await;
    let p = Pipeline::builder("read-only")
        .env(&SHORT_BUDGET)
        .on(&nats_url(), &pg.admin_url())
        .start()
        .await;
    let admin = {
        let (client, conn) = tokio_postgres::connect(&pg.admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    };
    import_through(&p, 31, async {
        // What a failover to a standby looks like to the open connections:
        // every write fails with SQLSTATE 25006.
        for sql in [
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(8)).await;
        for sql in [
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(sql).await.unwrap();
        }
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn a_stopped_database_for_longer_than_the_retry_budget_loses_nothing() {
    let pg = PrivatePostgres::start().await;
    let p = Pipeline::builder("db-down")
        .env(&SHORT_BUDGET)
        .on(&nats_url(), &pg.admin_url())
        .start()
        .await;
    import_through(&p, 32, pg.restart(Duration::from_secs(8))).await;
    p.stop().await;
}

#[tokio::test]
async fn nats_stopped_for_longer_than_the_retry_budget_loses_nothing() {
    let mut nats = PrivateNats::start().await;
    let p = Pipeline::builder("nats-down")
        .env(&SHORT_BUDGET)
        .on(&nats.url(), &admin_database_url())
        .start()
        .await;
    // Longer than the 10 s a publish waits for its ack, so publishes fail.
    import_through(&p, 33, nats.restart(Duration::from_secs(14))).await;
    p.assert_each_message_stored_once(20, 2_000).await;
    p.stop().await;
}
