//! Import lifecycle: one completion event per import, exactly when every
//! transaction is committed or dead-lettered, with exact counts.

use std::time::Duration;

use futures_util::StreamExt;
use sluice_e2e::{Dataset, ExpectedRow, Pipeline, Route};
use sluice_messages::{ImportCompleted, ImportStatus};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The event arrives once, and at the moment it arrives every row is
/// already committed.
#[tokio::test]
async fn completion_is_published_once_after_every_row_is_committed() {
    let p = Pipeline::start("complete", &[]).await;
    let data = Dataset::generate(20, 5_000, 51);
    p.server.add_dataset(&data);
    let mut events = p.subscribe_to_events().await;
    let url = p.server.url("/accounts.csv");
    let id = p.import(&url).await.to_string();

    let message = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("completion within 60 s")
        .expect("subscription open");
    let rows_at_event = p.sandbox.saved_rows().await;
    assert_eq!(
        rows_at_event, data.expected,
        "every row committed before the event"
    );
    let event: ImportCompleted = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        message.subject.as_str(),
        p.sandbox.namespace.import_events(&id)
    );
    assert_eq!(
        (event.import_id.as_str(), event.status, event.url.as_deref()),
        (id.as_str(), ImportStatus::Completed, Some(url.as_str()))
    );
    assert_eq!(
        (
            event.accounts,
            event.accounts_failed,
            event.transactions_saved,
            event.rows_rejected,
            event.dead_letters
        ),
        (20, 0, 5_000, 0, 0)
    );
    assert!(event.started_at.is_some() && !event.finished_at.is_empty());

    p.wait_until_idle(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    p.stop().await;
}

/// Three saver replicas each run the completion announcer: each of 20
/// imports still gets exactly one event on a core subscription (what
/// `nats sub 'import-events.>'` shows), not one per replica that saw it
/// settle, and no replica warns about the one it did not publish.
#[tokio::test]
async fn three_savers_put_one_completion_event_on_the_wire_per_import() {
    let p = Pipeline::builder("oneevent").replicas(3).start().await;
    let data = Dataset::generate(3, 30, 58);
    p.server.add_dataset(&data);
    let mut events = p.subscribe_to_events().await;
    let url = p.server.url("/accounts.csv");
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..20 {
        ids.insert(p.import(&url).await.to_string());
    }
    let mut seen: std::collections::BTreeMap<String, u32> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < ids.len() {
        let message = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("events for {} of {} imports", seen.len(), ids.len()))
            .expect("subscription open");
        let event: ImportCompleted = serde_json::from_slice(&message.payload).unwrap();
        *seen.entry(event.import_id).or_default() += 1;
    }
    // A second publish comes within milliseconds of the first; wait well past.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await
    {
        let event: ImportCompleted = serde_json::from_slice(&message.payload).unwrap();
        *seen.entry(event.import_id).or_default() += 1;
    }
    assert_eq!(
        seen.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        ids
    );
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "events per import: {doubled:?}");
    // The imports listed the same rows: each is saved once.
    p.assert_saves_exactly(&data, Duration::from_secs(10)).await;
    let logs = p.logs();
    assert!(
        !logs.contains("cannot announce completed imports yet"),
        "{logs}"
    );
    p.stop().await;
}

/// A 404 account and malformed rows in both files: the import completes
/// with errors, `import --wait` exits 1 and names each failure.
#[tokio::test]
async fn failures_complete_with_errors_and_wait_exits_non_zero() {
    let p = Pipeline::start("with-errors", &[]).await;
    let data = Dataset::generate(5, 500, 52);
    p.server.add_dataset(&data);
    let (missing, _) = &data.files[1];
    p.server.remove(missing);
    let (bad_file, body) = &data.files[2];
    let bad_body = format!("{}x,1.00\n", text(body));
    p.server.set(bad_file, Route::new(bad_body.clone()));
    let accounts = format!("{}notanumber,elsewhere.csv\n", text(&data.files[5].1));
    p.server.set("/accounts.csv", Route::new(accounts));
    let url = p.server.url("/accounts.csv");

    let out = p.cli(&["import", &url, "--wait"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let id = lines[0];
    assert!(
        lines[1].starts_with(&format!(
            "import {id} completed with errors: 5 accounts (1 failed), 400 transactions saved, 2 rows rejected, 1 dead letters, "
        )),
        "{stdout}"
    );
    let mut failures: Vec<&str> = lines[2..].to_vec();
    failures.sort();
    let bad_line = bad_body.lines().count();
    assert_eq!(
        failures,
        [
            format!("  fetcher malformed-row: {} line {bad_line}: id \"x\" is not a 64-bit integer", p.server.url(bad_file)),
            format!("  fetcher permanent: GET {} answered HTTP 404", p.server.url(missing)),
            format!("  importer malformed-row: {url} line 7: accountId \"notanumber\" is not a 64-bit integer"),
        ]
    );
    assert!(stderr.trim_end().ends_with(&format!("sluice: import {id} completed with errors (details: sluice dead-letters list --import {id})")), "{stderr}");

    let want: Vec<ExpectedRow> = data
        .expected
        .iter()
        .filter(|r| r.account_id != 1001)
        .cloned()
        .collect();
    assert_eq!(p.sandbox.saved_rows().await, want);
    assert_eq!(p.completion_count(id).await, 1);
    p.stop().await;
}

/// An accounts file with no account, and one whose accounts all have empty
/// transactions files, both complete; `--wait` exits 0 with its summary.
#[tokio::test]
async fn empty_imports_complete() {
    let p = Pipeline::start("empty", &[]).await;
    p.server
        .set("/none.csv", Route::new("accountId,transactionsUrl\n"));
    p.server.set(
        "/three.csv",
        Route::new("accountId,transactionsUrl\n1,e.csv\n2,e.csv\n3,e.csv\n"),
    );
    p.server.set("/e.csv", Route::new("id,amount\r\n"));

    let out = p
        .cli(&[
            "import",
            &p.server.url("/none.csv"),
            "--wait",
            "--id",
            "none",
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], "none");
    assert!(lines[1].starts_with("import none completed: 0 accounts (0 failed), 0 transactions saved, 0 rows rejected, 0 dead letters, "));

    let id = p.import(&p.server.url("/three.csv")).await.to_string();
    let event = p.completion(&id, Duration::from_secs(30)).await;
    assert_eq!(
        (event.status, event.accounts, event.transactions_saved),
        (ImportStatus::Completed, 3, 0)
    );
    assert_eq!(p.sandbox.saved_count().await, 0);
    p.stop().await;
}

/// Two imports at once are tallied apart.
#[tokio::test]
async fn concurrent_imports_are_tracked_separately() {
    let p = Pipeline::start("two", &[]).await;
    let a = Dataset::generate_from(1_000, "/a", 10, 3_000, 53);
    let b = Dataset::generate_from(5_000, "/b", 15, 4_000, 54);
    p.server.add_dataset(&a);
    p.server.add_dataset(&b);
    let (id_a, id_b) = (
        p.import(&p.server.url("/a/accounts.csv")).await.to_string(),
        p.import(&p.server.url("/b/accounts.csv")).await.to_string(),
    );
    let (event_a, event_b) = (
        p.completion(&id_a, Duration::from_secs(60)).await,
        p.completion(&id_b, Duration::from_secs(60)).await,
    );
    assert_eq!(
        (event_a.accounts, event_a.transactions_saved, event_a.status),
        (10, 3_000, ImportStatus::Completed)
    );
    assert_eq!(
        (event_b.accounts, event_b.transactions_saved, event_b.status),
        (15, 4_000, ImportStatus::Completed)
    );
    let mut want = a.expected.clone();
    want.extend(b.expected.iter().cloned());
    p.assert_saves(&want, Duration::from_secs(30)).await;
    assert_eq!(
        (
            p.completion_count(&id_a).await,
            p.completion_count(&id_b).await
        ),
        (1, 1)
    );
    p.stop().await;
}

/// kill -9 of the saver (and with it the tracker), the fetcher and the
/// importer during an import: the completion is still exact and fires once.
#[tokio::test]
async fn completion_survives_kill_9_exactly_once() {
    let mut p = Pipeline::start(
        "complete-kill",
        &[
            ("SLUICE_ACK_WAIT", "2s"),
            ("SLUICE_TRANSACTIONS_PER_MESSAGE", "10"),
            ("SLUICE_CONCURRENCY", "4"),
        ],
    )
    .await;
    let data = Dataset::generate(30, 30_000, 55);
    for (path, body) in &data.files {
        let delay = if path == "/accounts.csv" { 100 } else { 40 };
        p.server.set(
            path,
            Route::new(body.clone()).trickle(256, Duration::from_millis(delay)),
        );
    }
    let id = p.import(&p.server.url("/accounts.csv")).await.to_string();
    for (name, after) in [
        ("importer", 300),
        ("saver", 1_500),
        ("fetcher", 700),
        ("saver", 1_500),
    ] {
        tokio::time::sleep(Duration::from_millis(after)).await;
        p.service(name).kill().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.service(name).restart().unwrap();
    }
    assert!(p.sandbox.saved_count().await < 30_000, "killed mid-import");
    let event = p.completion(&id, Duration::from_secs(120)).await;
    assert_eq!(
        (
            event.status,
            event.accounts,
            event.accounts_failed,
            event.transactions_saved,
            event.dead_letters
        ),
        (ImportStatus::Completed, 30, 0, 30_000, 0)
    );
    assert_eq!(
        p.sandbox.saved_rows().await,
        data.expected,
        "every row committed before the event"
    );
    p.wait_until_idle(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    p.stop().await;
}

/// An account that fails after publishing part of its file must not let
/// the import complete before the healthy account's rows are all saved:
/// completion matches each fetched account's announced messages, key by
/// key, and a failed account's messages count for nothing.
#[tokio::test]
async fn completion_waits_for_every_healthy_row_when_an_account_fails_part_way() {
    let p = Pipeline::start(
        "partial-fail",
        &[
            ("SLUICE_BATCH_SIZE", "1"),
            ("SLUICE_CONCURRENCY", "1"),
            ("SLUICE_MAX_ROW_LENGTH", "64KiB"),
        ],
    )
    .await;
    // Account 1: 3,000 good rows, then a 70 KiB line that fails the file.
    let mut failing = String::from("id,amount\n");
    for id in 1..=3_000 {
        failing.push_str(&format!("{id},1.00\n"));
    }
    failing.push_str(&format!("3001,\"{}\"\n", "9".repeat(70 * 1024)));
    let mut healthy = String::from("id,amount\n");
    for id in 1..=3_000 {
        healthy.push_str(&format!("{id},2.50\n"));
    }
    p.server.set(
        "/accounts.csv",
        Route::new("accountId,transactionsUrl\n1,/a.csv\n2,/b.csv\n"),
    );
    p.server.set("/a.csv", Route::new(failing));
    p.server.set("/b.csv", Route::new(healthy));
    let id = p.import(&p.server.url("/accounts.csv")).await.to_string();

    let event = p.completion(&id, Duration::from_secs(120)).await;
    let db = p.sandbox.db().await;
    let healthy_saved: i64 = db
        .query_one(
            "SELECT count(*) FROM transactions WHERE account_id = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        healthy_saved, 3_000,
        "every row of the healthy account is saved when the import completes"
    );
    assert_eq!(event.status, ImportStatus::CompletedWithErrors);
    assert_eq!(event.accounts_failed, 1);
    assert_eq!(event.dead_letters, 1);
    p.stop().await;
}

/// Two replicas of every stage and four imports at once: every writer of
/// every import commits without waiting on a shared row, so no deadlock is
/// ever reported, and each import completes exactly once with its rows.
#[tokio::test]
async fn replicas_and_concurrent_imports_never_deadlock() {
    let p = Pipeline::builder("contention")
        .env(&[("SLUICE_BATCH_SIZE", "20")])
        .replicas(2)
        .start()
        .await;
    let parts: Vec<Dataset> = (0..4)
        .map(|k| {
            Dataset::generate_from(
                10_000 * (k + 1),
                &format!("/p{k}"),
                12,
                6_000,
                60 + k as u64,
            )
        })
        .collect();
    let mut ids = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        p.server.add_dataset(part);
        ids.push(
            p.import(&p.server.url(&format!("/p{k}/accounts.csv")))
                .await
                .to_string(),
        );
    }
    for id in &ids {
        let event = p.completion(id, Duration::from_secs(120)).await;
        assert_eq!(
            (event.accounts, event.transactions_saved, event.status),
            (12, 6_000, ImportStatus::Completed)
        );
    }
    let want: Vec<ExpectedRow> = parts
        .iter()
        .flat_map(|d| d.expected.iter().cloned())
        .collect();
    p.assert_saves(&want, Duration::from_secs(30)).await;
    for id in &ids {
        assert_eq!(p.completion_count(id).await, 1);
    }
    let deadlocks: usize = std::fs::read_dir(&p.deployment.log_dir)
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap_or_default())
        .map(|log| log.matches("deadlock detected").count())
        .sum();
    assert_eq!(deadlocks, 0, "logs in {}", p.deployment.log_dir.display());
    p.stop().await;
}

/// Replicas starting together on a new database: each migrates it at
/// once, none fails on a catalog race ("type sluice_migrations already
/// exists" once made a saver's announcer warn), and each migration is
/// applied once.
#[tokio::test]
async fn savers_migrating_a_new_database_together_all_succeed() {
    // A race lost only now and then (within a few rounds before the fix): twelve
    // new databases, eight savers at once on each.
    for _ in 0..12 {
        let sandbox = sluice_devkit::Sandbox::new("migrating").await;
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(sandbox.db().await);
        }
        let results =
            futures_util::future::join_all(clients.iter().map(sluice_saver::migrate)).await;
        for result in results {
            result.unwrap();
        }
        let row = clients[0]
            .query_one(
                "SELECT count(*), count(DISTINCT version), max(version) FROM sluice_migrations",
                &[],
            )
            .await
            .unwrap();
        let (count, distinct, max): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
        let want = sluice_saver::SCHEMA_VERSION as i64;
        assert_eq!((count, distinct, i64::from(max)), (want, want, want));
    }
}

/// The completion check against a real database, fed rows directly: an
/// import completes only when every key a fetched account announced is
/// committed or dead-lettered; counts of other messages never stand in.
#[tokio::test]
async fn completion_matches_announced_keys_one_by_one() {
    let sandbox = sluice_devkit::Sandbox::new("matching").await;
    let db = sandbox.db().await;
    sluice_saver::migrate(&db).await.unwrap();
    db.batch_execute(
        "INSERT INTO imports (id, accounts_listed) VALUES ('m', 2);
         -- Account 1 announced 3 windows of 10 lines; account 2 was dead-lettered.
         INSERT INTO import_accounts (import_id, account_key, account_id, state, messages, lines_per_message, transactions)
             VALUES ('m', 'm/2', 1, 'fetched', 3, 10, 25), ('m', 'm/3', 2, 'failed', 0, 0, 0);
         UPDATE imports SET accounts_settled = 2, accounts_failed = 1, failures = 1 WHERE id = 'm';
         INSERT INTO import_chunks (import_id, chunk_key, account_key, state, transactions, inserted) VALUES
             ('m', 'm/2/lines-2-11', 'm/2', 'saved', 10, 10),
             ('m', 'm/2/lines-12-21', 'm/2', 'saved', 10, 10),
             -- A run with another window size, and the failed account's output.
             ('m', 'm/2/lines-2-6', 'm/2', 'saved', 5, 0),
             ('m', 'm/3/lines-2-11', 'm/3', 'saved', 10, 10);",
    )
    .await
    .unwrap();
    let read = async |db: &tokio_postgres::Client| -> (String, i64) {
        let row = db
            .query_one(
                "SELECT status, transactions_saved FROM imports WHERE id = 'm'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    // Three messages recorded for account 1, but only two of its keys.
    sluice_saver::complete_finished(&db).await.unwrap();
    assert_eq!(read(&db).await.0, "running");

    db.batch_execute(
        "INSERT INTO import_chunks (import_id, chunk_key, account_key, state, transactions, inserted)
             VALUES ('m', 'm/2/lines-22-31', 'm/2', 'failed', 0, 0)",
    )
    .await
    .unwrap();
    sluice_saver::complete_finished(&db).await.unwrap();
    let (status, saved) = read(&db).await;
    assert_eq!(status, "completed_with_errors");
    assert_eq!(saved, 30, "rows actually inserted by the import's messages");
}

/// `sluice cancel` midway through a million-row import: it ends within
/// seconds, `cancelled`, with what it saved; nothing of it is written
/// after its event, no new file of it is fetched, and an import running
/// beside it is untouched.
#[tokio::test]
async fn cancelling_a_large_import_midway_ends_it_at_once_and_leaves_a_concurrent_one_whole() {
    let p = Pipeline::start("cancel", &[]).await;
    let big = Dataset::generate_from(1, "/big", 100, 1_000_000, 61);
    let beside = Dataset::generate_from(20_000, "/beside", 20, 20_000, 62);
    // Slow enough to be midway for a while.
    for (path, body) in &big.files {
        let route = Route::new(body.clone());
        let route = match path.ends_with("/accounts.csv") {
            true => route,
            false => route.trickle(16 << 10, Duration::from_millis(20)),
        };
        p.server.set(path, route);
    }
    p.server.add_dataset(&beside);
    let id = p.import(&p.server.url("/big/accounts.csv")).await;
    let saved_of = |import: String| {
        let sandbox = &p.sandbox;
        async move {
            sandbox
                .db()
                .await
                .query_one(
                    "SELECT count(*) FROM transactions WHERE import_id = $1",
                    &[&import],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    sluice_e2e::wait_until(
        Duration::from_secs(120),
        "a tenth of the big import saved",
        || async { saved_of(id.clone()).await >= 100_000 },
    )
    .await;
    let other = p.import(&p.server.url("/beside/accounts.csv")).await;
    let fetched = || {
        p.server
            .requests()
            .iter()
            .filter(|seen| seen.path.starts_with("/big/transactions/"))
            .count()
    };

    let asked = std::time::Instant::now();
    let cancel = p.cli(&["cancel", &id]).await;
    let said = String::from_utf8_lossy(&cancel.stdout).into_owned();
    assert!(
        cancel.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    assert!(
        said.starts_with(&format!("import {id} cancelled: ")),
        "{said}"
    );
    let event = p.completion(&id, Duration::from_secs(5)).await;
    let took = asked.elapsed();
    eprintln!("cancelled: the completion event came {took:?} after `sluice cancel`");
    assert!(took <= Duration::from_secs(5), "{took:?}");
    assert_eq!(event.status, ImportStatus::Cancelled, "{event:?}");
    let at_event = saved_of(id.clone()).await;
    assert_eq!(event.transactions_saved, at_event as u64, "{event:?}");
    assert!(
        (100_000..1_000_000).contains(&at_event),
        "{at_event} rows saved"
    );
    // What was under way when the stages heard of it ends without a row.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let files = fetched();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        saved_of(id.clone()).await,
        at_event,
        "a row written after the event"
    );
    assert_eq!(
        fetched(),
        files,
        "a file of the cancelled import fetched after it ended"
    );
    assert!(files < 100, "every file was fetched all the same");

    // The import beside it: whole, exact, completed.
    let beside_event = p.completion(&other, Duration::from_secs(60)).await;
    assert_eq!(
        (beside_event.status, beside_event.transactions_saved),
        (ImportStatus::Completed, 20_000)
    );
    let row = p
        .sandbox
        .db()
        .await
        .query_one(
            "SELECT count(*), (sum(amount) * 100)::int8 FROM transactions WHERE import_id = $1",
            &[&other],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (20_000, beside.expected_sum_cents() as i64)
    );
    // Cancelling again answers the same; the event stays one.
    let again = p.cli(&["cancel", &id]).await;
    assert!(again.status.success());
    let done = p.cli(&["cancel", &other]).await;
    assert!(!done.status.success());
    assert!(
        String::from_utf8_lossy(&done.stderr).contains("ended already (completed)"),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    p.stop().await;
}
