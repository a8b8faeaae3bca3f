//! Download settings: flags and environment variables, and what they become.

use std::time::Duration;

use crate::{address, AddressPolicy, BodyLimits, Credentials, CredentialsError, Networks};

/// Download settings as flags and environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct DownloadArgs {
    /// Longest wait to establish an HTTP connection.
    #[arg(long, env = "SLUICE_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before the download fails
    /// (and is retried).
    #[arg(long, env = "SLUICE_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// Largest file accepted, counted after decompression (`512MiB`, `2GB`).
    #[arg(long, env = "SLUICE_MAX_DOWNLOAD_SIZE", default_value = "4GiB", value_parser = sluice_messages::units::parse_size)]
    pub max_download_size: u64,
    /// Longest line accepted; a longer one fails the file.
    #[arg(long, env = "SLUICE_MAX_ROW_LENGTH", default_value = "64KiB", value_parser = sluice_messages::units::parse_size)]
    pub max_row_length: u64,
    /// Most a gzip body may expand (decompressed / compressed size).
    #[arg(long, env = "SLUICE_MAX_COMPRESSION_RATIO", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_compression_ratio: u64,
    /// Slowest average transfer accepted, over each `--read-timeout` spent
    /// waiting on the server (`0` turns the check off): a server that
    /// trickles a byte now and then fails the download (and it is retried)
    /// instead of holding a slot for hours.
    #[arg(long, env = "SLUICE_MIN_DOWNLOAD_RATE", default_value = "1KiB", value_parser = sluice_messages::units::parse_limit)]
    pub min_download_rate: u64,
    /// Most downloads from one host at once per replica. Each host starts
    /// at 4 and is raised while it answers as fast as ever, cut when it
    /// refuses (429, 503), fails or slows down; downloads over its limit
    /// wait without taking a processing slot, so one slow host cannot
    /// occupy them all.
    #[arg(long, env = "SLUICE_MAX_DOWNLOADS_PER_HOST", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_downloads_per_host: u32,
    /// Fewest downloads from one host at once per replica, however often it
    /// refuses or slows down (at most the maximum).
    #[arg(long, env = "SLUICE_MIN_DOWNLOADS_PER_HOST", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub min_downloads_per_host: u32,
    /// Networks downloads never connect to: this host, private, shared,
    /// link-local (cloud metadata), multicast and reserved ranges.
    #[arg(long, env = "SLUICE_DENY_NETWORKS", default_value = address::DEFAULT_DENY,
          value_parser = Networks::parse)]
    pub deny_networks: Networks,
    /// Exceptions to `--deny-networks`.
    #[arg(long, env = "SLUICE_ALLOW_NETWORKS", default_value = "", value_parser = Networks::parse)]
    pub allow_networks: Networks,
    /// Buckets `s3://` URLs may read, each optionally with a key prefix
    /// (`exports,archive/2026/`); empty: `s3://` URLs are refused. The AWS
    /// identity the services run with is the operator's: a file must not
    /// point it at any bucket it can read.
    #[arg(long, env = "SLUICE_S3_BUCKETS", default_value = "", value_parser = parse_buckets)]
    pub s3_buckets: Buckets,
    /// Named credentials an import may ask for (`"credentials": NAME`): a
    /// JSON file, or the JSON itself. Each names the URL prefixes it is
    /// sent to and what it sends (bearer token, basic auth, headers); see
    /// docs/sources.md.
    #[arg(
        long,
        env = "SLUICE_DOWNLOAD_CREDENTIALS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true,
        value_parser = |s: &str| Ok::<_, std::convert::Infallible>(Hidden(s.to_owned()))
    )]
    pub download_credentials: Hidden,
}

impl DownloadArgs {
    /// The settings, with the credentials read (files and environment
    /// variables they name included).
    pub fn options(&self) -> Result<DownloadOptions, CredentialsError> {
        Ok(DownloadOptions {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            limits: BodyLimits {
                max_size: self.max_download_size,
                max_line: self.max_row_length,
                max_ratio: self.max_compression_ratio,
            },
            min_rate: self.min_download_rate,
            per_host: self.max_downloads_per_host as usize,
            min_per_host: self.min_downloads_per_host as usize,
            addresses: AddressPolicy {
                deny: self.deny_networks.clone(),
                allow: self.allow_networks.clone(),
            },
            credentials: Credentials::load(&self.download_credentials.0)?,
            s3_buckets: self.s3_buckets.0.clone(),
        })
    }
}

/// How files are fetched.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Longest wait to establish a connection.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response; a stalled server fails the
    /// download (and it is retried) instead of hanging it forever.
    pub read_timeout: Duration,
    pub limits: BodyLimits,
    /// Bytes per second, averaged over each `read_timeout` of waiting; 0: any.
    pub min_rate: u64,
    /// Most downloads from one host at once (the adaptive limit's ceiling).
    pub per_host: usize,
    /// Fewest downloads from one host at once (its floor).
    pub min_per_host: usize,
    pub addresses: AddressPolicy,
    /// What an import may name to authenticate its downloads.
    pub credentials: Credentials,
    /// Buckets (with key prefixes) `s3://` URLs may read.
    pub s3_buckets: Vec<(String, String)>,
}

/// A setting that may hold secrets: its `Debug` shows none of it.
#[derive(Clone, Default)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

/// `SLUICE_S3_BUCKETS`: `bucket` or `bucket/key-prefix`, comma-separated.
#[derive(Debug, Clone, Default)]
pub struct Buckets(pub Vec<(String, String)>);

/// A `SLUICE_S3_BUCKETS` entry without a bucket.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} names no bucket")]
pub struct NoBucket(String);

fn parse_buckets(text: &str) -> Result<Buckets, NoBucket> {
    text.split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|entry| {
            let entry = entry.strip_prefix("s3://").unwrap_or(entry);
            let (bucket, prefix) = entry.split_once('/').unwrap_or((entry, ""));
            if bucket.is_empty() {
                return Err(NoBucket(entry.to_owned()));
            }
            Ok((bucket.to_owned(), prefix.to_owned()))
        })
        .collect::<Result<_, _>>()
        .map(Buckets)
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            limits: BodyLimits {
                max_size: 4 << 30,
                max_line: 64 << 10,
                max_ratio: 100,
            },
            min_rate: 1024,
            per_host: 32,
            min_per_host: 1,
            addresses: AddressPolicy {
                deny: Networks::parse(address::DEFAULT_DENY).expect("valid"),
                allow: Networks::default(),
            },
            credentials: Credentials::default(),
            s3_buckets: Vec::new(),
        }
    }
}
