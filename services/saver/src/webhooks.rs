//! Completion webhooks: the event of an import that named a target, POSTed
//! to it once it is published (`sluice_download::WebhookTargets` says how
//! it is signed).
//!
//! The outbox is the `imports` row: the announcement keeps the event in
//! `completion_event` (for every import, so a `started` fact recorded
//! late still finds it), due at once when a target is named, in the
//! transaction that marks it published. A delivery claims due rows by moving them a lease into the
//! future (so another replica skips them), POSTs, and records the outcome:
//! delivered, or due again after a backoff (doubling from 1 s to 5
//! minutes, or the target's `Retry-After`). A target that is down gets
//! the event once it is back, however long that takes; the saver dying
//! between a target's 2xx and its record sends it once more under the same
//! `Sluice-Event-Id`, for the target to drop.

use std::time::Duration;

use sluice_download::{Poster, WebhookTargets};
use sluice_stage::StageError;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::{db_error, Database};

/// How often due deliveries are looked for.
const POLL: Duration = Duration::from_millis(250);

/// How often a saver with no target configured looks: only to record, for
/// `sluice status`, that an import names a target it does not have.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// How long a claimed delivery is this replica's: longer than a POST may
/// take (10 s), so no other replica posts it meanwhile.
const LEASE: &str = "30 seconds";

/// Deliveries POSTed at once.
const AT_ONCE: i64 = 8;

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

const CLAIM: &str = "
    UPDATE imports SET webhook_next_at = now() + $2::text::interval
    WHERE id IN (SELECT id FROM imports
                 WHERE webhook IS NOT NULL AND completion_event IS NOT NULL
                   AND webhook_delivered_at IS NULL AND webhook_next_at <= now()
                 ORDER BY webhook_next_at LIMIT $1
                 FOR UPDATE SKIP LOCKED)
    RETURNING id, webhook, completion_event, webhook_attempts";

const DELIVERED: &str = "
    UPDATE imports SET webhook_delivered_at = now(), webhook_attempts = webhook_attempts + 1,
                       webhook_error = NULL
    WHERE id = $1 AND webhook_delivered_at IS NULL";

const UNDELIVERED: &str = "
    UPDATE imports SET webhook_next_at = now() + make_interval(secs => $2),
                       webhook_attempts = webhook_attempts + 1, webhook_error = $3
    WHERE id = $1 AND webhook_delivered_at IS NULL";

/// Delivers due events until `stop`.
pub async fn deliver_webhooks(
    database: Database,
    targets: WebhookTargets,
    poster: Poster,
    stop: CancellationToken,
) -> Result<(), StageError> {
    let poll = if targets.is_empty() {
        IDLE_POLL
    } else {
        tracing::info!(targets = ?targets.names(), "delivering completion webhooks");
        POLL
    };
    let mut client: Option<Client> = None;
    let mut failing = sluice_stage::repeats::Repeats::default();
    while !stop.is_cancelled() {
        let result = async {
            if client.is_none() {
                client = Some(database.connect().await?);
            }
            deliver_due(client.as_ref().expect("connected"), &targets, &poster).await
        }
        .await;
        match result {
            Ok(()) => failing.end(),
            Err(e) => {
                if let Some(repeated) = failing.due() {
                    tracing::warn!(error = %e, repeated, "cannot deliver completion webhooks yet");
                }
                client = None;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}

async fn deliver_due(
    db: &Client,
    targets: &WebhookTargets,
    poster: &Poster,
) -> Result<(), StageError> {
    let due = db
        .query(CLAIM, &[&AT_ONCE, &LEASE])
        .await
        .map_err(|e| db_error("claim webhook deliveries", &e))?;
    let posts = due.iter().map(|row| async move {
        let (id, name, event, attempts): (String, String, String, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let outcome = match targets.get(&name) {
            Some(target) => {
                let event_id = format!("import-completed/{id}");
                poster
                    .post(&target, &event_id, event.as_bytes())
                    .await
                    .map_err(|u| (u.why, u.retry_after))
            }
            // Configured on the importer, not here: kept until it is.
            None => Err((
                format!(
                    "webhook target {name:?} is not configured on this saver (SLUICE_WEBHOOKS)"
                ),
                Some(MAX_BACKOFF),
            )),
        };
        (id, name, attempts, outcome)
    });
    for (id, name, attempts, outcome) in futures_util::future::join_all(posts).await {
        match outcome {
            Ok(()) => {
                db.execute(DELIVERED, &[&id])
                    .await
                    .map_err(|e| db_error("record a webhook delivery", &e))?;
                tracing::info!(import_id = %id, target = %name, "completion webhook delivered");
            }
            Err((why, asked)) => {
                // A `Retry-After` of 0 (or a date past) is no reason to
                // hammer a failing target: never sooner than the backoff.
                let wait = asked
                    .unwrap_or_default()
                    .max(backoff(attempts))
                    .min(MAX_BACKOFF)
                    .as_secs_f64();
                db.execute(UNDELIVERED, &[&id, &wait, &why])
                    .await
                    .map_err(|e| db_error("record a webhook attempt", &e))?;
                tracing::warn!(import_id = %id, target = %name, attempt = attempts + 1, retry_in_s = wait, error = %why, "completion webhook not delivered; trying again");
            }
        }
    }
    Ok(())
}

/// The wait after attempt `attempts + 1` failed: 1 s, doubling.
fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40).min(MAX_BACKOFF), MAX_BACKOFF);
    }
}
