//! Imports as an operator follows them: their completion events, and the
//! ids sluice derived for them.

use async_nats::jetstream::{
    self,
    consumer::{pull::OrderedConfig, DeliverPolicy},
};
use futures_util::StreamExt;
use sluice_messages::{ImportCompleted, Namespace, Stream};

use crate::{Error, Result};

/// Waits for the completion event of import `id`; returns at once if it
/// was already published (the stream keeps it).
pub async fn wait_for_completion(
    js: &jetstream::Context,
    ns: &Namespace,
    id: &str,
) -> Result<ImportCompleted> {
    let subject = ns.import_events(id);
    let stream = events_stream(js, ns).await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::caused(format!("cannot watch {subject}"), e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Error::caused(format!("cannot watch {subject}"), e))?;
    match messages.next().await {
        Some(Ok(message)) => serde_json::from_slice(&message.payload).map_err(|e| {
            Error::caused(
                format!("the event on {subject} is not an import completion"),
                e,
            )
        }),
        Some(Err(e)) => Err(Error::caused(format!("lost the watch on {subject}"), e)),
        None => Err(Error::new(format!("the watch on {subject} ended"))),
    }
}

/// How many completion events import `id` has (exactly one once complete).
pub async fn completion_count(js: &jetstream::Context, ns: &Namespace, id: &str) -> Result<u64> {
    let subject = ns.import_events(id);
    let mut subjects = events_stream(js, ns)
        .await?
        .info_with_subjects(subject.clone())
        .await
        .map_err(|e| Error::caused(format!("cannot count events on {subject}"), e))?;
    let mut count = 0;
    while let Some(entry) = subjects.next().await {
        let (name, n) =
            entry.map_err(|e| Error::caused(format!("cannot count events on {subject}"), e))?;
        if name == subject {
            count += n as u64;
        }
    }
    Ok(count)
}

async fn events_stream(
    js: &jetstream::Context,
    ns: &Namespace,
) -> Result<jetstream::stream::Stream> {
    let name = ns.stream(Stream::ImportEvents);
    js.get_stream(&name).await.map_err(|e| {
        Error::caused(
            format!("cannot open stream {name} (run `sluice setup`?)"),
            e,
        )
    })
}

/// The derived id of the import request stored at `sequence` in `IMPORTS`,
/// for a publisher that left the id to sluice.
pub async fn derived_import_id_at(
    js: &jetstream::Context,
    ns: &Namespace,
    sequence: u64,
) -> Result<String> {
    let name = ns.stream(sluice_messages::Stream::Imports);
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|e| Error::caused(format!("cannot open stream {name}"), e))?;
    let stored = stream.get_raw_message(sequence).await.map_err(|e| {
        Error::caused(
            format!("cannot read import request {sequence} in {name}"),
            e,
        )
    })?;
    Ok(sluice_messages::derived_import_id(sequence, stored.time))
}
