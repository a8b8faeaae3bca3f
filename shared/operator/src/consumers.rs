//! The durable consumers as an operator sees them.

use std::time::Duration;

use async_nats::jetstream;
use sluice_messages::Namespace;
use sluice_stage::topology::{consumer_info, CONSUMERS};

/// Waits until every durable consumer exists: the services are up and
/// have declared their topology. Says which one is missing after `timeout`.
pub async fn wait_for_consumers(
    js: &jetstream::Context,
    ns: &Namespace,
    timeout: Duration,
) -> crate::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for name in CONSUMERS {
        while consumer_info(js, ns, name).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(crate::Error::new(format!(
                    "the {name} consumer did not appear within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
