//! The console (`sluice-console`) in a real browser: Debian's chromium,
//! driven by playwright-core (tests/browser/console.mjs), against the real
//! services. It reads and acts through the service API only.

use std::{path::PathBuf, time::Duration};

use sluice_e2e::{free_port, local_setting, Dataset, Pipeline, Route};
use sluice_messages::ImportStatus;

const TOKEN: &str = "console-test-token-0123456789";

/// Signed out, the console offers no action and refuses a forced one;
/// signed in with the token, it shows a slow import progress live to its
/// exact end, replays a dead letter whose file now exists (its rows then
/// arrive), and cancels a running import. Forms without the CSRF token,
/// or from another origin, are refused. A screenshot is kept.
#[tokio::test]
async fn the_console_follows_replays_and_cancels_in_a_browser() {
    let chromium = local_setting("SLUICE_TEST_CHROMIUM")
        .expect("`just tools` installs chromium and records SLUICE_TEST_CHROMIUM");
    let browser_tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_tests.join("node_modules/playwright-core").exists(),
        "`just tools` installs playwright-core in tests/browser"
    );
    let p = Pipeline::start("console", &[]).await;

    // An import with one file missing: its account is dead-lettered.
    let fixable = Dataset::generate_from(9_001, "/fixable", 3, 300, 72);
    p.server.add_dataset(&fixable);
    let (missing, missing_body) = fixable.files[1].clone();
    p.server.remove(&missing);
    let fixable_id = p.import(&p.server.url("/fixable/accounts.csv")).await;
    sluice_e2e::wait_until(Duration::from_secs(60), "the 404's dead letter", || async {
        !p.dead_letters().await.is_empty()
    })
    .await;
    p.server.set(&missing, Route::new(missing_body));

    // One slow enough to watch, and one slower still, to cancel.
    let steady = Dataset::generate_from(5_001, "/steady", 6, 30_000, 71);
    let big = Dataset::generate_from(1, "/big", 40, 400_000, 73);
    for (data, chunk) in [(&steady, 1024), (&big, 512)] {
        for (path, body) in &data.files {
            let route = Route::new(body.clone());
            let route = match path.ends_with("/accounts.csv") {
                true => route,
                false => route.trickle(chunk, Duration::from_millis(100)),
            };
            p.server.set(path, route);
        }
    }
    let steady_id = p.import(&p.server.url("/steady/accounts.csv")).await;
    let big_id = p.import(&p.server.url("/big/accounts.csv")).await;

    let port = free_port();
    let log = std::env::temp_dir().join(format!("sluice-console-{port}.log"));
    eprintln!("console log: {}", log.display());
    let url = format!("http://127.0.0.1:{port}");
    let mut console =
        tokio::process::Command::new(sluice_devkit::binary_dir().join("sluice-console"))
            .envs(p.sandbox.service_env())
            .env_remove("DATABASE_URL")
            .env("SLUICE_CONSOLE_ADDR", format!("127.0.0.1:{port}"))
            .env("SLUICE_CONSOLE_TOKEN", TOKEN)
            .stderr(std::fs::File::create(&log).expect("the console's log"))
            .kill_on_drop(true)
            .spawn()
            .expect("sluice-console starts");
    sluice_e2e::wait_until(Duration::from_secs(30), "the console answers", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;

    let screenshot =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/console.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&screenshot);
    let run = tokio::process::Command::new("node")
        .arg("console.mjs")
        .current_dir(&browser_tests)
        .env("CONSOLE_URL", &url)
        .env("CONSOLE_TOKEN", TOKEN)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", &screenshot)
        .env("STEADY_ID", &steady_id)
        .env("STEADY_ROWS", steady.expected.len().to_string())
        .env("FIXABLE_ID", &fixable_id)
        .env("FIXABLE_ROWS", fixable.expected.len().to_string())
        .env("BIG_ID", &big_id)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test ends within 4 minutes")
        .expect("node runs");
    let said = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_str(said.lines().last().unwrap_or("")).expect("one JSON line");
    eprintln!("the browser saw: {seen}");

    // Read-only until signed in; forged and cross-site forms refused.
    assert_eq!(seen["cancel_offered_before_sign_in"], false);
    assert_eq!(seen["forced_cancel_status"], 403);
    assert_eq!(seen["wrong_token"], "That is not the console's token.");
    assert_eq!(seen["signed_in_as"], "token holder");
    assert_eq!(seen["cancel_without_csrf_status"], 403);
    assert_eq!(seen["cross_site_cancel_status"], 403);
    assert_eq!(seen["forged_notice_shown"], false);
    assert_eq!(
        seen["stages"],
        serde_json::json!(["importer", "fetcher", "saver", "tracker"])
    );
    assert_eq!(
        seen["problems"],
        serde_json::json!([]),
        "the page logged errors"
    );

    // The slow import, watched live: counts between none and all, ending exact.
    let total = steady.expected.len() as u64;
    assert_eq!(seen["steady_saved"], total);
    let counts: Vec<u64> = serde_json::from_value(seen["steady_counts"].clone()).unwrap();
    assert!(
        counts.iter().any(|&c| c > 0 && c < total),
        "no progress shown between 0 and {total}: {counts:?}"
    );
    let steady_event = p.completion(&steady_id, Duration::from_secs(10)).await;
    assert_eq!(
        (steady_event.status, steady_event.transactions_saved),
        (ImportStatus::Completed, total)
    );
    let db = p.sandbox.db().await;
    let sum_of = |id: String| {
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT count(*), coalesce((sum(amount) * 100)::int8, 0) FROM transactions WHERE import_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (row.get::<_, i64>(0), row.get::<_, i64>(1))
        }
    };
    assert_eq!(
        sum_of(steady_id.clone()).await,
        (total as i64, steady.expected_sum_cents() as i64)
    );

    // The replay: one letter, replayed, gone; every row of the import saved.
    assert_eq!(seen["letters_of_fixable"], 1);
    assert_eq!(seen["replay_notice"], "Replayed 1 dead letter(s).");
    assert_eq!(
        sum_of(fixable_id.clone()).await,
        (
            fixable.expected.len() as i64,
            fixable.expected_sum_cents() as i64
        )
    );
    assert!(p.dead_letters().await.is_empty());

    // The cancel: the event says so, and no row of it comes after.
    let notice = seen["cancel_notice"].as_str().unwrap_or_default();
    assert!(notice.starts_with("Import cancelled: "), "{notice}");
    assert_eq!(seen["big_status"], "cancelled");
    let event = p.completion(&big_id, Duration::from_secs(5)).await;
    assert_eq!(event.status, ImportStatus::Cancelled);
    let (saved, _) = sum_of(big_id.clone()).await;
    assert_eq!(saved as u64, event.transactions_saved);
    assert!(saved < big.expected.len() as i64, "{saved}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sum_of(big_id.clone()).await.0, saved);

    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", screenshot.display());

    console.start_kill().expect("the console stops");
    let _ = console.wait().await;
    // Kept only when the test failed (its path was printed).
    let _ = std::fs::remove_file(&log);
    p.stop().await;
}
