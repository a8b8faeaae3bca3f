//! Internal events, after Vector's `internal_events`: each thing the
//! runtime tells an operator is one type whose `emit` writes its log line,
//! counts it in the metrics and annotates the span. The control flow then
//! says what happened in one line, and a metric's name sits beside the log
//! line that explains it.

use std::time::Duration;

use opentelemetry::KeyValue;
use sluice_messages::DeadLetterKind;

use super::{names, telemetry};
use crate::{emitter::EmitStats, StageError};

/// Inputs taken from the consumer to be worked on.
pub(crate) struct Received {
    pub stage: &'static str,
    pub messages: usize,
}

impl Received {
    pub fn emit(self) {
        metrics::counter!(names::RECEIVED, "stage" => self.stage).increment(self.messages as u64);
    }
}

/// One input being worked on, from `start` until dropped: the in-flight
/// gauge, and the processing time when it ends.
pub(crate) struct InFlight {
    stage: &'static str,
    started: std::time::Instant,
}

impl InFlight {
    pub fn start(stage: &'static str) -> InFlight {
        Received { stage, messages: 1 }.emit();
        metrics::gauge!(names::IN_FLIGHT, "stage" => stage).increment(1.0);
        InFlight {
            stage,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::histogram!(names::PROCESSING_SECONDS, "stage" => self.stage)
            .record(self.started.elapsed().as_secs_f64());
        metrics::gauge!(names::IN_FLIGHT, "stage" => self.stage).decrement(1.0);
    }
}

/// A flatMap step ended and JetStream stored all it published.
pub(crate) struct Processed<'a> {
    pub stage: &'static str,
    pub subject: &'a str,
    pub import_id: Option<&'a str>,
    pub stats: EmitStats,
    pub elapsed: Duration,
    pub span: &'a tracing::Span,
}

impl Processed<'_> {
    pub fn emit(self) {
        let stats = self.stats;
        telemetry::annotate(
            self.span,
            [
                KeyValue::new("sluice.messages.published", stats.published as i64),
                KeyValue::new("sluice.messages.duplicate", stats.duplicates as i64),
                KeyValue::new("sluice.rows.rejected", stats.rejected_rows as i64),
            ],
        );
        metrics::counter!(names::PUBLISHED, "stage" => self.stage).increment(stats.published);
        metrics::counter!(names::ROWS_REJECTED, "stage" => self.stage)
            .increment(stats.rejected_rows);
        tracing::info!(
            stage = self.stage,
            subject = self.subject,
            import_id = self.import_id,
            published = stats.published,
            duplicates = stats.duplicates,
            rejected_rows = stats.rejected_rows,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "processed"
        );
    }
}

/// A sink tried to write a batch of messages (each then settled by its own
/// result); `written` unless the whole batch failed or was given up.
pub(crate) struct BatchWritten {
    pub stage: &'static str,
    pub messages: usize,
    pub bytes: usize,
    pub elapsed: Duration,
    pub written: bool,
}

impl BatchWritten {
    pub fn emit(self) {
        metrics::histogram!(names::BATCH_MESSAGES, "stage" => self.stage)
            .record(self.messages as f64);
        metrics::histogram!(names::BATCH_BYTES, "stage" => self.stage).record(self.bytes as f64);
        metrics::histogram!(names::PROCESSING_SECONDS, "stage" => self.stage)
            .record(self.elapsed.as_secs_f64());
        if self.written {
            tracing::debug!(
                stage = self.stage,
                messages = self.messages,
                "batch written"
            );
        }
    }
}

/// An input acknowledged: its work is done and stored downstream.
pub(crate) struct Acked {
    pub stage: &'static str,
}

impl Acked {
    pub fn emit(self) {
        metrics::counter!(names::ACKED, "stage" => self.stage).increment(1);
    }
}

/// Where one delivered message came from, for the lines about it.
pub(crate) struct About<'a> {
    pub stage: &'static str,
    pub subject: &'a str,
    pub import_id: Option<&'a str>,
    pub delivered: i64,
}

/// An input handed back after a transient failure, to come again after
/// `delay`.
pub(crate) struct Retried<'a> {
    pub about: About<'a>,
    pub error: &'a StageError,
    pub delay: Duration,
}

impl Retried<'_> {
    pub fn emit(self) {
        let About {
            stage,
            subject,
            import_id,
            delivered,
        } = self.about;
        tracing::warn!(
            stage,
            subject,
            import_id,
            delivered,
            error = %self.error,
            "transient failure; retrying in {:?}",
            self.delay
        );
        metrics::counter!(names::RETRIED, "stage" => stage).increment(1);
    }
}

/// An input about to be dead-lettered.
pub(crate) struct DeadLettering<'a> {
    pub about: About<'a>,
    pub kind: DeadLetterKind,
    pub error: &'a StageError,
}

impl DeadLettering<'_> {
    pub fn emit(self) {
        let About {
            stage,
            subject,
            import_id,
            delivered,
        } = self.about;
        tracing::error!(
            stage,
            subject,
            import_id,
            delivered,
            kind = self.kind.as_str(),
            error = %self.error,
            "dead-lettering message"
        );
    }
}

/// An input's dead letter is stored: the input ends there.
pub(crate) struct DeadLettered {
    pub stage: &'static str,
    pub kind: DeadLetterKind,
}

impl DeadLettered {
    pub fn emit(self) {
        metrics::counter!(names::DEAD_LETTERED, "stage" => self.stage, "kind" => self.kind.as_str())
            .increment(1);
    }
}

/// An input whose dead letter could not be stored either, on several
/// deliveries: it is terminated, and this line is its only record.
pub(crate) struct Undeliverable<'a> {
    pub about: About<'a>,
    pub error: &'a StageError,
}

impl Undeliverable<'_> {
    pub fn emit(self) {
        let About {
            stage,
            subject,
            import_id,
            delivered,
        } = self.about;
        tracing::error!(
            stage,
            subject,
            import_id,
            delivered,
            error = %self.error,
            "cannot dead-letter this message; terminating it (it is lost to sluice: this log line is its only record)"
        );
        metrics::counter!(names::DEAD_LETTERED, "stage" => stage, "kind" => "undeliverable")
            .increment(1);
    }
}

/// An input handed back unfinished because this replica is stopping.
pub(crate) struct Released {
    pub stage: &'static str,
}

impl Released {
    pub fn emit(self) {
        metrics::counter!(names::RELEASED, "stage" => self.stage).increment(1);
    }
}

/// Bytes of publishes awaiting their ack, summed over every emitter of
/// the process: some taken or given back.
pub(crate) enum PublishWindow {
    Held { stage: &'static str, bytes: usize },
    Freed { stage: &'static str, bytes: usize },
}

impl PublishWindow {
    pub fn emit(self) {
        match self {
            PublishWindow::Held { stage, bytes } => {
                metrics::gauge!(names::PUBLISH_WINDOW_USED, "stage" => stage)
                    .increment(bytes as f64)
            }
            PublishWindow::Freed { stage, bytes } => {
                metrics::gauge!(names::PUBLISH_WINDOW_USED, "stage" => stage)
                    .decrement(bytes as f64)
            }
        }
    }
}
