//! Imports run with a spec of the user's, end to end: the real binaries
//! read nested files served over HTTP into the spec's tables, with exact
//! rows, keys inherited down the levels, the conflict policies, and the
//! spec revision an import pinned.

use std::time::Duration;

use sluice_e2e::{Pipeline, Route};
use sluice_messages::{ImportCompleted, ImportStatus};

/// `spec put` of `text` in the pipeline's sandbox, asserted to succeed.
pub(crate) async fn put(p: &Pipeline, name: &str, text: &str) {
    let path = std::env::temp_dir().join(format!("sluice-{name}-{:016x}.toml", fastrand::u64(..)));
    std::fs::write(&path, text).unwrap();
    let out = p.cli(&["spec", "put", &path.display().to_string()]).await;
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "spec put {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sluice import URL --spec SPEC --wait`: its completion event, and
/// whether the command said it completed without errors.
pub(crate) async fn import(p: &Pipeline, path: &str, spec: &str) -> (ImportCompleted, String) {
    let out = p
        .cli(&["import", &p.server.url(path), "--spec", spec, "--wait"])
        .await;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = said.lines().next().unwrap_or_default().trim().to_owned();
    let event = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(
        out.status.success(),
        event.status == ImportStatus::Completed,
        "{said}"
    );
    (event, said)
}

/// Every row of `table` as text, ordered.
pub(crate) async fn rows_of(p: &Pipeline, sql: &str) -> Vec<String> {
    p.sandbox
        .db()
        .await
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Serves the 3-level shop: Ada's two orders and Bob's one, their lines
/// (relative and absolute links, a JSON column, an optional column a file
/// lacks), and two rows that are not values of their columns.
pub(crate) fn serve_shop(p: &Pipeline) {
    p.server.set(
        "/shop/customers.csv",
        Route::new(format!(
            "id,name,vip,since,orders\n\
             {ADA},Ada,yes,2020-01-02,orders/ada.csv\n\
             {{{}}},Bob,,2021-03-04,orders/bob.csv\n\
             not-a-uuid,Eve,no,2022-01-01,orders/eve.csv\n",
            BOB.to_uppercase()
        )),
    );
    p.server.set(
        "/shop/orders/ada.csv",
        Route::new(
            "OrderId,placed,total,lines\n\
             1,2026-12-01T10:00:00+01:00,12.5,../lines/ada-1.csv\n\
             2,2026-12-02T00:00:00Z,0.10,../lines/ada-2.csv\n",
        ),
    );
    p.server.set(
        "/shop/orders/bob.csv",
        Route::new("order_id,placed,total,lines\n1,2026-12-03T09:30:00Z,7,/shop/lines/bob-1.csv\n"),
    );
    p.server.set(
        "/shop/lines/ada-1.csv",
        Route::new("line_no,sku,attributes\n1,A-1,\"{\"\"size\"\": \"\"L\"\"}\"\n2,B-2,\n"),
    );
    p.server
        .set("/shop/lines/ada-2.csv", Route::new("line_no,sku\n1,C-3\n"));
    p.server.set(
        "/shop/lines/bob-1.csv",
        Route::new("line_no,sku,attributes\n1,A-1,[]\nx,A-2,\n"),
    );
}

const ADA: &str = "0b7e7d8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
const BOB: &str = "9f8e7d6c-5b4a-4321-8fed-cba987654321";

#[tokio::test]
async fn three_levels_are_saved_exactly_with_a_key_inherited_two_levels_down() {
    let p = Pipeline::builder("spec-3lvl").start().await;
    put(&p, "shop", crate::specs::SHOP).await;
    serve_shop(&p);
    let (event, said) = import(&p, "/shop/customers.csv", "shop").await;
    assert_eq!(event.status, ImportStatus::CompletedWithErrors, "{said}");
    // The root, two order files, three line files; Eve's row was rejected.
    assert_eq!((event.files, event.files_failed), (6, 0), "{event:?}");
    assert_eq!(event.rows_rejected, 2, "{event:?}");
    let counts: Vec<(String, u64, u64)> = event
        .tables
        .iter()
        .map(|(t, c)| (t.clone(), c.rows, c.inserted))
        .collect();
    assert_eq!(
        counts,
        [
            ("customers".to_string(), 2, 2),
            ("order_lines".to_string(), 4, 4),
            ("orders".to_string(), 3, 3)
        ]
    );
    assert!(said.contains("with spec shop@"), "{said}");

    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws('|', customer_id, name, coalesce(vip::text, 'NULL'), since)
               FROM customers ORDER BY name"
        )
        .await,
        [
            format!("{ADA}|Ada|true|2020-01-02"),
            format!("{BOB}|Bob|NULL|2021-03-04")
        ]
    );
    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws('|', customer_id, order_id, placed AT TIME ZONE 'UTC', total) FROM orders
              ORDER BY customer_id, order_id"
        )
        .await,
        [
            format!("{ADA}|1|2026-12-01 09:00:00|12.50"),
            format!("{ADA}|2|2026-12-02 00:00:00|0.10"),
            format!("{BOB}|1|2026-12-03 09:30:00|7.00"),
        ]
    );
    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws('|', customer_id, order_id, line_no, sku, coalesce(attributes::text, 'NULL'),
                              _sluice_position::text)
               FROM order_lines ORDER BY customer_id, order_id, line_no"
        )
        .await,
        [
            format!("{ADA}|1|1|A-1|{{\"size\": \"L\"}}|{{2,2,2}}"),
            format!("{ADA}|1|2|B-2|NULL|{{2,2,3}}"),
            format!("{ADA}|2|1|C-3|NULL|{{2,3,2}}"),
            format!("{BOB}|1|1|A-1|[]|{{3,2,2}}"),
        ]
    );
    // The rejected rows are named with their file, line, column and value.
    let letters = p.dead_letters().await;
    let mut errors: Vec<&str> = letters.iter().map(|l| l.error.as_str()).collect();
    errors.sort();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].ends_with("/shop/customers.csv line 4: column id: \"not-a-uuid\" is not a UUID"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("/shop/lines/bob-1.csv line 3: column line_no: \"x\""),
        "{errors:?}"
    );
    assert_eq!(p.completion_count(&event.import_id).await, 1);
    p.stop().await;
}

/// One flat level into `table`, keyed by `sku`, with `policy`.
fn prices(name: &str, table: &str, policy: &str) -> String {
    format!(
        r#"
name = "{name}"
root = "prices"
[levels.prices]
table = "{table}"
key = ["sku"]
conflict = "{policy}"
columns = [
    {{ name = "sku", type = "text" }},
    {{ name = "price", type = "numeric" }},
]
"#
    )
}

#[tokio::test]
async fn each_conflict_policy_on_a_re_import_with_changed_values() {
    let p = Pipeline::builder("spec-policy").start().await;
    for (name, policy) in [("kl", "keep-last"), ("up", "update"), ("er", "error")] {
        put(&p, name, &prices(name, &format!("prices_{name}"), policy)).await;
    }
    p.server
        .set("/first.csv", Route::new("sku,price\na,1\nb,2\na,3\n"));
    p.server
        .set("/second.csv", Route::new("sku,price\na,9\nb,2\n"));
    let table = |name: &str| {
        format!("SELECT sku || '=' || price || '@' || _sluice_position::text FROM prices_{name} ORDER BY sku")
    };

    // keep-last: the later row of a file wins (a conflict); another
    // import's row stays, and a changed value is a clash.
    let (first, _) = import(&p, "/first.csv", "kl").await;
    let t = &first.tables["prices_kl"];
    assert_eq!((t.rows, t.inserted, t.conflicts), (3, 2, 1), "{first:?}");
    assert_eq!(rows_of(&p, &table("kl")).await, ["a=3@{4}", "b=2@{3}"]);
    let (second, said) = import(&p, "/second.csv", "kl").await;
    assert_eq!(second.status, ImportStatus::CompletedWithErrors, "{said}");
    let t = &second.tables["prices_kl"];
    assert_eq!((t.inserted, t.clashes, t.updated), (0, 1, 0), "{second:?}");
    assert_eq!(rows_of(&p, &table("kl")).await, ["a=3@{4}", "b=2@{3}"]);

    // update: this import overwrites, and says so without an error.
    import(&p, "/first.csv", "up").await;
    let (second, said) = import(&p, "/second.csv", "up").await;
    assert_eq!(second.status, ImportStatus::Completed, "{said}");
    let t = &second.tables["prices_up"];
    assert_eq!((t.inserted, t.clashes, t.updated), (0, 0, 1), "{second:?}");
    assert_eq!(rows_of(&p, &table("up")).await, ["a=9@{2}", "b=2@{3}"]);

    // error: a repeated key is refused, the first kept; another import's
    // changed value is refused too; the same value is no conflict.
    let (first, _) = import(&p, "/first.csv", "er").await;
    assert_eq!(first.status, ImportStatus::CompletedWithErrors);
    assert_eq!(first.tables["prices_er"].refused, 1, "{first:?}");
    let (second, _) = import(&p, "/second.csv", "er").await;
    let t = &second.tables["prices_er"];
    assert_eq!((t.inserted, t.refused), (0, 1), "{second:?}");
    assert_eq!(rows_of(&p, &table("er")).await, ["a=1@{2}", "b=2@{3}"]);
    let refused = rows_of(
        &p,
        &format!(
            "SELECT kind || ' ' || line || ' ' || key FROM import_row_reports
              WHERE import_id = '{}' ORDER BY line",
            second.import_id
        ),
    )
    .await;
    assert_eq!(refused, ["refused 2 (sku) = (a)"]);
    // Each refused row is a `conflict` letter naming its file and line.
    let letters: Vec<String> = p
        .dead_letters()
        .await
        .iter()
        .filter(|l| l.kind == sluice_messages::DeadLetterKind::Conflict)
        .map(|l| format!("{:?} {:?} {:?} {}", l.import_id, l.url, l.line, l.error))
        .collect();
    let (first_url, second_url) = (p.server.url("/first.csv"), p.server.url("/second.csv"));
    assert_eq!(letters.len(), 2, "one refusal per import: {letters:#?}");
    for (import, url, line) in [
        (&first.import_id, &first_url, 4),
        (&second.import_id, &second_url, 2),
    ] {
        assert!(
            letters.iter().any(|l| l.starts_with(&format!("Some({import:?}) Some({url:?}) Some({line}) {url} line {line}: table prices_er holds key (sku) = (a)"))),
            "{letters:#?}"
        );
    }
    // `sluice status ID` names it, with its file and line.
    let out = p.cli(&["status", &second.import_id]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "prices_er refused: line 2 of {}, (sku) = (a)",
            p.server.url("/second.csv")
        )),
        "{said}"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_flat_file_goes_into_an_existing_table_with_extra_columns() {
    let p = Pipeline::builder("spec-flat").start().await;
    p.sandbox
        .db()
        .await
        .batch_execute(
            "CREATE TABLE people (
                 id bigint NOT NULL, name text, note text NOT NULL DEFAULT 'none',
                 created timestamptz DEFAULT now(), serial bigint GENERATED ALWAYS AS IDENTITY,
                 _sluice_import_id text, _sluice_position bigint[]);
             CREATE UNIQUE INDEX people_id ON people (id)",
        )
        .await
        .unwrap();
    put(
        &p,
        "people",
        r##"
name = "people"
root = "people"
[levels.people]
table = "people"
key = ["id"]
csv = { delimiter = ";", skip_lines = 1, comment = "#" }
columns = [{ name = "ID", column = "id", type = "bigint" }, { name = "name", type = "text", empty = "empty-string" }]
"##,
    )
    .await;
    p.server.set(
        "/people.csv",
        Route::new("Exported 2026-12-03\r\nID;name\r\n# staff\r\n1;Ada\r\n2;\r\n"),
    );
    let (event, said) = import(&p, "/people.csv", "people").await;
    assert_eq!(event.status, ImportStatus::Completed, "{said}");
    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws('|', id, quote_literal(name), note, created IS NOT NULL, serial > 0,
                              _sluice_position::text) FROM people ORDER BY id"
        )
        .await,
        ["1|'Ada'|none|t|t|{4}", "2|''|none|t|t|{5}"]
    );
    p.stop().await;
}

#[tokio::test]
async fn an_import_keeps_the_spec_revision_it_started_with() {
    let p = Pipeline::builder("spec-pin").start().await;
    let spec = |header: &str| {
        format!(
            r#"
name = "pinned"
root = "lists"
[levels.lists]
columns = [{{ name = "items", type = "text" }}]
children = [{{ url = "items", level = "items" }}]
[levels.items]
table = "pinned_items"
key = ["sku"]
columns = [{{ name = "sku", type = "text" }}, {{ name = "{header}", column = "price", type = "numeric" }}]
"#
        )
    };
    put(&p, "pinned", &spec("price")).await;
    p.server.set("/lists.csv", Route::new("items\nitems.csv\n"));
    // The items file fails a few times first: the edit lands while the
    // import waits for it.
    p.server.set(
        "/items.csv",
        Route::new("sku,price\na,1.5\nb,2\n").fail_first(503, 3),
    );
    let id_line = p
        .cli(&["import", &p.server.url("/lists.csv"), "--spec", "pinned"])
        .await;
    let id = String::from_utf8_lossy(&id_line.stdout).trim().to_owned();
    let db = p.sandbox.db().await;
    sluice_e2e::wait_until(Duration::from_secs(30), "the import started", || async {
        db.query_opt(
            "SELECT 1 FROM imports WHERE id = $1 AND spec IS NOT NULL",
            &[&id],
        )
        .await
        .is_ok_and(|r| r.is_some())
    })
    .await;
    // Revision 2 names the column `cost`: the items file has none.
    put(&p, "pinned", &spec("cost")).await;
    assert!(
        p.server.request_count("/items.csv") <= 3,
        "the items file was read before the edit: the test proves nothing"
    );
    let event = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    assert!(event
        .spec
        .as_deref()
        .is_some_and(|s| s.starts_with("pinned@")));
    assert_eq!(
        rows_of(
            &p,
            "SELECT sku || '=' || price FROM pinned_items ORDER BY sku"
        )
        .await,
        ["a=1.5", "b=2"]
    );
    p.stop().await;
}

/// kill -9 of each service three times, at random moments of an import of
/// 10 customers × 5 orders × 200 lines read with the 3-level spec, each
/// restarted at once: every table ends exact, with one completion event
/// and nothing dead-lettered.
#[tokio::test]
async fn killing_every_service_mid_import_of_three_levels_leaves_exact_tables() {
    let mut p = Pipeline::builder("spec-kill")
        .env(&[
            ("SLUICE_ACK_WAIT", "2s"),
            ("SLUICE_TRANSACTIONS_PER_MESSAGE", "20"),
            ("SLUICE_CONCURRENCY", "4"),
        ])
        .start()
        .await;
    put(&p, "shop", crate::specs::SHOP).await;
    let slowly = |body: String| Route::new(body).trickle(256, Duration::from_millis(50));
    let mut customers = String::from("id,name,vip,since,orders\n");
    for c in 1..=10 {
        customers.push_str(&format!(
            "00000000-0000-4000-8000-{c:012x},C{c},{},2020-01-{c:02},orders/{c}.csv\n",
            c % 2 == 0
        ));
        let mut orders = String::from("order_id,placed,total,lines\n");
        for o in 1..=5 {
            orders.push_str(&format!(
                "{o},2026-12-0{o}T10:00:00Z,{c}.{o:02},../lines/{c}-{o}.csv\n"
            ));
            let mut lines = String::from("line_no,sku\n");
            for l in 1..=200 {
                lines.push_str(&format!("{l},S{o}-{l}\n"));
            }
            p.server
                .set(&format!("/shop/lines/{c}-{o}.csv"), slowly(lines));
        }
        p.server
            .set(&format!("/shop/orders/{c}.csv"), slowly(orders));
    }
    p.server.set("/shop/customers.csv", slowly(customers));
    let id = p
        .import_with(&p.server.url("/shop/customers.csv"), "shop")
        .await;

    let seed = fastrand::u64(..);
    eprintln!("kill schedule seed: {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let db = p.sandbox.db().await;
    let saved = || async {
        db.query_one("SELECT count(*) FROM order_lines", &[])
            .await
            .map_or(0, |r| r.get::<_, i64>(0))
    };
    let mut kills = Vec::new();
    for _round in 0..3 {
        let mut order = sluice_e2e::SERVICES;
        rng.shuffle(&mut order);
        for name in order {
            tokio::time::sleep(Duration::from_millis(rng.u64(100..400))).await;
            kills.push((name, saved().await));
            p.service(name).kill().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.service(name).restart().unwrap();
        }
    }
    eprintln!("killed (service, order lines saved at the time): {kills:?}");
    assert!(
        kills.last().unwrap().1 < 10_000,
        "every kill landed mid-import"
    );

    let event = p.completion(&id, Duration::from_secs(180)).await;
    assert_eq!(event.status, ImportStatus::Completed, "{event:?}");
    assert_eq!((event.files, event.files_failed), (61, 0), "{event:?}");
    let lines = &event.tables["order_lines"];
    assert_eq!(
        (lines.rows, lines.inserted, lines.conflicts),
        (10_000, 10_000, 0)
    );
    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws(' ', (SELECT count(*) FROM customers), (SELECT count(*) FROM orders),
                    count(*), sum(line_no), count(*) FILTER (WHERE sku <> 'S' || order_id || '-' || line_no),
                    count(DISTINCT _sluice_position))
               FROM order_lines"
        )
        .await,
        ["10 50 10000 1005000 0 10000"]
    );
    assert!(p.dead_letters().await.is_empty());
    p.wait_until_idle(Duration::from_secs(30)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    p.stop().await;
}

/// A UTF-16 file (declared so) with one unpaired surrogate: one
/// malformed-row letter naming its line and field, every other row loaded
/// exactly, umlauts and `€` included.
#[tokio::test]
async fn a_byte_its_declared_encoding_cannot_hold_rejects_its_row_only() {
    let p = Pipeline::builder("spec-utf16").start().await;
    put(
        &p,
        "notes",
        r#"
name = "notes"
root = "notes"
[levels.notes]
table = "notes"
key = ["id"]
csv = { encoding = "utf-16" }
columns = [{ name = "id", type = "bigint" }, { name = "text", type = "text" }]
"#,
    )
    .await;
    let text = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_be_bytes).collect() };
    let mut body = vec![0xFE, 0xFF];
    body.extend(text("id,text\r\n1,Grüße 5 €\r\n2,bro"));
    body.extend(0xDC00u16.to_be_bytes());
    body.extend(text("ken\r\n3,fine\r\n"));
    p.server.set("/notes.csv", Route::new(body));
    let (event, said) = import(&p, "/notes.csv", "notes").await;
    assert_eq!(event.status, ImportStatus::CompletedWithErrors, "{said}");
    assert_eq!(
        rows_of(&p, "SELECT id || '=' || text FROM notes ORDER BY id").await,
        ["1=Grüße 5 €", "3=fine"]
    );
    let letters: Vec<String> = p
        .dead_letters()
        .await
        .iter()
        .map(|l| format!("{:?} {}", l.line, l.error))
        .collect();
    assert_eq!(
        letters,
        [format!(
            "Some(3) {} line 3: field 2 holds bytes that are not UTF-16",
            p.server.url("/notes.csv")
        )]
    );
    p.stop().await;
}

/// A table COPY cannot write (row-level security forced on its owner,
/// whose policy lets INSERT through) is written with INSERT: the COPY is
/// refused before its data, its connection replaced (tokio-postgres would
/// read that refusal's second answer as the next statement's), and the
/// rows arrive exactly, with the refusal said once in the saver's log.
#[tokio::test]
async fn a_table_copy_cannot_write_is_written_with_insert() {
    let sandbox = sluice_devkit::Sandbox::create("spec-rls").await.unwrap();
    let role = format!("sluice_rls_{}", sandbox.database);
    let admin = sandbox.db().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT ALL ON SCHEMA public TO {role};
             CREATE TABLE people (id bigint NOT NULL, name text,
                                  _sluice_import_id text, _sluice_position bigint[]);
             CREATE UNIQUE INDEX people_id ON people (id);
             ALTER TABLE people OWNER TO {role};
             ALTER TABLE people ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
             CREATE POLICY everyone ON people USING (true) WITH CHECK (true);"
        ))
        .await
        .unwrap();
    // The same server and database, as the role (the test server trusts
    // local logins).
    let admin_url = sandbox.database_url();
    let (scheme, rest) = admin_url.split_once("://").unwrap();
    let url = format!("{scheme}://{role}@{}", rest.split_once('@').unwrap().1);
    assert!(url.contains(&role), "the saver logs in as {role}: {url}");
    let p = Pipeline::in_sandbox(sandbox)
        .env(&[("DATABASE_URL", &url)])
        .start()
        .await;
    put(
        &p,
        "people",
        r#"
name = "people"
root = "people"
[levels.people]
table = "people"
key = ["id"]
columns = [{ name = "id", type = "bigint" }, { name = "name", type = "text" }]
"#,
    )
    .await;
    let mut csv = String::from("id,name\n");
    for id in 1..=250 {
        csv.push_str(&format!("{id},person {id}\n"));
    }
    p.server.set("/people.csv", Route::new(csv));
    let (event, said) = import(&p, "/people.csv", "people").await;
    assert_eq!(event.status, ImportStatus::Completed, "{said}");
    assert_eq!(
        rows_of(
            &p,
            "SELECT concat_ws('|', count(*), sum(id), count(DISTINCT name)) FROM people"
        )
        .await,
        ["250|31375|250"]
    );
    let logs = p.logs();
    assert!(
        logs.contains("COPY refused before its data"),
        "the saver says why it writes with INSERT"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    let mut p = p;
    p.stop_services().await;
    p.sandbox
        .db()
        .await
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
}
