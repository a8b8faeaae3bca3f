use std::time::Duration;

use sluice_devkit::sandbox::{admin_database_url, nats_url};
use sluice_e2e::{Dataset, Pipeline, PrivateNats, PrivatePostgres};

const RESILIENCE_ENV: [(&str, &str); 3] = [
    ("SLUICE_ACK_WAIT", "2s"),
    ("SLUICE_TRANSACTIONS_PER_MESSAGE", "10"),
    ("SLUICE_CONCURRENCY", "4"),
];

/// kill -9 of each of the three services three times, in random order at
/// random moments of one import of 50,000 transactions, each restarted at
/// once: the table ends exactly right and nothing was stored twice.
#[tokio::test]
async fn killing_every_service_three_times_loses_and_duplicates_nothing() {
    let mut p = Pipeline::start("kill", &RESILIENCE_ENV).await;
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

/// Imports 20,000 transactions and runs `outage` once 4,000 are saved: the
/// import must still end exact, with nothing dead-lettered.
async fn import_through_outage(
    p: &Pipeline,
    seed: u64,
    outage: impl std::future::Future<Output = ()>,
) {
    let data = Dataset::generate(20, 20_000, seed);
    p.serve_slowly(&data, Duration::from_millis(20));
    p.import(&p.server.url("/accounts.csv")).await;
    p.sandbox
        .wait_for_count(4_000, Duration::from_secs(60))
        .await;
    outage.await;
    let saved = p.sandbox.saved_count().await;
    assert!(saved < 20_000, "the outage came mid-import ({saved} saved)");
    p.assert_saves_exactly(&data, Duration::from_secs(120))
        .await;
    assert!(p.dead_letters().await.is_empty());
}

/// The NATS server crashes and comes back mid-import: the services
/// reconnect on their own and the import completes exactly.
#[tokio::test]
async fn nats_restarted_mid_import_loses_and_duplicates_nothing() {
    let mut nats = PrivateNats::start().await;
    let p = Pipeline::start_on(
        "nats-restart",
        &RESILIENCE_ENV,
        &nats.url(),
        &admin_database_url(),
    )
    .await;
    import_through_outage(&p, 12, nats.restart(Duration::from_secs(1))).await;
    p.assert_each_message_stored_once(20, 2_000).await;
    p.stop().await;
}

/// PostgreSQL crashes and comes back mid-import: the saver's writers
/// reconnect, unacknowledged batches come again, and the rows end exact.
#[tokio::test]
async fn postgres_restarted_mid_import_loses_and_duplicates_nothing() {
    let pg = PrivatePostgres::start().await;
    let p = Pipeline::start_on("pg-restart", &RESILIENCE_ENV, &nats_url(), &pg.admin_url()).await;
    import_through_outage(&p, 13, pg.restart(Duration::from_secs(1))).await;
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
