//! Reading and replaying what is in `DEAD_LETTERS` (`sluice dead-letters`).

use async_nats::jetstream::{self, message::PublishMessage};
use base64::Engine;
use sluice_messages::{
    api::{Refusal, ReplayReply, StoredDeadLetter},
    DeadLetter, DeadLetterKind, Namespace, Stream, HEADER_IMPORT_ID, HEADER_MSG_ID,
    HEADER_REPLAY_OF,
};
use sluice_stage::telemetry::{self, KeyValue, TraceHeaders};
use tracing::Instrument;

use crate::{Error, Result};

/// How many of the newest sequences [`DeadLetters::recent`] reads.
pub const RECENT_SCAN: u64 = 5_000;

/// A dead letter and where it sits in the stream.
#[derive(Debug, Clone)]
pub struct StoredLetter {
    pub sequence: u64,
    /// The subject it is stored on: `dead-letters.<stage>`.
    pub subject: String,
    pub letter: DeadLetter,
    /// The letter's own headers (its import, the trace it was given up in).
    pub headers: async_nats::HeaderMap,
}

impl StoredLetter {
    /// A row report: it carries no message to replay. Its file is fixed by
    /// replaying the message that read it, or by importing again.
    pub fn is_report(&self) -> bool {
        matches!(
            self.letter.kind,
            DeadLetterKind::MalformedRow | DeadLetterKind::Conflict
        )
    }

    /// The letter as the service API shows it: no body, the file it quotes
    /// without userinfo or query.
    pub fn summary(&self) -> StoredDeadLetter {
        let letter = &self.letter;
        StoredDeadLetter {
            sequence: self.sequence,
            time: letter.time.clone(),
            stage: letter.stage.clone(),
            kind: letter.kind.as_str().to_owned(),
            import_id: letter.import_id.clone(),
            error: letter.error.clone(),
            subject: letter.subject.clone(),
            url: letter.url.as_deref().map(sluice_messages::redact_file_url),
            line: letter.line,
            replayable: !self.is_report() && !letter.truncated,
        }
    }
}

/// Which dead letters to look at; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub import_id: Option<String>,
    pub stage: Option<String>,
    pub kind: Option<DeadLetterKind>,
}

impl Filter {
    fn matches(&self, letter: &DeadLetter) -> bool {
        self.import_id
            .as_ref()
            .is_none_or(|id| letter.import_id.as_ref() == Some(id))
            && self.stage.as_ref().is_none_or(|s| &letter.stage == s)
            && self.kind.is_none_or(|k| letter.kind == k)
    }
}

/// The dead letters of one deployment.
pub struct DeadLetters {
    stream: jetstream::stream::Stream,
    js: jetstream::Context,
    ns: Namespace,
}

/// Why a dead letter was not replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The letter does not say where to replay it in a way sluice accepts
    /// (a forged or foreign letter): skip it, replay the others.
    #[error(transparent)]
    Refused(Error),
    #[error(transparent)]
    Failed(Error),
}

impl DeadLetters {
    pub async fn open(js: &jetstream::Context, ns: &Namespace) -> Result<Self> {
        let name = ns.stream(Stream::DeadLetters);
        let stream = js.get_stream(&name).await.map_err(|e| {
            Error::caused(
                format!("cannot open stream {name} (run `sluice setup`?)"),
                e,
            )
        })?;
        Ok(DeadLetters {
            stream,
            js: js.clone(),
            ns: ns.clone(),
        })
    }

    /// How many letters the stream holds, and its first and last sequence.
    async fn state(&mut self) -> Result<jetstream::stream::State> {
        let info =
            (self.stream.info().await).map_err(|e| Error::caused("cannot read dead letters", e))?;
        Ok(info.state.clone())
    }

    /// Every dead letter matching `filter`, oldest first.
    pub async fn list(&mut self, filter: &Filter) -> Result<Vec<StoredLetter>> {
        let state = self.state().await?;
        let mut found = Vec::new();
        if state.messages == 0 {
            return Ok(found);
        }
        for sequence in state.first_sequence..=state.last_sequence {
            // Replayed letters are deleted, leaving gaps.
            if let Some(stored) = self.get(sequence).await.ok().flatten() {
                if filter.matches(&stored.letter) {
                    found.push(stored);
                }
            }
        }
        Ok(found)
    }

    /// The newest `limit` dead letters matching `filter` among the newest
    /// [`RECENT_SCAN`] sequences of the stream, newest first, and how many
    /// letters the stream holds. JetStream cannot filter by import, so the
    /// window is read through one ordered consumer (a stream of messages,
    /// not a request per letter) and bounded: an answer never takes long.
    pub async fn recent(
        &mut self,
        filter: &Filter,
        limit: usize,
    ) -> Result<(Vec<StoredLetter>, u64)> {
        use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
        use futures_util::StreamExt;
        let state = self.state().await?;
        let mut found = std::collections::VecDeque::new();
        if state.messages == 0 || limit == 0 {
            return Ok((Vec::new(), state.messages));
        }
        let oldest = state
            .first_sequence
            .max(state.last_sequence.saturating_sub(RECENT_SCAN - 1));
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: oldest,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| Error::caused("cannot read dead letters", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| Error::caused("cannot read dead letters", e))?;
        // The last letter may be replayed (deleted) meanwhile: a pause ends
        // the read as surely as reaching it.
        while let Ok(Some(next)) =
            tokio::time::timeout(std::time::Duration::from_millis(500), messages.next()).await
        {
            let message = next.map_err(|e| Error::caused("cannot read dead letters", e))?;
            let sequence = message.info().map_or(0, |i| i.stream_sequence);
            // A message that is no sluice letter (forged) is left out.
            if let Ok(letter) = serde_json::from_slice::<DeadLetter>(&message.payload) {
                if filter.matches(&letter) {
                    found.push_back(StoredLetter {
                        sequence,
                        subject: message.subject.to_string(),
                        letter,
                        headers: message.headers.clone().unwrap_or_default(),
                    });
                    if found.len() > limit {
                        found.pop_front();
                    }
                }
            }
            if sequence >= state.last_sequence {
                break;
            }
        }
        Ok((found.into_iter().rev().collect(), state.messages))
    }

    /// Replays `chosen`: row reports are skipped, letters a replay refuses
    /// are said why. Stops at the first that cannot be published (NATS is
    /// down), with what was done so far lost to the caller: replaying again
    /// is safe, a replayed letter is gone and a republish is deduplicated.
    pub async fn replay_all(&self, chosen: &[StoredLetter]) -> Result<ReplayReply> {
        let mut reply = ReplayReply::default();
        for stored in chosen {
            if stored.is_report() {
                reply.skipped.push(stored.sequence);
                continue;
            }
            match self.replay(stored).await {
                Ok(()) => reply.replayed.push(stored.sequence),
                Err(ReplayError::Refused(why)) => reply.refused.push(Refusal {
                    sequence: stored.sequence,
                    reason: why.to_string(),
                }),
                Err(ReplayError::Failed(why)) => return Err(why),
            }
        }
        Ok(reply)
    }

    /// The dead letter at `sequence`, if there is one.
    pub async fn get(&self, sequence: u64) -> Result<Option<StoredLetter>> {
        let message = match self.stream.get_raw_message(sequence).await {
            Ok(message) => message,
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                return Ok(None)
            }
            Err(e) => {
                return Err(Error::caused(
                    format!("cannot read dead letter {sequence}"),
                    e,
                ))
            }
        };
        let letter = serde_json::from_slice(&message.payload).map_err(|e| {
            Error::caused(
                format!("dead letter {sequence} is not a sluice dead letter"),
                e,
            )
        })?;
        Ok(Some(StoredLetter {
            sequence,
            subject: message.subject.to_string(),
            letter,
            headers: message.headers,
        }))
    }

    /// Publishes the dead-lettered message again on its original subject and,
    /// once JetStream stored it, deletes the dead letter. A replay cut short
    /// and run again publishes the same id, so the message goes out once.
    pub async fn replay(&self, stored: &StoredLetter) -> std::result::Result<(), ReplayError> {
        let target = self.replay_target(stored).map_err(ReplayError::Refused)?;
        self.republish(stored, target)
            .await
            .map_err(ReplayError::Failed)
    }

    /// Where a letter may be replayed: only to the input subject of the
    /// stage it was stored for, in this namespace. A letter is data anyone
    /// able to publish on `dead-letters.>` can forge; aimed at
    /// `$JS.API.…` it would be a command.
    fn replay_target(&self, stored: &StoredLetter) -> Result<String> {
        let letter = &stored.letter;
        let sequence = stored.sequence;
        if stored.subject != self.ns.dead_letters(&letter.stage) {
            return Err(Error::new(format!(
                "dead letter {sequence} names stage {:?} but is stored on {}: not replayed",
                letter.stage, stored.subject
            )));
        }
        if letter.truncated {
            return Err(Error::new(format!(
                "dead letter {sequence} was cut short to fit in a message; its body is incomplete: not replayed"
            )));
        }
        if !self.ns.is_input_of(&letter.stage, &letter.subject) {
            return Err(Error::new(format!(
                "dead letter {sequence} would be replayed to {:?}, which stage {:?} does not read: not replayed",
                letter.subject, letter.stage
            )));
        }
        Ok(letter.subject.clone())
    }

    async fn republish(&self, stored: &StoredLetter, target: String) -> Result<()> {
        let letter = &stored.letter;
        let sequence = stored.sequence;
        let payload = match (&letter.body, &letter.body_base64) {
            (Some(text), _) => text.clone().into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| Error::caused(format!("dead letter {sequence} has a bad body_base64"), e))?,
            (None, None) => {
                return Err(Error::new(format!(
                    "dead letter {sequence} is a {} report, not a message: fix the file, then replay the message that read it or import again",
                    letter.kind.as_str()
                )))
            }
        };
        let original_id = letter
            .headers
            .get(HEADER_MSG_ID)
            .and_then(|v| v.first())
            .cloned();
        let span = replay_span(stored, &target);
        let mut trace_headers = async_nats::HeaderMap::new();
        TraceHeaders::of(&span).apply(&mut trace_headers);
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .headers(trace_headers)
            .message_id(format!("replay-of-dead-letter-{sequence}"));
        for (name, values) in &letter.headers {
            // Dedupe and optimistic-concurrency headers belong to the first
            // publish; the trace context is the replay's own.
            if name.starts_with("Nats-")
                || name == HEADER_REPLAY_OF
                || TRACE_CONTEXT_HEADERS.contains(&name.as_str())
            {
                continue;
            }
            for value in values {
                message = message.header(name.as_str(), value.as_str());
            }
        }
        // A replay of a replay still stands for the first message.
        let first = |name: &str| letter.headers.get(name).and_then(|v| v.first()).cloned();
        if let Some(original) = first(HEADER_REPLAY_OF).or(original_id) {
            message = message.header(HEADER_REPLAY_OF, original.as_str());
        }
        // The import keeps its id even where it was derived from a stream position.
        if let (Some(id), false) = (
            &letter.import_id,
            letter.headers.contains_key(HEADER_IMPORT_ID),
        ) {
            message = message.header(HEADER_IMPORT_ID, id.as_str());
        }
        self.js
            .send_publish(target, message)
            .instrument(span)
            .await
            .map_err(|e| Error::caused(format!("cannot republish dead letter {sequence}"), e))?
            .await
            .map_err(|e| {
                Error::caused(
                    format!("JetStream did not store the replay of dead letter {sequence}"),
                    e,
                )
            })?;
        self.stream.delete_message(sequence).await.map_err(|e| {
            Error::caused(
                format!("replayed dead letter {sequence} but could not delete it"),
                e,
            )
        })?;
        Ok(())
    }
}

/// The headers of W3C trace context.
const TRACE_CONTEXT_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// A replay is a span in its import's trace: under the span that gave the
/// message up (the letter's trace context), linked to the original
/// message's publisher.
fn replay_span(stored: &StoredLetter, target: &str) -> tracing::Span {
    let span = telemetry::messaging_span(&format!("publish {target}"), "producer", "publish");
    telemetry::continue_trace(&span, telemetry::extract(Some(&stored.headers)));
    let original = TRACE_CONTEXT_HEADERS.into_iter().filter_map(|name| {
        let value = stored.letter.headers.get(name)?.first()?;
        Some((name, value.as_str()))
    });
    telemetry::link(&span, telemetry::extract_pairs(original));
    let mut attributes = vec![
        KeyValue::new("messaging.destination.name", target.to_owned()),
        KeyValue::new("sluice.replay.of", stored.sequence as i64),
    ];
    if let Some(id) = &stored.letter.import_id {
        attributes.push(KeyValue::new("sluice.import.id", id.clone()));
    }
    telemetry::annotate(&span, attributes);
    span
}
