use async_nats::{jetstream, HeaderMap};
use serde::de::DeserializeOwned;
use sluice_messages::{HEADER_IMPORT_ID, HEADER_MSG_ID, HEADER_REPLAY_OF};

use opentelemetry::KeyValue;

use crate::{telemetry, StageError};

/// One delivery of an input message, as a stage sees it.
pub struct Delivery {
    message: jetstream::Message,
    stream_sequence: u64,
    delivered: i64,
    stored_at: time::OffsetDateTime,
    message_id: String,
    key: String,
    /// From the `Sluice-Import-Id` header, or as the stage worked it out.
    import_id: Option<String>,
}

impl Delivery {
    pub(crate) fn new(message: jetstream::Message) -> Result<Self, StageError> {
        let info = message
            .info()
            .map_err(|e| StageError::permanent(format!("not a JetStream delivery: {e}")))?;
        let (stream_sequence, delivered, stored_at) =
            (info.stream_sequence, info.delivered, info.published);
        let header = |name| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let message_id =
            header(HEADER_MSG_ID).unwrap_or_else(|| format!("{}:{}", info.stream, stream_sequence));
        let key = header(HEADER_REPLAY_OF).unwrap_or_else(|| message_id.clone());
        // A header anyone could set: an id that is no subject token would
        // make every report about this message unpublishable.
        let import_id =
            header(HEADER_IMPORT_ID).filter(|id| sluice_messages::validate_import_id(id).is_ok());
        Ok(Delivery {
            import_id,
            message,
            stream_sequence,
            delivered,
            stored_at,
            message_id,
            key,
        })
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// Its body.
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// Its headers, if any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.message.headers.as_ref()
    }

    /// One header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()?.get(name).map(|v| v.as_str())
    }

    /// The import it belongs to, once known (its stage decoded it, or a header said so).
    pub fn import_id(&self) -> Option<&str> {
        self.import_id.as_deref()
    }

    /// The import this message belongs to, as its stage decoded it (the
    /// body is what the contract guarantees; a header may disagree), so
    /// its dead letter names it.
    pub(crate) fn name_import(&mut self, id: Option<&str>) {
        if let Some(id) = id.filter(|id| sluice_messages::validate_import_id(id).is_ok()) {
            self.import_id = Some(id.to_owned());
        }
    }

    /// The message does not belong to the import it seemed to name.
    pub(crate) fn forget_import_id(&mut self) {
        self.import_id = None;
    }

    /// When JetStream stored the message: stable across redeliveries.
    pub fn stored_at(&self) -> time::OffsetDateTime {
        self.stored_at
    }

    /// Position of the message in its stream: stable across redeliveries.
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }

    /// 1 on the first delivery.
    pub fn delivered(&self) -> i64 {
        self.delivered
    }

    /// What this message is, stably: its `Nats-Msg-Id` (for a replay, the
    /// replayed message's), or its stream and sequence. The ids of everything
    /// published for it derive from this.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// This very message's `Nats-Msg-Id`, or its stream and sequence.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// Decodes a JSON body; a body that does not decode never will, so the
    /// error is permanent.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, StageError> {
        serde_json::from_slice(self.payload()).map_err(|e| {
            StageError::permanent(format!(
                "message on {} is not a valid {}: {e}",
                self.subject(),
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message")
            ))
        })
    }

    pub(crate) fn message(&self) -> &jetstream::Message {
        &self.message
    }

    /// A span for `consumer`'s processing of this message, in the trace
    /// the message's publisher started (a new trace if it carries none).
    pub(crate) fn process_span(&self, consumer: &str) -> tracing::Span {
        let span =
            telemetry::messaging_span(&format!("process {}", self.stream()), "consumer", "process");
        telemetry::continue_trace(&span, telemetry::extract(self.headers()));
        self.annotate(&span, consumer);
        span
    }

    /// The attributes of a span about this one message.
    pub(crate) fn annotate(&self, span: &tracing::Span, consumer: &str) {
        telemetry::annotate(
            span,
            [
                KeyValue::new("messaging.destination.name", self.subject().to_owned()),
                KeyValue::new("messaging.message.id", self.message_id.clone()),
                KeyValue::new("messaging.consumer.group.name", consumer.to_owned()),
                KeyValue::new("messaging.nats.delivery_count", self.delivered),
            ],
        );
        if let Some(id) = self.import_id() {
            telemetry::annotate(span, [KeyValue::new("sluice.import.id", id.to_owned())]);
        }
    }

    /// The stream the message is stored in (from its reply subject).
    pub fn stream(&self) -> &str {
        self.message.info().map_or("", |info| info.stream)
    }
}
