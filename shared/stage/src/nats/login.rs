//! How sluice logs in to NATS, with the conventions of the `nats` CLI and
//! the official clients: user and password or a token in the URL's
//! userinfo or in variables, an NKey seed file, a credentials file, and TLS
//! with a CA, a client certificate (mTLS) or `tls://` URLs.

use async_nats::{ConnectOptions, ServerAddr};
use sluice_messages::Invalid;

use crate::config::NatsArgs;

/// The servers of NATS_URL, without their userinfo (which never reaches a
/// log), and the credentials the URLs carried.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Servers {
    pub addrs: Vec<ServerAddr>,
    pub login: Option<UrlLogin>,
}

/// Credentials written into a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UrlLogin {
    UserPassword(String, String),
    Token(String),
}

pub(crate) fn servers(urls: &str) -> Result<Servers, Invalid> {
    let mut addrs = Vec::new();
    let mut login = None;
    for raw in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let with_scheme = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("nats://{raw}")
        };
        let not_a_url = |e: &dyn std::fmt::Display| {
            format!(
                "{} is not a NATS URL: {e}",
                sluice_messages::redact_url(raw)
            )
        };
        let mut url =
            url::Url::parse(&with_scheme).map_err(|e| Invalid::caused_by(not_a_url(&e), e))?;
        let user = percent_decoded(url.username());
        let password = url.password().map(percent_decoded);
        if !user.is_empty() && login.is_none() {
            login = Some(match password {
                Some(password) => UrlLogin::UserPassword(user, password),
                None => UrlLogin::Token(user),
            });
        }
        // A NATS URL always has a host, so both always succeed.
        let _host_url = url.set_username("").and(url.set_password(None));
        let addr = url
            .as_str()
            .parse::<ServerAddr>()
            .map_err(|e| Invalid::caused_by(not_a_url(&e), e))?;
        addrs.push(addr);
    }
    if addrs.is_empty() {
        return Err(Invalid::new("NATS_URL names no server"));
    }
    Ok(Servers { addrs, login })
}

/// URL userinfo is percent-encoded (`p%40ss` is `p@ss`).
fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Adds the login and TLS settings of `nats` to `options`: variables first,
/// then what the URL carried.
pub(crate) async fn login(
    mut options: ConnectOptions,
    nats: &NatsArgs,
    from_url: Option<UrlLogin>,
) -> Result<ConnectOptions, Invalid> {
    if let Some(path) = &nats.nats_creds {
        options = options.credentials_file(path).await.map_err(|e| {
            let message = format!(
                "cannot read the NATS credentials file {} (SLUICE_NATS_CREDS): {e}",
                path.display()
            );
            Invalid::caused_by(message, e)
        })?;
    } else if let Some(path) = &nats.nats_nkey {
        let seed = std::fs::read_to_string(path).map_err(|e| {
            let message = format!(
                "cannot read the NKey seed file {} (SLUICE_NATS_NKEY): {e}",
                path.display()
            );
            Invalid::caused_by(message, e)
        })?;
        options = options.nkey(seed.trim().to_owned());
    } else if let Some(token) = &nats.nats_token {
        options = options.token(token.clone());
    } else if let Some(user) = &nats.nats_user {
        options =
            options.user_and_password(user.clone(), nats.nats_password.clone().unwrap_or_default());
    } else {
        match from_url {
            Some(UrlLogin::UserPassword(user, password)) => {
                options = options.user_and_password(user, password)
            }
            Some(UrlLogin::Token(token)) => options = options.token(token),
            None => {}
        }
    }
    for (path, name) in [
        (&nats.nats_tls_ca, "SLUICE_NATS_TLS_CA"),
        (&nats.nats_tls_cert, "SLUICE_NATS_TLS_CERT"),
        (&nats.nats_tls_key, "SLUICE_NATS_TLS_KEY"),
    ] {
        if let Some(path) = path {
            if !path.is_file() {
                return Err(Invalid::new(format!(
                    "{} ({name}) is not a readable file",
                    path.display()
                )));
            }
        }
    }
    if let Some(ca) = &nats.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&nats.nats_tls_cert, &nats.nats_tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// Whether a failed connection is NATS refusing sluice (credentials,
/// certificates): a setting to fix, not an outage to wait out.
pub(crate) fn is_refusal(kind: async_nats::ConnectErrorKind) -> bool {
    use async_nats::ConnectErrorKind::*;
    matches!(kind, AuthorizationViolation | Authentication | Tls)
}

/// The same, from the text of a client error event (all a reconnect
/// attempt reports).
pub(crate) fn is_refusal_text(text: &str) -> bool {
    [
        "authorization violation",
        "failed signing nonce",
        "TLS error",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// Since when, and why, NATS refuses sluice (cleared once it accepts).
static REFUSED: std::sync::Mutex<Option<(std::time::Instant, String)>> =
    std::sync::Mutex::new(None);

/// Records a refusal; whether it is the first since NATS last accepted
/// sluice (worth an error line: the retries that follow are not).
pub(crate) fn refused(why: &str) -> bool {
    let mut refused = REFUSED.lock().expect("never poisoned");
    let first = refused.is_none();
    match refused.as_mut() {
        Some((_, reason)) => *reason = why.to_owned(),
        None => *refused = Some((std::time::Instant::now(), why.to_owned())),
    }
    first
}

pub(crate) fn accepted() {
    *REFUSED.lock().expect("never poisoned") = None;
}

/// Why NATS has refused sluice for at least `deadline`, if it has.
pub(crate) fn refused_for(deadline: std::time::Duration) -> Option<String> {
    let refused = REFUSED.lock().expect("never poisoned");
    let (since, why) = refused.as_ref()?;
    (since.elapsed() >= deadline).then(|| why.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_taken_out_and_used() {
        let s = servers("nats://sluice:p%40ss@127.0.0.1:4222, nats://127.0.0.1:4223").unwrap();
        assert_eq!(
            s.login,
            Some(UrlLogin::UserPassword("sluice".into(), "p@ss".into()))
        );
        assert_eq!(s.addrs.len(), 2);
        for addr in &s.addrs {
            assert!(
                !addr.as_url_str().contains("sluice"),
                "{}",
                addr.as_url_str()
            );
            assert!(!addr.as_url_str().contains("ss@"), "{}", addr.as_url_str());
        }
        let s = servers("tls://s3cr3t@nats.example:4443").unwrap();
        assert_eq!(s.login, Some(UrlLogin::Token("s3cr3t".into())));
        assert!(s.addrs[0].tls_required());
        let s = servers("127.0.0.1:4222").unwrap();
        assert_eq!(s.login, None);
        assert!(servers(" , ").is_err());
        let err = servers("nats://user:hunter2@[::1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
