use std::time::Duration;

use sluice_e2e::{Dataset, Pipeline, Route};
use sluice_messages::Stream;

/// kill -9 of each service in the middle of an import, each restarted:
/// the table ends exactly right, and the streams hold each message once
/// (republished outputs were recognised as duplicates).
#[tokio::test]
async fn killing_every_service_mid_import_loses_and_duplicates_nothing() {
    let mut p = Pipeline::start(
        "kill",
        &[
            ("SLUICE_ACK_WAIT", "2s"),
            ("SLUICE_TRANSACTIONS_PER_MESSAGE", "10"),
            ("SLUICE_CONCURRENCY", "4"),
        ],
    )
    .await;
    let data = Dataset::generate(50, 50_000, 11);
    // Trickled files keep every stage busy long enough to be killed mid-way.
    for (path, body) in &data.files {
        let route = if path == "/accounts.csv" {
            Route::new(body.clone()).trickle(64, Duration::from_millis(100))
        } else {
            Route::new(body.clone()).trickle(512, Duration::from_millis(10))
        };
        p.server.set(path, route);
    }
    p.import(&p.server.url("/accounts.csv")).await;

    tokio::time::sleep(Duration::from_millis(400)).await;
    p.service("importer").kill().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.service("importer").restart().unwrap();

    for (name, saved) in [("fetcher", 5_000), ("saver", 20_000), ("fetcher", 35_000)] {
        p.sandbox
            .wait_for_count(saved, Duration::from_secs(120))
            .await;
        p.service(name).kill().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.service(name).restart().unwrap();
    }

    p.assert_saves_exactly(&data, Duration::from_secs(180))
        .await;
    assert!(p.dead_letters().await.is_empty());
    for (stream, count) in [(Stream::AccountUpdates, 50), (Stream::Transactions, 5_000)] {
        let info =
            p.js.get_stream(p.sandbox.namespace.stream(stream))
                .await
                .unwrap()
                .get_info()
                .await
                .unwrap();
        assert_eq!(
            info.state.messages, count,
            "{stream:?} holds each message once"
        );
    }
    p.stop().await;
}

/// A 5xx is transient: retried with backoff until the file is served.
#[tokio::test]
async fn server_errors_are_retried_until_the_file_arrives() {
    let p = Pipeline::start("retry", &[("SLUICE_RETRY_BACKOFF", "100ms")]).await;
    let data = Dataset::generate(3, 300, 8);
    p.server.add_dataset(&data);
    p.server.set(
        "/transactions/1001.csv",
        Route::new(data.files[1].1.clone()).fail_first(503, 2),
    );
    p.import(&p.server.url("/accounts.csv")).await;
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;
    assert_eq!(p.server.request_count("/transactions/1001.csv"), 3);
    assert!(p.dead_letters().await.is_empty());
    p.stop().await;
}
