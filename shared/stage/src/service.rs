use std::{future::Future, process::ExitCode, sync::atomic::Ordering, sync::Arc, time::Duration};

use async_nats::jetstream::{self, consumer::PullConsumer};
use sluice_messages::Namespace;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConsumerArgs, NatsArgs, ObserveArgs, StageArgs},
    context::StageContext,
    flat_map, misconfiguration, nats_login,
    observe::HEALTH,
    repeats::Repeats,
    sink,
    topology::{self, ConsumerSpec},
    FlatMap, Sink, SinkOptions, StageError,
};

/// Connects to NATS and builds a JetStream context whose publishes wait
/// (backpressure) rather than fail when too many acks are outstanding.
///
/// `keep_trying` is for services: they start before NATS may be reachable
/// and keep reconnecting. Commands want to fail fast instead. Either way a
/// first attempt is made on its own, so that NATS refusing sluice
/// (credentials, certificates) is reported with its reason.
pub async fn connect(
    nats: &NatsArgs,
    client_name: &str,
    keep_trying: bool,
) -> Result<(async_nats::Client, jetstream::Context), StageError> {
    let nats_login::Servers { addrs, login } = nats_login::servers(&nats.nats_url)
        .map_err(|e| StageError::caused_by(crate::Fault::Permanent, e))?;
    let shown = crate::config::redact_url(&nats.nats_url);
    let first = options(nats, client_name, login.clone())
        .await?
        .connect(addrs.clone())
        .await;
    let client = match first {
        Ok(client) => client,
        Err(e) if !keep_trying => {
            return Err(StageError::transient(format!(
                "cannot connect to NATS at {shown} (NATS_URL): {}",
                crate::error_chain(&e)
            )))
        }
        Err(e) => {
            let why = crate::error_chain(&e);
            if nats_login::is_refusal(e.kind()) {
                nats_login::refused(&why);
                tracing::error!(nats = %shown, "NATS refuses sluice: {why}; check NATS_URL and the SLUICE_NATS_* settings");
            } else {
                tracing::warn!(nats = %shown, error = %why, "NATS is not reachable yet; waiting for it");
            }
            options(nats, client_name, login)
                .await?
                .retry_on_initial_connect()
                .connect(addrs)
                .await
                .map_err(|e| {
                    StageError::transient(format!(
                        "cannot connect to NATS at {shown} (NATS_URL): {}",
                        crate::error_chain(&e)
                    ))
                })?
        }
    };
    // The emitters bound what awaits acks (`--publish-window`). The context's
    // own limit must never bind before theirs: a task waiting on it would
    // hold unpolled acks that other waiting tasks need, and all would stall.
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .max_ack_inflight(1 << 20)
        .backpressure_on_inflight(true)
        .build(client.clone());
    Ok((client, js))
}

/// The connection settings: name, timeouts, login and TLS, and logs of
/// what happens to the connection.
async fn options(
    nats: &NatsArgs,
    client_name: &str,
    login: Option<nats_login::UrlLogin>,
) -> Result<async_nats::ConnectOptions, StageError> {
    let options = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        // Reconnecting is automatic and endless; say so in the logs.
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => {
                    nats_login::accepted();
                    HEALTH.set_nats_connected(true);
                    tracing::info!("connected to NATS")
                }
                async_nats::Event::Disconnected => {
                    HEALTH.set_nats_connected(false);
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                // Every failed reconnect attempt; the disconnect said enough,
                // unless NATS refuses sluice.
                async_nats::Event::ClientError(e) => {
                    let why = e.to_string();
                    if nats_login::is_refusal_text(&why) {
                        if nats_login::refused(&why) {
                            tracing::error!("NATS refuses sluice: {why}; check NATS_URL and the SLUICE_NATS_* settings");
                        }
                    } else {
                        tracing::debug!(error = %why, "NATS client error")
                    }
                }
                other => tracing::warn!(event = %other, "NATS connection event"),
            }
        });
    nats_login::login(options, nats, login)
        .await
        .map_err(|e| StageError::caused_by(crate::Fault::Permanent, e))
}

/// A retry republishes an input's outputs under the same ids up to the
/// longest work plus the longest retry delay after its first attempt; past
/// the duplicate window JetStream no longer recognises them. Writes stay
/// idempotent, but streams would hold the outputs twice: say so once.
fn warn_if_duplicates_can_slip(nats: &NatsArgs, consumer: &ConsumerArgs) {
    let span = consumer.max_processing_time + consumer.retry_backoff_max;
    if nats.duplicate_window < span {
        tracing::warn!(
            "SLUICE_DUPLICATE_WINDOW ({}) is shorter than SLUICE_MAX_PROCESSING_TIME + SLUICE_RETRY_BACKOFF_MAX ({}): \
             a retry of work that long republishes outputs JetStream no longer recognises as duplicates \
             (rows stay exact, streams may hold them twice); raise the window or lower the processing time",
            humantime::format_duration(nats.duplicate_window),
            humantime::format_duration(span)
        );
    }
}

/// How long a stream or consumer declaration first waits for its answer:
/// an R3 stream is created within a second on a healthy cluster.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long any other JetStream request waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a service waits for NATS to stop refusing it (credentials,
/// certificates) before it exits: a wrong setting is no outage.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(30);

/// A connected stage, its topology declared, ready to run its step.
pub struct Runtime {
    client: async_nats::Client,
    consumer: PullConsumer,
    shared: Arc<StageContext>,
    stop: CancellationToken,
}

impl Runtime {
    /// Connects, declares the streams and this stage's durable consumer.
    /// Waits for NATS as long as it takes (logging why), unless `stop` fires.
    pub async fn start(
        stage: &'static str,
        args: StageArgs,
        stop: CancellationToken,
    ) -> Result<Self, StageError> {
        let StageArgs { nats, consumer, .. } = args;
        let spec = ConsumerSpec::of(stage, &consumer)
            .ok_or_else(|| StageError::permanent(format!("unknown stage {stage}")))?;
        let (client, js) = connect(&nats, stage, true).await?;
        // On a cluster, declarations racing other replicas' went unanswered
        // in tests, and a node may die with a request in hand: ask again
        // soon rather than after the full request timeout (declaring is
        // idempotent), and a little later each time, for a slow cluster.
        let mut declaring = js.clone();
        let mut attempt = 0u32;
        let mut startup = crate::backoff::Backoff::startup();
        let mut waiting = Repeats::default();
        let pull_consumer = loop {
            declaring.set_timeout(
                DECLARE_TIMEOUT
                    .saturating_mul(attempt + 1)
                    .min(REQUEST_TIMEOUT),
            );
            let declared = async {
                topology::ensure_streams(&declaring, &nats).await?;
                topology::ensure_consumer(&declaring, &nats.namespace, &spec).await
            };
            let declared = tokio::select! {
                declared = declared => declared,
                _ = stop.cancelled() => return Err(StageError::stopped("before NATS was ready")),
            };
            match declared {
                Ok(c) => {
                    misconfiguration::cleared("NATS JetStream");
                    break c;
                }
                Err(e) => {
                    if let Some(why) = nats_login::refused_for(REFUSAL_DEADLINE) {
                        return Err(StageError::permanent(format!(
                            "NATS at {} has refused sluice for {}: {why}; check NATS_URL and the SLUICE_NATS_* settings",
                            crate::config::redact_url(&nats.nats_url),
                            humantime::format_duration(REFUSAL_DEADLINE)
                        )));
                    }
                    attempt += 1;
                    // Only a server that accepted sluice can say it has no
                    // JetStream (before that its INFO is empty).
                    let connected =
                        client.connection_state() == async_nats::connection::State::Connected;
                    if connected && !client.server_info().jetstream
                        || e.to_string().contains("not enabled")
                    {
                        misconfiguration::report(
                            "NATS JetStream",
                            &format!(
                                "NATS at {} does not offer JetStream: {e}",
                                crate::config::redact_url(&nats.nats_url)
                            ),
                            "enable JetStream on the server (`nats-server -js`, or `jetstream {}` in its configuration, and for the account in operator mode)",
                        );
                    } else if let Some(repeated) = waiting.due() {
                        tracing::warn!(error = %e, attempt, repeated, "waiting for NATS JetStream");
                    }
                    let delay = startup.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return Err(StageError::stopped("before NATS was ready")),
                    }
                }
            }
        };
        warn_if_duplicates_can_slip(&nats, &consumer);
        HEALTH.set_consumer_bound();
        tracing::info!(
            stage,
            nats = %crate::config::redact_url(&nats.nats_url),
            namespace = nats.namespace.name().unwrap_or(""),
            "consumer ready"
        );
        let max_payload = client.server_info().max_payload;
        let cancellations = crate::cancellations::Cancellations::new(
            js.clone(),
            nats.namespace.clone(),
            usize::from(nats.stream_replicas),
        );
        Ok(Runtime {
            client,
            consumer: pull_consumer,
            shared: Arc::new(StageContext {
                js,
                ns: nats.namespace,
                cancellations,
                stage,
                consumer,
                max_payload,
                handed_back: Default::default(),
            }),
            stop,
        })
    }

    /// Where this deployment's subjects and streams are.
    pub fn namespace(&self) -> &Namespace {
        &self.shared.ns
    }

    /// The largest message the NATS server accepts.
    pub fn max_payload(&self) -> usize {
        self.shared.max_payload
    }

    /// Runs a flatMap stage until the stop token fires, then drains.
    pub async fn run_flat_map<S: FlatMap>(self, stage: S) -> Result<(), StageError> {
        self.report_lag();
        // A flatMap stage drops the messages of cancelled imports; a sink's
        // own records say what it must not write.
        self.shared.cancellations.watch();
        flat_map::run(
            Arc::new(stage),
            self.shared.clone(),
            self.consumer.clone(),
            self.stop.clone(),
        )
        .await;
        self.finish().await
    }

    /// For work beside the stage's own (an outbox publisher, say).
    pub fn jetstream(&self) -> jetstream::Context {
        self.shared.js.clone()
    }

    /// Runs a sink stage until the stop token fires, then drains.
    pub async fn run_sink<S: Sink>(self, stage: S, options: SinkOptions) -> Result<(), StageError> {
        self.report_lag();
        sink::run(
            Arc::new(stage),
            self.shared.clone(),
            self.consumer.clone(),
            options,
            self.stop.clone(),
        )
        .await;
        self.finish().await
    }

    fn report_lag(&self) {
        if crate::observe::metrics_on() {
            tokio::spawn(crate::observe::report_lag(
                self.consumer.clone(),
                self.shared.stage,
                self.stop.clone(),
            ));
        }
    }

    /// Acks are fire-and-forget publishes: make sure the last ones left the
    /// process before it exits.
    async fn finish(self) -> Result<(), StageError> {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await {
            tracing::warn!(error = %e, "could not flush the last acks; JetStream will redeliver them");
        }
        let handed_back = self.shared.handed_back.load(Ordering::Relaxed);
        tracing::info!(stage = self.shared.stage, handed_back, "stopped");
        Ok(())
    }
}

/// Resolves once a dependency has refused sluice for a setting (not an
/// outage) for longer than [`misconfiguration::GRACE`].
async fn misconfigured_for_good() -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(why) = misconfiguration::lasting(misconfiguration::GRACE) {
            return why;
        }
    }
}

/// A service's whole `main`: logging, a single-threaded runtime (sluice
/// stages wait on the network far more than they compute), SIGTERM/SIGINT
/// handling, and one clear line plus exit status 1 on a fatal error.
pub fn run_service<F, Fut>(name: &'static str, observe: &ObserveArgs, body: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), StageError>>,
{
    // Declared first, dropped last: the spans of the last work are flushed
    // after the runtime stopped.
    let _telemetry = crate::telemetry::Telemetry::init(&format!("sluice-{name}"), true);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    let result = runtime.block_on(async {
        crate::observe::serve(observe).await?;
        let on_signal = stop.clone();
        tokio::spawn(async move {
            crate::shutdown_signal().await;
            HEALTH.set_draining();
            tracing::info!("shutdown requested: no new work; finishing what is in flight");
            on_signal.cancel();
        });
        let body = body(stop.clone());
        tokio::pin!(body);
        tokio::select! {
            result = &mut body => result,
            why = misconfigured_for_good() => {
                // What is in hand is handed back (or redelivered after its
                // ack wait): a wrong setting loses nothing either.
                stop.cancel();
                if tokio::time::timeout(Duration::from_secs(5), &mut body)
                    .await
                    .is_err()
                {
                    tracing::warn!("the stage did not stop within 5 s; exiting anyway");
                }
                Err(StageError::permanent(why))
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Asked to stop before it was connected: nothing was in hand.
        Err(e) if e.is_stopped() => {
            tracing::info!("stopped before NATS was ready");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "{name} failed");
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
