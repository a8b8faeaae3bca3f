//! Every timed measurement starts from a quiet disk. PostgreSQL's
//! checkpoints and the kernel's writeback of what the measurement before
//! wrote (a million rows, their WAL, JetStream's files) otherwise land in
//! the next one's time: the same run measured 2.94 s and 3.59 s end to
//! end depending on it.

use tokio_postgres::Client;

/// A checkpoint in PostgreSQL, then `sync`: every dirty page on disk.
pub async fn settle(db: &Client) -> Result<(), String> {
    db.batch_execute("CHECKPOINT")
        .await
        .map_err(|e| format!("checkpoint before a measurement: {e}"))?;
    let synced = tokio::process::Command::new("sync")
        .status()
        .await
        .map_err(|e| format!("sync before a measurement: {e}"))?;
    match synced.success() {
        true => Ok(()),
        false => Err(format!("sync before a measurement: {synced}")),
    }
}
