//! Configuration shared by every service: each field is a flag and an
//! environment variable, with a default that works on a developer machine.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{error::ContextKind, error::ErrorKind, Args, CommandFactory, Parser};
/// The units every setting is written in (README, Configuration).
pub use sluice_messages::units::{parse_duration, parse_limit, parse_size};
use sluice_messages::Namespace;

/// Everything a service's runtime needs: where NATS is and how to consume.
#[derive(Args, Debug, Clone)]
pub struct StageArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// Where the service serves its metrics and probes.
#[derive(Args, Debug, Clone, Default)]
pub struct ObserveArgs {
    /// Address for `/metrics`, `/healthz` and `/readyz` (e.g. `0.0.0.0:9090`);
    /// unset serves nothing.
    #[arg(long, env = "SLUICE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Where NATS is and how the sluice streams are laid out on it.
#[derive(Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,

    /// NATS user, with --nats-password (a user and password in NATS_URL,
    /// `nats://user:password@host`, work too).
    #[arg(long, env = "SLUICE_NATS_USER", conflicts_with_all = ["nats_token", "nats_creds", "nats_nkey"])]
    pub nats_user: Option<String>,
    #[arg(
        long,
        env = "SLUICE_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// NATS token (a token in NATS_URL, `nats://token@host`, works too).
    #[arg(long, env = "SLUICE_NATS_TOKEN", hide_env_values = true, conflicts_with_all = ["nats_creds", "nats_nkey"])]
    pub nats_token: Option<String>,
    /// NATS credentials file: a user JWT and its NKey seed, as `nats --creds` takes.
    #[arg(long, env = "SLUICE_NATS_CREDS", conflicts_with = "nats_nkey")]
    pub nats_creds: Option<PathBuf>,
    /// NKey seed file (`SU…`) of a NATS user.
    #[arg(long, env = "SLUICE_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// CA certificates (PEM) NATS's certificate must chain to; TLS is then
    /// required (as with a `tls://` URL).
    #[arg(long, env = "SLUICE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), with --nats-tls-key, for servers that verify clients.
    #[arg(long, env = "SLUICE_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    #[arg(long, env = "SLUICE_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,

    /// Prefix for every stream and subject (`ns` gives `ns_IMPORTS` and
    /// `ns.imports`); empty for the contract's plain names.
    #[arg(long, env = "SLUICE_NAMESPACE", default_value = "", value_parser = parse_namespace)]
    pub namespace: Namespace,

    /// Replicas of each stream: 1 on a single server, 3 on a cluster.
    #[arg(long, env = "SLUICE_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,

    /// How long the work streams keep messages (dead letters keep theirs 4 times longer).
    #[arg(long, env = "SLUICE_STREAM_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub stream_max_age: Duration,

    /// Most bytes each stream keeps; `0`, no limit but the server's store.
    /// A full stream refuses new messages (the stages publishing to it
    /// pause, as in an outage) rather than drop old ones that may not be
    /// processed yet. Streams keep messages for `--stream-max-age`, so size
    /// it to hold that much traffic.
    #[arg(long, env = "SLUICE_STREAM_MAX_BYTES", default_value = "0", value_parser = parse_limit)]
    pub stream_max_bytes: u64,

    /// How long JetStream remembers a `Nats-Msg-Id` to drop a republished
    /// duplicate; must cover a crashed service's restart plus `--ack-wait`.
    #[arg(long, env = "SLUICE_DUPLICATE_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub duplicate_window: Duration,
}

/// How a service consumes its input stream.
#[derive(Args, Debug, Clone)]
pub struct ConsumerArgs {
    /// Messages processed at once by this replica (writers, for the saver).
    /// Defaults to what suits the service.
    #[arg(long, env = "SLUICE_CONCURRENCY",
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: Option<u16>,

    /// How long JetStream waits for an ack before redelivering. Long work
    /// sends in-progress acks every third of it, so it only bounds how soon
    /// a crashed replica's messages go to another one.
    #[arg(long, env = "SLUICE_ACK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,

    /// Unacknowledged messages the consumer hands out across all replicas.
    #[arg(long, env = "SLUICE_MAX_ACK_PENDING", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_ack_pending: u32,

    /// Deliveries of one message before it is dead-lettered as exhausted.
    #[arg(long, env = "SLUICE_MAX_DELIVERIES", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_deliveries: u32,

    /// First retry delay after a transient failure; doubles per delivery.
    #[arg(long, env = "SLUICE_RETRY_BACKOFF", default_value = "1s", value_parser = parse_duration)]
    pub retry_backoff: Duration,

    /// Longest retry delay.
    #[arg(long, env = "SLUICE_RETRY_BACKOFF_MAX", default_value = "60s", value_parser = parse_duration)]
    pub retry_backoff_max: Duration,

    /// Bytes of published messages awaiting their JetStream ack in this
    /// replica, shared out among the messages it works on at once: bounds
    /// memory whatever the file sizes, while keeping the pipe full.
    #[arg(long, env = "SLUICE_PUBLISH_WINDOW", default_value = "1MiB", value_parser = parse_size)]
    pub publish_window: u64,

    /// Rows of one file dead-lettered as malformed before the whole file is
    /// given up on (one dead letter per row otherwise grows without bound).
    #[arg(long, env = "SLUICE_MAX_REJECTED_ROWS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rejected_rows: u64,

    /// Longest work on one message (or one saver batch) before it is given
    /// up as a transient failure and retried: a server trickling a file
    /// forever must not hold its message forever.
    #[arg(long, env = "SLUICE_MAX_PROCESSING_TIME", default_value = "8m", value_parser = parse_duration)]
    pub max_processing_time: Duration,

    /// On SIGTERM, how long work in flight may take to finish before it is
    /// handed back to JetStream (`Nak`) for another replica.
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

fn parse_namespace(s: &str) -> Result<Namespace, String> {
    Namespace::new(Some(s)).map_err(|e| e.to_string())
}

/// Parses flags and environment; on a bad value prints one line naming the
/// flag, its environment variable and the problem, then exits with status 2.
pub fn parse<T: Parser>(program: &str) -> T {
    match T::try_parse() {
        Ok(config) => config,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            eprintln!("{program}: configuration error: {}", one_line::<T>(&e));
            std::process::exit(2);
        }
    }
}

fn one_line<T: CommandFactory>(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid configuration")
        .trim_start_matches("error: ")
        .to_owned();
    // clap names the flag; operators mostly set environment variables.
    let env = e.get(ContextKind::InvalidArg).and_then(|arg| {
        let arg = arg.to_string();
        let long = arg
            .trim_start_matches("--")
            .split([' ', '='])
            .next()?
            .to_owned();
        T::command()
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .and_then(|a| a.get_env())
            .map(|env| env.to_string_lossy().into_owned())
    });
    match env {
        Some(env) => format!("{first} (set by --flag or ${env})"),
        None => first,
    }
}

pub use sluice_messages::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        consumer: ConsumerArgs,
    }

    #[test]
    fn defaults_parse_without_flags() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        // `just test` may point every binary at other servers through NATS_URL.
        let expected = std::env::var("NATS_URL").unwrap_or("nats://127.0.0.1:4222".into());
        assert_eq!(cli.nats.nats_url, expected);
        assert_eq!(cli.consumer.ack_wait, Duration::from_secs(30));
        assert_eq!(cli.nats.namespace, Namespace::default());
    }

    #[test]
    fn bad_value_is_one_line_naming_the_variable() {
        let e = Cli::try_parse_from(["x", "--ack-wait", "soon"]).unwrap_err();
        let line = one_line::<Cli>(&e);
        assert!(line.contains("--ack-wait"), "{line}");
        assert!(line.contains("$SLUICE_ACK_WAIT"), "{line}");
        assert!(!line.contains('\n'));
        let e = Cli::try_parse_from(["x", "--concurrency", "0"]).unwrap_err();
        assert!(one_line::<Cli>(&e).contains("$SLUICE_CONCURRENCY"));
    }
}
