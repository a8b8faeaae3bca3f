//! Reading import completion events, for `sluice import --wait` and tests.

use async_nats::jetstream::{
    self,
    consumer::{pull::OrderedConfig, DeliverPolicy},
};
use futures_util::StreamExt;
use sluice_messages::{ImportCompleted, Namespace, Stream};

/// Waits for the completion event of import `id`; returns at once if it
/// was already published (the stream keeps it).
pub async fn wait_for_completion(
    js: &jetstream::Context,
    ns: &Namespace,
    id: &str,
) -> Result<ImportCompleted, String> {
    let subject = ns.import_events(id);
    let stream = events_stream(js, ns).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot watch {subject}: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot watch {subject}: {e}"))?;
    match messages.next().await {
        Some(Ok(message)) => serde_json::from_slice(&message.payload)
            .map_err(|e| format!("the event on {subject} is not an import completion: {e}")),
        Some(Err(e)) => Err(format!("lost the watch on {subject}: {e}")),
        None => Err(format!("the watch on {subject} ended")),
    }
}

/// How many completion events import `id` has (exactly one once complete).
pub async fn completion_count(
    js: &jetstream::Context,
    ns: &Namespace,
    id: &str,
) -> Result<u64, String> {
    let subject = ns.import_events(id);
    let mut subjects = events_stream(js, ns)
        .await?
        .info_with_subjects(subject.clone())
        .await
        .map_err(|e| format!("cannot count events on {subject}: {e}"))?;
    let mut count = 0;
    while let Some(entry) = subjects.next().await {
        let (name, n) = entry.map_err(|e| format!("cannot count events on {subject}: {e}"))?;
        if name == subject {
            count += n as u64;
        }
    }
    Ok(count)
}

async fn events_stream(
    js: &jetstream::Context,
    ns: &Namespace,
) -> Result<jetstream::stream::Stream, String> {
    let name = ns.stream(Stream::ImportEvents);
    js.get_stream(&name)
        .await
        .map_err(|e| format!("cannot open stream {name}: {e} (run `sluice setup`?)"))
}

/// The id of an import whose request named none: its position in `IMPORTS`
/// and the second JetStream stored it (`42-20261128T035601Z`). Stable across
/// redeliveries, and unique even if `IMPORTS` is recreated (sequences start
/// again at 1) while the database keeps the earlier imports.
pub fn derived_import_id(sequence: u64, stored: time::OffsetDateTime) -> String {
    let t = stored.to_offset(time::UtcOffset::UTC);
    format!(
        "{sequence}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The derived id of the import request stored at `sequence` in `IMPORTS`,
/// for a publisher that left the id to sluice.
pub async fn derived_import_id_at(
    js: &jetstream::Context,
    ns: &Namespace,
    sequence: u64,
) -> Result<String, String> {
    let name = ns.stream(sluice_messages::Stream::Imports);
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|e| format!("cannot open stream {name}: {e}"))?;
    let stored = stream
        .get_raw_message(sequence)
        .await
        .map_err(|e| format!("cannot read import request {sequence} in {name}: {e}"))?;
    Ok(derived_import_id(sequence, stored.time))
}

#[cfg(test)]
mod tests {
    #[test]
    fn derived_ids_carry_the_position_and_the_stored_second() {
        // 03:56:01 in UTC+1.
        let stored = time::OffsetDateTime::from_unix_timestamp(1795834561)
            .unwrap()
            .to_offset(time::UtcOffset::from_hms(1, 0, 0).unwrap());
        let id = super::derived_import_id(42, stored);
        assert_eq!(id, "42-20261128T025601Z");
        assert!(sluice_messages::validate_import_id(&id).is_ok());
    }
}
