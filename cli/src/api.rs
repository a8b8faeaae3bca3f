//! Asking sluice's service API (`sluice_messages::api`), which the saver
//! answers: what `status`, `import --wait` and `doctor` read when no
//! database is set.

use serde::Serialize;

use crate::explain::Problem;

/// How long the saver has to answer.
const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One request to the service API, its errors in words; `Ok(None)` when
/// the saver has no record of the import asked about (404).
pub async fn ask<R: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: String,
    body: &impl Serialize,
) -> Result<Option<R>, Problem> {
    use async_nats::RequestErrorKind;
    let request = async_nats::Request::new()
        .payload(serde_json::to_vec(body).expect("requests encode").into())
        .timeout(Some(API_TIMEOUT));
    let answer = client
        .send_request(subject.clone(), request)
        .await
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => Problem::new(format!(
                "no saver answers sluice's service API ({subject})"
            ))
            .fix("start the saver (it answers `sluice status`), or set DATABASE_URL to read its tables directly"),
            RequestErrorKind::TimedOut => Problem::new(format!(
                "the saver did not answer {subject} within {} s",
                API_TIMEOUT.as_secs()
            )),
            _ => Problem::new(format!("cannot ask the saver ({subject}): {e}")),
        })?;
    let header = |name: &str| {
        answer
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    if let Some(code) = header("Nats-Service-Error-Code") {
        let status = header("Nats-Service-Error").unwrap_or_default();
        if code == "404" {
            return Ok(None);
        }
        return Err(Problem::new(format!(
            "the saver answered {subject} with error {code}: {status}"
        )));
    }
    serde_json::from_slice(&answer.payload)
        .map(Some)
        .map_err(|e| {
            Problem::new(format!(
                "the saver's answer on {subject} is not one this release reads: {e}"
            ))
        })
}
