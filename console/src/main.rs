//! sluice console: an operator's view of a running sluice in a browser.
//! Imports and their live progress, an import's failures and conflicts,
//! dead letters with replay, each stage's lag, and cancel. It reads and
//! acts through the service API only (`sluice.api.*`), so it needs NATS
//! credentials, never the database's. Read-only unless the operator sets
//! a token or names the header a trusted proxy signs users in with.

mod access;
mod pages;
mod server;

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use sluice_stage::{config::ObserveArgs, observe::http, run_service, Fault, NatsArgs, StageError};

/// sluice console: imports, progress, failures, dead letters and cancel in
/// a browser, through sluice's service API.
#[derive(Parser, Debug)]
#[command(name = "sluice-console", version)]
struct Config {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    observe: ObserveArgs,
    /// Where the console serves its pages (`0.0.0.0:8080` to be reached
    /// from other machines, behind TLS).
    #[arg(long, env = "SLUICE_CONSOLE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Lets whoever signs in with this token cancel imports and replay dead
    /// letters (at least 16 characters). Unset, and with no
    /// --auth-header, the console is read-only.
    #[arg(long, env = "SLUICE_CONSOLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A request header a proxy the operator trusts sets to the signed-in
    /// user (`X-Forwarded-User`, `X-Auth-Request-User`): a request carrying
    /// it may act. Only for a console no one reaches but through that proxy.
    #[arg(long, env = "SLUICE_CONSOLE_AUTH_HEADER")]
    auth_header: Option<String>,
}

/// Browsers keep a live view's connection open; each is ended after this
/// long and the page reconnects, so no connection is kept forever.
const LIMITS: http::Limits = http::Limits {
    max_connections: 128,
    header_timeout: Duration::from_secs(5),
    lifetime: Duration::from_secs(600),
};

fn main() -> ExitCode {
    let config: Config = sluice_stage::config::parse("sluice-console");
    run_service("console", &config.observe.clone(), |stop| async move {
        let access = access::Access::new(config.token.as_deref(), config.auth_header.as_deref())
            .map_err(StageError::permanent)?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| {
                StageError::caused_by(Fault::Permanent, e).context(&format!(
                    "cannot listen on SLUICE_CONSOLE_ADDR {}",
                    config.addr
                ))
            })?;
        let (client, _) = sluice_stage::connect(&config.nats, "sluice-console", true).await?;
        // Ready once NATS answers: the console binds no consumer.
        sluice_stage::observe::HEALTH.set_no_consumer();
        let console = Arc::new(server::Console::new(
            client,
            config.nats.namespace.clone(),
            access,
        ));
        tracing::info!(
            addr = %config.addr,
            actions = console.access.describe(),
            "serving the console"
        );
        tokio::select! {
            _ = http::accept(listener, LIMITS, "console", move |request| {
                server::respond(request, console.clone())
            }) => {}
            _ = stop.cancelled() => {}
        }
        Ok(())
    })
}
