//! Connecting to PostgreSQL as libpq does, over rustls: `sslmode`
//! (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert`, `sslcert` and `sslkey`, in the URL (`?sslmode=…`), in the
//! `key=value` form, or from `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and
//! `PGSSLKEY`. tokio-postgres itself takes only `disable`, `prefer` and
//! `require`, and no certificates: what it does not take is read here.

use sluice_messages::Invalid;
use std::{path::PathBuf, str::FromStr, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    client::WebPkiServerVerifier,
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::{config::SslMode as PgSslMode, Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` (`allow` is taken as `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// TLS if the server offers it, unverified; else in the clear (libpq's default).
    #[default]
    Prefer,
    /// TLS, the certificate unverified unless `sslrootcert` is given (then as `verify-ca`).
    Require,
    /// TLS, the certificate chained to `sslrootcert` (or the system's roots).
    VerifyCa,
    /// As `verify-ca`, and the certificate names the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(Invalid::new(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ))),
        }
    }
}

/// A PostgreSQL to connect to: tokio-postgres' settings, and the TLS ones
/// it does not take.
#[derive(Debug, Clone)]
pub struct Database {
    config: Config,
    tls: Tls,
    /// Built when the settings are read, so a missing or bad certificate
    /// file is a setting error at start, not a failure of every connect.
    client: Option<Arc<ClientConfig>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tls {
    mode: SslMode,
    root_cert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl FromStr for Database {
    type Err = Invalid;

    /// A `postgres://` URL or libpq's `key=value` form.
    fn from_str(text: &str) -> Result<Self, Invalid> {
        let (config, tls) = settings(text)?;
        let client = match tls.mode {
            SslMode::Disable => None,
            _ => Some(Arc::new(client_config(&tls)?)),
        };
        Ok(Database {
            config,
            tls,
            client,
        })
    }
}

/// tokio-postgres' settings, and the TLS ones read here.
fn settings(text: &str) -> Result<(Config, Tls), Invalid> {
    {
        let (rest, mut found) =
            if text.starts_with("postgres://") || text.starts_with("postgresql://") {
                take_from_url(text)?
            } else {
                take_from_pairs(text)
            };
        for (key, variable) in
            TLS_KEYS
                .iter()
                .zip(["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"])
        {
            if !found.iter().any(|(k, _)| k == key) {
                if let Ok(value) = std::env::var(variable) {
                    found.push(((*key).to_owned(), value));
                }
            }
        }
        let mut tls = Tls::default();
        for (key, value) in found {
            match key.as_str() {
                "sslmode" => tls.mode = value.parse()?,
                "sslrootcert" => tls.root_cert = Some(value.into()),
                "sslcert" => tls.cert = Some(value.into()),
                "sslkey" => tls.key = Some(value.into()),
                _ => unreachable!("only TLS keys are taken"),
            }
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(Invalid::new("sslcert and sslkey go together"));
        }
        let mut config: Config = rest.parse().map_err(|e| {
            Invalid::caused_by(format!("not a PostgreSQL connection string: {e}"), e)
        })?;
        config.ssl_mode(match tls.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        });
        Ok((config, tls))
    }
}

/// The URL without its TLS parameters, and those parameters.
fn take_from_url(text: &str) -> Result<(String, Vec<(String, String)>), Invalid> {
    let mut url = url::Url::parse(text)
        .map_err(|e| Invalid::caused_by(format!("not a PostgreSQL connection string: {e}"), e))?;
    let (taken, kept): (Vec<_>, Vec<_>) = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| TLS_KEYS.contains(&k.as_str()));
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(&kept);
    }
    Ok((url.into(), taken))
}

/// The `key=value` string without its TLS keys, and those keys (values
/// may be quoted, 'like this').
fn take_from_pairs(text: &str) -> (String, Vec<(String, String)>) {
    let mut words = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    for word in words {
        match word.split_once('=') {
            Some((key, value)) if TLS_KEYS.contains(&key.trim()) => {
                taken.push((key.trim().to_owned(), value.trim_matches('\'').to_owned()))
            }
            _ => kept.push(word),
        }
    }
    (kept.join(" "), taken)
}

impl Database {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The same server, another database on it.
    pub fn with_dbname(&self, name: &str) -> Database {
        let mut other = self.clone();
        other.config.dbname(name);
        other
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// Connects; the connection runs on a task of its own, which logs its
    /// loss.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let Some(client_config) = &self.client else {
            let (client, connection) = self.config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing_lost(&e);
                }
            });
            return Ok(client);
        };
        let tls = MakeRustlsConnect::new(ClientConfig::clone(client_config));
        let (client, connection) = self.config.connect(tls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing_lost(&e);
            }
        });
        Ok(client)
    }
}

fn tracing_lost(e: &tokio_postgres::Error) {
    tracing::warn!(error = %e, "database connection closed");
}

fn client_config(tls: &Tls) -> Result<ClientConfig, Invalid> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Invalid::caused_by(e.to_string(), e))?;
    let verify_chain = match tls.mode {
        SslMode::VerifyCa | SslMode::VerifyFull => true,
        // libpq: `require` with a root certificate verifies the chain.
        SslMode::Require => tls.root_cert.is_some(),
        SslMode::Disable | SslMode::Prefer => false,
    };
    let chain = if verify_chain {
        let roots = Arc::new(roots(tls.root_cert.as_ref())?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| Invalid::caused_by(e.to_string(), e))?;
        Some(webpki)
    } else {
        None
    };
    let verifier: Arc<dyn ServerCertVerifier> = match chain {
        Some(webpki) if tls.mode == SslMode::VerifyFull => webpki,
        chain => Arc::new(Lenient { chain, provider }),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let certs = certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Invalid::caused_by(format!("cannot read sslkey {}: {e}", key.display()), e)
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                Invalid::caused_by(
                    format!("sslcert and sslkey do not make a client certificate: {e}"),
                    e,
                )
            })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, Invalid> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            Invalid::caused_by(
                format!("cannot read certificates from {}: {e}", path.display()),
                e,
            )
        })
}

/// `sslrootcert`'s certificates, else the system's.
fn roots(root_cert: Option<&PathBuf>) -> Result<RootCertStore, Invalid> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| {
                    Invalid::caused_by(
                        format!("{} holds a bad certificate: {e}", path.display()),
                        e,
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// libpq's checks short of `verify-full`: with a chain verifier the chain
/// is checked and the name is not (`verify-ca`); without one nothing is
/// (`prefer`, `require`: encrypted, not authenticated). The handshake's
/// signatures are checked either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_pairs() {
        let (config, tls) = settings(
            "postgres://u:p@db.example:5432/sluice?sslmode=verify-full&sslrootcert=/ca.pem&application_name=saver",
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some("/ca.pem".into()));
        assert_eq!(config.get_application_name(), Some("saver"));
        assert_eq!(config.get_dbname(), Some("sluice"));
        assert_eq!(config.get_ssl_mode(), PgSslMode::Require);

        let (config, tls) = settings(
            "host=db.example user=u sslmode=verify-ca sslcert='/c d.pem' sslkey=/k.pem dbname=sluice",
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.cert, Some("/c d.pem".into()));
        assert_eq!(config.get_dbname(), Some("sluice"));

        let (config, _) = settings("postgres://u@h/sluice?sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), PgSslMode::Disable);
        let err = settings("postgres://u@h/s?sslmode=verify-everything").unwrap_err();
        assert!(err.to_string().contains("verify-everything"), "{err}");
        let err = settings("postgres://u@h/s?sslcert=/c.pem").unwrap_err();
        assert!(err.to_string().contains("sslkey"), "{err}");
        // A certificate file that is not there is a setting error at once.
        let err = "postgres://u@h/s?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
            .parse::<Database>()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        // The reading error underneath is kept as the cause.
        assert!(std::error::Error::source(&err).is_some(), "{err:?}");
    }
}
