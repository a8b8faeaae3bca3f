//! The tasks a stage runs its messages in: reaped as they end, drained on
//! a stop.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Waits for work in flight after a stop: up to `grace` to finish, then
/// `abort` tells it to hand its messages back, then it is cut off.
pub(crate) async fn drain(mut tasks: JoinSet<()>, abort: &CancellationToken, grace: Duration) {
    if tokio::time::timeout(grace, join_all(&mut tasks))
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = tasks.len(),
            "shutdown timeout reached; releasing unfinished messages"
        );
        abort.cancel();
        if tokio::time::timeout(Duration::from_secs(5), join_all(&mut tasks))
            .await
            .is_err()
        {
            tasks.abort_all();
        }
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// Logs tasks that panicked: their message was not settled, so JetStream
/// redelivers it after `ack_wait`.
pub(crate) fn reap(tasks: &mut JoinSet<()>) {
    while let Some(result) = tasks.try_join_next() {
        if let Err(e) = result {
            if e.is_panic() {
                tracing::error!(error = %e, "stage task panicked; its message will be redelivered");
            }
        }
    }
}
