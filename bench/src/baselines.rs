//! What the pipeline is measured against, on the same rows and the same
//! PostgreSQL: the seed's naive job, COPY (raw and idempotent), and the
//! asyncio script a user would write instead (`bench/asyncio_import.py`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use sluice_devkit::{Dataset, Sandbox};

use crate::files::Files;
use tokio_postgres::Client;

const KEYED_TABLE: &str = "CREATE TABLE transactions (
    account_id BIGINT NOT NULL, id BIGINT NOT NULL, amount NUMERIC NOT NULL,
    PRIMARY KEY (account_id, id))";

/// A database of its own with an empty keyed `transactions` table, and a
/// session on it; the database goes when the sandbox is dropped.
async fn keyed_sandbox(name: &str) -> Result<(Sandbox, Client), String> {
    let sandbox = Sandbox::create(name).await.map_err(|e| format!("{e:#}"))?;
    let db = sandbox.db().await;
    db.batch_execute(KEYED_TABLE)
        .await
        .map_err(|e| e.to_string())?;
    Ok((sandbox, db))
}

/// The seed's job: download the accounts file, then for each account its
/// transactions file, and insert each row with its own statement, in one
/// loop. Run on the first accounts until `sample` rows, and extrapolated.
pub async fn naive_job(
    server: &Files,
    prefix: &str,
    sample: usize,
) -> Result<(u64, Duration), String> {
    let (_sandbox, db) = keyed_sandbox("bench-naive").await?;
    let insert = db
        .prepare(
            "INSERT INTO transactions (account_id, id, amount) VALUES ($1, $2, $3::text::numeric)",
        )
        .await
        .map_err(|e| e.to_string())?;
    crate::settle::settle(&db).await?;
    sluice_download::install_tls_provider();
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            http.get(&url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())
        }
    };
    let started = Instant::now();
    let accounts = get(server.url(&format!("{prefix}/accounts.csv"))).await?;
    let mut rows = 0u64;
    for line in accounts.lines().skip(1) {
        if rows as usize >= sample {
            break;
        }
        let (account, link) = line.split_once(',').ok_or("bad accounts row")?;
        let account: i64 = account.parse().map_err(|_| "bad account id")?;
        let file = get(server.url(&format!("{prefix}/{link}"))).await?;
        for row in file.lines().skip(1) {
            let (id, amount) = row.split_once(',').ok_or("bad transactions row")?;
            let id: i64 = id.parse().map_err(|_| "bad id")?;
            db.execute(&insert, &[&account, &id, &amount])
                .await
                .map_err(|e| e.to_string())?;
            rows += 1;
        }
    }
    Ok((rows, started.elapsed()))
}

/// Every row as CSV `account_id,id,amount`, built before any clock starts.
pub fn copy_data(dataset: &Dataset) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut chunk = String::with_capacity(1 << 20);
    for row in &dataset.expected {
        chunk.push_str(&format!("{},{},{}\n", row.account_id, row.id, row.amount));
        if chunk.len() >= 1 << 20 {
            chunks.push(Bytes::from(std::mem::replace(
                &mut chunk,
                String::with_capacity(1 << 20),
            )));
        }
    }
    chunks.push(Bytes::from(chunk));
    chunks
}

async fn copy_into(db: &Client, table: &str, data: &[Bytes]) -> Result<(), String> {
    let sink = db
        .copy_in(&format!(
            "COPY {table} (account_id, id, amount) FROM STDIN (FORMAT csv)"
        ))
        .await
        .map_err(|e| e.to_string())?;
    futures_util::pin_mut!(sink);
    for chunk in data {
        sink.send(chunk.clone()).await.map_err(|e| e.to_string())?;
    }
    sink.finish().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// COPY straight into an empty keyed table: the most PostgreSQL takes in.
pub async fn raw_copy(data: &[Bytes]) -> Result<Duration, String> {
    let (_sandbox, db) = keyed_sandbox("bench-copy").await?;
    crate::settle::settle(&db).await?;
    let started = Instant::now();
    copy_into(&db, "transactions", data).await?;
    Ok(started.elapsed())
}

/// COPY into a staging table, then `INSERT … ON CONFLICT DO NOTHING` into
/// the keyed one: the fastest write that can be replayed safely.
pub async fn idempotent_copy(data: &[Bytes]) -> Result<Duration, String> {
    let (_sandbox, db) = keyed_sandbox("bench-upsert").await?;
    db.batch_execute(
        "CREATE UNLOGGED TABLE staging (account_id BIGINT, id BIGINT, amount NUMERIC)",
    )
    .await
    .map_err(|e| e.to_string())?;
    crate::settle::settle(&db).await?;
    let started = Instant::now();
    copy_into(&db, "staging", data).await?;
    db.batch_execute("INSERT INTO transactions SELECT * FROM staging ON CONFLICT DO NOTHING")
        .await
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// The idempotent COPY in `sessions` PostgreSQL sessions at once, each with
/// its share of the rows and a staging table of its own, into one keyed
/// table: what the database takes from several writers.
pub async fn parallel_idempotent_copy(data: &[Bytes], sessions: usize) -> Result<Duration, String> {
    let sandbox = Sandbox::create("bench-parallel")
        .await
        .map_err(|e| format!("{e:#}"))?;
    let setup = sandbox.db().await;
    setup
        .batch_execute(KEYED_TABLE)
        .await
        .map_err(|e| e.to_string())?;
    let mut clients = Vec::with_capacity(sessions);
    for n in 0..sessions {
        let db = sandbox.db().await;
        db.batch_execute(&format!(
            "CREATE UNLOGGED TABLE staging_{n} (account_id BIGINT, id BIGINT, amount NUMERIC)"
        ))
        .await
        .map_err(|e| e.to_string())?;
        clients.push(db);
    }
    let share = data.len().div_ceil(sessions);
    crate::settle::settle(&setup).await?;
    let started = Instant::now();
    let work = clients.iter().enumerate().map(|(n, db)| {
        let part = &data[(n * share).min(data.len())..((n + 1) * share).min(data.len())];
        async move {
            let staging = format!("staging_{n}");
            copy_into(db, &staging, part).await?;
            db.batch_execute(&format!(
                "INSERT INTO transactions SELECT * FROM {staging} ON CONFLICT DO NOTHING"
            ))
            .await
            .map_err(|e| e.to_string())
        }
    });
    for result in futures_util::future::join_all(work).await {
        result?;
    }
    Ok(started.elapsed())
}

/// The asyncio script (aiohttp, asyncpg: 16 downloads, 4 COPY→upsert
/// connections) importing `{prefix}/accounts.csv` from `server`: its rows
/// and time, as it measured them, after checking every row is there.
pub async fn asyncio_script(
    server: &Files,
    prefix: &str,
    expected_rows: usize,
) -> Result<(u64, Duration), String> {
    let (sandbox, db) = keyed_sandbox("bench-asyncio").await?;
    // The virtualenv `just bench` installed aiohttp and asyncpg into.
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.local/venv/bin/python");
    let python = std::env::var("SLUICE_TEST_PYTHON")
        .ok()
        .or_else(|| std::path::Path::new(venv).exists().then(|| venv.to_owned()))
        .unwrap_or_else(|| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/asyncio_import.py");
    crate::settle::settle(&db).await?;
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(server.url(&format!("{prefix}/accounts.csv")))
        .arg(sandbox.database_url())
        .output()
        .await
        .map_err(|e| format!("{python} {script}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{script} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    #[derive(serde::Deserialize)]
    struct Outcome {
        rows: u64,
        seconds: f64,
    }
    let outcome: Outcome = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("{script} printed no result: {e}"))?;
    let saved: i64 = db
        .query_one("SELECT count(*) FROM transactions", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if saved as usize != expected_rows || outcome.rows as usize != expected_rows {
        return Err(format!(
            "{script} saved {saved} rows (said {}), not {expected_rows}",
            outcome.rows
        ));
    }
    Ok((outcome.rows, Duration::from_secs_f64(outcome.seconds)))
}
