//! Where files can live: servers that want credentials. An import names a
//! credential the operator configured (`SLUICE_DOWNLOAD_CREDENTIALS`); its
//! secret is sent only to the URLs it is scoped to, never after a redirect
//! to another host, and shows nowhere.

use std::time::Duration;

use sluice_devkit::Dataset;
use sluice_download::{Credentials, DownloadError, DownloadOptions, Downloader, Networks, Row};
use sluice_e2e::{objects::S3Server, FileServer, Pipeline, Route};
use sluice_messages::ImportStatus;

const TOKEN: &str = "tok-3f9a61c2-never-shown";
const API_KEY: &str = "key-7d1e44b0-never-shown";

/// A downloader that may reach this machine, with `credentials` (JSON).
fn downloader(credentials: &str) -> Downloader {
    let mut options = DownloadOptions::default();
    options.addresses.allow = Networks::parse("127.0.0.0/8").unwrap();
    options.credentials = Credentials::load(credentials).unwrap();
    Downloader::new(&options).unwrap()
}

/// `partner-a`: a bearer token and an API key, for `scope` only.
fn partner_a(scope: &str) -> String {
    serde_json::json!({
        "partner-a": {
            "scope": [scope],
            "bearer": TOKEN,
            "headers": {"X-Api-Key": API_KEY},
        }
    })
    .to_string()
}

async fn read_all(
    downloader: &Downloader,
    url: &str,
    credential: Option<&str>,
) -> Result<usize, DownloadError> {
    let mut file = downloader.open(url, credential, &["id", "amount"]).await?;
    let mut rows = 0;
    while let Some(row) = file.next_row().await? {
        assert!(matches!(row, Row::Record(_)));
        rows += 1;
    }
    Ok(rows)
}

/// Whether any request `server` saw carried the secrets.
fn saw_secret(server: &FileServer) -> bool {
    server.requests().iter().any(|seen| {
        seen.headers.values().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.contains(TOKEN) || v.contains(API_KEY))
        })
    })
}

const CSV: &str = "id,amount\n1,1.50\n2,-2.25\n3,3.00\n";

#[tokio::test]
async fn a_server_that_wants_a_bearer_token_gets_the_named_credentials_and_only_then() {
    let server = FileServer::start().await.unwrap();
    server.set(
        "/exports/t.csv",
        Route::new(CSV).require_header("authorization", &format!("Bearer {TOKEN}")),
    );
    let url = server.url("/exports/t.csv");
    let downloader = downloader(&partner_a(&server.url("/exports/")));

    assert_eq!(
        read_all(&downloader, &url, Some("partner-a"))
            .await
            .unwrap(),
        3
    );

    let refused = read_all(&downloader, &url, None).await.unwrap_err();
    assert_eq!(refused.to_string(), format!("GET {url} answered HTTP 401"));
    assert!(!refused.is_transient());

    // Named, but the file lies outside its scope: not sent, and the error says so.
    server.set(
        "/private/t.csv",
        Route::new(CSV).require_header("authorization", &format!("Bearer {TOKEN}")),
    );
    let outside = server.url("/private/t.csv");
    let refused = read_all(&downloader, &outside, Some("partner-a"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!(
            "GET {outside} answered HTTP 401 (credential \"partner-a\" is not scoped to this URL, so it was not sent)"
        )
    );
    let sent_outside = server
        .requests()
        .iter()
        .filter(|seen| seen.path == "/private/t.csv")
        .any(|seen| {
            seen.headers.contains_key("authorization") || seen.headers.contains_key("x-api-key")
        });
    assert!(!sent_outside, "a credential went outside its scope");
}

#[tokio::test]
async fn a_credential_never_reaches_another_host_not_even_through_a_redirect() {
    let (a, b) = (
        FileServer::start().await.unwrap(),
        FileServer::start().await.unwrap(),
    );
    // Host A redirects, once within its own scope and then to host B.
    a.set("/start.csv", Route::redirect("/moved.csv"));
    a.set("/moved.csv", Route::redirect(&b.url("/t.csv")));
    b.set("/t.csv", Route::new(CSV));
    // Host A's protected file, reached through a redirect on A itself.
    a.set("/hop.csv", Route::redirect("/protected.csv"));
    a.set(
        "/protected.csv",
        Route::new(CSV).require_header("x-api-key", API_KEY),
    );
    let downloader = downloader(&partner_a(&a.url("/")));

    assert_eq!(
        read_all(&downloader, &a.url("/start.csv"), Some("partner-a"))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        read_all(&downloader, &a.url("/hop.csv"), Some("partner-a"))
            .await
            .unwrap(),
        3
    );

    let on_a: Vec<_> = a.requests();
    assert_eq!(on_a.len(), 4, "{on_a:?}");
    assert!(
        on_a.iter()
            .all(|seen| seen.headers.get("x-api-key").is_some_and(|v| v == API_KEY)),
        "every hop on host A carries the credential"
    );
    assert_eq!(b.request_count("/t.csv"), 1);
    assert!(!saw_secret(&b), "host B saw a secret: {:?}", b.requests());

    // A redirect from https to http, or to another scheme, is refused.
    a.set("/ftp.csv", Route::redirect("ftp://example.com/t.csv"));
    let refused = read_all(&downloader, &a.url("/ftp.csv"), None)
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!(
            "GET {} redirects to ftp://example.com/t.csv, not http or https",
            a.url("/ftp.csv")
        )
    );
}

#[tokio::test]
async fn a_credential_name_nobody_configured_is_refused_clearly() {
    let server = FileServer::start().await.unwrap();
    server.set("/t.csv", Route::new(CSV));
    let downloader = downloader(&partner_a(&server.url("/")));
    let refused = read_all(&downloader, &server.url("/t.csv"), Some("partner-b"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "no download credential is named \"partner-b\" here: those configured are partner-a"
    );
    assert!(!refused.is_transient());
    assert_eq!(server.request_count("/t.csv"), 0, "nothing was fetched");
}

#[tokio::test]
async fn an_import_fetches_with_a_named_credential_whose_secret_shows_nowhere() {
    // The server comes first: the credential is scoped to its address.
    let server = FileServer::start().await.unwrap();
    let data = Dataset::generate(6, 40, 27);
    for (path, body) in &data.files {
        server.set(
            path,
            Route::new(body.clone()).require_header("authorization", &format!("Bearer {TOKEN}")),
        );
    }
    let credentials = partner_a(&server.url("/"));
    let p = Pipeline::builder("credentials")
        .env(&[("SLUICE_DOWNLOAD_CREDENTIALS", &credentials)])
        .start()
        .await;

    let url = server.url("/accounts.csv");
    let id = p
        .publish_json(serde_json::json!({"url": url, "credentials": "partner-a"}))
        .await;
    let event = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    assert_eq!(event.accounts, 6);
    p.assert_saves_exactly(&data, Duration::from_secs(30)).await;

    // Without the credential the server refuses: the import fails, clearly.
    let without = p.import(&url).await;
    let event = p.completion(&without, Duration::from_secs(60)).await;
    assert_eq!(event.status, ImportStatus::CompletedWithErrors, "{event:?}");
    // A name nobody configured fails the import before anything is fetched.
    let served = server.requests().len();
    let unknown = p
        .publish_json(serde_json::json!({"url": url, "credentials": "partner-x"}))
        .await;
    let event = p.completion(&unknown, Duration::from_secs(60)).await;
    assert_eq!(event.status, ImportStatus::CompletedWithErrors, "{event:?}");
    assert_eq!(server.requests().len(), served, "nothing was fetched");

    let letters = p.dead_letters().await;
    let errors: Vec<&str> = letters.iter().map(|l| l.error.as_str()).collect();
    assert!(
        errors.contains(&format!("GET {url} answered HTTP 401").as_str()),
        "{errors:?}"
    );
    assert!(
        errors.contains(
            &"no download credential is named \"partner-x\" here: those configured are partner-a"
        ),
        "{errors:?}"
    );
    let letters = serde_json::to_string(&letters).unwrap();
    let logs = p.logs();
    for secret in [TOKEN, API_KEY] {
        assert!(!letters.contains(secret), "a dead letter shows a secret");
        assert!(!logs.contains(secret), "a log shows a secret");
    }
    p.stop().await;
}

/// A pipeline that reads `s3`'s buckets as `buckets` allows.
async fn reading(s3: &S3Server, name: &str, buckets: &str) -> Pipeline {
    let env = s3.env(buckets);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Pipeline::builder(name).env(&env).start().await
}

/// Every dead letter's error, sorted.
async fn errors(p: &Pipeline) -> Vec<String> {
    let mut errors: Vec<String> = p
        .dead_letters()
        .await
        .into_iter()
        .map(|l| l.error)
        .collect();
    errors.sort();
    errors
}

/// Gzip, as a store holds a compressed object.
fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn an_import_streams_objects_from_an_s3_store_relative_keys_gzip_and_a_million_rows() {
    let s3 = S3Server::start().await;
    s3.create_bucket("exports").await;
    // Links relative to the accounts object: `transactions/<id>.csv`. Every
    // other transactions object is stored gzipped, as `Content-Encoding` says.
    let data = Dataset::generate_from(1_000, "/monthly", 8, 400, 31);
    for (i, (path, body)) in data.files.iter().enumerate() {
        let key = path.trim_start_matches('/');
        match i % 2 == 1 && !key.ends_with("accounts.csv") {
            true => s3.put("exports", key, gzip(body), Some("gzip")).await,
            false => s3.put("exports", key, body.clone(), None).await,
        }
    }
    let big = Dataset::generate_from(9_000, "/big", 1, 1_000_000, 5);
    for (path, body) in &big.files {
        s3.put("exports", path.trim_start_matches('/'), body.clone(), None)
            .await;
    }
    s3.put(
        "exports",
        "payroll/accounts.csv",
        "accountId,transactionsUrl\n",
        None,
    )
    .await;
    // Two prefixes of the bucket may be read; `payroll/` may not.
    let p = reading(&s3, "s3", "exports/monthly/, s3://exports/big/").await;

    let small = p.import("s3://exports/monthly/accounts.csv").await;
    let large = p.import("s3://exports/big/accounts.csv").await;
    let missing = p.import("s3://exports/monthly/nowhere.csv").await;
    let outside = p.import("s3://exports/payroll/accounts.csv").await;
    let bad_bucket = p.import("s3://ex%60ports/a.csv").await;
    for id in [&small, &large] {
        let event = p.completion(id, Duration::from_secs(180)).await;
        assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    }
    for id in [&missing, &outside, &bad_bucket] {
        let event = p.completion(id, Duration::from_secs(60)).await;
        assert_eq!(event.status, ImportStatus::CompletedWithErrors, "{event:?}");
    }
    let mut rows = data.expected.clone();
    rows.extend(big.expected.iter().cloned());
    p.assert_saves(&rows, Duration::from_secs(60)).await;
    assert_eq!(
        errors(&p).await,
        [
            "GET s3://ex%60ports/a.csv: not a bucket name (3 to 63 characters of a-z 0-9 . -)",
            "GET s3://exports/monthly/nowhere.csv: not found (404)",
            "GET s3://exports/payroll/accounts.csv: refused: not in the buckets and key prefixes SLUICE_S3_BUCKETS allows",
        ]
    );
    p.stop().await;
}

#[tokio::test]
async fn an_object_the_store_refuses_to_show_fails_its_import_clearly() {
    // Two requests fill the bucket; after them the store checks signatures,
    // and the key the services sign with is not one it issued.
    let s3 = S3Server::start_checking_after(2).await;
    s3.create_bucket("private").await;
    s3.put(
        "private",
        "accounts.csv",
        "accountId,transactionsUrl\n1,t/1.csv\n",
        None,
    )
    .await;
    let p = reading(&s3, "s3-denied", "private").await;
    let id = p.import("s3://private/accounts.csv").await;
    let event = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(event.status, ImportStatus::CompletedWithErrors, "{event:?}");
    assert_eq!(
        errors(&p).await,
        ["GET s3://private/accounts.csv: access denied (403)"]
    );
    assert!(
        !p.logs().contains("sluice-test-secret"),
        "a log shows the secret key"
    );
    p.stop().await;
}

/// Short ack deadlines, so a killed fetcher's account comes back soon.
const RESUME_ENV: [(&str, &str); 1] = [("SLUICE_ACK_WAIT", "2s")];

/// Serves `data`'s transactions file slower than the fetcher reads (about
/// 2.6 MB/s), so that what the server sent is what the fetcher got.
fn serve_steadily(server: &FileServer, data: &Dataset, ranges: bool) -> (String, u64) {
    let mut file = None;
    for (path, body) in &data.files {
        let mut route = Route::new(body.clone());
        if path.contains("/transactions/") {
            route = route.trickle(32 << 10, Duration::from_millis(12));
            file = Some((path.clone(), body.len() as u64));
        }
        if !ranges {
            route = route.without_ranges();
        }
        server.set(path, route);
    }
    file.expect("a transactions file")
}

/// Imports the account of `path`, and kills the fetcher each time the
/// server has sent another of `kills` (in files' worth: 0.6, 1.2 is twice
/// in the second reading) and starts it again; waits for the import to end.
async fn import_killing_the_fetcher(
    p: &mut Pipeline,
    server: &FileServer,
    path: &str,
    size: u64,
    kills: &[f64],
) -> (sluice_messages::ImportCompleted, String) {
    let prefix = path.split("/transactions/").next().unwrap();
    let id = p
        .import(&server.url(&format!("{prefix}/accounts.csv")))
        .await;
    for at in kills {
        sluice_e2e::wait_until(
            Duration::from_secs(120),
            "the fetcher to get into the file",
            || async { server.bytes_sent(path) as f64 >= at * size as f64 },
        )
        .await;
        p.service("fetcher").kill().await;
        let reading_ends = (at.floor() + 1.0) * size as f64;
        assert!(
            (server.bytes_sent(path) as f64) < reading_ends,
            "killed mid-reading"
        );
        p.service("fetcher").restart().unwrap();
    }
    let event = p.completion(&id, Duration::from_secs(240)).await;
    (event, id)
}

/// The rows saved for `account`: their count and sum in cents.
async fn saved(p: &Pipeline, account: i64) -> (i64, i64) {
    let row = p
        .sandbox
        .db()
        .await
        .query_one(
            "SELECT count(*), coalesce((sum(amount) * 100)::bigint, 0) FROM transactions WHERE account_id = $1",
            &[&account],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_huge_file_is_resumed_after_what_was_stored_when_its_fetcher_is_killed() {
    let server = FileServer::start().await.unwrap();
    let mut p = Pipeline::builder("resume").env(&RESUME_ENV).start().await;

    // With Range: the second attempt asks for the rest of the file only.
    let data = Dataset::generate_from(5_000, "/ranged", 1, 2_000_000, 41);
    let (path, size) = serve_steadily(&server, &data, true);
    let (event, id) = import_killing_the_fetcher(&mut p, &server, &path, size, &[0.6]).await;
    assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    assert_eq!(event.transactions_saved, 2_000_000);
    assert_eq!(
        saved(&p, 5_000).await,
        (2_000_000, data.expected_sum_cents() as i64)
    );
    let sent = server.bytes_sent(&path);
    eprintln!(
        "resumed: the server sent {sent} bytes of a {size}-byte file ({:.3}x)",
        sent as f64 / size as f64
    );
    assert!(
        sent as f64 <= 1.25 * size as f64,
        "the server sent {sent} bytes of a {size}-byte file: {:.2}x",
        sent as f64 / size as f64
    );
    let ranged = server
        .requests()
        .iter()
        .filter(|seen| seen.path == path && seen.headers.contains_key("range"))
        .count();
    assert_eq!(ranged, 1, "the second attempt asked for a range");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.completion_count(&id).await, 1);

    // Without Range: the file is read again, its stored rows not sent again,
    // and killed again while reading past them (a checkpoint never goes back).
    let data = Dataset::generate_from(6_000, "/plain", 1, 600_000, 43);
    let (path, size) = serve_steadily(&server, &data, false);
    let (event, id) = import_killing_the_fetcher(&mut p, &server, &path, size, &[0.6, 1.0]).await;
    assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    assert_eq!(event.transactions_saved, 600_000);
    assert_eq!(
        saved(&p, 6_000).await,
        (600_000, data.expected_sum_cents() as i64)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    p.stop().await;
}

#[tokio::test]
async fn a_file_that_changed_between_attempts_is_read_again_and_its_rows_replace_the_earlier_ones()
{
    let server = FileServer::start().await.unwrap();
    let mut p = Pipeline::builder("resume-changed")
        .env(&RESUME_ENV)
        .start()
        .await;
    let data = Dataset::generate_from(7_000, "/changing", 1, 300_000, 47);
    let (path, size) = serve_steadily(&server, &data, true);
    let prefix = "/changing";
    let id = p
        .import(&server.url(&format!("{prefix}/accounts.csv")))
        .await;
    sluice_e2e::wait_until(
        Duration::from_secs(120),
        "the fetcher to get into the file",
        || async { server.bytes_sent(&path) as f64 >= 0.6 * size as f64 },
    )
    .await;
    p.service("fetcher").kill().await;
    // What the first version left: its first windows, once all that was
    // on its way is saved.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut stored = -1;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = saved(&p, 7_000).await.0;
        if now == stored && now > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first version's rows never settled"
        );
        stored = now;
    }
    assert!(stored >= 2_000, "{stored} rows of the first version saved");
    // A new version of the file: other amounts, and half as many rows as
    // the first version had saved, so that some of its rows must go.
    let rows = stored as usize / 2;
    let newer = Dataset::generate_from(7_000, "/changing", 1, rows, 48);
    serve_steadily(&server, &newer, true);
    p.service("fetcher").restart().unwrap();
    let event = p.completion(&id, Duration::from_secs(120)).await;
    assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    assert_eq!(event.files_changed, 1, "{event:?}");
    assert_eq!(event.transactions_saved, rows as u64, "{event:?}");
    assert_eq!(
        saved(&p, 7_000).await,
        (rows as i64, newer.expected_sum_cents() as i64),
        "the rows are the new version's, and only those"
    );
    assert!(errors(&p).await.is_empty());
    assert!(
        p.logs()
            .contains("reading the new version from its first row"),
        "the fetcher said the file changed"
    );
    let status = String::from_utf8_lossy(&p.cli(&["status", &id]).await.stdout).into_owned();
    assert!(
        status.contains("1 transactions file(s) of import"),
        "{status}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    p.stop().await;
}

#[tokio::test]
async fn an_object_is_resumed_with_a_ranged_read_when_its_fetcher_is_killed() {
    let s3 = S3Server::start().await;
    s3.create_bucket("exports").await;
    let data = Dataset::generate_from(8_000, "/huge", 1, 1_500_000, 53);
    for (path, body) in &data.files {
        s3.put("exports", path.trim_start_matches('/'), body.clone(), None)
            .await;
    }
    let mut env = s3.env("exports");
    env.extend(
        RESUME_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut p = Pipeline::builder("s3-resume").env(&env).start().await;
    let id = p.import("s3://exports/huge/accounts.csv").await;
    sluice_e2e::wait_until(
        Duration::from_secs(120),
        "a third of the rows saved",
        || async { saved(&p, 8_000).await.0 >= 500_000 },
    )
    .await;
    p.service("fetcher").kill().await;
    p.service("fetcher").restart().unwrap();
    let event = p.completion(&id, Duration::from_secs(240)).await;
    assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    assert_eq!(
        saved(&p, 8_000).await,
        (1_500_000, data.expected_sum_cents() as i64)
    );
    assert!(
        p.logs().contains("how=Resumed"),
        "the second attempt read the rest of the object only"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    p.stop().await;
}

#[tokio::test]
async fn a_spec_file_is_resumed_too_when_its_reader_is_killed() {
    // A one-level spec: the importer reads the file, through the same
    // reader the fetcher uses for every file below a root.
    let server = FileServer::start().await.unwrap();
    let mut p = Pipeline::builder("resume-spec")
        .env(&RESUME_ENV)
        .start()
        .await;
    crate::spec_imports::put(
        &p,
        "readings",
        r#"
name = "readings"
root = "readings"
[levels.readings]
table = "readings"
key = ["id"]
columns = [{ name = "id", type = "bigint" }, { name = "value", type = "numeric" }]
"#,
    )
    .await;
    let mut csv = String::from("id,value\n");
    for id in 1..=1_000_000u64 {
        csv.push_str(&format!("{id},{}.{:02}\n", id % 9_973, id % 97));
    }
    let size = csv.len() as u64;
    server.set(
        "/readings.csv",
        // Slower than the importer reads (it does more per row than the
        // fetcher), so that what was sent is what it got.
        Route::new(csv).trickle(16 << 10, Duration::from_millis(12)),
    );
    let id = p
        .import_with(&server.url("/readings.csv"), "readings")
        .await;
    sluice_e2e::wait_until(
        Duration::from_secs(120),
        "the importer to get into the file",
        || async { server.bytes_sent("/readings.csv") as f64 >= 0.6 * size as f64 },
    )
    .await;
    p.service("importer").kill().await;
    p.service("importer").restart().unwrap();
    let event = p.completion(&id, Duration::from_secs(240)).await;
    assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    let row = p
        .sandbox
        .db()
        .await
        .query_one(
            "SELECT count(*), sum(id)::bigint, count(DISTINCT _sluice_position) FROM readings",
            &[],
        )
        .await
        .unwrap();
    let (count, sum, positions): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (count, sum, positions),
        (1_000_000, 500_000_500_000, 1_000_000)
    );
    let sent = server.bytes_sent("/readings.csv");
    eprintln!(
        "resumed: the server sent {sent} bytes of a {size}-byte file ({:.3}x)",
        sent as f64 / size as f64
    );
    assert!(sent as f64 <= 1.25 * size as f64, "{sent} of {size}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    p.stop().await;
}
