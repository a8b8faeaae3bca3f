//! Download credentials by reference: the operator configures named
//! credentials on the importer and the fetcher (`SLUICE_DOWNLOAD_CREDENTIALS`),
//! and an import request names one (`"credentials": "partner-a"`). Messages
//! carry the name only, never a secret, so nothing secret sits in a stream
//! for its retention.
//!
//! A credential is HTTP headers (a bearer token, basic auth, or headers of
//! the operator's choosing) and the URL prefixes it is scoped to. It is
//! sent only to URLs under those prefixes: every hop of a redirect is
//! checked again, so a redirect to another host never carries it.
//!
//! ```json
//! {
//!   "partner-a": {
//!     "scope": ["https://files.partner-a.example/exports/"],
//!     "bearer": {"env": "PARTNER_A_TOKEN"}
//!   },
//!   "partner-b": {
//!     "scope": ["https://api.partner-b.example"],
//!     "basic": {"username": "sluice", "password": {"file": "/etc/sluice/partner-b/password"}}
//!   }
//! }
//! ```
//!
//! Each secret is a string, `{"env": NAME}` (an environment variable) or
//! `{"file": PATH}` (a file, as Kubernetes mounts a Secret; one trailing
//! line break is not part of it). All are read once, at start.

use std::{collections::BTreeMap, fmt, path::PathBuf, sync::Arc};

use base64::Engine as _;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use url::Url;

/// The credentials configured, by name.
#[derive(Clone, Default)]
pub struct Credentials {
    by_name: BTreeMap<String, Arc<Credential>>,
}

/// One named credential: what it sends, and where it may be sent.
pub struct Credential {
    name: String,
    scopes: Vec<Scope>,
    /// Values marked sensitive, so no `Debug` of a request shows them.
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A URL prefix a credential may be sent to: same scheme, host and port,
/// and a path under the prefix's (at a `/` boundary).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    scheme: String,
    host: String,
    port: u16,
    /// Ends in `/`.
    path: String,
}

/// The credentials setting cannot be used. Says what and where, never a
/// secret's value.
#[derive(Debug, thiserror::Error)]
#[error("SLUICE_DOWNLOAD_CREDENTIALS: {0}")]
pub struct CredentialsError(String);

impl sluice_messages::Failure for CredentialsError {
    fn is_transient(&self) -> bool {
        false
    }
}

/// What is wrong with one credential; the caller names it.
#[derive(Debug)]
pub(crate) struct Problem(pub(crate) String);

impl From<String> for Problem {
    fn from(text: String) -> Self {
        Problem(text)
    }
}

impl From<&str> for Problem {
    fn from(text: &str) -> Self {
        Problem(text.to_owned())
    }
}

/// A request named a credential this service does not have.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no download credential is named {name:?} here: {}",
    if known.is_empty() {
        "none is configured (SLUICE_DOWNLOAD_CREDENTIALS on the importer and the fetcher)".to_owned()
    } else {
        format!("those configured are {}", known.join(", "))
    }
)]
pub struct UnknownCredential {
    pub name: String,
    pub known: Vec<String>,
}

/// A setting holding named things as JSON (`SLUICE_DOWNLOAD_CREDENTIALS`,
/// `SLUICE_WEBHOOKS`): the path of a JSON file, or the JSON itself (an
/// environment variable filled from a Secret). Its text and where it came
/// from, for errors; `None` when empty. `what` names the file in errors.
pub(crate) fn named_json(setting: &str, what: &str) -> Result<Option<(String, String)>, String> {
    let setting = setting.trim().trim_start_matches('\u{feff}');
    if setting.is_empty() {
        Ok(None)
    } else if setting.starts_with('{') {
        Ok(Some((setting.to_owned(), "the JSON it holds".to_owned())))
    } else if setting.contains(['{', '\n']) {
        // Not a path: JSON that lost its first brace, or was quoted. Its
        // text may hold secrets, so it is not repeated.
        Err("is neither a JSON object (starting with `{`) nor the path of a file".into())
    } else {
        let text = std::fs::read_to_string(setting)
            .map_err(|e| format!("cannot read the {what} file {setting}: {e}"))?;
        Ok(Some((text, format!("the {what} file {setting}"))))
    }
}

impl Credentials {
    /// Reads the setting: a path to a JSON file, or the JSON itself (an
    /// environment variable filled from a Secret). Empty: no credentials.
    pub fn load(setting: &str) -> Result<Self, CredentialsError> {
        let Some((text, origin)) = named_json(setting, "credentials").map_err(CredentialsError)?
        else {
            return Ok(Credentials::default());
        };
        // Parsed loosely first, so an error can name the credential. serde's
        // messages quote the values they did not expect, secrets included:
        // only their position, or the field they name, is shown.
        let named: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| {
                CredentialsError(format!(
                    "{origin} is not a JSON object of named credentials (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
        let mut by_name = BTreeMap::new();
        for (name, value) in named {
            let fail =
                |what: String| CredentialsError(format!("{origin}: credential {name:?} {what}"));
            sluice_messages::validate_credential_name(&name).map_err(|_| {
                fail("has an invalid name: use 1 to 64 characters of A-Z a-z 0-9 - _ .".into())
            })?;
            let declared: Declared = serde_json::from_value(value).map_err(|e| {
                fail(format!(
                    "is not valid{}: it takes \"scope\" and one or more of \"bearer\", \"basic\", \"headers\"; \
                     each secret a string, {{\"env\": NAME}} or {{\"file\": PATH}}",
                    field_named(&e)
                ))
            })?;
            let credential = declared.resolve(&name).map_err(|p| fail(p.0))?;
            by_name.insert(name, Arc::new(credential));
        }
        Ok(Credentials { by_name })
    }

    /// The credential named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Credential>, UnknownCredential> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| UnknownCredential {
                name: name.to_owned(),
                known: self.names(),
            })
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_name.values()).finish()
    }
}

impl Credential {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this credential may be sent with a request for `url`.
    pub fn covers(&self, url: &Url) -> bool {
        self.scopes.iter().any(|scope| scope.covers(url))
    }

    /// The headers it adds to a request.
    pub(crate) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("headers", &headers)
            .finish_non_exhaustive()
    }
}

impl Scope {
    fn parse(text: &str) -> Result<Scope, Problem> {
        let shown = sluice_messages::redact_file_url(text);
        let url = Url::parse(text)
            .map_err(|e| Problem(format!("has scope {shown:?}, not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Problem::from(format!(
                "has scope {shown:?}: only http and https URLs"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Problem::from(
                "has a scope with userinfo: give the secret as \"basic\"",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Problem::from(format!(
                "has scope {shown:?}: a scope is a URL prefix, without query or fragment"
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(Problem::from(format!("has scope {shown:?} without a host")));
        };
        let mut path = url.path().to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(Scope {
            scheme: url.scheme().to_owned(),
            host: host.to_owned(),
            port: url.port_or_known_default().unwrap_or(0),
            path,
        })
    }

    fn covers(&self, url: &Url) -> bool {
        let path = url.path();
        // A server that decodes before it normalises would read
        // `/exports/..%2Fprivate` as `/private`: such paths are not covered.
        let lower = path.to_ascii_lowercase();
        if ["%2f", "%5c", "%2e", ";"].iter().any(|s| lower.contains(s)) {
            return false;
        }
        url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == Some(self.port)
            // `/exports/` covers `/exports` itself and all below it, not `/exportsX`.
            && (path.starts_with(&self.path) || path == &self.path[..self.path.len() - 1])
    }
}

/// The field a serde error names (an unknown or a missing one), never a
/// value it quotes.
pub(crate) fn field_named(error: &serde_json::Error) -> String {
    let message = error.to_string();
    ["unknown field `", "missing field `"]
        .iter()
        .find_map(|start| {
            let rest = message.strip_prefix(start)?;
            let name = rest.split('`').next()?;
            Some(format!(" ({}field `{name}`)", &start[..start.len() - 7]))
        })
        .unwrap_or_default()
}

/// A credential as the file declares it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    scope: Scopes,
    #[serde(default)]
    bearer: Option<Secret>,
    #[serde(default)]
    basic: Option<Basic>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
}

/// One prefix or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Basic {
    username: String,
    password: Secret,
}

/// Where a secret's value is.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Secret {
    Inline(String),
    Env { env: String },
    File { file: PathBuf },
}

impl Secret {
    pub(crate) fn read(&self, what: &str) -> Result<String, Problem> {
        match self {
            Secret::Inline(value) => Ok(value.clone()),
            Secret::Env { env } => std::env::var(env).map_err(|e| {
                Problem(match e {
                    std::env::VarError::NotPresent => {
                        format!(
                            "takes its {what} from environment variable {env}, which is not set"
                        )
                    }
                    std::env::VarError::NotUnicode(_) => {
                        format!(
                            "takes its {what} from environment variable {env}, which is not UTF-8"
                        )
                    }
                })
            }),
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|text| {
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    text.strip_suffix('\r').unwrap_or(text).to_owned()
                })
                .map_err(|e| {
                    Problem(format!(
                        "cannot read its {what} from {}: {e}",
                        file.display()
                    ))
                }),
        }
    }
}

impl Declared {
    fn resolve(self, name: &str) -> Result<Credential, Problem> {
        let prefixes = match self.scope {
            Scopes::One(one) => vec![one],
            Scopes::Many(many) => many,
        };
        if prefixes.is_empty() {
            return Err(Problem::from(
                "has an empty scope: name the URL prefixes it is for",
            ));
        }
        let scopes = prefixes
            .iter()
            .map(|p| Scope::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        for scope in scopes.iter().filter(|s| s.scheme == "http") {
            tracing::warn!(
                credential = name,
                host = scope.host,
                "download credential {name} is scoped to plain http: its secret crosses the network unencrypted"
            );
        }
        let mut headers = Vec::new();
        match (&self.bearer, &self.basic) {
            (Some(_), Some(_)) => {
                return Err(Problem::from(
                    "has both \"bearer\" and \"basic\": both set Authorization",
                ))
            }
            (Some(token), None) => {
                let token = token.read("bearer token")?;
                headers.push((
                    AUTHORIZATION,
                    value(&format!("Bearer {}", token.trim()), "bearer token")?,
                ));
            }
            (None, Some(basic)) => {
                let password = basic.password.read("password")?;
                let pair = format!("{}:{password}", basic.username);
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                headers.push((
                    AUTHORIZATION,
                    value(&format!("Basic {encoded}"), "password")?,
                ));
            }
            (None, None) if self.headers.is_empty() => {
                return Err(Problem::from(
                    "sends nothing: give \"bearer\", \"basic\" or \"headers\"",
                ))
            }
            (None, None) => {}
        }
        for (header, secret) in &self.headers {
            let header_name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                Problem("has a header name that is not valid (a colon, a space?)".to_owned())
            })?;
            if headers.iter().any(|(n, _)| *n == header_name) {
                return Err(Problem::from(format!("sets {header} twice")));
            }
            let text = secret.read(&format!("header {header}"))?;
            headers.push((header_name, value(&text, &format!("header {header}"))?));
        }
        Ok(Credential {
            name: name.to_owned(),
            scopes,
            headers,
        })
    }
}

/// A header value, marked sensitive; the error never quotes it.
fn value(text: &str, what: &str) -> Result<HeaderValue, Problem> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        Problem(format!(
            "has a {what} that cannot be sent in a header (a line break, a control character?)"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn a_credential_covers_its_prefixes_only() {
        let credentials = Credentials::load(
            r#"{"a": {"scope": ["https://files.example/exports", "http://127.0.0.1:8080"], "bearer": "T"}}"#,
        )
        .unwrap();
        let a = credentials.get("a").unwrap();
        for covered in [
            "https://files.example/exports",
            "https://files.example/exports/",
            "https://files.example/exports/a.csv?sig=1",
            "https://FILES.example:443/exports/2024/b.csv",
            "http://127.0.0.1:8080/anything.csv",
        ] {
            assert!(a.covers(&url(covered)), "{covered}");
        }
        for not in [
            "https://files.example/exportsX/a.csv",
            "https://files.example/other/a.csv",
            "http://files.example/exports/a.csv",
            "https://files.example:8443/exports/a.csv",
            "https://evil.files.example/exports/a.csv",
            "https://files.example.evil/exports/a.csv",
            "http://127.0.0.1:8081/anything.csv",
            "http://localhost:8080/anything.csv",
            // Encoded separators a server might decode before normalising.
            "https://files.example/exports/..%2Fprivate/a.csv",
            "https://files.example/exports/..%5cprivate/a.csv",
            "https://files.example/exports/%2E%2E/private/a.csv",
            "https://files.example/exports/a.csv;jsessionid=1",
        ] {
            assert!(!a.covers(&url(not)), "{not}");
        }
    }

    #[test]
    fn secrets_come_inline_from_the_environment_or_a_file_and_never_show() {
        let dir = std::env::temp_dir().join(format!("sluice-credentials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let password = dir.join("password");
        std::fs::write(&password, "s3cret-from-file\n").unwrap();
        std::env::set_var("SLUICE_TEST_TOKEN_FROM_ENV", "s3cret-from-env");
        let json = format!(
            r#"{{"env": {{"scope": "https://a.example", "bearer": {{"env": "SLUICE_TEST_TOKEN_FROM_ENV"}}}},
                "file": {{"scope": "https://b.example", "basic": {{"username": "Aladdin", "password": {{"file": {:?}}}}}}},
                "key": {{"scope": "https://c.example", "headers": {{"X-Api-Key": "s3cret-inline"}}}}}}"#,
            password.display()
        );
        let credentials = Credentials::load(&json).unwrap();
        let header = |name: &str| {
            let c = credentials.get(name).unwrap();
            let (n, v) = c.headers()[0].clone();
            (n.to_string(), v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header("env"),
            ("authorization".into(), "Bearer s3cret-from-env".into())
        );
        // base64("Aladdin:s3cret-from-file")
        assert_eq!(
            header("file"),
            (
                "authorization".into(),
                "Basic QWxhZGRpbjpzM2NyZXQtZnJvbS1maWxl".into()
            )
        );
        assert_eq!(header("key"), ("x-api-key".into(), "s3cret-inline".into()));
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("x-api-key"), "{shown}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_setting_says_what_and_where_without_the_secret() {
        let error = |json: &str| Credentials::load(json).err().unwrap().to_string();
        let e = error(
            r#"{"a": {"scope": "https://a.example", "bearer": {"env": "SLUICE_TEST_UNSET_VAR"}}}"#,
        );
        assert!(e.contains("credential \"a\" takes its bearer token from environment variable SLUICE_TEST_UNSET_VAR, which is not set"), "{e}");
        let e = error(r#"{"a": {"scope": "https://a.example", "bearer": "s3cret\nline"}}"#);
        assert!(
            e.contains("cannot be sent in a header") && !e.contains("s3cret"),
            "{e}"
        );
        let e = error(r#"{"a": {"scope": "https://a.example", "bearer": "s3cret", "basci": 1}}"#);
        assert!(
            e.contains("unknown field `basci`") && !e.contains("s3cret"),
            "{e}"
        );
        let e = error(r#"{"a": {"scope": [], "bearer": "s3cret"}}"#);
        assert!(e.contains("empty scope"), "{e}");
        let e = error(r#"{"a": {"scope": "ftp://a.example", "bearer": "s3cret"}}"#);
        assert!(e.contains("only http and https"), "{e}");
        let e = error(r#"{"a b": {"scope": "https://a.example", "bearer": "s3cret"}}"#);
        assert!(e.contains("invalid name"), "{e}");
        let e = error(r#"{"a": {"scope": "https://a.example"}}"#);
        assert!(e.contains("sends nothing"), "{e}");
        // Values serde would quote, a quoted setting, a scope with a token:
        // none of it is repeated.
        let e = error(r#"{"a": {"scope": "https://a.example", "basic": "alice:s3cret"}}"#);
        assert!(
            e.contains("credential \"a\" is not valid") && !e.contains("s3cret"),
            "{e}"
        );
        let e = error(r#"{"a": {"scope": "https://a.example", "headers": "X-Key: s3cret"}}"#);
        assert!(!e.contains("s3cret"), "{e}");
        let e = error(r#"'{"a": {"scope": "https://a.example", "bearer": "s3cret"}}'"#);
        assert!(
            e.contains("neither a JSON object") && !e.contains("s3cret"),
            "{e}"
        );
        let e = error(r#"{"a": {"scope": "https://a.example/?token=s3cret", "bearer": "x"}}"#);
        assert!(e.contains("without query") && !e.contains("s3cret"), "{e}");
        let e = error(
            r#"{"a": {"scope": "https://a.example", "headers": {"Authorization: s3cret": "x"}}}"#,
        );
        assert!(
            e.contains("header name that is not valid") && !e.contains("s3cret"),
            "{e}"
        );
        let e = error("/nonexistent/credentials.json");
        assert!(
            e.contains("cannot read the credentials file /nonexistent/credentials.json"),
            "{e}"
        );
        let e = Credentials::default()
            .get("partner-a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("none is configured"), "{e}");
    }
}
