//! A whole sluice deployment for one test: a private namespace and
//! database, a real HTTP file server, and the three real service binaries.

use std::time::Duration;

use async_nats::jetstream;
use sluice_devkit::{Deployment, Process, Sandbox};
use sluice_messages::{DeadLetter, ImportCompleted, Stream};
use sluice_operator::consumers::wait_for_consumers;
use sluice_operator::dead_letters::{DeadLetters, Filter, StoredLetter};
use sluice_operator::imports::{completion_count, derived_import_id_at, wait_for_completion};
use sluice_stage::topology::{consumer_info, CONSUMERS};

pub use sluice_devkit::{data::ExpectedRow, Dataset, Fault, FileServer, Route};

pub mod cluster;
pub mod nats_jwt;
pub mod objects;
pub mod pki;
mod servers;
pub use cluster::NatsCluster;
pub use servers::{free_port, local_setting, private_jaeger, PrivateNats, PrivatePostgres};

pub const SERVICES: [&str; 3] = Deployment::SERVICES;

pub struct Pipeline {
    pub sandbox: Sandbox,
    pub server: FileServer,
    pub js: jetstream::Context,
    pub deployment: Deployment,
}

/// A failed test shows what its services warned of: CI keeps no files, and
/// a stall is found from these lines or not at all.
impl Drop for Pipeline {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.deployment.log_dir) else {
            return;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let notable: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                .collect();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            eprintln!(
                "--- {name}: {} warning and error lines, the last 30:",
                notable.len()
            );
            for line in &notable[notable.len().saturating_sub(30)..] {
                eprintln!("{}", line.chars().take(400).collect::<String>());
            }
        }
    }
}

/// Where a [`Pipeline`] starts and with what; [`PipelineBuilder::start`]
/// starts it.
pub struct PipelineBuilder<'a> {
    place: Place,
    env: Vec<(String, String)>,
    replicas: usize,
    per_replica: Option<sluice_devkit::process::PerReplica<'a>>,
    swapped: Option<(String, std::path::PathBuf, Vec<String>)>,
}

enum Place {
    /// A new sandbox named `name`, on the shared servers or on `servers`
    /// (NATS URL, PostgreSQL admin URL).
    New {
        name: String,
        servers: Option<(String, String)>,
    },
    Sandbox(Sandbox),
}

impl<'a> PipelineBuilder<'a> {
    fn at(place: Place) -> Self {
        PipelineBuilder {
            place,
            env: Vec::new(),
            replicas: 1,
            per_replica: None,
            swapped: None,
        }
    }

    /// On private servers instead of the shared ones.
    pub fn on(mut self, nats_url: &str, admin_database_url: &str) -> Self {
        if let Place::New { servers, .. } = &mut self.place {
            *servers = Some((nats_url.to_owned(), admin_database_url.to_owned()));
        }
        self
    }

    /// Settings added for every service.
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// `replicas` of every service.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Settings added to one replica's environment, by its name (`saver`,
    /// `saver-2`, …).
    pub fn per_replica(mut self, settings: impl Fn(&str) -> Vec<(String, String)> + 'a) -> Self {
        self.per_replica = Some(Box::new(settings));
        self
    }

    /// Service `name` replaced by `program args…`; its consumer must exist
    /// already (`sluice setup`).
    pub fn swap(mut self, name: &str, program: std::path::PathBuf, args: Vec<String>) -> Self {
        self.swapped = Some((name.to_owned(), program, args));
        self
    }

    /// Starts the services and waits for their consumers to exist.
    pub async fn start(self) -> Pipeline {
        let sandbox = match self.place {
            Place::Sandbox(sandbox) => sandbox,
            Place::New { name, servers } => {
                let (nats_url, admin_database_url) = servers.unwrap_or_else(|| {
                    (
                        sluice_devkit::sandbox::nats_url(),
                        sluice_devkit::sandbox::admin_database_url(),
                    )
                });
                Sandbox::create_on(&name, &nats_url, &admin_database_url)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut plan = Deployment::plan(&sandbox).env(&env).replicas(self.replicas);
        if let Some(settings) = self.per_replica {
            plan = plan.per_replica(settings);
        }
        if let Some((name, program, args)) = self.swapped {
            plan = plan.swap(&name, program, args);
        }
        let deployment = plan.start().expect("service binaries start");
        Pipeline::around(sandbox, deployment).await
    }
}

impl Pipeline {
    /// Starts the three services with `env` added, and waits for their
    /// consumers to exist.
    pub async fn start(name: &str, env: &[(&str, &str)]) -> Pipeline {
        Pipeline::builder(name).env(env).start().await
    }

    /// A pipeline in a new sandbox named `name`, to shape before starting.
    pub fn builder<'a>(name: &str) -> PipelineBuilder<'a> {
        PipelineBuilder::at(Place::New {
            name: name.to_owned(),
            servers: None,
        })
    }

    /// A pipeline in a sandbox made by the test (its own login, say).
    pub fn in_sandbox<'a>(sandbox: Sandbox) -> PipelineBuilder<'a> {
        PipelineBuilder::at(Place::Sandbox(sandbox))
    }

    /// A file server and a NATS connection around running services, once
    /// their consumers exist.
    async fn around(sandbox: Sandbox, deployment: Deployment) -> Pipeline {
        let server = FileServer::start().await.expect("HTTP server starts");
        eprintln!("service logs: {}", deployment.log_dir.display());
        let js = jetstream::new(sandbox.nats().await);
        let pipeline = Pipeline {
            sandbox,
            server,
            js,
            deployment,
        };
        pipeline.wait_for_consumers().await;
        // The saver declares its consumer before its schema is migrated.
        let db = pipeline.sandbox.db().await;
        wait_until(Duration::from_secs(30), "the saver's schema", || async {
            db.query_one("SELECT to_regclass('import_chunks') IS NOT NULL", &[])
                .await
                .is_ok_and(|row| row.get::<_, bool>(0))
        })
        .await;
        pipeline
    }

    /// A core subscription to every completion event, as a script on `nats
    /// sub 'import-events.*'` would have, in place before this returns.
    pub async fn subscribe_to_events(&self) -> async_nats::Subscriber {
        let client = self.sandbox.nats().await;
        let events = client
            .subscribe(self.sandbox.namespace.import_events("*"))
            .await
            .expect("subscribed");
        client.flush().await.expect("the subscription reached NATS");
        events
    }

    /// Serves `data` trickled, so that an import of tens of thousands of
    /// transactions keeps every stage busy for many seconds: each
    /// transactions file 512 bytes per `delay`, the accounts file too.
    pub fn serve_slowly(&self, data: &Dataset, delay: Duration) {
        for (path, body) in &data.files {
            let route = if path == "/accounts.csv" {
                Route::new(body.clone()).trickle(32, Duration::from_millis(100))
            } else {
                Route::new(body.clone()).trickle(512, delay)
            };
            self.server.set(path, route);
        }
    }

    /// Each stream holds each message once: every output republished after
    /// a crash was recognised as a duplicate.
    pub async fn assert_each_message_stored_once(&self, accounts: u64, transaction_messages: u64) {
        for (stream, count) in [
            (Stream::AccountUpdates, accounts),
            (Stream::Transactions, transaction_messages),
        ] {
            assert_eq!(
                self.stream_state(stream).await.messages,
                count,
                "{stream:?} holds each message once"
            );
        }
    }

    /// Every service log, as one text.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(&self.deployment.log_dir).expect("the log folder") {
            let path = entry.expect("a log file").path();
            text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        text
    }

    pub fn service(&mut self, name: &str) -> &mut Process {
        self.deployment.service(name)
    }

    /// Publishes a plain-text import request, as `nats pub imports URL` does;
    /// returns the import id sluice derives for it.
    pub async fn import(&self, url: &str) -> String {
        self.publish_import(url.to_owned()).await
    }

    /// Publishes a JSON import request naming spec `spec`, as `nats pub
    /// imports '{"url": …, "spec": …}'` does; returns the derived import id.
    pub async fn import_with(&self, url: &str, spec: &str) -> String {
        self.publish_json(serde_json::json!({ "url": url, "spec": spec }))
            .await
    }

    /// Publishes a JSON import request, as `nats pub imports '{…}'` does;
    /// returns the derived import id.
    pub async fn publish_json(&self, request: serde_json::Value) -> String {
        self.publish_import(request.to_string()).await
    }

    async fn publish_import(&self, body: String) -> String {
        let sequence = self
            .js
            .publish(self.sandbox.namespace.imports(), body.into())
            .await
            .expect("publish")
            .await
            .expect("import stored")
            .sequence;
        derived_import_id_at(&self.js, &self.sandbox.namespace, sequence)
            .await
            .expect("the stored request")
    }

    pub async fn wait_for_consumers(&self) {
        wait_for_consumers(&self.js, &self.sandbox.namespace, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{e} (logs: {})", self.deployment.log_dir.display()));
    }

    /// Waits until every consumer has nothing pending and nothing awaiting
    /// an ack: the pipeline has finished all the work it was given.
    pub async fn wait_until_idle(&self, timeout: Duration) {
        wait_until(timeout, "pipeline idle", || async {
            for name in CONSUMERS {
                match consumer_info(&self.js, &self.sandbox.namespace, name).await {
                    Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
                    _ => return false,
                }
            }
            true
        })
        .await;
    }

    /// Waits until the data set's rows are saved and the pipeline is idle,
    /// then asserts that the saved rows are exactly the expected ones: no
    /// row missing, none extra, every amount exact.
    pub async fn assert_saves_exactly(&self, data: &Dataset, timeout: Duration) {
        self.assert_saves(&data.expected, timeout).await;
    }

    /// Like [`Pipeline::assert_saves_exactly`], for any expected rows.
    pub async fn assert_saves(&self, rows: &[ExpectedRow], timeout: Duration) {
        self.sandbox
            .wait_for_count(rows.len() as i64, timeout)
            .await;
        self.wait_until_idle(Duration::from_secs(60)).await;
        let mut want = rows.to_vec();
        want.sort();
        assert_eq!(self.sandbox.saved_rows().await, want);
    }

    /// Runs the `sluice` command against this pipeline's servers (without
    /// blocking the test's runtime, which serves the HTTP files).
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(sluice_devkit::binary_dir().join("sluice"))
            .args(args)
            .envs(self.sandbox.service_env())
            .output()
            .await
            .expect("sluice runs")
    }

    /// `sluice import URL --wait` of `data`, served by this pipeline's file
    /// server; asserts that it succeeded and saved every row.
    pub async fn import_and_wait(&self, data: &Dataset) {
        self.server.add_dataset(data);
        let out = self
            .cli(&["import", &self.server.url("/accounts.csv"), "--wait"])
            .await;
        assert!(
            out.status.success(),
            "sluice import --wait: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.assert_saves_exactly(data, Duration::from_secs(60))
            .await;
    }

    /// The completion event of import `id`, waiting up to `timeout`.
    pub async fn completion(&self, id: &str, timeout: Duration) -> ImportCompleted {
        tokio::time::timeout(
            timeout,
            wait_for_completion(&self.js, &self.sandbox.namespace, id),
        )
        .await
        .unwrap_or_else(|_| panic!("import {id} did not complete within {timeout:?}"))
        .expect("completion event")
    }

    /// How many completion events import `id` has.
    pub async fn completion_count(&self, id: &str) -> u64 {
        completion_count(&self.js, &self.sandbox.namespace, id)
            .await
            .expect("event count")
    }

    /// What stream `which` of this pipeline holds now.
    pub async fn stream_state(&self, which: sluice_messages::Stream) -> jetstream::stream::State {
        self.stream_info(which).await.state
    }

    /// Stream `which` of this pipeline: its configuration, state and cluster.
    pub async fn stream_info(&self, which: sluice_messages::Stream) -> jetstream::stream::Info {
        let name = self.sandbox.namespace.stream(which);
        let mut stream = self.js.get_stream(&name).await.expect("stream exists");
        stream.info().await.expect("stream info").clone()
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.stored_dead_letters()
            .await
            .into_iter()
            .map(|s| s.letter)
            .collect()
    }

    pub async fn stored_dead_letters(&self) -> Vec<StoredLetter> {
        DeadLetters::open(&self.js, &self.sandbox.namespace)
            .await
            .expect("dead letters stream")
            .list(&Filter::default())
            .await
            .expect("dead letters read")
    }

    /// SIGTERM to every service; each must exit 0 within 30 s.
    pub async fn stop(mut self) {
        self.stop_services().await;
    }

    /// Like [`Pipeline::stop`], keeping the servers and sandbox to inspect.
    pub async fn stop_services(&mut self) {
        if let Err(e) = self.deployment.stop(Duration::from_secs(30)).await {
            panic!("{e}");
        }
    }
}

/// Polls `check` every 50 ms until it holds; panics after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rows of `data` but those of `accounts`.
pub fn rows_without(data: &Dataset, accounts: &[i64]) -> Vec<ExpectedRow> {
    data.expected
        .iter()
        .filter(|r| !accounts.contains(&r.account_id))
        .cloned()
        .collect()
}

/// The account a dead-lettered account update was for.
pub fn account_of(letter: &DeadLetter) -> i64 {
    let body = letter.body.as_deref().expect("the original message");
    serde_json::from_str::<sluice_messages::AccountUpdate>(body)
        .expect("an account update")
        .account_id
}

/// Rows as `(account, id, amount)` literals, sorted, for exact comparisons.
pub fn rows(list: &[(i64, i64, &str)]) -> Vec<ExpectedRow> {
    let mut rows: Vec<_> = list
        .iter()
        .map(|&(account_id, id, amount)| ExpectedRow {
            account_id,
            id,
            amount: amount.to_owned(),
        })
        .collect();
    rows.sort();
    rows
}

/// Runs `sluice args…` with nothing but `env` in its environment; says
/// whether it succeeded, and what it printed (stdout, then stderr).
pub async fn sluice_with_only(args: &[&str], env: Vec<(String, String)>) -> (bool, String) {
    let out = tokio::process::Command::new(sluice_devkit::binary_dir().join("sluice"))
        .args(args)
        .env_clear()
        .envs(env)
        .output()
        .await
        .expect("sluice runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `sluice setup` for `sandbox`, with `env` added: streams, consumers and
/// the database, as an operator prepares them.
pub async fn setup(sandbox: &Sandbox, env: &[(&str, &str)]) {
    let out = tokio::process::Command::new(sluice_devkit::binary_dir().join("sluice"))
        .arg("setup")
        .envs(sandbox.service_env())
        .envs(env.iter().copied())
        .output()
        .await
        .expect("sluice runs");
    assert!(
        out.status.success(),
        "sluice setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` on `port` of this machine: the status code and body, or
/// `None` when nothing listens (the process has exited). HTTP/1.0, so no
/// server answers in chunks.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}
