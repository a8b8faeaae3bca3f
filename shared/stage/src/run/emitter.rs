use std::{fmt::Display, future::Future, future::IntoFuture, pin::Pin, sync::Arc};

use async_nats::{
    jetstream::context::PublishError,
    jetstream::{message::PublishMessage, publish::PublishAck},
    HeaderMap,
};
use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, StreamExt};
use serde::Serialize;
use sluice_messages::{DeadLetterKind, HEADER_IMPORT_ID};

use crate::{
    context::StageContext, dead_letter, error::publish_error, observe::events::PublishWindow,
    outage::Pause, slot::Slot, telemetry::TraceHeaders, Delivery, StageError,
};

/// A publish awaiting its ack, named by its ticket in `unacked`.
type AckFuture = Pin<Box<dyn Future<Output = (u64, Result<PublishAck, PublishError>)> + Send>>;

/// Once an outage is known, how long a publish's ack is awaited before the
/// publish is taken as not stored and sent again (JetStream drops the copy
/// if it was): a leaderless stream leaves requests unanswered until the
/// client's own timeout, which would delay the resumption by that much.
const OUTAGE_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One output as sent: kept until JetStream acknowledged it.
struct Outgoing {
    subject: String,
    msg_id: String,
    payload: Bytes,
    headers: HeaderMap,
    /// What it counts against the budget.
    size: usize,
}

/// Where a stage's outputs for one input message go.
///
/// Publishes are pipelined: each is sent at once and its JetStream ack is
/// awaited later. The replica's `--publish-window` (bytes awaiting acks) is
/// shared out evenly among the inputs it works on at once, so memory stays
/// flat however large the files, and no input waits on another's acks. The runtime
/// acknowledges the input only after `Emitter::flush` saw every ack.
///
/// Every output's `Nats-Msg-Id` is `<input key>/<position>`, so a
/// redelivered input republishes the same ids and JetStream drops the
/// duplicates.
///
/// JetStream not storing a publish (NATS down, a cluster without quorum) is
/// waited out here, not by the caller: every output not acknowledged is
/// kept and sent again, with its id, until it is stored, and the input's
/// work carries on from where it was. A file half read when the cluster
/// lost quorum is not read again from the start.
pub struct Emitter {
    shared: Arc<StageContext>,
    /// This input's processing slot.
    slot: Arc<Slot>,
    key: String,
    import_id: Option<String>,
    /// The input turned out not to belong to the import it named.
    detached: bool,
    input_subject: String,
    input_delivered: i64,
    in_flight: FuturesUnordered<AckFuture>,
    /// What each publish awaiting its ack sent, by ticket, to send again.
    unacked: std::collections::HashMap<u64, Outgoing>,
    next_ticket: u64,
    /// Outputs JetStream did not store during an outage, to send again.
    stranded: Vec<Outgoing>,
    /// Bytes awaiting their ack (payload plus bookkeeping), and how many may.
    in_flight_bytes: usize,
    budget: usize,
    published: u64,
    duplicates: u64,
    rejected_rows: u64,
    /// The span of this input's processing, and the trace context every
    /// output carries so the next stage continues the trace.
    span: tracing::Span,
    trace: TraceHeaders,
}

/// What one input produced, for logs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EmitStats {
    pub published: u64,
    pub duplicates: u64,
    pub rejected_rows: u64,
}

impl Emitter {
    /// `budget`: bytes this input may have awaiting acks (its share of the
    /// replica's publish window).
    pub(crate) fn new(
        shared: Arc<StageContext>,
        input: &Delivery,
        budget: usize,
        slot: Arc<Slot>,
        (span, trace): (tracing::Span, TraceHeaders),
    ) -> Self {
        Emitter {
            shared,
            slot,
            key: input.key().to_owned(),
            import_id: input.import_id().map(str::to_owned),
            detached: false,
            input_subject: input.subject().to_owned(),
            input_delivered: input.delivered(),
            in_flight: FuturesUnordered::new(),
            unacked: Default::default(),
            next_ticket: 0,
            stranded: Vec::new(),
            in_flight_bytes: 0,
            budget: budget.max(1),
            published: 0,
            duplicates: 0,
            rejected_rows: 0,
            span,
            trace,
        }
    }

    /// Adds attributes (`sluice.account.id`, rows read, …) to the trace
    /// span of this input's processing.
    pub fn annotate(&self, attributes: impl IntoIterator<Item = opentelemetry::KeyValue>) {
        crate::telemetry::annotate(&self.span, attributes)
    }

    /// Awaits `wait` (a download slot on a busy host, say) without holding
    /// a processing slot, so the replica works on other messages meanwhile.
    /// The input stays owned (in-progress acks) throughout.
    pub async fn without_slot<F: std::future::Future>(&mut self, wait: F) -> F::Output {
        self.slot.release_while(wait).await
    }

    /// The import the outputs belong to.
    pub fn import_id(&self) -> Option<&str> {
        self.import_id.as_deref()
    }

    /// The input names an import it does not belong to (a request under an
    /// import id another request owns): whatever becomes of it is not that
    /// import's, so its dead letter names no import and reports no fact.
    pub fn detach_from_import(&mut self) {
        self.import_id = None;
        self.detached = true;
    }

    pub(crate) fn is_detached(&self) -> bool {
        self.detached
    }

    /// Rows rejected so far through [`Emitter::reject_row`].
    pub fn rejected_rows(&self) -> u64 {
        self.rejected_rows
    }

    /// The key outputs are derived from.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Derives output ids from `key` instead of the input message's own
    /// (the importer's outputs belong to the import, not to the request).
    pub fn set_key(&mut self, key: &str) {
        self.key = key.to_owned();
    }

    /// Where this deployment's subjects are.
    pub fn namespace(&self) -> &sluice_messages::Namespace {
        &self.shared.ns
    }

    /// Publishes `payload` on `subject` as the output at `position` (a line
    /// number, a chunk index: anything stable across re-runs of this input).
    pub async fn publish(
        &mut self,
        subject: String,
        position: impl Display,
        payload: Bytes,
    ) -> Result<(), StageError> {
        let msg_id = format!("{}/{}", self.key, position);
        self.send(subject, msg_id, payload).await
    }

    /// Publishes `body` as JSON on `subject` as the output at `position`.
    pub async fn publish_json<T: Serialize>(
        &mut self,
        subject: String,
        position: impl Display,
        body: &T,
    ) -> Result<(), StageError> {
        let payload = serde_json::to_vec(body)
            .map_err(|e| StageError::permanent(format!("cannot encode output: {e}")))?;
        self.publish(subject, position, payload.into()).await
    }

    /// Reports a progress fact of the current import to its tracker, at most
    /// once per input however often it is processed.
    pub async fn report(
        &mut self,
        fact: &sluice_messages::ImportProgress,
    ) -> Result<(), StageError> {
        let subject = self
            .shared
            .ns
            .import_progress(fact.import_id(), fact.fact());
        self.publish_json(subject, fact.position(), fact).await
    }

    /// Waits until JetStream stored every output published so far: before
    /// recording a checkpoint that counts them as done.
    pub async fn stored(&mut self) -> Result<(), StageError> {
        self.flush().await.map(drop)
    }

    /// Counts `rows` rejected by an earlier attempt at this input, whose
    /// dead letters are stored already (a resumed file does not read them
    /// again), toward the rejected-rows limit and the facts reported.
    pub fn rejected_before(&mut self, rows: u64) {
        self.rejected_rows += rows;
    }

    /// Reports a fact about what this input published only once JetStream
    /// stored all of it, so the fact never runs ahead of its data.
    pub async fn report_after_stored(
        &mut self,
        fact: &sluice_messages::ImportProgress,
    ) -> Result<(), StageError> {
        self.flush().await?;
        self.report(fact).await
    }

    /// Reports one unusable row of `url` as a dead letter and lets the stage
    /// carry on with the rest of the file.
    pub async fn reject_row(
        &mut self,
        url: &str,
        line: u64,
        reason: impl Display,
    ) -> Result<(), StageError> {
        let limit = self.shared.consumer.max_rejected_rows;
        if self.rejected_rows >= limit {
            return Err(StageError::permanent(format!(
                "{url}: more than {limit} malformed rows (SLUICE_MAX_REJECTED_ROWS); \
                 the first {limit} are dead-lettered as malformed-row, the rest of the file is not read"
            )));
        }
        let error = format!("{url} line {line}: {reason}");
        tracing::warn!(stage = self.shared.stage, import_id = self.import_id.as_deref(), %error, "rejected row");
        let mut letter = dead_letter::Letter {
            stage: self.shared.stage,
            kind: DeadLetterKind::MalformedRow,
            error,
            import_id: self.import_id.clone(),
            subject: &self.input_subject,
            payload: None,
            headers: None,
            delivered: self.input_delivered,
        }
        .build();
        letter.url = Some(url.to_owned());
        letter.line = Some(line);
        let subject = self.shared.ns.dead_letters(self.shared.stage);
        let msg_id = format!("{}/rejected-line-{line}", self.key);
        let payload = serde_json::to_vec(&letter).expect("dead letters always encode");
        self.rejected_rows += 1;
        self.send(subject, msg_id, payload.into()).await
    }

    async fn send(
        &mut self,
        subject: String,
        msg_id: String,
        payload: Bytes,
    ) -> Result<(), StageError> {
        // A cancelled import's work stops here, whatever the stage does
        // (a look at what the watch of cancelled imports has seen).
        if let Some(id) = &self.import_id {
            if self.shared.cancellations.is_cancelled(id) {
                return Err(StageError::cancelled(id));
            }
        }
        // A message awaiting its ack costs its payload and about a KiB of
        // bookkeeping, which dominates for small ones.
        let size = payload.len() + MESSAGE_OVERHEAD;
        // Over budget: wait for earlier acks first (one message always goes).
        while self.in_flight_bytes + size > self.budget && !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        let mut headers = HeaderMap::new();
        if let Some(import_id) = &self.import_id {
            headers.insert(HEADER_IMPORT_ID, import_id.as_str());
        }
        self.trace.apply(&mut headers);
        let outgoing = Outgoing {
            subject,
            msg_id,
            payload,
            headers,
            size,
        };
        if let Err(e) = self.dispatch(outgoing).await {
            self.wait_out(e).await?;
        }
        Ok(())
    }

    /// Sends `outgoing` and keeps its ack to await; what JetStream did not
    /// take during an outage is kept to send again, and the outage returned.
    async fn dispatch(&mut self, outgoing: Outgoing) -> Result<(), StageError> {
        let message = PublishMessage::build()
            .payload(outgoing.payload.clone())
            .headers(outgoing.headers.clone())
            .message_id(outgoing.msg_id.clone());
        let sent = self
            .shared
            .js
            .send_publish(outgoing.subject.clone(), message)
            .await
            .map_err(|e| publish_error(&e));
        match sent {
            Ok(ack) => {
                let ack = ack.into_future();
                self.in_flight_bytes += outgoing.size;
                PublishWindow::Held {
                    stage: self.shared.stage,
                    bytes: outgoing.size,
                }
                .emit();
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.unacked.insert(ticket, outgoing);
                self.in_flight
                    .push(Box::pin(async move { (ticket, ack.await) }));
                Ok(())
            }
            Err(e) if e.is_outage() => {
                self.stranded.push(outgoing);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn settle_one(&mut self) -> Result<(), StageError> {
        if let Err(e) = self.settle_next().await {
            self.wait_out(e).await?;
        }
        Ok(())
    }

    /// Awaits the next ack; an output not stored for an outage is kept to
    /// send again, and the outage returned.
    async fn settle_next(&mut self) -> Result<(), StageError> {
        let Some((ticket, result)) = self.in_flight.next().await else {
            return Ok(());
        };
        let outgoing = self
            .unacked
            .remove(&ticket)
            .expect("every publish in flight is recorded");
        self.in_flight_bytes -= outgoing.size;
        PublishWindow::Freed {
            stage: self.shared.stage,
            bytes: outgoing.size,
        }
        .emit();
        match result.map_err(|e| publish_error(&e)) {
            Ok(ack) => {
                self.published += 1;
                if ack.duplicate {
                    self.duplicates += 1;
                }
                Ok(())
            }
            Err(e) if e.is_outage() => {
                self.stranded.push(outgoing);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits out an outage that left outputs unstored: settles every
    /// publish still awaiting its ack, then sends the stranded ones again
    /// (same ids: JetStream drops any it had stored after all) with backoff
    /// until all are stored. Any other error ends the wait and is returned.
    async fn wait_out(&mut self, cause: StageError) -> Result<(), StageError> {
        if !cause.is_outage() {
            return Err(cause);
        }
        let mut pause = Pause::begin(self.shared.stage, &cause);
        loop {
            let deadline = tokio::time::Instant::now() + OUTAGE_ACK_WAIT;
            while !self.in_flight.is_empty() {
                match tokio::time::timeout_at(deadline, self.settle_next()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) if e.is_outage() => {
                        tracing::debug!(stage = self.shared.stage, error = %e, "still not stored")
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => self.abandon_acks(),
                }
            }
            if self.stranded.is_empty() {
                return Ok(());
            }
            pause.back_off().await;
            for outgoing in std::mem::take(&mut self.stranded) {
                if let Err(e) = self.dispatch(outgoing).await {
                    if !e.is_outage() {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Stops awaiting the acks in flight: their publishes are stranded, to
    /// be sent again.
    fn abandon_acks(&mut self) {
        self.in_flight = FuturesUnordered::new();
        PublishWindow::Freed {
            stage: self.shared.stage,
            bytes: self.in_flight_bytes,
        }
        .emit();
        self.in_flight_bytes = 0;
        self.stranded
            .extend(self.unacked.drain().map(|(_, outgoing)| outgoing));
    }

    /// Waits until JetStream stored every output published so far.
    pub(crate) async fn flush(&mut self) -> Result<EmitStats, StageError> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        Ok(EmitStats {
            published: self.published,
            duplicates: self.duplicates,
            rejected_rows: self.rejected_rows,
        })
    }
}

impl Drop for Emitter {
    /// Publishes abandoned with their input (an error, a stop) no longer
    /// hold any of the window.
    fn drop(&mut self) {
        if self.in_flight_bytes > 0 {
            PublishWindow::Freed {
                stage: self.shared.stage,
                bytes: self.in_flight_bytes,
            }
            .emit();
        }
    }
}

/// What one publish awaiting its ack costs besides its payload (futures,
/// reply subscription, header map), as counted against the window.
const MESSAGE_OVERHEAD: usize = 1024;
