//! Asking sluice's service API (`sluice_messages::api`), which the saver
//! answers, as `sluice status` and the console do.

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

/// How long the saver has to answer: more than the 4 s it gives the
/// database, so a slow database is a 503 in words, not a time-out.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request got no reply of its schema.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no saver answers sluice's service API ({subject})")]
    NoResponders { subject: String },
    #[error("the saver did not answer {subject} within {} s", TIMEOUT.as_secs())]
    TimedOut { subject: String },
    #[error("cannot ask the saver ({subject}): {why}")]
    Failed { subject: String, why: String },
    /// The service answered with an ADR-32 error (not 404).
    #[error("the saver answered {subject} with error {code}: {status}")]
    Refused {
        subject: String,
        code: u16,
        status: String,
    },
    #[error("the saver's answer on {subject} is not one this release reads: {why}")]
    Unreadable { subject: String, why: String },
}

/// One request; `Ok(None)` when the service has no record of what was
/// asked about (404).
pub async fn ask<R: DeserializeOwned>(
    client: &async_nats::Client,
    subject: String,
    body: &impl Serialize,
) -> Result<Option<R>, AskError> {
    use async_nats::RequestErrorKind;
    let request = async_nats::Request::new()
        .payload(serde_json::to_vec(body).expect("requests encode").into())
        .timeout(Some(TIMEOUT));
    let answer = match client.send_request(subject.clone(), request).await {
        Ok(answer) => answer,
        Err(e) => {
            return Err(match e.kind() {
                RequestErrorKind::NoResponders => AskError::NoResponders { subject },
                RequestErrorKind::TimedOut => AskError::TimedOut { subject },
                _ => AskError::Failed {
                    subject,
                    why: e.to_string(),
                },
            })
        }
    };
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
        return Err(AskError::Refused {
            subject,
            code: code.parse().unwrap_or(500),
            status,
        });
    }
    serde_json::from_slice(&answer.payload)
        .map(Some)
        .map_err(|e| AskError::Unreadable {
            subject,
            why: e.to_string(),
        })
}
