//! Serving HTTP/1 on a listener with bounds a stranger cannot stretch: a
//! cap on open connections, a deadline for each request's headers and a
//! lifetime for each connection. The probes and metrics listener and the
//! console both serve through it.

use std::{convert::Infallible, sync::Arc, time::Duration};

use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How much one listener lets its clients take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once: the cap keeps idle or hostile
    /// connections from taking the file descriptors the service's own work
    /// needs (the rest wait in the kernel's backlog).
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (and, on
    /// a kept-alive connection, to start the next request).
    pub header_timeout: Duration,
    /// The longest any one connection is kept.
    pub lifetime: Duration,
}

/// Accepts connections on `listener` forever, answering each request with
/// `respond`. `what` names the listener in logs.
pub async fn accept<F, Fut, B>(
    listener: TcpListener,
    limits: Limits,
    what: &'static str,
    respond: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut failing = crate::repeats::Repeats::default();
    let mut backoff = Duration::from_millis(50);
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                failing.end();
                backoff = Duration::from_millis(50);
                stream
            }
            // Out of file descriptors, say: retrying at once would spin.
            Err(e) => {
                if let Some(repeated) = failing.due() {
                    tracing::warn!(error = %e, repeated, "cannot accept a {what} connection; backing off");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(respond));
            if tokio::time::timeout(limits.lifetime, connection)
                .await
                .is_err()
            {
                tracing::debug!("{what} connection closed at the end of its lifetime");
            }
            drop(slot);
        });
    }
}
