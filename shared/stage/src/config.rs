//! Configuration shared by every service: each field is a flag and an
//! environment variable, with a default that works on a developer machine.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{error::ContextKind, error::ErrorKind, Args, CommandFactory, Parser};
/// The units every setting is written in (docs/configuration.md).
pub use sluice_messages::units::{parse_duration, parse_limit, parse_size};
use sluice_messages::{InvalidNamespace, Namespace};

/// Everything a service's runtime needs: where NATS is and how to consume.
#[derive(Args, Debug, Clone)]
pub struct StageArgs {
    /// Where NATS is, how to log in, and how streams are made.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// How the service consumes its input.
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    /// Metrics, probes, logs and traces.
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
    /// Password for --nats-user.
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
    /// Private key (PEM) of --nats-tls-cert.
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
    /// sends in-progress acks every sixth of it, so it only bounds how soon
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

fn parse_namespace(s: &str) -> Result<Namespace, InvalidNamespace> {
    Namespace::new(Some(s))
}

/// Parses flags and environment; on a bad value prints one line naming the
/// flag, its environment variable and the problem, then exits with status 2.
/// `--help` shows which variable sets each flag, never the value it holds
/// here, and no error repeats a secret it was given.
pub fn parse<T: Parser>(program: &str) -> T {
    match try_parse_from::<T, _, _>(std::env::args_os()) {
        Ok(config) => config,
        // Help asked for, or a command without its subcommand: the help
        // (on standard error and status 2 for the latter).
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("{program}: configuration error: {}", one_line::<T>(&e));
            std::process::exit(2);
        }
    }
}

/// `T::try_parse_from`, with every environment variable's value hidden
/// from `--help`, in every subcommand.
fn try_parse_from<T, I, A>(args: I) -> Result<T, clap::Error>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    let mut command = hide_env_values(T::command());
    let mut matches = command.try_get_matches_from_mut(args)?;
    T::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// `hide_env_values(true)` on every argument of `command` and of its
/// subcommands, at any depth: an operator's `--help` (pasted into a ticket,
/// say) must not show the user, URL or token the environment holds.
fn hide_env_values(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| arg.hide_env_values(true))
        .mut_subcommands(hide_env_values)
}

fn one_line<T: CommandFactory>(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid configuration")
        .trim_start_matches("error: ")
        .to_owned();
    let invalid_arg = e.get(ContextKind::InvalidArg).map(|arg| arg.to_string());
    let first = without_secrets(
        first,
        e.kind(),
        invalid_arg.as_deref(),
        e.get(ContextKind::InvalidValue).map(|v| v.to_string()),
    );
    // clap names the flag; operators mostly set environment variables.
    let env = invalid_arg.and_then(|arg| {
        let long = arg
            .trim_start_matches("--")
            .split([' ', '='])
            .next()?
            .to_owned();
        env_of(&T::command(), &long)
    });
    match env {
        Some(env) => format!("{first} (set by --flag or ${env})"),
        None => first,
    }
}

/// The environment variable of flag `--long`, in `command` or any of its
/// subcommands.
fn env_of(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|s| env_of(s, long)))
}

/// Words in an argument's name (flag, value name or variable) that say its
/// value may be, or hold, a secret.
const SECRET_WORDS: [&str; 9] = [
    "password", "pass", "token", "seed", "creds", "key", "secret", "header", "url",
];

/// `line`, a rendering of a clap error, with the value it quotes made fit
/// to show: a URL without password or query (`user:***@host/path?…`), any
/// other value of an argument whose name says it may carry a secret
/// replaced by `***`. clap's message repeats the value, and so may the
/// value parser's reason after it: every occurrence goes, and so do the
/// URL's password and query wherever they appear on their own.
fn without_secrets(
    line: String,
    kind: ErrorKind,
    arg: Option<&str>,
    value: Option<String>,
) -> String {
    let value = match (value, kind, arg) {
        (Some(value), _, _) => value,
        // `--nats-pasword=SECRET`: a mistyped flag quotes its value too.
        (None, ErrorKind::UnknownArgument, Some(arg)) => match arg.split_once('=') {
            Some((_, value)) => value.to_owned(),
            None if arg.contains("://") => arg.to_owned(),
            None => return line,
        },
        _ => return line,
    };
    if value.is_empty() {
        return line;
    }
    let name = arg.unwrap_or_default().to_ascii_lowercase();
    let secret_name =
        kind == ErrorKind::UnknownArgument || SECRET_WORDS.iter().any(|word| name.contains(word));
    let shown = if value.contains("://") {
        redact_url(&value)
    } else if secret_name {
        "***".to_owned()
    } else {
        return line;
    };
    let fragments = url_secrets(&value);
    line.split(value.as_str())
        .map(|piece| {
            fragments.iter().fold(piece.to_owned(), |piece, secret| {
                piece.replace(secret.as_str(), "***")
            })
        })
        .collect::<Vec<_>>()
        .join(&shown)
}

/// The parts of `urls` (one URL or several, comma-separated) that
/// [`redact_url`] hides: passwords, lone-user tokens and query strings,
/// as written and percent-decoded.
fn url_secrets(urls: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    for one in urls.split(',') {
        let Some((scheme, rest)) = one.trim().split_once("://") else {
            continue;
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            match userinfo.split_once(':') {
                Some((_, password)) => secrets.push(password.to_owned()),
                // `nats://TOKEN@host`: the lone user may be the secret.
                None if scheme.starts_with("nats") || scheme == "tls" => {
                    secrets.push(userinfo.to_owned())
                }
                None => {}
            }
        }
        secrets.extend(query.map(str::to_owned));
    }
    let decoded = secrets
        .iter()
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect::<Vec<_>>();
    secrets.extend(decoded);
    // Too short to replace without mangling the rest of the line.
    secrets.retain(|s| s.len() >= 3);
    // Longest first, so a password goes whole, not in pieces.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
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

    /// A command with subcommands, a secret-bearing URL whose parser
    /// repeats it (as the saver's DATABASE_URL parser may), and variables
    /// only these tests set.
    #[derive(Parser, Debug)]
    struct Nested {
        #[arg(long, env = "SLUICE_CONFIG_TEST_USER")]
        user: Option<String>,
        #[arg(long, env = "SLUICE_CONFIG_TEST_DATABASE_URL", value_parser = refuse_url)]
        database_url: Option<String>,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Status {
            #[command(flatten)]
            nats: NatsArgs,
            #[arg(long, env = "SLUICE_CONFIG_TEST_TOKEN")]
            token: Option<String>,
            #[command(subcommand)]
            deeper: Option<Deeper>,
        },
    }

    #[derive(clap::Subcommand, Debug)]
    enum Deeper {
        List {
            #[arg(long, env = "SLUICE_CONFIG_TEST_DEEP")]
            deep: Option<String>,
        },
    }

    fn refuse_url(url: &str) -> Result<String, sluice_messages::Invalid> {
        Err(sluice_messages::Invalid::new(format!(
            "cannot read certificates named in {url}"
        )))
    }

    fn help_of(args: &[&str]) -> String {
        let e = try_parse_from::<Nested, _, _>(args.iter().copied()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{e}");
        e.render().to_string()
    }

    #[test]
    fn help_names_variables_but_never_their_values() {
        // Variables no other test reads: the environment is the process's.
        std::env::set_var("SLUICE_CONFIG_TEST_USER", "opsuser");
        std::env::set_var("SLUICE_CONFIG_TEST_TOKEN", "tok-SECRET");
        std::env::set_var("SLUICE_CONFIG_TEST_DEEP", "deep-SECRET");
        let top = help_of(&["x", "--help"]);
        assert!(top.contains("SLUICE_CONFIG_TEST_USER"), "{top}");
        assert!(!top.contains("opsuser"), "{top}");
        let status = help_of(&["x", "status", "--help"]);
        assert!(status.contains("SLUICE_CONFIG_TEST_TOKEN"), "{status}");
        assert!(status.contains("SLUICE_NATS_USER"), "{status}");
        assert!(!status.contains("tok-SECRET"), "{status}");
        let deep = help_of(&["x", "status", "list", "--help"]);
        assert!(deep.contains("SLUICE_CONFIG_TEST_DEEP"), "{deep}");
        assert!(!deep.contains("deep-SECRET"), "{deep}");
        // Parsing still reads them.
        let parsed = try_parse_from::<Nested, _, _>(["x"]).unwrap();
        assert_eq!(parsed.user.as_deref(), Some("opsuser"));
    }

    #[test]
    fn a_bad_url_is_shown_without_its_password_or_query() {
        let url = "postgres://sluice:PGSECRET@127.0.0.1:1/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
        let e = try_parse_from::<Nested, _, _>(["x", "--database-url", url]).unwrap_err();
        let line = one_line::<Nested>(&e);
        assert!(!line.contains("PGSECRET"), "{line}");
        assert!(!line.contains("sslrootcert"), "{line}");
        assert!(
            line.contains("postgres://sluice:***@127.0.0.1:1/x?…"),
            "{line}"
        );
        assert!(line.contains("$SLUICE_CONFIG_TEST_DATABASE_URL"), "{line}");
        assert!(!line.contains('\n'));
        // A NATS token standing alone as the user, in a list of servers.
        let e = Cli::try_parse_from(["x", "--stream-replicas", "nats://TOKEN123@h:4222,nats://h2"])
            .unwrap_err();
        let line = one_line::<Cli>(&e);
        assert!(!line.contains("TOKEN123"), "{line}");
        assert!(line.contains("nats://***@h:4222,nats://h2"), "{line}");
    }

    #[test]
    fn secret_values_that_are_not_urls_are_never_shown() {
        let line = without_secrets(
            "invalid value 'hunter22' for '--nats-password <NATS_PASSWORD>': too short (hunter22)"
                .into(),
            ErrorKind::ValueValidation,
            Some("--nats-password <NATS_PASSWORD>"),
            Some("hunter22".into()),
        );
        assert_eq!(
            line,
            "invalid value '***' for '--nats-password <NATS_PASSWORD>': too short (***)"
        );
        // A mistyped flag repeats its value.
        let e = Cli::try_parse_from(["x", "--nats-pasword=hunter22"]).unwrap_err();
        let line = one_line::<Cli>(&e);
        assert!(!line.contains("hunter22"), "{line}");
        assert!(line.contains("--nats-pasword"), "{line}");
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
        // Nothing secret about a duration: the value is shown as given.
        assert!(line.contains("'soon'"), "{line}");
        let e = Cli::try_parse_from(["x", "--concurrency", "0"]).unwrap_err();
        assert!(one_line::<Cli>(&e).contains("$SLUICE_CONCURRENCY"));
    }
}
