use std::time::Duration;

use sluice_e2e::{rows, Dataset, Pipeline, Route};
use sluice_messages::DeadLetterKind;

/// Every CSV quirk of the contract in one import: BOM (also trickled a byte
/// at a time), CRLF, quoted fields with commas and quotes, columns by name in
/// any order with extras, gzip, relative/absolute/parent/query links, an
/// empty file, exact decimals, malformed rows and a 404, all at once.
#[tokio::test]
async fn every_csv_quirk_lands_as_exact_rows() {
    let p = Pipeline::start("quirks", &[("SLUICE_TRANSACTIONS_PER_MESSAGE", "2")]).await;
    let accounts = format!(
        "\u{feff}note,transactionsUrl,accountId\r\n\
         \"plain, with comma\",tx/1.csv,1\r\n\
         absolute gzip,{},2\r\n\
         parent dir,../files/3.csv,3\r\n\
         \"trickled \"\"bom\"\"\",tx/4.csv,4\r\n\
         header only,tx/5.csv,5\r\n\
         missing,tx/404.csv,6\r\n\
         bad account,tx/1.csv,abc\r\n\
         query string,tx/7.csv?x=1&y=2,7\r\n",
        p.server.url("/data/tx/2.csv")
    );
    p.server.set("/data/accounts.csv", Route::new(accounts));
    p.server.set(
        "/data/tx/1.csv",
        Route::new("id,amount\n1,-12.50\n2,0.1\n3,12345678901.99\n"),
    );
    p.server.set(
        "/data/tx/2.csv",
        Route::new("amount,id,memo\r\n\"-0.01\",10,\"a, quoted \"\"memo\"\"\"\r\n7,11,x\r\n")
            .gzip(),
    );
    p.server
        .set("/files/3.csv", Route::new("id,amount\n1,+3.5\n2,.25\n"));
    p.server.set(
        "/data/tx/4.csv",
        Route::new("\u{feff}id,amount\r\n1,100\r\n2,-0.5\r\n").trickle(1, Duration::from_millis(2)),
    );
    p.server.set("/data/tx/5.csv", Route::new("id,amount\r\n"));
    p.server.set(
        "/data/tx/7.csv",
        Route::new("id,amount\n1,5.00\n2,abc\n3\n4,6.00\nx,1\n"),
    );

    p.import(&p.server.url("/data/accounts.csv")).await;
    p.wait_until_idle(Duration::from_secs(60)).await;

    assert_eq!(
        p.sandbox.saved_rows().await,
        rows(&[
            (1, 1, "-12.50"),
            (1, 2, "0.1"),
            (1, 3, "12345678901.99"),
            (2, 10, "-0.01"),
            (2, 11, "7"),
            (3, 1, "3.5"),
            (3, 2, "0.25"),
            (4, 1, "100"),
            (4, 2, "-0.5"),
            (7, 1, "5.00"),
            (7, 4, "6.00"),
        ])
    );

    let mut letters: Vec<_> = p
        .dead_letters()
        .await
        .into_iter()
        .map(|l| (l.stage, l.kind, l.url.unwrap_or_default(), l.line, l.error))
        .collect();
    letters.sort();
    // Shown without its query string, which may hold a secret.
    let tx7 = p.server.url("/data/tx/7.csv?…");
    let expected = [
        ("fetcher", DeadLetterKind::Permanent, "", None, format!("GET {} answered HTTP 404", p.server.url("/data/tx/404.csv"))),
        ("fetcher", DeadLetterKind::MalformedRow, tx7.as_str(), Some(3), format!("{tx7} line 3: amount \"abc\" is not a decimal number like -12.50 (at most 60 digits)")),
        ("fetcher", DeadLetterKind::MalformedRow, tx7.as_str(), Some(4), format!("{tx7} line 4: expected 2 fields as in the header, found 1")),
        ("fetcher", DeadLetterKind::MalformedRow, tx7.as_str(), Some(6), format!("{tx7} line 6: id \"x\" is not a 64-bit integer")),
        ("importer", DeadLetterKind::MalformedRow, &p.server.url("/data/accounts.csv"), Some(8), format!("{} line 8: accountId \"abc\" is not a 64-bit integer", p.server.url("/data/accounts.csv"))),
    ];
    let mut expected: Vec<_> = expected
        .into_iter()
        .map(|(s, k, u, l, e)| (s.to_owned(), k, u.to_owned(), l, e))
        .collect();
    expected.sort();
    assert_eq!(letters, expected);
    p.stop().await;
}

/// The seed's own design: one message per transaction through both hops.
#[tokio::test]
async fn one_transaction_per_message_reproduces_the_seed() {
    let p = Pipeline::start("seed", &[("SLUICE_TRANSACTIONS_PER_MESSAGE", "1")]).await;
    let data = Dataset::generate(20, 3_000, 3);
    p.server.add_dataset(&data);
    p.import(&p.server.url("/accounts.csv")).await;
    p.assert_saves_exactly(&data, Duration::from_secs(120))
        .await;
    let stream =
        p.js.get_stream(
            p.sandbox
                .namespace
                .stream(sluice_messages::Stream::Transactions),
        )
        .await
        .unwrap();
    assert_eq!(
        stream.get_info().await.unwrap().state.messages,
        3_000,
        "one message per transaction"
    );
    p.stop().await;
}

/// Importing the same file again is a new import that changes no row.
#[tokio::test]
async fn importing_the_same_file_twice_changes_nothing() {
    let p = Pipeline::start("twice", &[]).await;
    let data = Dataset::generate(10, 2_000, 5);
    p.server.add_dataset(&data);
    let url = p.server.url("/accounts.csv");
    let first = p.import(&url).await;
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;

    let second = p.import(&url).await;
    assert_ne!(first, second, "a second publish is a second import");
    assert_eq!(
        p.completion(&first, Duration::from_secs(60))
            .await
            .transactions_saved,
        2_000
    );
    assert_eq!(
        p.completion(&second, Duration::from_secs(60))
            .await
            .transactions_saved,
        0,
        "the second import inserted nothing"
    );
    p.wait_until_idle(Duration::from_secs(60)).await;
    p.assert_saves_exactly(&data, Duration::from_secs(60)).await;
    let db = p.sandbox.db().await;
    let first_import: i64 = db
        .query_one(
            "SELECT count(*) FROM transactions WHERE import_id = $1",
            &[&first.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        first_import, 2_000,
        "rows keep the import that first wrote them"
    );
    assert!(p.dead_letters().await.is_empty());
    p.stop().await;
}
