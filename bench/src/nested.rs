//! The nested mode: leaf rows read with a 3-level spec (customers → orders
//! → order lines, 10 columns of mixed types at the leaf), end to end, next
//! to an idempotent COPY of the same rows into the same tables; and the
//! same rows written as European spreadsheets export them (semicolons,
//! decimal commas, Windows-1252), to price reading files as they come.

use std::time::{Duration, Instant};

use sluice_devkit::Sandbox;

use crate::files::Files;
use sluice_messages::ImportStatus;
use sluice_operator::imports::wait_for_completion;

/// How the generated files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// RFC 4180 in UTF-8: commas, decimal points.
    Default,
    /// Semicolons, decimal commas, Windows-1252.
    European,
}

impl Dialect {
    /// The spec its files are read with.
    fn spec(self) -> String {
        match self {
            Dialect::Default => SPEC.to_owned(),
            Dialect::European => SPEC
                .replace("name = \"bench-nested\"", "name = \"bench-nested-eu\"")
                .replace(
                    "\ncolumns = [",
                    "\ncsv = { delimiter = \";\", decimal = \",\", encoding = \"windows-1252\" }\ncolumns = [",
                ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dialect::Default => "bench-nested",
            Dialect::European => "bench-nested-eu",
        }
    }

    /// A CSV line of `fields` in this dialect: the decimal point of each
    /// field in `decimals` a comma, the text encoded.
    fn line(self, fields: &[&str], decimals: &[usize]) -> Vec<u8> {
        let text = match self {
            Dialect::Default => fields.join(","),
            Dialect::European => fields
                .iter()
                .enumerate()
                .map(|(i, f)| match decimals.contains(&i) {
                    true => f.replace('.', ","),
                    false => (*f).to_owned(),
                })
                .collect::<Vec<_>>()
                .join(";"),
        };
        let mut bytes = match self {
            Dialect::Default => text.into_bytes(),
            Dialect::European => {
                let (bytes, _, unmappable) =
                    sluice_download::encoding_rs::WINDOWS_1252.encode(&text);
                assert!(!unmappable, "{text} is Windows-1252");
                bytes.into_owned()
            }
        };
        bytes.push(b'\n');
        bytes
    }
}

/// The spec the nested mode reads its files with.
const SPEC: &str = r#"
name = "bench-nested"
root = "customers"

[levels.customers]
table = "customers"
key = ["customer_id"]
columns = [
    { name = "id", column = "customer_id", type = "uuid" },
    { name = "name", type = "text" },
    { name = "since", type = "date" },
    { name = "orders", type = "text", save = false },
]
children = [{ url = "orders", level = "orders" }]

[levels.orders]
table = "orders"
key = ["customer_id", "order_id"]
inherit = [{ column = "customer_id", from = "customers.customer_id" }]
columns = [
    { name = "order_id", type = "bigint" },
    { name = "placed", type = "timestamptz" },
    { name = "total", type = "numeric", precision = 14, scale = 2 },
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
    { name = "qty", type = "integer" },
    { name = "price", type = "numeric", precision = 12, scale = 2 },
    { name = "taxable", type = "boolean" },
    { name = "ship_date", type = "date" },
    { name = "updated_at", type = "timestamptz" },
    { name = "note", type = "text" },
]
"#;

/// Customers, and orders per customer, of the generated files.
const CUSTOMERS: usize = 100;
const ORDERS: usize = 10;

/// The generated files and the same rows as COPY takes them.
pub struct NestedData {
    pub dialect: Dialect,
    files: Vec<(String, Vec<u8>)>,
    /// Per table, its rows as CSV.
    copy: Vec<(&'static str, String)>,
    pub leaf_rows: u64,
    pub all_rows: u64,
    qty_sum: i64,
}

/// About `leaf_rows` order lines in 100 × 10 files (at least one each),
/// written in `dialect` (the rows are the same in every dialect).
pub fn generate(leaf_rows: usize, dialect: Dialect) -> NestedData {
    let per_order = (leaf_rows / (CUSTOMERS * ORDERS)).max(1);
    let root = format!("/{}", dialect.name());
    let line = |fields: &[&str], decimals: &[usize]| dialect.line(fields, decimals);
    let mut files = Vec::new();
    let mut customers = line(&["id", "name", "since", "orders"], &[]);
    let (mut copy_customers, mut copy_orders, mut copy_lines) =
        (String::new(), String::new(), String::new());
    let mut qty_sum = 0i64;
    for c in 1..=CUSTOMERS {
        let id = format!("00000000-0000-4000-8000-{c:012x}");
        let since = format!("20{:02}-{:02}-{:02}", c % 25, 1 + c % 12, 1 + c % 28);
        let name = format!("Kundin {c} Müller");
        customers.extend(line(&[&id, &name, &since, &format!("orders/{c}.csv")], &[]));
        copy_customers.push_str(&format!("{id},{name},{since}\n"));
        let mut orders = line(&["order_id", "placed", "total", "lines"], &[]);
        for o in 1..=ORDERS {
            let placed = format!("2026-{:02}-{:02}T{:02}:30:00Z", 1 + o, 1 + c % 28, o);
            let total = format!("{}.{:02}", c * 100 + o, o);
            let link = format!("../lines/{c}-{o}.csv");
            orders.extend(line(&[&o.to_string(), &placed, &total, &link], &[2]));
            copy_orders.push_str(&format!("{id},{o},{placed},{total}\n"));
            let mut lines = line(
                &[
                    "line_no",
                    "sku",
                    "qty",
                    "price",
                    "taxable",
                    "ship_date",
                    "updated_at",
                    "note",
                ],
                &[],
            );
            for l in 1..=per_order {
                let qty = (l % 7 + 1) as i64;
                qty_sum += qty;
                let fields = [
                    l.to_string(),
                    format!("SKU-{o}-{l}"),
                    qty.to_string(),
                    format!("{}.{:02}", l % 1000, l % 100),
                    (l % 2 == 0).to_string(),
                    format!("2026-12-{:02}", 1 + l % 28),
                    format!("2026-12-03T{:02}:{:02}:{:02}Z", l % 24, l % 60, c % 60),
                    if l % 10 == 0 {
                        "Geschenk für 5 €"
                    } else {
                        ""
                    }
                    .to_owned(),
                ];
                let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
                lines.extend(line(&fields, &[3]));
                copy_lines.push_str(&format!("{id},{o},{}\n", fields.join(",")));
            }
            files.push((format!("{root}/lines/{c}-{o}.csv"), lines));
        }
        files.push((format!("{root}/orders/{c}.csv"), orders));
    }
    files.push((format!("{root}/customers.csv"), customers));
    let leaf = (CUSTOMERS * ORDERS * per_order) as u64;
    NestedData {
        dialect,
        files,
        copy: vec![
            ("customers", copy_customers),
            ("orders", copy_orders),
            ("order_lines", copy_lines),
        ],
        leaf_rows: leaf,
        all_rows: leaf + (CUSTOMERS * ORDERS + CUSTOMERS) as u64,
        qty_sum,
    }
}

impl NestedData {
    pub fn serve(&self, server: &Files) {
        for (path, body) in &self.files {
            server.set(path, body.clone());
        }
    }
}

/// `sluice spec put` of the nested spec in `sandbox`: the tables as an
/// import makes them.
async fn put_spec(sandbox: &Sandbox, spec: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(sluice_devkit::binary_dir().join("sluice"))
        .args(["spec", "put", "-"])
        .envs(sandbox.service_env())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sluice spec put: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(spec.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "sluice spec put failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The nested import end to end: from publishing it to its completion
/// event, checked (every row of every level, the exact sum of `qty`).
pub async fn run_nested(
    server: &Files,
    data: &NestedData,
    per_message: u32,
) -> Result<Duration, String> {
    let dialect = data.dialect;
    let (sandbox, mut deployment, js) =
        crate::pipeline::start_services(dialect.name(), per_message, 1, &[]).await?;
    put_spec(&sandbox, &dialect.spec()).await?;
    crate::settle::settle(&sandbox.db().await).await?;
    let request = serde_json::json!({
        "url": server.url(&format!("/{}/customers.csv", dialect.name())),
        "spec": dialect.name(),
    });
    let started = Instant::now();
    let ack = js
        .publish(sandbox.namespace.imports(), request.to_string().into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let id = sluice_operator::imports::derived_import_id_at(&js, &sandbox.namespace, ack.sequence)
        .await
        .map_err(|e| sluice_stage::error_chain(&e))?;
    let event = tokio::time::timeout(
        Duration::from_secs(3_600),
        wait_for_completion(&js, &sandbox.namespace, &id),
    )
    .await
    .map_err(|_| "the nested import did not complete within an hour".to_owned())?
    .map_err(|e| sluice_stage::error_chain(&e))?;
    let elapsed = started.elapsed();
    deployment
        .stop(Duration::from_secs(30))
        .await
        .map_err(|e| format!("{e:#}"))?;
    let row = sandbox
        .db()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM orders) + count(*),
                    count(*), COALESCE(sum(qty), 0) FROM order_lines",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let (all, leaf, qty): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    if event.status != ImportStatus::Completed
        || all as u64 != data.all_rows
        || leaf as u64 != data.leaf_rows
        || qty != data.qty_sum
    {
        return Err(format!(
            "wrong nested result: {all} rows ({leaf} order lines, qty {qty}), expected {} ({} \
             order lines, qty {}); {event:?}",
            data.all_rows, data.leaf_rows, data.qty_sum
        ));
    }
    deployment.keep_logs(false);
    Ok(elapsed)
}

/// The same rows COPYed to staging tables, then `INSERT … ON CONFLICT DO
/// NOTHING` into the tables the spec makes, table by table in one session.
pub async fn idempotent_copy(data: &NestedData) -> Result<Duration, String> {
    use futures_util::SinkExt;
    let sandbox = Sandbox::create("bench-nested-copy")
        .await
        .map_err(|e| format!("{e:#}"))?;
    put_spec(&sandbox, SPEC).await?;
    let db = sandbox.db().await;
    crate::settle::settle(&db).await?;
    let started = Instant::now();
    for (table, csv) in &data.copy {
        let columns = match *table {
            "customers" => "customer_id, name, since",
            "orders" => "customer_id, order_id, placed, total",
            _ => {
                "customer_id, order_id, line_no, sku, qty, price, taxable, ship_date, updated_at, \
                 note"
            }
        };
        db.batch_execute(&format!(
            "CREATE TEMP TABLE staging_{table} (LIKE {table} INCLUDING DEFAULTS)"
        ))
        .await
        .map_err(|e| e.to_string())?;
        let sink = db
            .copy_in(&format!(
                "COPY staging_{table} ({columns}) FROM STDIN (FORMAT csv)"
            ))
            .await
            .map_err(|e| e.to_string())?;
        let mut sink = std::pin::pin!(sink);
        for chunk in csv.as_bytes().chunks(1 << 20) {
            sink.send(bytes::Bytes::copy_from_slice(chunk))
                .await
                .map_err(|e| e.to_string())?;
        }
        sink.as_mut().finish().await.map_err(|e| e.to_string())?;
        db.batch_execute(&format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM staging_{table} \
             ON CONFLICT DO NOTHING"
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(started.elapsed())
}
