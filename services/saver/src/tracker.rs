//! The saver's second consumer and its announcer: the tracker records the
//! stages' progress facts, and the announcer completes the finished
//! imports and publishes their completion events (when an import is
//! finished: [`crate::completion`]): right after each commit that could
//! finish one, and every 200 ms for all.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use sluice_messages::{stage, ImportCompleted, ImportProgress, Namespace};
use sluice_stage::{
    telemetry::{self, KeyValue, TraceHeaders},
    Delivery, Sink, StageError,
};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{completion, db_error, Database};

/// A progress fact, and the trace context it was published in.
pub struct Fact {
    progress: ImportProgress,
    traceparent: Option<String>,
}

/// The saver's second consumer: records progress facts.
pub struct Tracker {
    database: Database,
    wakeups: completion::Wakeups,
}

impl Tracker {
    /// Records facts in `database`, telling the announcer through `wakeups`.
    pub fn new(database: Database, wakeups: completion::Wakeups) -> Self {
        Tracker { database, wakeups }
    }
}

impl Sink for Tracker {
    const NAME: &'static str = stage::TRACKER;
    // Facts are few (a handful per account); their order does not matter,
    // one writer is plenty.
    const DEFAULT_WRITERS: u16 = 1;

    type Item = Fact;
    type Writer = Client;

    fn decode(&self, input: &Delivery) -> Result<Fact, StageError> {
        Ok(Fact {
            progress: input.json()?,
            traceparent: input.header("traceparent").map(str::to_owned),
        })
    }

    async fn open(&self) -> Result<Client, StageError> {
        self.database.connect().await
    }

    async fn write(&self, client: &mut Client, facts: &[Fact]) -> Result<(), StageError> {
        // Replicas of the tracker write facts of the same imports: taking
        // the row locks in one order (import, then the fact's own key) lets
        // them wait for each other instead of deadlocking.
        let mut facts: Vec<&Fact> = facts.iter().collect();
        facts.sort_by_key(|f| {
            (
                f.progress.import_id(),
                f.progress.fact(),
                completion::fact_key(&f.progress),
            )
        });
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_error("begin", &e))?;
        for fact in &facts {
            completion::record(&tx, &fact.progress, fact.traceparent.as_deref())
                .await
                .map_err(|e| db_error("record progress", &e))?;
        }
        tx.commit().await.map_err(|e| db_error("commit", &e))?;
        for fact in facts {
            let account = completion::fact_key(&fact.progress);
            self.wakeups
                .touch(fact.progress.import_id(), Some(account), true);
        }
        self.wakeups.wake();
        Ok(())
    }
}

/// Right after a commit that could finish an import (told by `wakeups`),
/// and every 200 ms for all: settles the imports that are complete, then
/// publishes the completion event of every settled import not yet
/// announced, and marks it announced.
///
/// Every saver replica runs this. Exactly one publishes each event: it
/// claims the import's row (`FOR UPDATE SKIP LOCKED`) in a transaction
/// that also marks it announced, and holds the claim while it publishes.
/// Another replica skips a claimed row, and finds it announced once the
/// claim commits. A replica that dies between publishing and committing
/// releases its claim with its connection; the next one publishes again
/// under the same `Nats-Msg-Id` (`import-completed/<id>`), which the
/// stream drops as a duplicate: then, and only then, a core subscriber
/// sees the event twice.
pub async fn announce_completions(
    database: Database,
    js: jetstream::Context,
    ns: Namespace,
    wakeups: completion::Wakeups,
    stop: CancellationToken,
) -> Result<(), StageError> {
    let mut client: Option<Client> = None;
    let mut sweep = true;
    let mut failing = sluice_stage::repeats::Repeats::default();
    // While completions cannot be announced, the saver is not ready.
    let mut paused = None;
    while !stop.is_cancelled() {
        let checked = tokio::time::Instant::now();
        let result = async {
            if client.is_none() {
                client = Some(database.connect().await?);
            }
            let connected = client.as_mut().expect("connected");
            match sweep {
                true => completion::complete_finished(connected).await,
                false => completion::complete_touched(connected, &wakeups.take()).await,
            }
            .map_err(|e| db_error("settle imports", &e))?;
            announce_pending(connected, &js, &ns).await
        }
        .await;
        let (took, ended) = (checked.elapsed(), tokio::time::Instant::now());
        let healthy = result.is_ok();
        match result {
            Ok(()) => {
                failing.end();
                paused = None;
            }
            Err(e) => {
                paused.get_or_insert_with(|| sluice_stage::observe::HEALTH.pause());
                let due = failing.due();
                if let Some(repeated) = due.filter(|_| !sluice_stage::misconfiguration::reported())
                {
                    tracing::warn!(error = %e, repeated, "cannot announce completed imports yet");
                }
                client = None;
            }
        }
        // What a failed check took is swept next: a sweep covers it all.
        sweep = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => true,
            _ = wakeups.woken(), if healthy => false,
            _ = stop.cancelled() => true,
        };
        if !sweep {
            // Under load every commit wakes the check: waiting as long as
            // the last one took, it takes the accounts of many commits at
            // once and never holds more than half of a database session
            // that the writers need; a quick check waits next to nothing.
            tokio::select! {
                _ = tokio::time::sleep_until(ended + took) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
    Ok(())
}

async fn announce_pending(
    client: &mut Client,
    js: &jetstream::Context,
    ns: &Namespace,
) -> Result<(), StageError> {
    let pending = completion::unannounced(client)
        .await
        .map_err(|e| db_error("read settled imports", &e))?;
    for completion::Unannounced { event, traceparent } in pending {
        let id = event.import_id.clone();
        let claim = client
            .transaction()
            .await
            .map_err(|e| db_error("begin", &e))?;
        if !completion::claim_announcement(&claim, &id)
            .await
            .map_err(|e| db_error("claim the announcement", &e))?
        {
            // Another replica announces it, or has already.
            tracing::debug!(import_id = %id, "completion announced by another replica");
            continue;
        }
        // Ids are checked where messages are decoded; one that got into the
        // table otherwise (an older version, a hand edit) has no subject to
        // go to. It must not hold up the imports after it.
        if let Err(why) = sluice_messages::validate_import_id(&id) {
            tracing::error!(import_id = ?id, %why, "cannot announce this import; marking it announced without an event");
        } else {
            publish_completion(js, ns, &event, traceparent).await?;
        }
        let json = serde_json::to_string(&event).expect("events always encode");
        completion::mark_announced(&claim, &id, &json)
            .await
            .map_err(|e| db_error("mark import announced", &e))?;
        claim
            .commit()
            .await
            .map_err(|e| db_error("commit the announcement", &e))?;
        if sluice_messages::validate_import_id(&id).is_ok() {
            tracing::info!(import_id = %id, status = ?event.status, transactions = event.transactions_saved, "import complete");
        }
    }
    Ok(())
}

/// Publishes the completion event and waits until the stream stored it.
async fn publish_completion(
    js: &jetstream::Context,
    ns: &Namespace,
    event: &ImportCompleted,
    traceparent: Option<String>,
) -> Result<(), StageError> {
    let id = &event.import_id;
    let span = completion_span(event, traceparent);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(sluice_messages::HEADER_IMPORT_ID, id.as_str());
    TraceHeaders::of(&span).apply(&mut headers);
    let message = PublishMessage::build()
        .payload(
            serde_json::to_vec(event)
                .expect("events always encode")
                .into(),
        )
        .headers(headers)
        .message_id(format!("import-completed/{id}"));
    js.send_publish(ns.import_events(id), message)
        .instrument(span)
        .await
        .map_err(|e| StageError::transient(format!("cannot publish completion of {id}: {e}")))?
        .await
        .map_err(|e| {
            StageError::transient(format!("JetStream did not store completion of {id}: {e}"))
        })?;
    Ok(())
}

/// The completion's span: the last of the import's trace, under the span
/// that started the import (the importer's).
fn completion_span(event: &ImportCompleted, traceparent: Option<String>) -> tracing::Span {
    let span = telemetry::messaging_span("publish import-events", "producer", "publish");
    let started_in = traceparent.as_deref().map(|t| ("traceparent", t));
    telemetry::continue_trace(&span, telemetry::extract_pairs(started_in));
    telemetry::annotate(
        &span,
        [
            KeyValue::new("sluice.import.id", event.import_id.clone()),
            KeyValue::new("sluice.outcome", format!("{:?}", event.status)),
            KeyValue::new("sluice.transactions.saved", event.transactions_saved as i64),
            KeyValue::new("sluice.dead_letters", event.dead_letters as i64),
        ],
    );
    span
}
