//! Asking sluice's service API (`sluice_operator::api`), which the saver
//! answers: what `status`, `import --wait` and `doctor` read when no
//! database is set, with its errors as problems to fix.

use serde::Serialize;
use sluice_operator::api::AskError;

use crate::explain::Problem;

/// One request to the service API, its errors in words; `Ok(None)` when
/// the saver has no record of the import asked about (404).
pub async fn ask<R: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: String,
    body: &impl Serialize,
) -> Result<Option<R>, Problem> {
    sluice_operator::api::ask(client, subject, body)
        .await
        .map_err(|e| {
            let problem = Problem::new(e.to_string());
            match e {
                AskError::NoResponders { .. } => problem.fix(
                    "start the saver (it answers `sluice status`), or set DATABASE_URL to read its tables directly",
                ),
                _ => problem,
            }
        })
}
