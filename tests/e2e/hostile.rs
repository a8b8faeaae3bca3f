//! Hostile files and careless operators: nothing lost silently, nothing
//! secret shown, no replay aimed anywhere but a stage's own input, no
//! control character reaching a terminal.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use serde_json::json;
use sluice_e2e::{rows, Pipeline, Route};
use sluice_messages::{DeadLetterKind, ImportStatus, Stream};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A file with old-Mac line ends and a record that quotes its way past the
/// row limit are refused with their reasons, never read as zero rows; the
/// rest of the import is saved.
#[tokio::test]
async fn files_that_would_lose_rows_silently_are_refused_by_name() {
    let p = Pipeline::start("hostile-files", &[("SLUICE_MAX_ROW_LENGTH", "1KiB")]).await;
    p.server.set(
        "/accounts.csv",
        Route::new("accountId,transactionsUrl\n1,cr-only.csv\n2,long-record.csv\n3,fine.csv\n"),
    );
    let mut cr_only = String::from("id,amount,note\r");
    for id in 1..=30 {
        cr_only.push_str(&format!("{id},1.75,n{id}\r"));
    }
    p.server.set("/cr-only.csv", Route::new(cr_only.clone()));
    // Each line is short; the quoted field makes one record of 2,000 lines.
    let long = format!("id,amount,note\n1,1.00,\"{}\"\n", "x\n".repeat(2_000));
    p.server.set("/long-record.csv", Route::new(long));
    p.server.set("/fine.csv", Route::new("id,amount\n1,3.00\n"));

    let id = p.import(&p.server.url("/accounts.csv")).await.to_string();
    let done = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(
        (done.status, done.accounts_failed, done.transactions_saved),
        (ImportStatus::CompletedWithErrors, 2, 1)
    );
    p.assert_saves(&rows(&[(3, 1, "3.00")]), Duration::from_secs(10))
        .await;
    let mut errors: Vec<(DeadLetterKind, String)> = p
        .dead_letters()
        .await
        .into_iter()
        .map(|l| (l.kind, l.error))
        .collect();
    errors.sort();
    let url = |path| p.server.url(path);
    // What the header read as: every field, up to 200 bytes.
    let mut found = cr_only
        .split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",");
    found.truncate(200);
    found.push('…');
    assert_eq!(
        errors,
        [
            (
                DeadLetterKind::Permanent,
                format!(
                    "{} has a line break inside its header ({found:?}): lines must end in LF or CRLF \
                     (a file with lone CR line ends, as old Mac exports have, reads as one line)",
                    url("/cr-only.csv")
                )
            ),
            (
                DeadLetterKind::Permanent,
                format!(
                    "{} refused: the record starting on line 2 is longer than 1024 bytes (SLUICE_MAX_ROW_LENGTH)",
                    url("/long-record.csv")
                )
            ),
        ]
    );
    p.stop().await;
}

/// A presigned transactions URL (`reader:TOKEN@…?sig=SIGNATURE`) that fails,
/// and one with a bad row, and an accounts URL with a query: the token and
/// signature appear in no dead letter field, failure record, status output
/// or service log.
#[tokio::test]
async fn secrets_in_file_urls_are_never_shown() {
    let mut p = Pipeline::start("hostile-secrets", &[]).await;
    let with_secrets = |path: &str| {
        p.server
            .url(path)
            .replace("http://", "http://reader:TOKEN@")
            + "?sig=SIGNATURE"
    };
    p.server.set(
        "/accounts.csv",
        Route::new(format!(
            "accountId,transactionsUrl\n1,{}\n2,{}\n",
            with_secrets("/missing.csv"),
            with_secrets("/bad-row.csv")
        )),
    );
    p.server
        .set("/bad-row.csv", Route::new("id,amount\n1,2.00\nx,3.00\n"));
    let accounts = p.server.url("/accounts.csv") + "?sig=SIGNATURE";
    let id = p.import(&accounts).await.to_string();
    let done = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!((done.accounts_failed, done.rows_rejected), (1, 1));
    assert_eq!(
        done.url.as_deref(),
        Some(format!("{}?…", p.server.url("/accounts.csv")).as_str())
    );

    let letters = p.dead_letters().await;
    assert_eq!(letters.len(), 2);
    let mut shown = Vec::new();
    for letter in &letters {
        shown.push(letter.error.clone());
        shown.extend(letter.url.clone());
    }
    shown.sort();
    assert_eq!(
        shown,
        [
            format!("GET {}?… answered HTTP 404", p.server.url("/missing.csv")),
            format!("{}?…", p.server.url("/bad-row.csv")),
            format!(
                "{}?… line 3: id \"x\" is not a 64-bit integer",
                p.server.url("/bad-row.csv")
            ),
        ]
    );
    let failures: Vec<String> = p
        .sandbox
        .db()
        .await
        .query("SELECT error FROM import_failures", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let status = p.cli(&["status", &id]).await;
    let listed = p.cli(&["dead-letters", "list"]).await;
    let listed_json = p.cli(&["dead-letters", "list", "--json"]).await;
    let mut everything = failures.join("\n");
    for out in [&status, &listed, &listed_json] {
        assert!(out.status.success(), "{}", text(&out.stderr));
        everything += &text(&out.stdout);
        everything += &text(&out.stderr);
    }
    p.stop_services().await;
    for entry in std::fs::read_dir(&p.deployment.log_dir).unwrap() {
        everything += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    assert!(everything.contains("missing.csv"), "{everything}");
    for secret in ["TOKEN", "SIGNATURE"] {
        assert!(
            !everything.contains(secret),
            "{secret} shown:\n{everything}"
        );
    }
}

/// A dead letter forged to aim a replay at the JetStream API (or anywhere
/// but its stage's input) is refused by name and nothing is purged; a
/// forged letter's control characters reach the terminal escaped.
#[tokio::test]
async fn forged_dead_letters_cannot_aim_a_replay_or_a_terminal() {
    let p = Pipeline::start("hostile-replay", &[]).await;
    let data = sluice_e2e::Dataset::generate(2, 20, 5);
    p.server.add_dataset(&data);
    p.import(&p.server.url("/accounts.csv")).await;
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;
    let ns = &p.sandbox.namespace;
    let transactions = ns.stream(Stream::Transactions);
    let stored_before =
        p.js.get_stream(&transactions)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
    assert!(stored_before > 0);

    let forge = |subject: String, stored_on: String, error: &str| {
        let letter = json!({
            "stage": "fetcher", "kind": "permanent", "error": error,
            "subject": subject, "body": "{}", "headers": {}, "delivered": 1,
            "time": "2026-11-28T00:00:00Z"
        });
        (stored_on, letter.to_string())
    };
    let forged = [
        forge(
            format!("$JS.API.STREAM.PURGE.{transactions}"),
            ns.dead_letters("fetcher"),
            "purge\u{1b}[2J\u{9b}31m",
        ),
        forge(
            "other.account-updates".into(),
            ns.dead_letters("fetcher"),
            "another namespace",
        ),
        // The right subject, stored where no stage's letters go.
        forge(
            ns.account_updates(),
            ns.dead_letters("fetcher") + "x",
            "wrong place",
        ),
    ];
    for (stored_on, body) in forged {
        let stored_on = if stored_on.ends_with('x') {
            // Still captured by the stream (`dead-letters.>`), not a stage's.
            ns.dead_letters("fetcher") + ".extra"
        } else {
            stored_on
        };
        p.js.send_publish(stored_on, PublishMessage::build().payload(body.into()))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let replay = p.cli(&["dead-letters", "replay", "--all"]).await;
    let stderr = text(&replay.stderr);
    assert_eq!(replay.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("not replayed").count(), 3, "{stderr}");
    assert!(
        stderr.contains("refused 3 that named no input of their stage"),
        "{stderr}"
    );
    let stored_after =
        p.js.get_stream(&transactions)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
    assert_eq!(stored_after, stored_before, "TRANSACTIONS was purged");
    assert_eq!(p.dead_letters().await.len(), 3, "refused letters are kept");

    let listed = text(&p.cli(&["dead-letters", "list"]).await.stdout);
    assert!(listed.contains("purge\\u{1b}[2J\\u{9b}31m"), "{listed}");
    assert!(!listed.contains('\u{1b}') && !listed.contains('\u{9b}'));
    let json = text(&p.cli(&["dead-letters", "list", "--json"]).await.stdout);
    assert!(
        !json.contains('\u{1b}') && !json.contains('\u{9b}'),
        "{json}"
    );
    p.stop().await;
}

/// `--help` shows which variables are read, never their values.
#[tokio::test]
async fn help_never_shows_a_password() {
    for binary in ["sluice", "importer", "saver"] {
        let mut command = std::process::Command::new(sluice_devkit::binary_dir().join(binary));
        let out = command
            .arg(if binary == "sluice" {
                "setup"
            } else {
                "--help"
            })
            .args(if binary == "sluice" {
                vec!["--help"]
            } else {
                vec![]
            })
            .env("NATS_URL", "nats://sluice:NATSSECRET@127.0.0.1:1")
            .env("DATABASE_URL", "postgres://sluice:PGSECRET@127.0.0.1:1/x")
            .output()
            .unwrap();
        let shown = text(&out.stdout) + &text(&out.stderr);
        assert!(shown.contains("NATS_URL"), "{binary}: {shown}");
        assert!(
            !shown.contains("NATSSECRET") && !shown.contains("PGSECRET"),
            "{binary}: {shown}"
        );
    }
}
