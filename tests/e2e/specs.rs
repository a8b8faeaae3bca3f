//! Import specs as a user handles them with the real `sluice` binary:
//! `spec put` checks a file, makes its tables and stores a revision;
//! `list`, `show` and `rm` do the rest; a bad spec or a table that does not
//! fit is refused with one line per problem, and nothing changes.

use sluice_devkit::Sandbox;

/// A 3-level spec: customers → orders → order lines, with every type, a
/// key inherited two levels down, and rows saved at every level.
pub(crate) const SHOP: &str = r#"
# Customers, their orders, and each order's lines.
name = "shop"
root = "customers"

[levels.customers]
table = "customers"
key = ["customer_id"]
conflict = "update"
columns = [
    { name = "id", column = "customer_id", type = "uuid" },
    { name = "name", type = "text", empty = "error" },
    { name = "vip", type = "boolean", required = false },
    { name = "since", type = "date" },
    { name = "orders", type = "text", save = false },
]
children = [{ url = "orders", level = "orders" }]

[levels.orders]
table = "orders"
key = ["customer_id", "order_id"]
conflict = "keep-last"
inherit = [{ column = "customer_id", from = "customers.customer_id" }]
columns = [
    { name = "order_id", aliases = ["OrderId"], type = "bigint" },
    { name = "placed", type = "timestamptz" },
    { name = "total", type = "numeric", precision = 12, scale = 2 },
    { name = "lines", type = "text", save = false },
]
children = [{ url = "lines", level = "lines" }]

[levels.lines]
table = "order_lines"
key = ["customer_id", "order_id", "line_no"]
inherit = [
    { column = "customer_id", from = "orders.customer_id" },
    { column = "order_id", from = "orders.order_id" },
]
columns = [
    { name = "line_no", type = "integer" },
    { name = "sku", type = "text" },
    { name = "attributes", type = "jsonb", required = false },
]
"#;

async fn sluice(sandbox: &Sandbox, args: &[&str]) -> (bool, String, String) {
    sluice_with(sandbox, args, &[]).await
}

/// `sluice args…` in `sandbox` with `env` added: whether it succeeded, its
/// output and its errors.
async fn sluice_with(
    sandbox: &Sandbox,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = tokio::process::Command::new(sluice_devkit::binary_dir().join("sluice"))
        .args(args)
        .envs(sandbox.service_env())
        .envs(env.iter().copied())
        .output()
        .await
        .expect("sluice runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A folder of this test's own, removed when it ends.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("sluice-spec-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The columns of `table` with their types, and its unique key column lists.
async fn described(sandbox: &Sandbox, table: &str) -> (Vec<String>, Vec<String>) {
    let db = sandbox.db().await;
    let columns = db
        .query(
            "SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let unique = db
        .query(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::text::regclass AND indisunique",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let def: String = r.get(0);
            def[def.find('(').unwrap()..].to_owned()
        })
        .collect();
    (columns, unique)
}

#[tokio::test]
async fn a_spec_is_put_with_its_tables_listed_shown_revised_and_removed() {
    let sandbox = Sandbox::new("spec-put").await;
    let dir = Scratch::new();
    let (ok, _, err) = sluice(&sandbox, &["setup"]).await;
    assert!(ok, "{err}");

    let file = write(dir.path(), "shop.toml", SHOP);
    let (ok, out, err) = sluice(&sandbox, &["spec", "put", &file]).await;
    assert!(ok, "{out}{err}");
    for table in ["customers", "orders", "order_lines"] {
        assert!(out.contains(&format!("table {table} (level ")), "{out}");
    }
    assert!(out.contains("created"), "{out}");
    let first = out
        .lines()
        .find_map(|l| l.strip_prefix("spec shop stored (revision "))
        .and_then(|r| r.strip_suffix(')'))
        .expect("a revision")
        .to_owned();

    // Every level's table, with the declared types, sluice's two columns,
    // and a unique index on the key (inherited columns first).
    assert_eq!(
        described(&sandbox, "order_lines").await,
        (
            vec![
                "customer_id uuid".to_owned(),
                "order_id bigint".into(),
                "line_no integer".into(),
                "sku text".into(),
                "attributes jsonb".into(),
                "_sluice_import_id text".into(),
                "_sluice_position bigint[]".into(),
            ],
            vec!["(customer_id, order_id, line_no)".to_owned()]
        )
    );
    let (orders, _) = described(&sandbox, "orders").await;
    assert!(
        orders.contains(&"total numeric(12,2)".to_owned()),
        "{orders:?}"
    );
    assert!(
        orders.contains(&"placed timestamp with time zone".to_owned()),
        "{orders:?}"
    );
    let (customers, _) = described(&sandbox, "customers").await;
    assert_eq!(
        customers[..4],
        ["customer_id uuid", "name text", "vip boolean", "since date"]
    );

    let (ok, out, _) = sluice(&sandbox, &["spec", "list"]).await;
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("accounts\tbuilt-in\t2 levels\ttables: transactions"),
        "{out}"
    );
    assert_eq!(
        lines[1],
        format!("shop\trevision {first}\t3 levels\ttables: customers, order_lines, orders")
    );

    // Edited: a new revision; the old one can still be read (an import
    // that pinned it reads that one).
    let edited = SHOP.replace(
        "# Customers, their orders",
        "# Edited: customers, their orders",
    );
    let file = write(dir.path(), "shop.toml", &edited);
    let (ok, out, err) = sluice(&sandbox, &["spec", "put", &file]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("fits"), "the tables exist now and fit: {out}");
    let (_, shown, _) = sluice(&sandbox, &["spec", "show", "shop"]).await;
    assert_eq!(shown.trim_end(), edited.trim_end());
    let (_, shown, _) = sluice(&sandbox, &["spec", "show", "shop", "--revision", &first]).await;
    assert_eq!(shown.trim_end(), SHOP.trim_end());
    let (ok, shown, _) = sluice(&sandbox, &["spec", "show", "accounts"]).await;
    assert!(ok && shown.contains("[levels.transactions]"), "{shown}");

    // `sluice setup` checks the stored specs' tables too.
    let (ok, out, err) = sluice(&sandbox, &["setup"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("spec shop: table order_lines (level lines) fits"),
        "{out}"
    );

    let (ok, out, _) = sluice(&sandbox, &["spec", "rm", "shop"]).await;
    assert!(ok && out.contains("spec shop removed"), "{out}");
    let (ok, _, err) = sluice(&sandbox, &["spec", "show", "shop"]).await;
    assert!(!ok && err.contains("no spec shop"), "{err}");
    let (ok, _, err) = sluice(&sandbox, &["spec", "rm", "accounts"]).await;
    assert!(
        !ok && err.contains("built-in spec and cannot be removed"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_specs_are_refused_one_line_each_and_nothing_is_stored() {
    let sandbox = Sandbox::new("spec-bad").await;
    let dir = Scratch::new();
    let cases = [
        (
            SHOP.replace(r#"type = "integer""#, r#"type = "money""#),
            "unknown variant `money`",
        ),
        (
            SHOP.replace(
                r#"key = ["customer_id", "order_id", "line_no"]"#,
                r#"key = ["customer_id", "order_id", "line"]"#,
            ),
            "level lines: key column line is not a column of table order_lines",
        ),
        (
            SHOP.replace(r#"url = "lines", level"#, r#"url = "line_file", level"#),
            "level orders: child URL column \"line_file\" is not one of its columns",
        ),
        (
            SHOP.replace(
                r#"{ name = "attributes", type = "jsonb", required = false },"#,
                r#"{ name = "attributes", type = "jsonb", required = false },
    { name = "again", type = "text", save = false },"#,
            )
            .replace(
                r#"{ column = "order_id", from = "orders.order_id" },
]"#,
                r#"{ column = "order_id", from = "orders.order_id" },
]
children = [{ url = "again", level = "customers" }]"#,
            ),
            "the root level customers is also a child level (lines): that is a cycle",
        ),
        (
            SHOP.replace(r#"name = "shop""#, r#"name = "accounts""#),
            "accounts is the built-in spec's name and cannot be replaced",
        ),
    ];
    for (text, expected) in &cases {
        let file = write(dir.path(), "bad.toml", text);
        let (ok, out, err) = sluice(&sandbox, &["spec", "put", "--skip-database", &file]).await;
        assert!(!ok, "refused: {out}");
        let problems: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("  ") || l.starts_with("sluice: "))
            .collect();
        assert!(err.contains(expected), "{expected:?} in {err}");
        assert!(problems.len() <= 2, "one line for the problem: {err}");
    }
    let (_, out, _) = sluice(&sandbox, &["spec", "list"]).await;
    assert_eq!(out.lines().count(), 1, "only the built-in spec: {out}");
}

/// A flat file's table made by its owner, with extra columns and a unique
/// index, fits; one whose types or index differ is refused by `spec put`
/// and by `sluice setup`, each mismatch with its fix, and nothing altered.
#[tokio::test]
async fn an_existing_table_is_checked_never_altered() {
    let sandbox = Sandbox::new("spec-table").await;
    let dir = Scratch::new();
    let (ok, _, err) = sluice(&sandbox, &["setup"]).await;
    assert!(ok, "{err}");
    let db = sandbox.db().await;
    db.batch_execute(
        "CREATE TABLE readings (
             sensor text NOT NULL, taken timestamptz NOT NULL, value numeric,
             note text, created timestamptz NOT NULL DEFAULT now(),
             _sluice_import_id text, _sluice_position bigint[]);
         CREATE UNIQUE INDEX ON readings (taken, sensor)",
    )
    .await
    .unwrap();
    let flat = r#"
        name = "readings"
        root = "readings"
        [levels.readings]
        table = "readings"
        key = ["sensor", "taken"]
        columns = [
            { name = "sensor", type = "text" },
            { name = "taken", type = "timestamptz" },
            { name = "value", type = "numeric" },
        ]
    "#;
    let file = write(dir.path(), "readings.toml", flat);
    let (ok, out, err) = sluice(&sandbox, &["spec", "put", &file]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("table readings (level readings) fits"),
        "{out}"
    );

    // With a child level whose table is missing: it is not created while
    // the other table does not fit.
    let mismatched =
        flat.replace(
            r#"name = "value", type = "numeric""#,
            r#"name = "value", type = "bigint""#,
        )
        .replace(r#"key = ["sensor", "taken"]"#, r#"key = ["sensor"]"#)
        .replace(
            r#"{ name = "value", type = "bigint" },"#,
            r#"{ name = "value", type = "bigint" },
            { name = "more", type = "text", save = false },"#,
        ) + r#"
        children = [{ url = "more", level = "extra" }]
        [levels.extra]
        table = "extras"
        key = ["k"]
        columns = [{ name = "k", type = "bigint" }]
        "#;
    let file = write(dir.path(), "readings.toml", &mismatched);
    let (ok, out, err) = sluice(&sandbox, &["spec", "put", &file]).await;
    assert!(!ok, "{out}");
    assert!(err.contains("spec readings is not stored"), "{err}");
    assert!(
        err.contains("table readings column value is numeric, the spec says bigint: change the column's type in the spec, or ALTER TABLE \"readings\" ALTER COLUMN \"value\" TYPE bigint"),
        "{err}"
    );
    assert!(
        err.contains("table readings has no unique index on its key (sensor): CREATE UNIQUE INDEX ON \"readings\" (\"sensor\")"),
        "{err}"
    );
    let (_, shown, _) = sluice(&sandbox, &["spec", "show", "readings"]).await;
    assert_eq!(
        shown.trim_end(),
        flat.trim_end(),
        "the stored spec is unchanged"
    );
    let created: bool = db
        .query_one("SELECT to_regclass('extras') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!created, "no table is created for a refused spec");

    // The table changed under a stored spec: `setup` says so, and alters
    // nothing.
    db.batch_execute("ALTER TABLE readings ALTER COLUMN value TYPE text")
        .await
        .unwrap();
    let (ok, _, err) = sluice(&sandbox, &["setup"]).await;
    assert!(!ok);
    assert!(
        err.contains("spec readings: table readings (level readings) does not fit the spec:")
            && err.contains("table readings column value is text, the spec says numeric"),
        "{err}"
    );
    let (columns, _) = described(&sandbox, "readings").await;
    assert!(columns.contains(&"value text".to_owned()), "{columns:?}");
}

/// `spec infer` drafts a spec from files served over HTTP (a nested import
/// and a UTF-16 file; files in other dialects: `dialects.rs`); each draft,
/// put as is, is accepted and makes its tables.
#[tokio::test]
async fn an_inferred_draft_is_put_as_is() {
    let sandbox = Sandbox::new("spec-infer").await;
    let dir = Scratch::new();
    let (ok, _, err) = sluice(&sandbox, &["setup"]).await;
    assert!(ok, "{err}");
    let server = sluice_e2e::FileServer::start().await.unwrap();
    let serve = |path: &str, body: &[u8]| server.set(path, sluice_e2e::Route::new(body.to_vec()));
    serve(
        "/shop/customers.csv",
        b"customerId,name,ordersUrl\n1,Ann,orders/1.csv\n2,Bob,orders/2.csv\n",
    );
    serve(
        "/shop/orders/1.csv",
        b"orderId,placed,total\n10,2026-12-03T10:00:00Z,12.50\n11,2026-12-03T11:00:00Z,3.00\n",
    );
    serve(
        "/shop/orders/2.csv",
        b"orderId,placed,total\n10,2026-12-04T09:30:00+01:00,99.99\n",
    );

    let infer = |url: String| {
        let sandbox = &sandbox;
        async move {
            let loopback = [("SLUICE_ALLOW_NETWORKS", "127.0.0.0/8")];
            let (ok, out, err) = sluice_with(sandbox, &["spec", "infer", &url], &loopback).await;
            assert!(ok, "{err}");
            out
        }
    };

    let shop = infer(server.url("/shop/customers.csv")).await;
    assert!(!shop.contains("QUESTION"), "{shop}");
    assert!(
        shop.contains(r#"children = [{ url = "ordersUrl", level = "orders" }]"#),
        "{shop}"
    );
    let file = write(dir.path(), "shop.toml", &shop);
    let (ok, out, err) = sluice(&sandbox, &["spec", "put", &file]).await;
    assert!(ok, "{out}{err}\n{shop}");
    assert!(out.contains("table orders (level orders) created"), "{out}");
    let (orders, unique) = described(&sandbox, "orders").await;
    assert_eq!(
        orders[..4],
        [
            "customer_id bigint",
            "order_id bigint",
            "placed timestamp with time zone",
            "total numeric"
        ]
    );
    assert_eq!(unique, ["(customer_id, order_id)"]);

    // UTF-16 with its byte order mark, as Excel's "Unicode text" writes it.
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in "id\tname\n1\tZoë\n2\tÅsa\n".encode_utf16() {
        utf16.extend(unit.to_le_bytes());
    }
    serve("/people.csv", &utf16);
    let people = infer(server.url("/people.csv")).await;
    assert!(people.contains("encoding = \"utf-16\""), "{people}");
    assert!(people.contains("delimiter = \"\\t\""), "{people}");
    let file = write(dir.path(), "people.toml", &people);
    let (ok, out, err) = sluice(&sandbox, &["spec", "put", &file]).await;
    assert!(ok, "{out}{err}\n{people}");
}
