//! Completion webhooks by reference: the operator configures named
//! targets (`SLUICE_WEBHOOKS`, on the importer and the saver), and an
//! import request names one (`"webhook": "billing"`). Messages carry the
//! name only, never a URL or a secret.
//!
//! ```json
//! {
//!   "billing": {"url": "https://hooks.example.com/sluice", "secret": {"env": "BILLING_WEBHOOK_SECRET"}}
//! }
//! ```
//!
//! A target gets the completion event by POST, the same JSON as on
//! `import-events.<id>`, signed as Stripe signs its webhooks:
//! `Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>"
//! under the target's secret>`, with `Sluice-Event-Id` the event's
//! `Nats-Msg-Id` (`import-completed/<id>`), to drop a repeat by. The POST
//! goes through the download guard (`SLUICE_DENY_NETWORKS`,
//! `SLUICE_ALLOW_NETWORKS`) and follows no redirect.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ring::hmac;
use serde::Deserialize;
use url::Url;

use crate::{
    credentials::{self, field_named, Problem, Secret},
    AddressPolicy, Networks,
};

/// The webhook settings, as flags and environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Named webhook targets an import may ask to be told of its completion
    /// (`"webhook": NAME`): a JSON file, or the JSON itself; each a `url`
    /// and a `secret` (a string, `{"env": NAME}` or `{"file": PATH}`).
    #[arg(
        long,
        env = "SLUICE_WEBHOOKS",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true,
        value_parser = |s: &str| Ok::<_, std::convert::Infallible>(crate::options::Hidden(s.to_owned()))
    )]
    pub webhooks: crate::options::Hidden,
}

/// The webhook settings cannot be used. Says what and where, never a
/// secret's value.
#[derive(Debug, thiserror::Error)]
#[error("SLUICE_WEBHOOKS: {0}")]
pub struct WebhooksError(String);

impl sluice_messages::Failure for WebhooksError {
    fn is_transient(&self) -> bool {
        false
    }
}

/// The targets configured, by name.
#[derive(Clone, Default)]
pub struct WebhookTargets {
    by_name: BTreeMap<String, Arc<Target>>,
}

/// One target: where the event is POSTed, and the key it is signed with.
pub struct Target {
    name: String,
    url: Url,
    key: hmac::Key,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("at", &self.shown())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    url: String,
    secret: Secret,
}

/// The shortest secret accepted.
const MIN_SECRET: usize = 16;

impl WebhookTargets {
    /// Reads the setting: a path to a JSON file, or the JSON itself. Empty:
    /// no target. With `secrets` false only the names and URLs are checked
    /// (the importer refuses unknown names and never signs), so a secret
    /// kept in the saver's environment alone does not stop it.
    pub fn load(setting: &str, secrets: bool) -> Result<Self, WebhooksError> {
        let Some((text, origin)) =
            credentials::named_json(setting, "webhooks").map_err(WebhooksError)?
        else {
            return Ok(WebhookTargets::default());
        };
        let named: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| {
                WebhooksError(format!(
                    "{origin} is not a JSON object of named targets (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
        let mut by_name = BTreeMap::new();
        for (name, value) in named {
            let fail = |what: String| WebhooksError(format!("{origin}: target {name:?} {what}"));
            sluice_messages::validate_webhook_name(&name).map_err(|_| {
                fail("has an invalid name: use 1 to 64 characters of A-Z a-z 0-9 - _ .".into())
            })?;
            let declared: Declared = serde_json::from_value(value).map_err(|e| {
                fail(format!(
                    "is not valid{}: it takes \"url\" and \"secret\" (a string, {{\"env\": NAME}} or {{\"file\": PATH}})",
                    field_named(&e)
                ))
            })?;
            let url = Url::parse(&declared.url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| fail("has a url that is not an http(s) URL".into()))?;
            let secret = if secrets {
                let secret = declared
                    .secret
                    .read("secret")
                    .map_err(|Problem(p)| fail(p))?;
                if secret.chars().count() < MIN_SECRET {
                    return Err(fail(format!(
                        "has a secret shorter than {MIN_SECRET} characters"
                    )));
                }
                secret
            } else {
                String::new()
            };
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            by_name.insert(name.clone(), Arc::new(Target { name, url, key }));
        }
        Ok(WebhookTargets { by_name })
    }

    /// The target named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Target>> {
        self.by_name.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Why a request naming `name` is refused, when it is.
    pub fn refusal(&self, name: &str) -> Option<String> {
        if self.by_name.contains_key(name) {
            return None;
        }
        Some(format!(
            "the request names webhook target {name:?}, which is not configured here: {}",
            if self.is_empty() {
                "none is (SLUICE_WEBHOOKS on the importer and the saver)".to_owned()
            } else {
                format!("those configured are {}", self.names().join(", "))
            }
        ))
    }
}

impl std::fmt::Debug for WebhookTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.values()).finish()
    }
}

impl Target {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The target as errors and logs show it: its name and origin. Many
    /// receivers put their secret in the URL's path (Slack's, Discord's)
    /// or query, so neither is ever shown.
    pub fn shown(&self) -> String {
        let url = &self.url;
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "webhook target {} ({}://{}{port})",
            self.name,
            url.scheme(),
            url.host_str().unwrap_or("")
        )
    }

    /// `Sluice-Signature`'s value for `body` sent at `unix` seconds.
    pub fn signature(&self, unix: u64, body: &[u8]) -> String {
        let mut signed = format!("{unix}.").into_bytes();
        signed.extend_from_slice(body);
        let tag = hmac::sign(&self.key, &signed);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("t={unix},v1={hex}")
    }
}

/// POSTs events to webhook targets, through the download guard.
#[derive(Clone)]
pub struct Poster {
    client: reqwest::Client,
    /// Checked here for an address written as such (the resolver checks
    /// every name it resolves).
    policy: Arc<AddressPolicy>,
}

/// Why a POST did not land: the target answered otherwise than 2xx, or
/// could not be reached. `retry_after`: what the target asked for.
#[derive(Debug)]
pub struct Undelivered {
    pub why: String,
    pub retry_after: Option<Duration>,
}

/// How long one POST may take in all.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

impl Poster {
    pub fn new(deny: Networks, allow: Networks) -> Result<Self, crate::ClientError> {
        crate::install_tls_provider();
        let policy = Arc::new(AddressPolicy { deny, allow });
        let client = crate::client::guarded(policy.clone(), Duration::from_secs(5))
            .timeout(POST_TIMEOUT)
            .build()
            .map_err(crate::ClientError)?;
        Ok(Poster { client, policy })
    }

    /// POSTs `body` (a completion event) with id `event_id` to `target`.
    pub async fn post(
        &self,
        target: &Target,
        event_id: &str,
        body: &[u8],
    ) -> Result<(), Undelivered> {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let shown = target.shown();
        if let Some(Err(refused)) =
            crate::client::literal_ip(&target.url).map(|ip| self.policy.check(ip))
        {
            return Err(Undelivered {
                why: format!("POST to {shown} refused: {refused}"),
                retry_after: None,
            });
        }
        let answer = self
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Sluice-Event-Id", event_id)
            .header("Sluice-Signature", target.signature(unix, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Undelivered {
                why: format!("POST to {shown} failed: {}", chain(&e.without_url())),
                retry_after: None,
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::hosts::retry_after);
        Err(Undelivered {
            why: format!("POST to {shown}: HTTP {}", status.as_u16()),
            retry_after,
        })
    }
}

/// An error and its causes, as one line (the URL taken out: the caller
/// names it, redacted).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_and_their_secrets_never_shown() {
        let loaded = WebhookTargets::load(
            r#"{"billing": {"url": "https://hooks.example.com/x", "secret": "0123456789abcdef-secret"}}"#,
            true,
        )
        .unwrap();
        let target = loaded.get("billing").unwrap();
        assert_eq!(
            target.shown(),
            "webhook target billing (https://hooks.example.com)"
        );
        assert!(!format!("{loaded:?}").contains("/x"));
        assert!(!format!("{loaded:?}").contains("secret\""));
        assert!(!format!("{loaded:?}").contains("0123456789abcdef"));
        assert_eq!(loaded.refusal("billing"), None);
        assert_eq!(
            loaded.refusal("other").unwrap(),
            "the request names webhook target \"other\", which is not configured here: those configured are billing"
        );
        // Stripe's scheme: HMAC-SHA256 of "<t>.<body>".
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef-secret");
        let expected: String = hmac::sign(&key, b"1700000000.{}")
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            target.signature(1_700_000_000, b"{}"),
            format!("t=1700000000,v1={expected}")
        );

        let short =
            WebhookTargets::load(r#"{"a": {"url": "https://h/", "secret": "short"}}"#, true);
        assert!(short.unwrap_err().to_string().contains("shorter than 16"));
        // The importer checks names only: a secret it cannot read is not its concern.
        let names = WebhookTargets::load(
            r#"{"a": {"url": "https://h/", "secret": {"env": "SLUICE_NO_SUCH_VARIABLE"}}}"#,
            false,
        );
        assert_eq!(names.unwrap().names(), ["a"]);
        let bad = WebhookTargets::load(
            r#"{"a": {"url": "ftp://h/", "secret": "0123456789abcdef"}}"#,
            true,
        );
        assert!(bad.unwrap_err().to_string().contains("not an http(s) URL"));
        let leaked = WebhookTargets::load(
            r#"{"a": {"url": "https://h/", "secret": 12345678901234567}}"#,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(!leaked.contains("12345678901234567"), "{leaked}");
    }

    #[tokio::test]
    async fn a_target_on_a_denied_network_is_never_reached() {
        let poster = Poster::new(
            Networks::parse(crate::DEFAULT_DENY).unwrap(),
            Networks::default(),
        )
        .unwrap();
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://[::1]:9/hook",
        ] {
            let targets = WebhookTargets::load(
                &format!(r#"{{"t": {{"url": "{url}", "secret": "0123456789abcdef-secret"}}}}"#),
                true,
            )
            .unwrap();
            let refused = poster
                .post(&targets.get("t").unwrap(), "import-completed/x", b"{}")
                .await
                .unwrap_err();
            assert!(
                refused.why.contains("denied network"),
                "{url}: {}",
                refused.why
            );
        }
    }
}
