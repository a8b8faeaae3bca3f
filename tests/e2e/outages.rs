//! A dependency that is down is an outage, not bad input: with a retry
//! budget far shorter than the outage, nothing is dead-lettered and the
//! rows end exact. Each test has servers of its own, since it breaks them.

use std::time::Duration;

use sluice_devkit::sandbox::{admin_database_url, nats_url};
use sluice_e2e::{Dataset, Pipeline, PrivateNats, PrivatePostgres, Route};

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
    let p = Pipeline::start_on("read-only", &SHORT_BUDGET, &nats_url(), &pg.admin_url()).await;
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
    let p = Pipeline::start_on("db-down", &SHORT_BUDGET, &nats_url(), &pg.admin_url()).await;
    import_through(&p, 32, pg.restart(Duration::from_secs(8))).await;
    p.stop().await;
}

#[tokio::test]
async fn nats_stopped_for_longer_than_the_retry_budget_loses_nothing() {
    let mut nats = PrivateNats::start().await;
    let p = Pipeline::start_on(
        "nats-down",
        &SHORT_BUDGET,
        &nats.url(),
        &admin_database_url(),
    )
    .await;
    // Longer than the 10 s a publish waits for its ack, so publishes fail.
    import_through(&p, 33, nats.restart(Duration::from_secs(14))).await;
    p.stop().await;
}
