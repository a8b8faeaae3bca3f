//! The nested mode: leaf rows read with a 3-level spec (customers → orders
//! → order lines, 10 columns of mixed types at the leaf), end to end, next
//! to an idempotent COPY of the same rows into the same tables.

use std::time::{Duration, Instant};

use sluice_devkit::{FileServer, Sandbox};
use sluice_messages::ImportStatus;
use sluice_operator::imports::wait_for_completion;

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
    files: Vec<(String, String)>,
    /// Per table, its rows as CSV.
    copy: Vec<(&'static str, String)>,
    pub leaf_rows: u64,
    pub all_rows: u64,
    qty_sum: i64,
}

/// About `leaf_rows` order lines in 100 × 10 files (at least one each).
pub fn generate(leaf_rows: usize) -> NestedData {
    let per_order = (leaf_rows / (CUSTOMERS * ORDERS)).max(1);
    let mut files = Vec::new();
    let mut customers = String::from("id,name,since,orders\n");
    let (mut copy_customers, mut copy_orders, mut copy_lines) =
        (String::new(), String::new(), String::new());
    let mut qty_sum = 0i64;
    for c in 1..=CUSTOMERS {
        let id = format!("00000000-0000-4000-8000-{c:012x}");
        let since = format!("20{:02}-{:02}-{:02}", c % 25, 1 + c % 12, 1 + c % 28);
        customers.push_str(&format!("{id},Customer {c},{since},orders/{c}.csv\n"));
        copy_customers.push_str(&format!("{id},Customer {c},{since}\n"));
        let mut orders = String::from("order_id,placed,total,lines\n");
        for o in 1..=ORDERS {
            let placed = format!("2026-{:02}-{:02}T{:02}:30:00Z", 1 + o, 1 + c % 28, o);
            let total = format!("{}.{:02}", c * 100 + o, o);
            orders.push_str(&format!("{o},{placed},{total},../lines/{c}-{o}.csv\n"));
            copy_orders.push_str(&format!("{id},{o},{placed},{total}\n"));
            let mut lines =
                String::from("line_no,sku,qty,price,taxable,ship_date,updated_at,note\n");
            for l in 1..=per_order {
                let qty = (l % 7 + 1) as i64;
                qty_sum += qty;
                let row = format!(
                    "{l},SKU-{o}-{l},{qty},{}.{:02},{},2026-12-{:02},2026-12-03T{:02}:{:02}:{:02}Z,{}",
                    l % 1000,
                    l % 100,
                    if l % 2 == 0 { "true" } else { "false" },
                    1 + l % 28,
                    l % 24,
                    l % 60,
                    c % 60,
                    if l % 10 == 0 { "gift" } else { "" }
                );
                lines.push_str(&row);
                lines.push('\n');
                copy_lines.push_str(&format!("{id},{o},{row}\n"));
            }
            files.push((format!("/nested/lines/{c}-{o}.csv"), lines));
        }
        files.push((format!("/nested/orders/{c}.csv"), orders));
    }
    files.push(("/nested/customers.csv".to_owned(), customers));
    let leaf = (CUSTOMERS * ORDERS * per_order) as u64;
    NestedData {
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
    pub fn serve(&self, server: &FileServer) {
        for (path, body) in &self.files {
            server.set(path, sluice_devkit::Route::new(body.clone()));
        }
    }
}

/// `sluice spec put` of the nested spec in `sandbox`: the tables as an
/// import makes them.
async fn put_spec(sandbox: &Sandbox) -> Result<(), String> {
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
        .write_all(SPEC.as_bytes())
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
    server: &FileServer,
    data: &NestedData,
    per_message: u32,
) -> Result<Duration, String> {
    let (sandbox, mut deployment, js) =
        crate::pipeline::start_services("bench-nested", per_message, 1, &[]).await?;
    put_spec(&sandbox).await?;
    let request = serde_json::json!({
        "url": server.url("/nested/customers.csv"),
        "spec": "bench-nested",
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
    Ok(elapsed)
}

/// The same rows COPYed to staging tables, then `INSERT … ON CONFLICT DO
/// NOTHING` into the tables the spec makes, table by table in one session.
pub async fn idempotent_copy(data: &NestedData) -> Result<Duration, String> {
    use futures_util::SinkExt;
    let sandbox = Sandbox::create("bench-nested-copy")
        .await
        .map_err(|e| format!("{e:#}"))?;
    put_spec(&sandbox).await?;
    let db = sandbox.db().await;
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
