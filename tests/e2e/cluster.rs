//! sluice on a 3-node JetStream cluster: streams replicated 3 times, every
//! service twice, all three node URLs given. A node that leads a stream is
//! killed mid-import; the services are restarted one by one mid-import; the
//! cluster requires TLS and logins. Each time the rows end exact, the import
//! completes once and nothing is dead-lettered.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use sluice_devkit::{sandbox::admin_database_url, unique_suffix, Dataset, Sandbox};
use sluice_e2e::{cluster::Secured, pki::Pki, setup, wait_until, NatsCluster, Pipeline};
use sluice_messages::Stream;
use sluice_stage::topology::{consumer_info, input_of, CONSUMERS};

const CLUSTER_ENV: [(&str, &str); 4] = [
    ("SLUICE_STREAM_REPLICAS", "3"),
    ("SLUICE_ACK_WAIT", "5s"),
    ("SLUICE_TRANSACTIONS_PER_MESSAGE", "10"),
    ("SLUICE_CONCURRENCY", "4"),
];

async fn pipeline_on(
    cluster: &NatsCluster,
    name: &str,
    login: Vec<(String, String)>,
    env: &[(&str, &str)],
    replicas: usize,
) -> Pipeline {
    let sandbox = Sandbox::create_secured(name, &cluster.urls(), login, &admin_database_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Pipeline::in_sandbox(sandbox)
        .env(env)
        .replicas(replicas)
        .start()
        .await
}

/// What a node loss cost, from the `kill -9`.
#[derive(Debug)]
struct Recovery {
    stream: Stream,
    /// Rows saved when the node died.
    saved: i64,
    /// Until another node led the stream.
    elected: Duration,
    /// Until the stream stored a message again.
    storing: Duration,
    /// Until 5,000 more rows were saved than at the kill.
    rows_flowing: Duration,
    /// What 5,000 rows took just before the kill.
    rows_before: Duration,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} leader, killed at {} rows saved: new one after {:.1} s, storing again \
             after {:.1} s; 5,000 rows saved {:.1} s after the kill ({:.1} s at the pace before it)",
            self.stream,
            self.saved,
            self.elected.as_secs_f64(),
            self.storing.as_secs_f64(),
            self.rows_flowing.as_secs_f64(),
            self.rows_before.as_secs_f64()
        )
    }
}

/// Once `at` rows of `total` are saved, kills the node leading `stream`
/// with SIGKILL, measures how long the pipeline stalled, and starts the
/// node again.
async fn kill_leader_mid_import(
    cluster: &mut NatsCluster,
    p: &Pipeline,
    stream: Stream,
    at: i64,
    total: i64,
) -> Recovery {
    const ROWS: i64 = 5_000;
    p.sandbox
        .wait_for_count(at - ROWS, Duration::from_secs(120))
        .await;
    let pace = Instant::now();
    p.sandbox.wait_for_count(at, Duration::from_secs(60)).await;
    let rows_before = pace.elapsed();
    let name = p.sandbox.namespace.stream(stream);
    let leader = cluster.stream_leader(&p.js, &name).await;
    let saved = p.sandbox.saved_count().await;
    let killed = Instant::now();
    cluster.kill(leader);
    let ((elected, storing), rows_flowing) = tokio::join!(
        async {
            cluster.new_leader(&p.js, &name, leader).await;
            let elected = killed.elapsed();
            let stored = cluster.last_sequence(&p.js, &name).await;
            while cluster.last_sequence(&p.js, &name).await == stored {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (elected, killed.elapsed())
        },
        async {
            p.sandbox
                .wait_for_count((saved + ROWS).min(total), Duration::from_secs(60))
                .await;
            killed.elapsed()
        },
    );
    cluster.restart(leader).await;
    assert!(saved < total, "the node died mid-import ({saved} saved)");
    let recovery = Recovery {
        stream,
        saved,
        elected,
        storing,
        rows_flowing,
        rows_before,
    };
    eprintln!("node n{} killed: {recovery}", leader + 1);
    recovery
}

/// `kill -9` of the node leading TRANSACTIONS, then of the one leading
/// IMPORT_EVENTS, in the middle of one import of 40,000 transactions; each
/// node started again once the pipeline moves on without it.
#[tokio::test]
async fn killing_the_node_that_leads_a_stream_mid_import_loses_and_duplicates_nothing() {
    let mut cluster = NatsCluster::start().await;
    let sandbox = Sandbox::create_on("cluster-kill", &cluster.urls(), &admin_database_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Streams and consumers made for one server first, as a deployment that
    // grew into a cluster has them: the services' declarations move them
    // onto three servers.
    setup(&sandbox, &[("SLUICE_STREAM_REPLICAS", "1")]).await;
    let mut p = Pipeline::in_sandbox(sandbox)
        .env(&CLUSTER_ENV)
        .replicas(2)
        .start()
        .await;
    wait_until_replicated_three_times(&p).await;
    let data = Dataset::generate(40, 40_000, 21);
    p.serve_slowly(&data, Duration::from_millis(120));
    let id = p.import(&p.server.url("/accounts.csv")).await;

    let mut recoveries = Vec::new();
    for (stream, at) in [
        (Stream::Transactions, 8_000),
        (Stream::ImportEvents, 24_000),
    ] {
        recoveries.push(kill_leader_mid_import(&mut cluster, &p, stream, at, 40_000).await);
    }

    p.assert_saves_exactly(&data, Duration::from_secs(180))
        .await;
    let completed = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(completed.transactions_saved, 40_000);
    // A tracker batch whose ack died with a node comes again after the ack
    // wait: its completion must not be announced twice.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(p.completion_count(&id).await, 1, "one completion event");
    assert!(p.dead_letters().await.is_empty());
    p.assert_each_message_stored_once(40, 4_000).await;
    for r in &recoveries {
        assert!(r.elected < Duration::from_secs(15), "{r:?}");
    }
    for r in &recoveries {
        eprintln!("recovery: {r}");
    }
    // The node losses were outages waited out, not failures: no service
    // exited, and they said when they paused and when they resumed.
    for service in &mut p.deployment.services {
        assert!(service.try_status().is_none(), "{} exited", service.name);
    }
    let logs = p.logs();
    for said in [
        "holding the messages in hand until it is back",
        "dependency available again; resuming",
    ] {
        assert!(logs.contains(said), "no service logged {said:?}");
    }
    assert!(!logs.contains(" ERROR "), "an error was logged");
    p.stop().await;
}

/// Waits until every stream and every consumer is a RAFT group on all
/// three nodes: the services' declarations moved them there.
async fn wait_until_replicated_three_times(p: &Pipeline) {
    wait_until(
        Duration::from_secs(60),
        "streams and consumers on three nodes",
        || async {
            let mut followers = Vec::new();
            for stream in Stream::ALL {
                let info = p.stream_info(stream).await;
                followers.push(info.cluster.map(|c| c.replicas.len()));
            }
            for name in CONSUMERS {
                let info = consumer_info(&p.js, &p.sandbox.namespace, name).await;
                followers.push(info.ok().and_then(|i| i.cluster).map(|c| c.replicas.len()));
            }
            followers.iter().all(|f| *f == Some(2))
        },
    )
    .await;
}

/// When every consumer answers for itself again, which only its leader
/// does: after a loss of quorum, the moment JetStream can deliver again.
async fn consumers_led(p: &Pipeline) -> Instant {
    let mut js = p.js.clone();
    js.set_timeout(Duration::from_millis(300));
    wait_until(Duration::from_secs(60), "every consumer led", || {
        let js = js.clone();
        async move {
            for name in CONSUMERS {
                if consumer_info(&js, &p.sandbox.namespace, name)
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
    Instant::now()
}

/// How many deliveries each consumer made beyond one per message.
async fn extra_deliveries(p: &Pipeline, import: &str) -> Vec<(&'static str, u64)> {
    let mut extra = Vec::new();
    for name in CONSUMERS {
        let info = consumer_info(&p.js, &p.sandbox.namespace, name)
            .await
            .unwrap();
        let stream = input_of(name).unwrap();
        let mut messages = p.stream_state(stream).await.last_sequence;
        if stream == Stream::ImportEvents {
            // The tracker's filter leaves out the completion events.
            messages -= p.completion_count(import).await;
        }
        extra.push((name, info.delivered.consumer_sequence - messages));
    }
    extra
}

/// What the replicas' `stopped` lines say they handed back, by stage, and
/// how many such lines there are.
fn handed_back(logs: &str, stage: &str) -> (u64, usize) {
    let said = format!("stopped stage=\"{stage}\" handed_back=");
    let counts: Vec<u64> = logs
        .lines()
        .filter_map(|line| line.split_once(&said))
        .map(|(_, n)| n.trim().parse::<u64>().expect("a count"))
        .collect();
    (counts.iter().sum(), counts.len())
}

/// Messages a stage handed back for a retry after a transient failure: each
/// is delivered once more too.
fn retried(logs: &str, stage: &str) -> u64 {
    let stage = format!("stage=\"{stage}\"");
    logs.lines()
        .filter(|line| line.contains("transient failure; retrying") && line.contains(&stage))
        .count() as u64
}

/// SIGTERM to each of the six service replicas in turn in the middle of an
/// import, each started again at once: the import ends exact, and the only
/// deliveries beyond one per message are those of the messages the stopping
/// replicas handed back (and of any retried after a transient failure). A message not handed back would come again only
/// after the 30 s ack wait, and count as one more.
#[tokio::test]
async fn a_rolling_restart_mid_import_wastes_no_delivery() {
    let cluster = NatsCluster::start().await;
    let env = [
        ("SLUICE_STREAM_REPLICAS", "3"),
        ("SLUICE_ACK_WAIT", "30s"),
        ("SLUICE_SHUTDOWN_TIMEOUT", "1s"),
        ("SLUICE_TRANSACTIONS_PER_MESSAGE", "10"),
        ("SLUICE_CONCURRENCY", "4"),
    ];
    let mut p = pipeline_on(&cluster, "cluster-roll", Vec::new(), &env, 2).await;
    let data = Dataset::generate(24, 24_000, 22);
    p.serve_slowly(&data, Duration::from_millis(200));
    let id = p.import(&p.server.url("/accounts.csv")).await;
    p.sandbox
        .wait_for_count(1_000, Duration::from_secs(60))
        .await;

    let started = Instant::now();
    let mut saved = 0;
    for i in 0..p.deployment.services.len() {
        saved = p.sandbox.saved_count().await;
        let replica = &mut p.deployment.services[i];
        let status = replica
            .stop_with(libc::SIGTERM, Duration::from_secs(20))
            .await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exits 0: {status:?}",
            replica.log_path().display()
        );
        replica.restart().unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    eprintln!(
        "rolling restart of 6 replicas took {:?}; {saved} rows saved at the last SIGTERM",
        started.elapsed()
    );
    assert!(saved < 24_000, "the restarts came mid-import ({saved})");

    p.assert_saves_exactly(&data, Duration::from_secs(120))
        .await;
    p.completion(&id, Duration::from_secs(30)).await;
    p.wait_until_idle(Duration::from_secs(30)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    assert!(p.dead_letters().await.is_empty());
    let extra = extra_deliveries(&p, &id).await;
    p.stop_services().await;
    let logs = p.logs();
    let mut accounted = Vec::new();
    for stage in CONSUMERS {
        let (handed, stops) = handed_back(&logs, stage);
        // Two replicas, each stopped twice: mid-import and at the end.
        assert_eq!(stops, 4, "{stage} replicas said how many they handed back");
        accounted.push((stage, handed + retried(&logs, stage)));
    }
    eprintln!(
        "deliveries beyond one per message: {extra:?}; handed back or retried: {accounted:?}"
    );
    assert_eq!(extra, accounted);
    assert!(
        handed_back(&logs, "fetcher").0 > 0,
        "fetchers stopped mid-file hand their files back"
    );
}

/// A cluster that requires TLS with client certificates and a password from
/// clients, and TLS and a login on the routes between its nodes; the node
/// leading TRANSACTIONS is killed mid-import and the services fail over to
/// the others over TLS.
#[tokio::test]
async fn a_cluster_with_tls_and_logins_on_routes_and_clients_imports_exactly() {
    let pki = Pki::generate();
    let password = format!("pw-{}", unique_suffix());
    let route_password = format!("route-{}", unique_suffix());
    let mut cluster = NatsCluster::start_secured(Secured {
        cert: pki.path("server.pem"),
        key: pki.path("server-key.pem"),
        ca: pki.path("ca.pem"),
        client: ("sluice".into(), password.clone()),
        route: ("route".into(), route_password.clone()),
    })
    .await;
    let mut login = pki.client_login("ca.pem");
    login.extend([
        ("SLUICE_NATS_USER".into(), "sluice".into()),
        ("SLUICE_NATS_PASSWORD".into(), password.clone()),
    ]);
    let p = pipeline_on(&cluster, "cluster-tls", login, &CLUSTER_ENV, 1).await;
    let data = Dataset::generate(12, 12_000, 23);
    p.serve_slowly(&data, Duration::from_millis(120));
    let id = p.import(&p.server.url("/accounts.csv")).await;
    kill_leader_mid_import(&mut cluster, &p, Stream::Transactions, 5_000, 12_000).await;

    p.assert_saves_exactly(&data, Duration::from_secs(120))
        .await;
    p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(p.completion_count(&id).await, 1);
    assert!(p.dead_letters().await.is_empty());
    // The routes the nodes talk over take TLS only: a route connecting in
    // the clear is hung up on without the INFO a plain route would get.
    let greeting = cluster.route_greeting(0).await;
    assert!(
        greeting.is_empty(),
        "a plaintext route was greeted: {greeting}"
    );
    let logs = p.logs();
    assert!(!logs.contains(&password), "the password is in a log");
    p.stop().await;
}

/// Every replica's `/readyz`, polled every 100 ms: when each last answered
/// other than 200, and whether it did so since `since`.
struct Readiness {
    ports: Vec<(String, u16)>,
    not_ready_at: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Instant>>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Readiness {
    fn watch(ports: Vec<(String, u16)>) -> Readiness {
        let not_ready_at: std::sync::Arc<
            std::sync::Mutex<std::collections::BTreeMap<String, Instant>>,
        > = Default::default();
        let poller = tokio::spawn({
            let ports = ports.clone();
            let not_ready_at = not_ready_at.clone();
            async move {
                loop {
                    for (name, port) in &ports {
                        let status = sluice_e2e::get(*port, "/readyz").await.map(|(s, _)| s);
                        if status != Some(200) {
                            let mut seen = not_ready_at.lock().unwrap();
                            seen.insert(name.clone(), Instant::now());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Readiness {
            ports,
            not_ready_at,
            poller,
        }
    }

    /// The replicas that have not answered other than 200 since `since`.
    fn never_unready_since(&self, since: Instant) -> Vec<String> {
        let seen = self.not_ready_at.lock().unwrap();
        self.ports
            .iter()
            .filter(|(name, _)| seen.get(name).is_none_or(|at| *at < since))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Waits until every replica answers 200, and says when the last one
    /// stopped answering otherwise.
    async fn all_ready(&self) -> Instant {
        wait_until(Duration::from_secs(60), "every replica ready", || async {
            for (_, port) in &self.ports {
                if sluice_e2e::get(*port, "/readyz").await.map(|(s, _)| s) != Some(200) {
                    return false;
                }
            }
            true
        })
        .await;
        let seen = self.not_ready_at.lock().unwrap();
        seen.values().max().copied().unwrap_or_else(Instant::now)
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Two of three nodes killed with `kill -9` in the middle of an import from
/// a slow server, kept down 20 s, and started again: every replica of every
/// stage says it is not ready while it cannot work, the import picks up
/// within seconds of quorum returning, files in hand are not fetched again,
/// and one completion event reaches a core subscriber.
///
/// Its bounds are timings, and a 2-core machine running other tests beside
/// it recovers its cluster several times slower (then in-progress acks age
/// past the ack wait and JetStream redelivers held files): `just
/// test-cluster` runs it alone, as CI does after `just test`.
#[tokio::test]
#[ignore = "timings: run alone by `just test-cluster`"]
async fn losing_quorum_pauses_every_stage_and_the_import_resumes_without_fetching_again() {
    const OUTAGE: Duration = Duration::from_secs(20);
    let mut cluster = NatsCluster::start().await;
    let sandbox = Sandbox::create_on("cluster-quorum", &cluster.urls(), &admin_database_url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let replicas: Vec<String> = ["", "-2"]
        .iter()
        .flat_map(|n| sluice_e2e::SERVICES.map(|s| format!("{s}{n}")))
        .collect();
    let ports: Vec<(String, u16)> = replicas
        .iter()
        .map(|r| (r.clone(), sluice_e2e::free_port()))
        .collect();
    let port_of = ports.clone();
    // Default settings but for the replication a cluster asks for.
    let p = Pipeline::in_sandbox(sandbox)
        .env(&[("SLUICE_STREAM_REPLICAS", "3")])
        .replicas(2)
        .per_replica(move |replica| {
            let port = port_of.iter().find(|(r, _)| r == replica).unwrap().1;
            vec![("SLUICE_METRICS_ADDR".into(), format!("127.0.0.1:{port}"))]
        })
        .start()
        .await;
    wait_until_replicated_three_times(&p).await;
    let readiness = Readiness::watch(ports);
    readiness.all_ready().await;

    let mut events = p.subscribe_to_events().await;
    let data = Dataset::generate(100, 100_000, 31);
    p.serve_slowly(&data, Duration::from_millis(100));
    let id = p.import(&p.server.url("/accounts.csv")).await;
    p.sandbox
        .wait_for_count(15_000, Duration::from_secs(120))
        .await;

    // What the fetchers hold (delivered, unacked): all JetStream may hand
    // to the other replica once it is back.
    let in_hand_at_kill =
        consumer_info(&p.js, &p.sandbox.namespace, sluice_messages::stage::FETCHER)
            .await
            .unwrap()
            .num_ack_pending as u64;
    let killed = Instant::now();
    let saved_at_kill = p.sandbox.saved_count().await;
    cluster.kill(1);
    cluster.kill(2);
    tokio::time::sleep(OUTAGE).await;
    let unready = readiness.never_unready_since(killed);
    let saved_in_outage = p.sandbox.saved_count().await - saved_at_kill;
    cluster.restart_all(&[1, 2]).await;
    let healthy = Instant::now();
    let down = healthy.duration_since(killed);
    let saved_at_healthy = p.sandbox.saved_count().await;
    let (led, rows_after, ready_after) = tokio::join!(
        async { consumers_led(&p).await.saturating_duration_since(healthy) },
        async {
            p.sandbox
                .wait_for_count(saved_at_healthy + 1, Duration::from_secs(60))
                .await;
            let first = healthy.elapsed();
            p.sandbox
                .wait_for_count(saved_at_healthy + 1_000, Duration::from_secs(60))
                .await;
            (first, healthy.elapsed())
        },
        async {
            readiness
                .all_ready()
                .await
                .saturating_duration_since(healthy)
        },
    );

    p.assert_saves_exactly(&data, Duration::from_secs(180))
        .await;
    p.completion(&id, Duration::from_secs(60)).await;
    let mut received = 0;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(3), events.next()).await
    {
        let event: sluice_messages::ImportCompleted =
            serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event.import_id, id);
        received += 1;
    }
    let files: Vec<&String> = data
        .files
        .iter()
        .map(|(path, _)| path)
        .filter(|f| *f != "/accounts.csv")
        .collect();
    let fetched: usize = files.iter().map(|f| p.server.request_count(f)).sum();
    let refetched = fetched - files.len();
    eprintln!(
        "quorum lost for {OUTAGE:?} at {saved_at_kill} rows ({saved_in_outage} saved meanwhile), \
         every node healthy {:.1} s after the kill, every consumer led {:.1} s after that: first \
         rows {:.1} s and 1,000 more rows {:.1} s after healthy, every replica ready {:.1} s after; \
         {fetched} downloads of {} files ({refetched} again, {in_hand_at_kill} held at the kill); \
         {received} completion event(s) on a core subscription",
        down.as_secs_f64(),
        led.as_secs_f64(),
        rows_after.0.as_secs_f64(),
        rows_after.1.as_secs_f64(),
        ready_after.as_secs_f64(),
        files.len(),
    );
    assert!(
        unready.is_empty(),
        "ready throughout the outage: {unready:?}"
    );
    assert_eq!(received, 1, "completion events on the wire");
    assert!(p.dead_letters().await.is_empty());
    // Held work goes on as soon as the cluster answers: outputs kept
    // unacked are sent again and pulls resume (backoffs cap at 1 s, an
    // unheard pull is given up after 1 s more). "Healthy" is each node's
    // own report, though: the cluster then still elects consumer leaders,
    // 0-6.3 s after it in the runs so far on this 2-core machine (and has
    // lost them once more while the second node caught up). That much is
    // JetStream's; sluice's part is counted from every consumer having a
    // leader again, and bounded.
    let first_after_led = rows_after.0.saturating_sub(led);
    assert!(
        first_after_led < Duration::from_secs(8),
        "first rows {first_after_led:?} after every consumer had a leader ({led:?} after healthy)"
    );
    // Healthy nodes still elect a leader for each of the seven streams and
    // buckets, and their consumers: readiness follows the last of them
    // (0-7.1 s after in the runs so far, the slowest with leaders lost once
    // more after the nodes said healthy).
    assert!(
        ready_after < Duration::from_secs(15),
        "ready after {:?}",
        ready_after
    );
    // Held files are not read again by their replica (unstored publishes
    // are sent again), and nothing outside the hands of the replicas is
    // fetched twice. JetStream may redeliver a held file to the other
    // replica when its last stored in-progress ack is older than the 30 s
    // ack wait once a leader is back: with 20 s down plus a restart of
    // 5-8 s that happens to some (0-31 of 100 in the runs so far), never to
    // more than the fetchers held unacked when the nodes were killed.
    // (Before the emitter re-sent unstored outputs, 68 of 100 were fetched
    // twice.)
    assert!(
        refetched as u64 <= in_hand_at_kill,
        "{refetched} files fetched again, {in_hand_at_kill} in hand at the kill (nodes healthy \
         {down:?} after it)"
    );
    let mut p = p;
    for service in &mut p.deployment.services {
        assert!(service.try_status().is_none(), "{} exited", service.name);
    }
    // The NATS client's own lines are shown from warn up in tests (off by
    // default): its reconnect to a node still starting is not sluice's.
    let errors: Vec<String> = p
        .logs()
        .lines()
        .filter(|l| l.contains(" ERROR ") && !l.contains(" async_nats::"))
        .map(str::to_owned)
        .collect();
    assert!(errors.is_empty(), "errors logged: {errors:#?}");
    p.stop().await;
}
