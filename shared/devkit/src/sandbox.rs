//! A private corner of the real servers: its own NATS namespace (streams
//! and subjects) and its own PostgreSQL database, removed when dropped, so
//! tests run in parallel against one NATS and one PostgreSQL.

use std::time::Duration;

use sluice_messages::{Namespace, Stream};

use crate::{data::ExpectedRow, unique_suffix};

/// NATS to use: `SLUICE_TEST_NATS_URL`, else `NATS_URL` (as the services
/// read it), else the services' default.
pub fn nats_url() -> String {
    std::env::var("SLUICE_TEST_NATS_URL")
        .or_else(|_| std::env::var("NATS_URL"))
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A database to connect to for creating and dropping others:
/// `SLUICE_TEST_DATABASE_URL`, else the server `DATABASE_URL` names (its
/// `postgres` database), else the services' default server.
pub fn admin_database_url() -> String {
    if let Ok(url) = std::env::var("SLUICE_TEST_DATABASE_URL") {
        return url;
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) => with_database(&url, "postgres"),
        Err(_) => "postgres://postgres@127.0.0.1:5432/postgres".into(),
    }
}

/// `url` with its database name replaced, query parameters kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let server = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _)) => format!("{scheme}://{authority}"),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

pub struct Sandbox {
    pub namespace: Namespace,
    pub nats_url: String,
    /// How to log in to NATS besides the URL (`SLUICE_NATS_*` settings, as
    /// the services read them): for a NATS that requires TLS or a login.
    pub nats_login: Vec<(String, String)>,
    pub database: String,
    admin_url: String,
}

/// Connects to NATS as the services do, with `login` (`SLUICE_NATS_*`
/// variables and their values).
pub async fn connect_nats(
    url: &str,
    login: &[(String, String)],
) -> anyhow::Result<async_nats::Client> {
    #[derive(clap::Parser)]
    struct Settings {
        #[command(flatten)]
        nats: sluice_stage::NatsArgs,
    }
    // Each variable as its flag: SLUICE_NATS_TLS_CA is --nats-tls-ca.
    let mut args = vec![
        "sandbox".to_owned(),
        "--nats-url".to_owned(),
        url.to_owned(),
    ];
    for (name, value) in login {
        let flag = name
            .trim_start_matches("SLUICE_")
            .to_ascii_lowercase()
            .replace('_', "-");
        args.extend([format!("--{flag}"), value.clone()]);
    }
    let settings = <Settings as clap::Parser>::try_parse_from(args)?;
    let (client, _) = sluice_stage::connect(&settings.nats, "sluice-tests", false).await?;
    Ok(client)
}

impl Sandbox {
    /// Creates a fresh database and picks a fresh namespace (`prefix-<hex>`);
    /// panics if the servers are not there (for tests).
    pub async fn new(prefix: &str) -> Sandbox {
        Sandbox::create(prefix)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Sandbox::new`], but says what is missing instead of panicking.
    pub async fn create(prefix: &str) -> anyhow::Result<Sandbox> {
        Sandbox::create_on(prefix, &nats_url(), &admin_database_url()).await
    }

    /// A sandbox on the given servers.
    pub async fn create_on(
        prefix: &str,
        nats_url: &str,
        admin_url: &str,
    ) -> anyhow::Result<Sandbox> {
        Sandbox::create_secured(prefix, nats_url, Vec::new(), admin_url).await
    }

    /// A sandbox on a NATS that requires `nats_login` (`SLUICE_NATS_*`
    /// variables), which the services get too.
    pub async fn create_secured(
        prefix: &str,
        nats_url: &str,
        nats_login: Vec<(String, String)>,
        admin_url: &str,
    ) -> anyhow::Result<Sandbox> {
        let nats_url = nats_url.to_owned();
        connect_nats(&nats_url, &nats_login)
            .await
            .map_err(|e| {
                let message = format!(
                    "NATS is not reachable at {} (NATS_URL): {e:#}\n  fix: `just services` starts one there",
                    sluice_messages::redact_url(&nats_url)
                );
                e.context(message)
            })?;
        let suffix = unique_suffix();
        let namespace = Namespace::new(Some(&format!("{prefix}-{suffix}")))?;
        let database = format!("sluice_{}_{suffix}", prefix.replace('-', "_"));
        let admin_url = admin_url.to_owned();
        let admin = postgres(&admin_url)
            .await
            .map_err(|e| {
                let message = format!(
                    "PostgreSQL is not reachable at {} (DATABASE_URL): {e:#}\n  fix: `just services` starts one there",
                    sluice_messages::redact_url(&admin_url),
                );
                e.context(message)
            })?;
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .map_err(|e| {
                let message = format!("cannot create database {database}: {e}");
                anyhow::Error::new(e).context(message)
            })?;
        Ok(Sandbox {
            namespace,
            nats_url,
            nats_login,
            database,
            admin_url,
        })
    }

    /// The contract's plain names (`IMPORTS`, `imports`) instead of a
    /// namespace: only for a server of the test's own, where nothing else
    /// uses them.
    pub fn with_plain_names(mut self) -> Sandbox {
        self.namespace = Namespace::new(None).expect("the empty namespace is valid");
        self
    }

    /// The URL of this environment's database.
    pub fn database_url(&self) -> String {
        with_database(&self.admin_url, &self.database)
    }

    /// Environment variables that point a sluice binary at this environment.
    pub fn service_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("NATS_URL".into(), self.nats_url.clone()),
            (
                "SLUICE_NAMESPACE".into(),
                self.namespace.name().unwrap_or("").to_owned(),
            ),
            ("DATABASE_URL".into(), self.database_url()),
        ];
        env.extend(self.nats_login.iter().cloned());
        env
    }

    pub async fn nats(&self) -> async_nats::Client {
        connect_nats(&self.nats_url, &self.nats_login)
            .await
            .unwrap_or_else(|e| panic!("NATS is reachable: {e}"))
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        connect(&self.database_url()).await
    }

    /// Every saved transaction, ordered, amounts as PostgreSQL prints them.
    /// Empty while the saver has not created its table yet.
    pub async fn saved_rows(&self) -> Vec<ExpectedRow> {
        let db = self.db().await;
        match db
            .query(
                "SELECT account_id, id, amount::text FROM transactions ORDER BY account_id, id",
                &[],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .map(|r| ExpectedRow {
                    account_id: r.get(0),
                    id: r.get(1),
                    amount: r.get(2),
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// How many transactions are saved (0 before the table exists).
    pub async fn saved_count(&self) -> i64 {
        let db = self.db().await;
        db.query_one("SELECT count(*) FROM transactions", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0)
    }

    /// Each stream's messages and each consumer's backlog, on one line: what
    /// a stalled test shows of where the work stopped.
    pub async fn describe_streams(&self) -> String {
        use futures_util::StreamExt;
        let js = async_nats::jetstream::new(self.nats().await);
        let mut parts = Vec::new();
        for stream in sluice_messages::Stream::ALL {
            let name = self.namespace.stream(stream);
            let Ok(mut handle) = js.get_stream(&name).await else {
                parts.push(format!("{name}: no answer"));
                continue;
            };
            let messages = handle.info().await.map(|i| i.state.messages).unwrap_or(0);
            let mut consumers = Vec::new();
            let mut infos = handle.consumers();
            while let Some(Ok(c)) = infos.next().await {
                consumers.push(format!(
                    "{} pending {} unacked {} redelivered {} waiting pulls {}",
                    c.name, c.num_pending, c.num_ack_pending, c.num_redelivered, c.num_waiting
                ));
            }
            parts.push(format!(
                "{name}: {messages} messages [{}]",
                consumers.join("; ")
            ));
        }
        parts.join(" | ")
    }

    /// Polls until `count` transactions are saved, or panics after `timeout`.
    pub async fn wait_for_count(&self, count: i64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let saved = self.saved_count().await;
            if saved >= count {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "only {saved} of {count} transactions saved after {timeout:?}; {}",
                    self.describe_streams().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cleanup(
        namespace: Namespace,
        (nats_url, nats_login): (String, Vec<(String, String)>),
        admin_url: String,
        database: String,
    ) {
        if let Ok(client) = connect_nats(&nats_url, &nats_login).await {
            let js = async_nats::jetstream::new(client);
            for stream in Stream::ALL {
                let _ = js.delete_stream(namespace.stream(stream)).await;
            }
            let _ = js.delete_key_value(namespace.import_ids_bucket()).await;
            let _ = js.delete_key_value(namespace.import_rows_bucket()).await;
            let _ = js.delete_key_value(namespace.import_specs_bucket()).await;
            let _ = js
                .delete_key_value(namespace.cancelled_imports_bucket())
                .await;
            let _ = js
                .delete_key_value(namespace.file_checkpoints_bucket())
                .await;
        }
        if let Ok(admin) = postgres(&admin_url).await {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await;
        }
    }
}

impl Drop for Sandbox {
    /// Drop cannot await, and may run inside a runtime: clean up on a thread
    /// with a runtime of its own.
    fn drop(&mut self) {
        let args = (
            self.namespace.clone(),
            (self.nats_url.clone(), self.nats_login.clone()),
            self.admin_url.clone(),
            self.database.clone(),
        );
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = runtime {
                rt.block_on(Sandbox::cleanup(args.0, args.1, args.2, args.3));
            }
        })
        .join();
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    postgres(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is reachable: {e}"))
}

/// Connects as the services do, TLS settings included.
async fn postgres(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let database: sluice_postgres::Database = url.parse()?;
    Ok(database.connect().await?)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_only_the_database_name() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:15432/sluice", "postgres"),
            "postgres://u:p@127.0.0.1:15432/postgres"
        );
        assert_eq!(
            with_database("postgres://h:5432/a?sslmode=require", "b"),
            "postgres://h:5432/b?sslmode=require"
        );
        assert_eq!(with_database("postgres://h", "b"), "postgres://h/b");
    }
}
