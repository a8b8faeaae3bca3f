//! Misbehaving file servers: errors, stalls, resets, trickles, slow hosts
//! and internal addresses, and files that take longer than the ack
//! deadline. Hostile file contents are in `hostile.rs`.

use std::time::Duration;

use sluice_e2e::{account_of, rows_without, Dataset, Fault, Pipeline, Route};
use sluice_messages::DeadLetterKind;

/// 500s, a stall past the read timeout, a reset and a truncated gzip body are
/// retried until the file arrives whole; a 404 and a body that is not CSV are
/// dead-lettered with the URL and the reason while every other account
/// completes; once the files exist, `sluice dead-letters replay` completes
/// the import exactly.
#[tokio::test]
async fn http_faults_are_retried_or_dead_lettered_then_replayed() {
    let p = Pipeline::start(
        "http-faults",
        &[
            ("SLUICE_RETRY_BACKOFF", "100ms"),
            ("SLUICE_READ_TIMEOUT", "1s"),
        ],
    )
    .await;
    let data = Dataset::generate(8, 800, 21);
    p.server.add_dataset(&data);
    let faults = [
        Fault::Status(500),
        Fault::Stall(Duration::from_secs(5)),
        Fault::Reset,
        Fault::Truncate,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let (path, body) = &data.files[i];
        let times = if matches!(fault, Fault::Status(_)) {
            2
        } else {
            1
        };
        let route = Route::new(body.clone()).fault_first(fault, times);
        // The truncated body is a gzip stream cut in half.
        let route = if matches!(fault, Fault::Truncate) {
            route.gzip()
        } else {
            route
        };
        p.server.set(path, route);
    }
    let (missing, missing_body) = data.files[4].clone();
    p.server.remove(&missing);
    let (not_csv, not_csv_body) = data.files[5].clone();
    p.server.set(
        &not_csv,
        Route::new("<html><body>We moved!</body></html>\n"),
    );

    let import = p.import(&p.server.url("/accounts.csv")).await.to_string();
    p.assert_saves(&rows_without(&data, &[1004, 1005]), Duration::from_secs(60))
        .await;
    for (i, requests) in [3, 2, 2, 2].into_iter().enumerate() {
        assert_eq!(
            p.server.request_count(&data.files[i].0),
            requests,
            "{}",
            data.files[i].0
        );
    }

    let mut letters = p.dead_letters().await;
    letters.sort_by_key(account_of);
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let (gone, html) = (&letters[0], &letters[1]);
    assert_eq!(
        (account_of(gone), gone.kind, gone.stage.as_str()),
        (1004, DeadLetterKind::Permanent, "fetcher")
    );
    assert_eq!(
        gone.error,
        format!("GET {} answered HTTP 404", p.server.url(&missing))
    );
    assert_eq!(account_of(html), 1005);
    assert_eq!(
        html.error,
        format!(
            "{} is not a CSV with columns id,amount: its header is \"<html><body>We moved!</body></html>\"",
            p.server.url(&not_csv)
        )
    );
    assert_eq!(gone.import_id.as_deref(), Some(import.as_str()));

    // What an operator sees: one JSON object per letter, then one in full.
    let listed = p
        .cli(&[
            "dead-letters",
            "list",
            "--import",
            &import,
            "--stage",
            "fetcher",
            "--json",
        ])
        .await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    let sequence = listed
        .iter()
        .find(|l| l["error"].as_str().is_some_and(|e| e.ends_with("HTTP 404")))
        .expect("the 404 is listed")["sequence"]
        .to_string();
    let shown = p.cli(&["dead-letters", "show", &sequence]).await;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["error"].as_str(), Some(gone.error.as_str()));
    assert_eq!(shown["kind"].as_str(), Some("permanent"));
    let none = p
        .cli(&[
            "dead-letters",
            "list",
            "--import",
            "no-such-import",
            "--json",
        ])
        .await;
    assert!(none.status.success() && none.stdout.is_empty());

    // Fix the cause, then replay.
    p.server.set(&missing, Route::new(missing_body));
    p.server.set(&not_csv, Route::new(not_csv_body));
    let out = p
        .cli(&["dead-letters", "replay", "--import", &import])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;
    assert!(
        p.dead_letters().await.is_empty(),
        "replayed letters are deleted"
    );
    p.stop().await;
}

/// A transactions file that streams for several times `ack_wait` stays owned
/// by its fetcher (in-progress acks): one download, no redelivery.
#[tokio::test]
async fn a_file_slower_than_ack_wait_is_processed_exactly_once() {
    let p = Pipeline::start("slow-file", &[("SLUICE_ACK_WAIT", "1s")]).await;
    let data = Dataset::generate(1, 2_000, 31);
    p.server.add_dataset(&data);
    let (path, body) = data.files[0].clone();
    assert!(body.len() > 20_000);
    // Over 40 chunks 100 ms apart: over four times the ack deadline.
    p.server.set(
        &path,
        Route::new(body).trickle(512, Duration::from_millis(100)),
    );
    let started = std::time::Instant::now();
    p.import(&p.server.url("/accounts.csv")).await;
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;
    assert!(started.elapsed() > Duration::from_secs(4));
    assert_eq!(p.server.request_count(&path), 1, "downloaded once");
    let ns = &p.sandbox.namespace;
    let stream =
        p.js.get_stream(ns.stream(sluice_messages::Stream::AccountUpdates))
            .await
            .unwrap();
    let info = stream.consumer_info("fetcher").await.unwrap();
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.delivered.consumer_sequence, 1, "delivered once");
    p.stop().await;
}

/// A server that trickles a file forever, never silent long enough for the
/// read timeout, cannot hold its message forever: the work is given up after
/// `SLUICE_MAX_PROCESSING_TIME`, retried, then dead-lettered as exhausted.
#[tokio::test]
async fn an_endless_trickle_is_given_up_after_the_max_processing_time() {
    let p = Pipeline::start(
        "trickle",
        &[
            ("SLUICE_MAX_PROCESSING_TIME", "1s"),
            ("SLUICE_MAX_DELIVERIES", "2"),
            ("SLUICE_RETRY_BACKOFF", "100ms"),
            ("SLUICE_READ_TIMEOUT", "2s"),
        ],
    )
    .await;
    p.server.set(
        "/accounts.csv",
        Route::new("accountId,transactionsUrl\n1,good.csv\n2,slow.csv\n"),
    );
    p.server.set(
        "/good.csv",
        Route::new("id,amount\n1,1.00\n2,2.00\n3,3.00\n"),
    );
    let mut slow = String::from("id,amount\n");
    for id in 1..=1_000 {
        slow.push_str(&format!("{id},{id}.00\n"));
    }
    // 16 bytes every 200 ms: about 20 minutes for the whole file.
    p.server.set(
        "/slow.csv",
        Route::new(slow).trickle(16, Duration::from_millis(200)),
    );
    p.import(&p.server.url("/accounts.csv")).await;

    p.assert_saves(
        &sluice_e2e::rows(&[(1, 1, "1.00"), (1, 2, "2.00"), (1, 3, "3.00")]),
        Duration::from_secs(60),
    )
    .await;
    let letters = p.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(
        (
            letters[0].kind,
            letters[0].delivered,
            letters[0].error.as_str()
        ),
        (
            DeadLetterKind::Exhausted,
            2,
            "gave up after 1s of processing (SLUICE_MAX_PROCESSING_TIME)"
        )
    );
    assert_eq!(p.server.request_count("/slow.csv"), 2);
    p.stop().await;
}

/// With the defaults, a URL on this machine is refused: loopback, like
/// every private network, is reachable only when SLUICE_ALLOW_NETWORKS
/// names it (the harness and the demo do, for their local file server).
#[tokio::test]
async fn internal_addresses_are_refused_by_default() {
    let p = Pipeline::start("deny-default", &[("SLUICE_ALLOW_NETWORKS", "")]).await;
    p.server.add_dataset(&Dataset::generate(1, 10, 3));
    let url = p.server.url("/accounts.csv");
    let id = p.import(&url).await.to_string();
    let event = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(
        event.status,
        sluice_messages::ImportStatus::CompletedWithErrors
    );
    let letters = p.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0].kind, DeadLetterKind::Permanent);
    assert_eq!(
        letters[0].error,
        format!("GET {url} refused: address 127.0.0.1 is in the denied network 127.0.0.0/8 (SLUICE_DENY_NETWORKS; SLUICE_ALLOW_NETWORKS makes exceptions)")
    );
    assert_eq!(p.sandbox.saved_count().await, 0);
    p.stop().await;
}

/// A server trickling a file fails the download once its average rate over
/// a read timeout of waiting falls under SLUICE_MIN_DOWNLOAD_RATE (retried,
/// then dead-lettered), rather than holding a slot for an hour.
#[tokio::test]
async fn a_trickling_server_is_given_up_on_by_rate() {
    let p = Pipeline::start(
        "trickle",
        &[
            ("SLUICE_READ_TIMEOUT", "2s"),
            ("SLUICE_MIN_DOWNLOAD_RATE", "1KiB"),
            ("SLUICE_MAX_DELIVERIES", "2"),
            ("SLUICE_RETRY_BACKOFF", "100ms"),
        ],
    )
    .await;
    p.server.set(
        "/accounts.csv",
        Route::new("accountId,transactionsUrl\n1,slow.csv\n2,fine.csv\n"),
    );
    let mut slow = String::from("id,amount\n");
    for id in 1..=200 {
        slow.push_str(&format!("{id},1.00\n"));
    }
    // A byte every 400 ms: about 3 bytes/s.
    p.server.set(
        "/slow.csv",
        Route::new(slow).trickle(1, Duration::from_millis(400)),
    );
    p.server.set("/fine.csv", Route::new("id,amount\n1,2.00\n"));
    let started = std::time::Instant::now();
    let id = p.import(&p.server.url("/accounts.csv")).await;
    let done = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!((done.accounts_failed, done.transactions_saved), (1, 1));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let letters = p.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].kind, DeadLetterKind::Exhausted);
    assert!(
        letters[0]
            .error
            .starts_with(&format!("{} is too slow: ", p.server.url("/slow.csv")))
            && letters[0]
                .error
                .contains("under SLUICE_MIN_DOWNLOAD_RATE (1024 bytes/s)"),
        "{}",
        letters[0].error
    );
    assert_eq!(p.server.request_count("/slow.csv"), 2);
    p.stop().await;
}

/// A slow host gets at most SLUICE_MAX_DOWNLOADS_PER_HOST downloads, and
/// its other accounts wait without a processing slot: an account on another
/// host, listed after them, is saved long before they are.
#[tokio::test]
async fn one_slow_host_cannot_take_every_slot() {
    let p = Pipeline::start(
        "per-host",
        &[
            ("SLUICE_CONCURRENCY", "2"),
            ("SLUICE_MAX_DOWNLOADS_PER_HOST", "1"),
            ("SLUICE_MIN_DOWNLOAD_RATE", "0"),
        ],
    )
    .await;
    let fast = sluice_e2e::FileServer::start().await.unwrap();
    let mut accounts = String::from("accountId,transactionsUrl\n");
    for account in 1..=6 {
        accounts.push_str(&format!("{account},slow.csv\n"));
    }
    accounts.push_str(&format!("7,{}\n", fast.url("/fast.csv")));
    p.server.set("/accounts.csv", Route::new(accounts));
    // Each slow file takes about 1.5 s; one at a time, 9 s for all six.
    p.server.set(
        "/slow.csv",
        Route::new("id,amount\n1,1.00\n").trickle(2, Duration::from_millis(170)),
    );
    fast.set("/fast.csv", Route::new("id,amount\n1,7.00\n"));
    let started = std::time::Instant::now();
    p.import(&p.server.url("/accounts.csv")).await;
    let db = p.sandbox.db().await;
    let saved = |account: i64| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT count(*) FROM transactions WHERE account_id = $1",
                &[&account],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    sluice_e2e::wait_until(
        Duration::from_secs(30),
        "the fast account saved",
        || async { saved(7).await == 1 },
    )
    .await;
    let fast_after = started.elapsed();
    let slow_done: i64 = db
        .query_one(
            "SELECT count(*) FROM transactions WHERE account_id BETWEEN 1 AND 6",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        slow_done <= 3,
        "the fast account waited for {slow_done} slow ones ({fast_after:?})"
    );
    p.assert_saves(
        &sluice_e2e::rows(&[
            (1, 1, "1.00"),
            (2, 1, "1.00"),
            (3, 1, "1.00"),
            (4, 1, "1.00"),
            (5, 1, "1.00"),
            (6, 1, "1.00"),
            (7, 1, "7.00"),
        ]),
        Duration::from_secs(60),
    )
    .await;
    // One at a time: six slow files took about six times one.
    assert!(
        started.elapsed() > Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    p.stop().await;
}

/// More files of one host than a replica can hold waiting: files that got
/// their download slot while waiting must get a processing slot back, and
/// messages holding processing slots must not wait for that host. (They did:
/// once the waiting room was full, a new message waited for the host with
/// its processing slot, and the files holding the host's slots waited for
/// processing slots, for ever.)
#[tokio::test]
async fn a_host_busier_than_the_waiting_room_never_stalls_the_fetcher() {
    let p = Pipeline::start(
        "per-host-full-room",
        &[
            ("SLUICE_CONCURRENCY", "2"),
            ("SLUICE_MAX_DOWNLOADS_PER_HOST", "1"),
            ("SLUICE_MIN_DOWNLOAD_RATE", "0"),
        ],
    )
    .await;
    // 2 in work + 6 waiting can be held at once: 40 files fill the room.
    let accounts = 40;
    let mut listing = String::from("accountId,transactionsUrl\n");
    let mut expected = Vec::new();
    for account in 1..=accounts {
        listing.push_str(&format!("{account},{account}.csv\n"));
        p.server.set(
            &format!("/{account}.csv"),
            Route::new(format!("id,amount\n1,{account}.00\n"))
                .first_byte_after(Duration::from_millis(30)),
        );
        expected.push((account, 1, format!("{account}.00")));
    }
    p.server.set("/accounts.csv", Route::new(listing));
    p.import(&p.server.url("/accounts.csv")).await;
    let expected: Vec<(i64, i64, &str)> = expected
        .iter()
        .map(|(a, i, amount)| (*a, *i, amount.as_str()))
        .collect();
    p.assert_saves(&sluice_e2e::rows(&expected), Duration::from_secs(60))
        .await;
    p.stop().await;
}

/// A request that gets no answer long after the host's usual time (a SYN
/// dropped by a full accept queue costs a second; this one is silent for a
/// minute) is sent again, twice when the first hedge meets the same
/// silence, and the first answer taken: the file comes in
/// a fraction of a second, not after the 30 s read timeout, with its rows
/// saved once, on default settings.
#[tokio::test]
async fn a_request_without_an_answer_is_hedged_and_the_first_answer_taken() {
    let p = Pipeline::start("hedged", &[]).await;
    let mut accounts = String::from("accountId,transactionsUrl\n");
    // Sixty answers first: the host's usual time, and hedges paid for.
    for account in 1..=60 {
        accounts.push_str(&format!("{account},file-{account}.csv\n"));
        p.server.set(
            &format!("/file-{account}.csv"),
            Route::new(format!("id,amount\n1,{account}.00\n")),
        );
    }
    accounts.push_str("61,silent.csv\n");
    p.server.set("/accounts.csv", Route::new(accounts));
    p.server.set(
        "/silent.csv",
        Route::new("id,amount\n1,61.00\n2,0.50\n")
            // The first hedge meets the same silence: a second one is sent.
            .fault_first(Fault::Silent(Duration::from_secs(60)), 2),
    );
    let started = std::time::Instant::now();
    let id = p.import(&p.server.url("/accounts.csv")).await;
    let done = p.completion(&id, Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(
        (done.accounts, done.accounts_failed, done.transactions_saved),
        (61, 0, 62)
    );
    assert!(
        took < Duration::from_secs(15),
        "the silent file took {took:?}"
    );
    assert_eq!(p.server.request_count("/silent.csv"), 3);
    let db = p.sandbox.db().await;
    let sum: String = db
        .query_one("SELECT sum(amount)::text FROM transactions", &[])
        .await
        .unwrap()
        .get(0);
    // 1 + 2 + … + 61, and the 0.50.
    assert_eq!(sum, "1891.50");
    p.stop().await;
}
