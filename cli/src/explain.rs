//! Errors as a person reads them: what failed, the whole cause (SQLSTATE,
//! NATS error kind), the setting that leads there (its URL without
//! secrets), and the fix where it is known.

use std::fmt;

use async_nats::jetstream;
use sluice_stage::{config::redact_url, error_chain, NatsArgs};
use tokio_postgres::error::SqlState;

/// One failure, with the fix when there is a known one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: Option<String>,
}

impl Problem {
    pub fn new(what: impl Into<String>) -> Problem {
        Problem {
            what: what.into(),
            fix: None,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Problem {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// A PostgreSQL failure while doing `action` on the database `url` names.
pub fn postgres(action: &str, url: &str, e: &tokio_postgres::Error) -> Problem {
    let shown = redact_url(url);
    let Some(db) = e.as_db_error() else {
        let refused = error_chain(e).contains("onnection refused");
        let problem = Problem::new(format!(
            "cannot {action}: PostgreSQL at {shown} (DATABASE_URL): {}",
            error_chain(e)
        ));
        return if refused {
            problem.fix("start PostgreSQL there (`just services` starts one), or point DATABASE_URL at yours")
        } else {
            problem
        };
    };
    let problem = Problem::new(format!(
        "cannot {action}: PostgreSQL at {shown} (DATABASE_URL) says SQLSTATE {}: {}",
        db.code().code(),
        db.message()
    ));
    match db.code() {
        c if *c == SqlState::INVALID_CATALOG_NAME => {
            problem.fix("run `sluice setup`: it creates the database and its schema")
        }
        c if *c == SqlState::UNDEFINED_TABLE => {
            problem.fix("the saver's schema is not there: run `sluice setup` (or start the saver)")
        }
        c if *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            problem.fix("check the user and password in DATABASE_URL")
        }
        c if *c == SqlState::TOO_MANY_CONNECTIONS => problem
            .fix("the server is out of connections: raise max_connections or stop idle clients"),
        _ => problem,
    }
}

/// Connects for a command (no endless retry), and makes sure JetStream
/// answers, so every later failure is about sluice's own topology.
pub async fn connect_nats(
    nats: &NatsArgs,
    client_name: &str,
) -> Result<(async_nats::Client, jetstream::Context), Problem> {
    let (client, js) = connect_nats_server(nats, client_name).await?;
    jetstream_account(nats, &js).await?;
    Ok((client, js))
}

/// Connects for a command, whether or not the server offers JetStream.
pub async fn connect_nats_server(
    nats: &NatsArgs,
    client_name: &str,
) -> Result<(async_nats::Client, jetstream::Context), Problem> {
    sluice_stage::connect(nats, client_name, false)
        .await
        .map_err(|e| {
            let problem = Problem::new(e.to_string());
            if e.message().contains("uthorization") {
                problem.fix("check the credentials for NATS_URL")
            } else {
                problem.fix("start a NATS server with JetStream there (`just services` starts one), or point NATS_URL at yours")
            }
        })
}

/// Whether JetStream answers on this connection, with the account's limits.
pub async fn jetstream_account(
    nats: &NatsArgs,
    js: &jetstream::Context,
) -> Result<jetstream::account::Account, Problem> {
    use jetstream::context::AccountErrorKind;
    js.query_account().await.map_err(|e| {
        let problem = Problem::new(format!(
            "NATS at {} (NATS_URL) does not answer JetStream requests: {}",
            redact_url(&nats.nats_url),
            error_chain(&e)
        ));
        match e.kind() {
            AccountErrorKind::JetStreamUnavailable | AccountErrorKind::TimedOut => {
                problem.fix("is JetStream enabled on the server? (`nats-server -js`)")
            }
            _ => problem,
        }
    })
}

/// A stream sluice needs is not on the server.
pub fn stream_missing(stream: &str) -> Problem {
    Problem::new(format!("stream {stream} does not exist"))
        .fix("run `sluice setup` (or start the services: each declares the streams it needs)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_prints_its_fix_on_a_line_of_its_own() {
        let p = Problem::new("cannot read imports").fix("run `sluice setup`");
        assert_eq!(
            p.to_string(),
            "cannot read imports\n  fix: run `sluice setup`"
        );
        assert_eq!(Problem::new("plain").to_string(), "plain");
    }
}
