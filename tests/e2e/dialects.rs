//! Files as they really come, end to end: each file is served over HTTP,
//! `sluice spec infer` drafts its spec, the draft is put as it is (or with
//! the one-line answer to the question it rightly asks), and the import
//! loads the file exactly: a European export in Windows-1252, a
//! tab-separated file without a header, an R export with `NA`s, and a file
//! with one byte its encoding cannot hold.

use sluice_e2e::{Pipeline, Route};
use sluice_messages::ImportStatus;

use crate::spec_imports::{import, put, rows_of};

/// `sluice spec infer URL` of a file this pipeline serves: the draft, and
/// what the command said on its standard error.
async fn infer(p: &Pipeline, path: &str) -> (String, String) {
    let out = tokio::process::Command::new(sluice_devkit::binary_dir().join("sluice"))
        .args(["spec", "infer", &p.server.url(path)])
        .envs(p.sandbox.service_env())
        .env("SLUICE_ALLOW_NETWORKS", "127.0.0.0/8")
        .output()
        .await
        .expect("sluice runs");
    let (draft, said) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{said}");
    (draft, said)
}

/// The dead letters of the pipeline, as `line error`.
async fn letters(p: &Pipeline) -> Vec<String> {
    p.dead_letters()
        .await
        .iter()
        .map(|l| format!("{:?} {}", l.line, l.error))
        .collect()
}

/// `text` in Windows-1252 (Latin-1, and `€` at 0x80).
fn windows_1252(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            '€' => 0x80,
            c => u8::try_from(u32::from(c))
                .ok()
                .filter(|b| !(0x80..0xA0).contains(b))
                .unwrap_or_else(|| panic!("{c} is not in this test's Windows-1252")),
        })
        .collect()
}

/// Semicolons, a decimal comma with thousands points, day-first dates and
/// Windows-1252 text with umlauts and `€`, one field quoted because it
/// holds the delimiter.
#[tokio::test]
async fn a_european_export_in_windows_1252_is_drafted_and_loaded_exactly() {
    let p = Pipeline::builder("dialect-eu").start().await;
    let body = windows_1252(
        "Buchung;Kunde;Betrag;Datum;Notiz\r\n\
         1;Müller;1.234,56;24/12/2026;Grüße, 5 €\r\n\
         2;Jäger;-7,50;01/01/2027;\"Preis: 3,50 €; bar\"\r\n\
         3;Weiß;0,99;03/01/2027;\r\n",
    );
    p.server.set("/buchungen.csv", Route::new(body));
    let (draft, said) = infer(&p, "/buchungen.csv").await;
    assert!(!draft.contains("QUESTION"), "{said}\n{draft}");
    for line in [
        r#"{ name = "Betrag", column = "betrag", type = "numeric", decimal = ",", thousands = "." },"#,
        r#"{ name = "Datum", column = "datum", type = "date", format = "[day]/[month]/[year]" },"#,
        r#"delimiter = ";""#,
        r#"encoding = "windows-1252""#,
    ] {
        assert!(draft.contains(line), "{line} in {draft}");
    }
    put(&p, "buchungen", &draft).await;
    let (event, said) = import(&p, "/buchungen.csv", "buchungen").await;
    assert_eq!(event.status, ImportStatus::Completed, "{said}");
    assert_eq!(event.tables["buchungen"].inserted, 3);
    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws('|', buchung, kunde, betrag, datum, coalesce(notiz, '∅'))
             FROM buchungen ORDER BY buchung"
        )
        .await,
        [
            "1|Müller|1234.56|2026-12-24|Grüße, 5 €",
            "2|Jäger|-7.50|2027-01-01|Preis: 3,50 €; bar",
            "3|Weiß|0.99|2027-01-03|∅",
        ]
    );
    p.stop().await;
}

/// Tab-separated, no header row: the draft finds its columns by position.
#[tokio::test]
async fn a_tab_separated_file_without_a_header_is_read_by_position() {
    let p = Pipeline::builder("dialect-tsv").start().await;
    p.server.set(
        "/people.tsv",
        Route::new(
            "1\tAnn\t12.50\t2026-12-03\n2\tBob O'Neil\t-3.00\t2026-12-04\n3\tCy \"Young\"\t0\t\n",
        ),
    );
    let (draft, said) = infer(&p, "/people.tsv").await;
    assert!(!draft.contains("QUESTION"), "{said}\n{draft}");
    assert!(draft.contains("header = false"), "{draft}");
    assert!(draft.contains("delimiter = \"\\t\""), "{draft}");
    put(&p, "people", &draft).await;
    let (event, said) = import(&p, "/people.tsv", "people").await;
    assert_eq!(event.status, ImportStatus::Completed, "{said}");
    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws('|', column_1, column_2, column_3, coalesce(column_4::text, '∅'),
                              _sluice_position::text)
             FROM people ORDER BY column_1"
        )
        .await,
        [
            "1|Ann|12.50|2026-12-03|{1}",
            "2|Bob O'Neil|-3.00|2026-12-04|{2}",
            "3|Cy \"Young\"|0|∅|{3}",
        ]
    );
    p.stop().await;
}

/// An R export (`write.csv`): text quoted, `NA` unquoted for every missing
/// value whatever the column's type, a quoted `"NA"` (Namibia) that stays
/// text, backslashes and a quoted line break kept byte for byte, and local
/// times the draft rightly asks the zone of: the test answers with one
/// line.
#[tokio::test]
async fn an_r_export_keeps_quoted_na_and_reads_unquoted_na_as_null() {
    let p = Pipeline::builder("dialect-r").start().await;
    p.server.set(
        "/flights.csv",
        Route::new(
            "\"id\",\"carrier\",\"dep_delay\",\"time_hour\",\"note\",\"country\"\n\
             1,\"UA\",2,2013-01-01 05:00:00,\"C:\\path\\to\",\"NA\"\n\
             2,NA,NA,NA,NA,\"NA\"\n\
             3,\"AA\",-4,2013-07-01 06:00:00,\"say \"\"hi\"\"\nbye\",NA\n\
             4,\"B6\",NA,2013-07-01 07:30:00,\"\",\"NZ\"\n",
        ),
    );
    let (draft, said) = infer(&p, "/flights.csv").await;
    assert!(draft.contains("null = [\"NA\"]"), "{draft}");
    assert_eq!(draft.matches("# QUESTION:").count(), 1, "{said}\n{draft}");
    assert!(draft.contains("# QUESTION: in which time zone"), "{draft}");
    let asked = r#"{ name = "time_hour", type = "timestamptz", timezone = "UTC" },"#;
    assert!(draft.contains(asked), "{draft}");
    // The answer: New York's flights, in New York's time.
    let answered = draft.replace(
        asked,
        r#"{ name = "time_hour", type = "timestamptz", timezone = "America/New_York" },"#,
    );
    put(&p, "flights", &answered).await;
    let (event, said) = import(&p, "/flights.csv", "flights").await;
    assert_eq!(event.status, ImportStatus::Completed, "{said}");
    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws('|', id, coalesce(carrier, '∅'), coalesce(dep_delay::text, '∅'),
                              coalesce(to_char(time_hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), '∅'),
                              coalesce(note, '∅'), coalesce(country, '∅'))
             FROM flights ORDER BY id"
        )
        .await,
        [
            "1|UA|2|2013-01-01 10:00|C:\\path\\to|NA",
            "2|∅|∅|∅|∅|NA",
            "3|AA|-4|2013-07-01 10:00|say \"hi\"\nbye|∅",
            "4|B6|∅|2013-07-01 11:30|∅|NZ",
        ]
    );
    p.stop().await;
}

/// A UTF-8 file with one byte that is not UTF-8: the draft stays UTF-8
/// and says so, the import refuses that row with a letter naming its line
/// and field, and loads the rest exactly.
#[tokio::test]
async fn a_byte_that_is_not_utf_8_is_one_letter_and_the_rest_loads() {
    let p = Pipeline::builder("dialect-bad-byte").start().await;
    p.server.set(
        "/names.csv",
        Route::new(b"id,name\n1,Zo\xc3\xab\n2,Bj\xf6rk\n3,\xc3\x85sa\n".to_vec()),
    );
    let (draft, said) = infer(&p, "/names.csv").await;
    assert!(!draft.contains("QUESTION"), "{said}\n{draft}");
    assert!(!draft.contains("encoding ="), "{draft}");
    assert!(draft.contains("1 byte(s) of the sample are not"), "{draft}");
    put(&p, "names", &draft).await;
    let (event, said) = import(&p, "/names.csv", "names").await;
    assert_eq!(event.status, ImportStatus::CompletedWithErrors, "{said}");
    assert_eq!(
        rows_of(&p, "SELECT id || '=' || name FROM names ORDER BY id").await,
        ["1=Zoë", "3=Åsa"]
    );
    assert_eq!(
        letters(&p).await,
        [format!(
            "Some(3) {} line 3: field 2 is not valid UTF-8",
            p.server.url("/names.csv")
        )]
    );
    p.stop().await;
}
