//! Completion webhooks: a target named by the operator, told of an import's
//! completion by a signed POST, once, even when it was down at first and
//! the saver restarted; a name nobody configured is refused.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::TokioIo;
use sluice_e2e::{free_port, Dataset, Pipeline};
use sluice_messages::{ImportCompleted, ImportStatus};

const SECRET: &str = "webhook-secret-0123456789";

/// What the receiver got: each POST's headers and body.
type Received = Arc<Mutex<Vec<(hyper::HeaderMap, Bytes)>>>;

/// A webhook receiver on `port`, answering 204 to every POST.
async fn receiver(port: u16, received: Received) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the receiver's port is free");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let received = received.clone();
                    async move {
                        let headers = request.headers().clone();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        received.lock().unwrap().push((headers, body));
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(204)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Checks `Sluice-Signature` as a receiver would: HMAC-SHA256 of
/// `<t>.<body>` under the shared secret, in constant time.
fn signature_verifies(headers: &hyper::HeaderMap, body: &[u8], secret: &str) -> bool {
    let Some(value) = headers
        .get("sluice-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1 = Some(x.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(tag) = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v1[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, &signed, &tag).is_ok()
}

#[tokio::test]
async fn a_webhook_is_signed_waits_out_a_down_target_comes_once_and_unknown_names_are_refused() {
    let port = free_port();
    let targets = serde_json::json!({
        "billing": {
            "url": format!("http://127.0.0.1:{port}/hooks/sluice?token=QUERY-SECRET"),
            "secret": {"env": "BILLING_WEBHOOK_SECRET"},
        }
    })
    .to_string();
    let mut p = Pipeline::start(
        "webhooks",
        &[
            ("SLUICE_WEBHOOKS", &targets),
            ("BILLING_WEBHOOK_SECRET", SECRET),
        ],
    )
    .await;
    let data = Dataset::generate(3, 300, 81);
    p.server.add_dataset(&data);

    // The target is down: nothing listens on its port.
    let id = p
        .publish_json(serde_json::json!({
            "url": p.server.url("/accounts.csv"),
            "webhook": "billing",
        }))
        .await;
    let event = p.completion(&id, Duration::from_secs(60)).await;
    assert_eq!(
        (event.status, event.transactions_saved),
        (ImportStatus::Completed, 300)
    );
    let db = p.sandbox.db().await;
    let attempts = || async {
        let row = db
            .query_one(
                "SELECT webhook_attempts, webhook_delivered_at IS NOT NULL, webhook_error FROM imports WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (
            row.get::<_, i32>(0),
            row.get::<_, bool>(1),
            row.get::<_, Option<String>>(2),
        )
    };
    sluice_e2e::wait_until(Duration::from_secs(20), "two failed attempts", || async {
        attempts().await.0 >= 2
    })
    .await;
    let (_, delivered, error) = attempts().await;
    assert!(!delivered);
    let error = error.unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "POST to webhook target billing (http://127.0.0.1:{port}) failed: "
        )),
        "{error}"
    );

    // It comes back: the event arrives, signed, as it was published.
    let received = Received::default();
    let server = receiver(port, received.clone()).await;
    sluice_e2e::wait_until(Duration::from_secs(30), "the webhook", || async {
        !received.lock().unwrap().is_empty()
    })
    .await;
    let (headers, body) = received.lock().unwrap()[0].clone();
    assert!(signature_verifies(&headers, &body, SECRET), "{headers:?}");
    assert!(!signature_verifies(
        &headers,
        &body,
        "another-secret-0123456789"
    ));
    assert_eq!(
        headers.get("sluice-event-id").unwrap(),
        &format!("import-completed/{id}")
    );
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let posted: ImportCompleted = serde_json::from_slice(&body).unwrap();
    assert_eq!(posted, event);
    assert!(attempts().await.1, "recorded as delivered");
    let status = p.cli(&["status", &id]).await;
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        said.contains(&format!(
            "import {id}'s completion event was delivered to webhook target billing at "
        )),
        "{said}"
    );

    // Once: not again later, nor after the saver restarts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let saver = p.service("saver");
    saver.terminate(Duration::from_secs(30)).await;
    saver.restart().unwrap();
    p.wait_for_consumers().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.lock().unwrap().len(), 1);

    // A name nobody configured: refused, the import ends at once, no POST.
    let other = p
        .publish_json(serde_json::json!({
            "url": p.server.url("/accounts.csv"),
            "webhook": "payroll",
        }))
        .await;
    let refused = p.completion(&other, Duration::from_secs(30)).await;
    assert_eq!(refused.status, ImportStatus::CompletedWithErrors);
    let letters = p.dead_letters().await;
    let letter = letters
        .iter()
        .find(|l| l.import_id.as_deref() == Some(other.as_str()))
        .expect("the refusal's dead letter");
    assert_eq!(
        (letter.stage.as_str(), letter.error.as_str()),
        (
            "importer",
            "the request names webhook target \"payroll\", which is not configured here: those configured are billing"
        )
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received.lock().unwrap().len(), 1);

    // Neither the secret nor the URL's query shows in any log.
    let logs = p.logs();
    assert!(logs.contains("completion webhook delivered"), "{logs}");
    for secret in [SECRET, "QUERY-SECRET", "/hooks/sluice"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    server.abort();
    p.stop().await;
}
