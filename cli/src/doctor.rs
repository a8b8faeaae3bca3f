//! `sluice doctor`: every precondition of a working sluice, checked in
//! order, one ✓/✗ line each with the fix. Exit 0 only when all hold.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::{stream::FuturesOrdered, StreamExt};
use serde::Serialize;
use sluice_download::DownloadArgs;
use sluice_messages::Stream;
use sluice_stage::{
    config::redact_url,
    topology::{self, ConsumerSpec},
    ConsumerArgs, NatsArgs,
};

use crate::explain::{self, Problem};
use crate::imports::{DatabaseArgs, OptionalDatabaseArgs};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    consumer: ConsumerArgs,
    #[command(flatten)]
    database: OptionalDatabaseArgs,
    #[command(flatten)]
    download: DownloadArgs,
    /// JSON for scripts: one object per check.
    #[arg(long)]
    json: bool,
}

/// One check's verdict.
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: impl Into<String>, problem: Problem) -> Check {
        Check {
            check: check.into(),
            ok: false,
            detail: problem.what,
            fix: problem.fix,
        }
    }

    fn print(&self) {
        let mark = if self.ok { "✓" } else { "✗" };
        outln!("{mark} {}: {}", self.check, self.detail);
        if let Some(fix) = &self.fix {
            outln!("    fix: {fix}");
        }
    }
}

/// The longest any one check may take: a server that stops answering
/// mid-run makes its checks fail with this, never hang the command.
const CHECK_DEADLINE: Duration = Duration::from_secs(5);

/// The checks so far. Each line is printed as soon as its check completes
/// (unless JSON was asked for, which prints the whole list at the end).
struct Report {
    json: bool,
    checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, check: Check) {
        if !self.json {
            check.print();
            crate::output::flush();
        }
        self.checks.push(check);
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut report = Report {
        json: args.json,
        checks: Vec::new(),
    };
    check_nats(&args, &mut report).await;
    // Without a database setting, the saver's answer (above) is what
    // there is to check of it.
    if let Some(database) = args.database.get() {
        check_database(&database, &mut report).await;
    }
    // The fetcher's guard runs with the fetcher's environment, which this
    // command cannot see: say which settings were read.
    report.push(Check::pass(
        "downloads (this command's environment, not the fetcher's)",
        format!(
            "refused: {} (SLUICE_DENY_NETWORKS); allowed anyway: {} (SLUICE_ALLOW_NETWORKS); \
             the fetcher applies its own, shown at its start and on its /metrics",
            non_empty(args.download.deny_networks.to_string()),
            non_empty(args.download.allow_networks.to_string()),
        ),
    ));
    let checks = report.checks;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&checks).expect("encodes")
        );
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{failed} of {} checks failed",
            checks.len()
        ))
    }
}

/// `check` within [`CHECK_DEADLINE`], or a failed check that says so.
/// `Err`: the check had no answer in time (see [`late`]).
async fn within(
    label: String,
    check: impl std::future::Future<Output = Check>,
) -> Result<Check, Check> {
    tokio::time::timeout(CHECK_DEADLINE, check)
        .await
        .map_err(|_| late(label))
}

/// A check whose server did not answer within [`CHECK_DEADLINE`].
fn late(label: impl Into<String>) -> Check {
    Check::fail(
        label,
        Problem::new(format!("no answer within {} s", CHECK_DEADLINE.as_secs())).fix(
            "the server stopped answering: check that it runs and is reachable, then run `sluice doctor` again",
        ),
    )
}

fn non_empty(list: String) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list
    }
}

async fn check_nats(args: &DoctorArgs, checks: &mut Report) {
    let nats = &args.nats;
    let connected = tokio::time::timeout(
        CHECK_DEADLINE,
        explain::connect_nats_server(nats, "sluice-doctor"),
    );
    let (client, js) = match connected.await {
        Ok(Ok(connected)) => connected,
        Ok(Err(problem)) => return checks.push(Check::fail("NATS", problem)),
        Err(_) => return checks.push(late("NATS")),
    };
    let server = client.server_info();
    checks.push(Check::pass(
        "NATS",
        format!(
            "{} answers: nats-server {} ({})",
            redact_url(&nats.nats_url),
            server.version,
            server.server_name
        ),
    ));
    let account = tokio::time::timeout(CHECK_DEADLINE, explain::jetstream_account(nats, &js));
    let account = match account.await {
        Ok(Ok(account)) => account,
        Ok(Err(problem)) => return checks.push(Check::fail("JetStream", problem)),
        Err(_) => return checks.push(late("JetStream")),
    };
    let limit = |l: Option<i64>| l.map_or("unlimited".to_owned(), |n| n.to_string());
    checks.push(Check::pass(
        "JetStream",
        format!(
            "enabled; account uses {} streams, {} consumers, {} bytes on file (limits: streams {}, consumers {}, storage {})",
            account.streams,
            account.consumers,
            account.storage,
            limit(account.limits.max_streams),
            limit(account.limits.max_consumers),
            limit(account.limits.max_storage),
        ),
    ));
    // Once NATS stops answering, the checks after it would each wait out
    // their deadline too: one line says so instead.
    for which in Stream::ALL {
        let label = format!("stream {}", nats.namespace.stream(which));
        match within(label, check_stream(nats, &js, which)).await {
            Ok(check) => checks.push(check),
            Err(late) => return checks.push(late),
        }
    }
    // Together, since each may watch a consumer for a few seconds; shown
    // in order, each as soon as it and those before it are done.
    let mut consumers: FuturesOrdered<_> = topology::CONSUMERS
        .iter()
        .map(|name| {
            let label = format!("consumer {name}");
            within(label, check_consumer(args, &js, name))
        })
        .collect();
    while let Some(check) = consumers.next().await {
        match check {
            Ok(check) => checks.push(check),
            Err(late) => return checks.push(late),
        }
    }
    checks.push(check_api(&client, &nats.namespace).await);
    let _ = tokio::time::timeout(CHECK_DEADLINE, client.flush()).await;
}

/// Whether a saver answers sluice's service API, which `status` and
/// `import --wait` ask when no database is set.
async fn check_api(client: &async_nats::Client, ns: &sluice_messages::Namespace) -> Check {
    use sluice_messages::api::{Endpoint, ImportsReply, ImportsRequest, SERVICE};
    let subject = ns.api(Endpoint::Imports);
    let label = format!("service API {SERVICE} ({subject})");
    let request = ImportsRequest { limit: Some(1) };
    match crate::api::ask::<ImportsReply>(client, subject, &request).await {
        Ok(reply) => Check::pass(
            label,
            match reply.and_then(|r| r.imports.into_iter().next()) {
                Some(last) => format!(
                    "a saver answers; the latest import is {} ({})",
                    last.id, last.status
                ),
                None => "a saver answers; no import recorded yet".to_owned(),
            },
        ),
        Err(problem) => Check::fail(label, problem),
    }
}

async fn check_stream(nats: &NatsArgs, js: &jetstream::Context, which: Stream) -> Check {
    let want = topology::stream_config(nats, which);
    let label = format!("stream {}", want.name);
    let mut found = match js.get_stream(&want.name).await {
        Ok(stream) => stream,
        Err(_) => {
            let missing = explain::stream_missing(&want.name);
            return Check::fail(
                label,
                Problem::new("does not exist").fix(missing.fix.unwrap_or_default()),
            );
        }
    };
    let have = match found.info().await {
        Ok(info) => info.config.clone(),
        Err(e) => return Check::fail(label, Problem::new(format!("cannot read it: {e}"))),
    };
    let drift = stream_drift(&want, &have);
    if drift.is_empty() {
        Check::pass(
            label,
            format!(
                "subjects {}, {:?} retention, {} replica(s), max age {}",
                have.subjects.join(" "),
                have.retention,
                have.num_replicas,
                humantime::format_duration(have.max_age)
            )
            .to_lowercase(),
        )
    } else {
        Check::fail(
            label,
            Problem::new(format!(
                "differs from what `sluice setup` creates: {}",
                drift.join("; ")
            ))
            .fix("run `sluice setup` with the same settings as the services"),
        )
    }
}

/// What differs between the configuration `sluice setup` would apply and
/// the one on the server, one line per field.
#[derive(Default)]
struct Drift(Vec<String>);

impl Drift {
    fn field(
        mut self,
        what: &str,
        want: impl std::fmt::Debug,
        have: impl std::fmt::Debug,
    ) -> Drift {
        let (want, have) = (format!("{want:?}"), format!("{have:?}"));
        if want != have {
            self.0.push(format!("{what} is {have}, expected {want}"));
        }
        self
    }
}

fn stream_drift(want: &stream::Config, have: &stream::Config) -> Vec<String> {
    Drift::default()
        .field("subjects", &want.subjects, &have.subjects)
        .field("retention", want.retention, have.retention)
        .field("storage", want.storage, have.storage)
        .field("replicas", want.num_replicas, have.num_replicas)
        .field("max age", want.max_age, have.max_age)
        .field("max bytes", want.max_bytes, have.max_bytes)
        .field("discard", want.discard, have.discard)
        .field(
            "duplicate window",
            want.duplicate_window,
            have.duplicate_window,
        )
        .0
}

async fn check_consumer(args: &DoctorArgs, js: &jetstream::Context, name: &'static str) -> Check {
    let ns = &args.nats.namespace;
    let spec = ConsumerSpec::of(name, &args.consumer).expect("known consumer");
    let input = spec.input;
    let want = topology::consumer_config(ns, &spec);
    let label = format!("consumer {name} on {}", ns.stream(input));
    let Ok(mut info) = topology::consumer_info(js, ns, name).await else {
        return Check::fail(
            label,
            Problem::new("does not exist").fix("run `sluice setup` (or start the services)"),
        );
    };
    let drift = consumer_drift(&want, &info.config);
    if !drift.is_empty() {
        return Check::fail(
            label,
            Problem::new(format!(
                "differs from what `sluice setup` creates: {}",
                drift.join("; ")
            ))
            .fix("run `sluice setup` with the same settings as the services"),
        );
    }
    // A bound replica keeps a pull request waiting at almost every moment;
    // look a few times before calling the consumer unattended.
    for _ in 0..12 {
        if info.num_waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        match topology::consumer_info(js, ns, name).await {
            Ok(fresh) => info = fresh,
            Err(_) => break,
        }
    }
    let backlog = format!(
        "{} pending, {} in flight",
        info.num_pending, info.num_ack_pending
    );
    if info.num_waiting == 0 {
        let service = if name == "tracker" { "saver" } else { name };
        return Check::fail(
            label,
            Problem::new(format!("no replica is pulling ({backlog})"))
                .fix(format!("start `{service}`")),
        );
    }
    Check::pass(
        label,
        format!(
            "{} pull request(s) waiting from bound replicas; {backlog}",
            info.num_waiting
        ),
    )
}

fn consumer_drift(want: &pull::Config, have: &jetstream::consumer::Config) -> Vec<String> {
    Drift::default()
        .field("filter subject", &want.filter_subject, &have.filter_subject)
        .field("ack policy", want.ack_policy, have.ack_policy)
        .field("ack wait", want.ack_wait, have.ack_wait)
        .field("max deliver", want.max_deliver, have.max_deliver)
        .field(
            "max ack pending",
            want.max_ack_pending,
            have.max_ack_pending,
        )
        .0
}

async fn check_database(database: &DatabaseArgs, checks: &mut Report) {
    let url = &database.database_url;
    let connected = tokio::time::timeout(CHECK_DEADLINE, async {
        let db = database.connect().await?;
        let version = db
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| explain::postgres("read the server version", url, &e))?;
        Ok::<_, Problem>((db, version.get::<_, String>(0)))
    });
    let (db, version) = match connected.await {
        Ok(Ok(connected)) => connected,
        Ok(Err(problem)) => return checks.push(Check::fail("PostgreSQL", problem)),
        Err(_) => return checks.push(late("PostgreSQL")),
    };
    checks.push(Check::pass(
        "PostgreSQL",
        format!("{} answers: PostgreSQL {version}", redact_url(url)),
    ));
    let tls = db.query_one(
        "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
        &[],
    );
    let tls: bool = match tokio::time::timeout(CHECK_DEADLINE, tls).await {
        Ok(row) => row.map(|r| r.get(0)).unwrap_or(false),
        Err(_) => return checks.push(late("PostgreSQL TLS")),
    };
    let local = [
        "@127.",
        "@localhost",
        "@[::1]",
        "//127.",
        "//localhost",
        "//[::1]",
    ]
    .iter()
    .any(|h| url.contains(h));
    checks.push(if tls || local {
        Check::pass(
            "PostgreSQL TLS",
            if tls {
                "in use"
            } else {
                "not in use (the server is on this machine)"
            },
        )
    } else {
        Check::fail(
            "PostgreSQL TLS",
            Problem::new("not in use: passwords and rows cross the network in the clear")
                .fix("add sslmode=verify-full and sslrootcert=<the server's CA> to DATABASE_URL"),
        )
    });
    let version = db.query_one(
        "SELECT COALESCE(MAX(version), 0) FROM sluice_migrations",
        &[],
    );
    let version = match tokio::time::timeout(CHECK_DEADLINE, version).await {
        Ok(Ok(row)) => row.get::<_, i32>(0),
        Ok(Err(e)) => {
            return checks.push(Check::fail(
                "schema",
                explain::postgres("read the schema version", url, &e),
            ))
        }
        Err(_) => return checks.push(late("schema")),
    };
    checks.push(match sluice_saver::schema::compare(version) {
        Ok(()) => Check::pass("schema", format!("migrated to version {version}")),
        Err(mismatch) => {
            let fix = match mismatch {
                sluice_saver::schema::Mismatch::Behind { .. } => {
                    "run `sluice setup` (or start the saver): it migrates the schema"
                }
                sluice_saver::schema::Mismatch::Ahead { .. } => {
                    "upgrade sluice (this command and the services) to the release that migrated it"
                }
            };
            Check::fail("schema", Problem::new(mismatch.to_string()).fix(fix))
        }
    });
}
