//! Building and storing dead letters: what a stage gave up on, with enough
//! context (subject, body, headers, reason) to understand and replay it.

use async_nats::jetstream::message::PublishMessage;
use base64::Engine;
use sluice_messages::{DeadLetter, DeadLetterKind, ImportProgress, HEADER_IMPORT_ID};

use crate::{
    context::StageContext, error::publish_error, telemetry::TraceHeaders, Delivery, StageError,
};

/// What a dead letter says, before it is encoded.
pub(crate) struct Letter<'a> {
    /// The stage that gave up.
    pub stage: &'a str,
    pub kind: DeadLetterKind,
    pub error: String,
    pub import_id: Option<String>,
    /// The input message: where it was published, its body (none for a
    /// row's report: the file is at fault, not the message), its headers,
    /// and on which delivery it was given up.
    pub subject: &'a str,
    pub payload: Option<&'a [u8]>,
    pub headers: Option<&'a async_nats::HeaderMap>,
    pub delivered: i64,
}

impl Letter<'_> {
    pub(crate) fn build(self) -> DeadLetter {
        let Letter {
            stage,
            kind,
            error,
            import_id,
            subject,
            payload,
            headers,
            delivered,
        } = self;
        let (body, body_base64) = match payload {
            None => (None, None),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => (Some(text.to_owned()), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ),
            },
        };
        let headers = headers
            .map(|h| {
                h.iter()
                    .map(|(name, values)| {
                        (
                            name.to_string(),
                            values.iter().map(|v| v.as_str().to_owned()).collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        DeadLetter {
            stage: stage.to_owned(),
            kind,
            error,
            import_id,
            subject: subject.to_owned(),
            body,
            body_base64,
            headers,
            delivered,
            url: None,
            line: None,
            time: crate::now(),
            truncated: false,
        }
    }
}

/// Longest `error` a letter carries: a reason, not a transcript.
const MAX_ERROR: usize = 4096;

/// Room left in a message for the letter's headers and NATS framing.
const HEADROOM: usize = 8192;

/// Encodes `letter`, cutting its error and body short (and saying so) when
/// it would not fit in a message of `max_payload` bytes: a letter that
/// cannot be stored would leave its input to be retried forever.
pub(crate) fn encode_within(mut letter: DeadLetter, max_payload: usize) -> Vec<u8> {
    if letter.error.len() > MAX_ERROR {
        truncate(&mut letter.error, MAX_ERROR);
        letter.truncated = true;
    }
    let mut encoded = serde_json::to_vec(&letter).expect("dead letters always encode");
    let budget = max_payload.saturating_sub(HEADROOM).max(1024);
    if encoded.len() > budget {
        let excess = encoded.len() - budget;
        for field in [&mut letter.body, &mut letter.body_base64]
            .into_iter()
            .flatten()
        {
            // JSON escaping can make the encoded body longer than the text.
            let keep = field.len().saturating_sub(excess * 2);
            truncate(field, keep);
        }
        letter.truncated = true;
        encoded = serde_json::to_vec(&letter).expect("dead letters always encode");
    }
    if encoded.len() > budget {
        // What is left is the headers: a message can carry nearly a payload
        // of them.
        letter.headers.clear();
        encoded = serde_json::to_vec(&letter).expect("dead letters always encode");
    }
    encoded
}

fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
}

/// Stores a dead letter for `delivery` and waits for JetStream's ack; only
/// then may the original be terminated.
pub(crate) async fn store(
    shared: &StageContext,
    delivery: &Delivery,
    kind: DeadLetterKind,
    error: &StageError,
) -> Result<(), StageError> {
    let letter = Letter {
        stage: shared.stage,
        kind,
        error: error.to_string(),
        import_id: delivery.import_id().map(str::to_owned),
        subject: delivery.subject(),
        payload: Some(delivery.payload()),
        headers: delivery.headers(),
        delivered: delivery.delivered(),
    }
    .build();
    let message = PublishMessage::build()
        .payload(encode_within(letter, shared.max_payload).into())
        .headers(headers_of(delivery))
        // One dead letter per input, however often its settling is retried
        // (and a new one when a replay of it fails again).
        .message_id(format!("{}/dead-letter", delivery.message_id()));
    let letter_ack = shared
        .js
        .send_publish(shared.ns.dead_letters(shared.stage), message)
        .await
        .map_err(|e| publish_error(&e))?;

    // The import's tracker settles this message as failed. Both publishes go
    // out before either ack is awaited, and both are acked before the input
    // is terminated; a retry repeats both ids.
    let fact_ack = send_failed_fact(shared, delivery, kind, error).await?;
    letter_ack.await.map_err(|e| publish_error(&e))?;
    if let Some(ack) = fact_ack {
        ack.await.map_err(|e| publish_error(&e))?;
    }
    Ok(())
}

/// The headers of what is published about `delivery`: its import, and the
/// trace context of the span settling it, so letters and facts appear in
/// the import's trace.
fn headers_of(delivery: &Delivery) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(import_id) = delivery.import_id() {
        headers.insert(HEADER_IMPORT_ID, import_id);
    }
    TraceHeaders::of(&tracing::Span::current()).apply(&mut headers);
    headers
}

/// Reports to the import's tracker that `delivery` was given up on, so
/// the import can still complete; `None` when no import is known.
async fn send_failed_fact(
    shared: &StageContext,
    delivery: &Delivery,
    kind: DeadLetterKind,
    error: &StageError,
) -> Result<Option<async_nats::jetstream::context::PublishAckFuture>, StageError> {
    let Some(import_id) = delivery.import_id() else {
        return Ok(None);
    };
    let mut error = error.to_string();
    truncate(&mut error, MAX_ERROR);
    let fact = ImportProgress::Failed {
        import_id: import_id.to_owned(),
        stage: shared.stage.to_owned(),
        key: delivery.key().to_owned(),
        kind,
        error,
    };
    let message = PublishMessage::build()
        .payload(
            serde_json::to_vec(&fact)
                .expect("facts always encode")
                .into(),
        )
        .headers(headers_of(delivery))
        .message_id(format!("{}/failed", delivery.message_id()));
    let subject = shared.ns.import_progress(import_id, fact.fact());
    shared
        .js
        .send_publish(subject, message)
        .await
        .map(Some)
        .map_err(|e| publish_error(&e))
}

/// For a message whose dead letter cannot be stored at all: at least its
/// import learns it was given up on.
pub(crate) async fn report_failed(
    shared: &StageContext,
    delivery: &Delivery,
    kind: DeadLetterKind,
    error: &StageError,
) -> Result<(), StageError> {
    if let Some(ack) = send_failed_fact(shared, delivery, kind, error).await? {
        ack.await.map_err(|e| publish_error(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_too_large_for_one_message_is_cut_to_fit_and_marked() {
        let body = "x".repeat(900_000);
        let letter = Letter {
            stage: "importer",
            kind: DeadLetterKind::Permanent,
            error: "e".repeat(900_000),
            import_id: None,
            subject: "imports",
            payload: Some(body.as_bytes()),
            headers: None,
            delivered: 1,
        }
        .build();
        let encoded = encode_within(letter.clone(), 1 << 20);
        assert!(encoded.len() <= (1 << 20) - HEADROOM, "{}", encoded.len());
        let decoded: DeadLetter = serde_json::from_slice(&encoded).unwrap();
        assert!(decoded.truncated);
        assert_eq!(decoded.error.len(), MAX_ERROR + '…'.len_utf8());
        assert!(decoded.body.unwrap().len() > 500_000);

        let small = DeadLetter {
            error: "short".into(),
            body: Some("{}".into()),
            ..letter
        };
        let decoded: DeadLetter =
            serde_json::from_slice(&encode_within(small.clone(), 1 << 20)).unwrap();
        assert_eq!(decoded, small);
    }
}
