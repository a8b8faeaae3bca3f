//! Who may act (cancel, replay), and proof that a form was sent from the
//! console's own page (CSRF).
//!
//! Reading is open to whoever reaches the console. Acting needs one of:
//! - a session cookie, which signing in with `SLUICE_CONSOLE_TOKEN` sets:
//!   `v1.<expiry>.<HMAC of the expiry>`, keyed from the token, so every
//!   replica accepts it and changing the token signs everyone out;
//! - the header a trusted proxy sets to the signed-in user.
//!
//! Every form that acts carries a CSRF token, the HMAC of who acts, which
//! the page an attacker makes cannot read; a browser's `Origin` must also
//! be the console's own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::HeaderMap;
use ring::{digest, hmac, rand};

/// The session cookie's name.
pub const COOKIE: &str = "sluice_console";

/// How long a sign-in lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);

/// The shortest token accepted: a short one could be guessed.
const MIN_TOKEN: usize = 16;

pub struct Access {
    /// Signs sessions; checks the token offered at sign-in.
    token: Option<Token>,
    /// The header a trusted proxy names the user in.
    header: Option<hyper::header::HeaderName>,
    /// Signs CSRF tokens: from the token when set, so replicas agree;
    /// random otherwise (one replica behind the proxy, or sticky sessions).
    csrf: hmac::Key,
}

struct Token {
    /// Its own HMAC under `check`: compared in constant time.
    tag: hmac::Tag,
    check: hmac::Key,
    sessions: hmac::Key,
}

/// Someone allowed to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Signed in with the token: the session cookie's value.
    Session(String),
    /// Named by the trusted proxy.
    Proxy(String),
}

impl Actor {
    /// Who, as the console shows it.
    pub fn name(&self) -> &str {
        match self {
            Actor::Session(_) => "token holder",
            Actor::Proxy(user) => user,
        }
    }
}

impl Access {
    pub fn new(token: Option<&str>, header: Option<&str>) -> Result<Self, String> {
        let rng = rand::SystemRandom::new();
        let random_key = || {
            hmac::Key::generate(hmac::HMAC_SHA256, &rng)
                .map_err(|_| "the system's random number generator failed".to_owned())
        };
        let derived = |purpose: &str, token: &str| {
            let seed = digest::digest(
                &digest::SHA256,
                format!("sluice-console:{purpose}:{token}").as_bytes(),
            );
            hmac::Key::new(hmac::HMAC_SHA256, seed.as_ref())
        };
        let token = match token.filter(|t| !t.is_empty()) {
            Some(t) if t.chars().count() < MIN_TOKEN => {
                return Err(format!(
                    "SLUICE_CONSOLE_TOKEN is too short: at least {MIN_TOKEN} characters"
                ))
            }
            Some(t) => {
                let check = random_key()?;
                Some((
                    Token {
                        tag: hmac::sign(&check, t.as_bytes()),
                        check,
                        sessions: derived("session", t),
                    },
                    derived("csrf", t),
                ))
            }
            None => None,
        };
        let header =
            match header.filter(|h| !h.is_empty()) {
                Some(h) => Some(hyper::header::HeaderName::from_bytes(h.as_bytes()).map_err(
                    |_| format!("SLUICE_CONSOLE_AUTH_HEADER {h:?} is not a header name"),
                )?),
                None => None,
            };
        let (token, csrf) = match token {
            Some((token, csrf)) => (Some(token), csrf),
            None => (None, random_key()?),
        };
        Ok(Access {
            token,
            header,
            csrf,
        })
    }

    /// Whether anyone can act at all.
    pub fn actions_enabled(&self) -> bool {
        self.token.is_some() || self.header.is_some()
    }

    /// Whether signing in with a token is offered.
    pub fn sign_in_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// For the start-up log line.
    pub fn describe(&self) -> &'static str {
        match (&self.token, &self.header) {
            (None, None) => "none (read-only: set SLUICE_CONSOLE_TOKEN or SLUICE_CONSOLE_AUTH_HEADER to cancel and replay)",
            (Some(_), None) => "for whoever signs in with SLUICE_CONSOLE_TOKEN",
            (None, Some(_)) => "for users the proxy names in SLUICE_CONSOLE_AUTH_HEADER",
            (Some(_), Some(_)) => "for token holders and users the proxy names",
        }
    }

    /// Who sent this request, if they may act.
    pub fn actor(&self, headers: &HeaderMap) -> Option<Actor> {
        if let Some(name) = &self.header {
            let user = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim);
            if let Some(user) = user.filter(|u| !u.is_empty()) {
                return Some(Actor::Proxy(user.to_owned()));
            }
        }
        let token = self.token.as_ref()?;
        let session = cookie(headers, COOKIE)?;
        let (expiry, signature) = session.strip_prefix("v1.")?.split_once('.')?;
        let expiry: u64 = expiry.parse().ok()?;
        let signature = hex_decode(signature)?;
        hmac::verify(
            &token.sessions,
            format!("session:{expiry}").as_bytes(),
            &signature,
        )
        .ok()?;
        (expiry > now()).then(|| Actor::Session(session.to_owned()))
    }

    /// A new session's cookie value, if `offered` is the token.
    pub fn sign_in(&self, offered: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        hmac::verify(&token.check, offered.as_bytes(), token.tag.as_ref()).ok()?;
        let expiry = now() + SESSION.as_secs();
        let signature = hmac::sign(&token.sessions, format!("session:{expiry}").as_bytes());
        Some(format!("v1.{expiry}.{}", hex(signature.as_ref())))
    }

    /// The CSRF token the forms of `actor` carry.
    pub fn csrf_token(&self, actor: &Actor) -> String {
        hex(hmac::sign(&self.csrf, csrf_message(actor).as_bytes()).as_ref())
    }

    /// Whether a form's CSRF token is `actor`'s.
    pub fn csrf_ok(&self, actor: &Actor, offered: &str) -> bool {
        hex_decode(offered).is_some_and(|tag| {
            hmac::verify(&self.csrf, csrf_message(actor).as_bytes(), &tag).is_ok()
        })
    }

    /// The signature a notice carried by a redirect needs to be shown: a
    /// link someone else wrote cannot put words in the console's mouth.
    pub fn sign_notice(&self, notice: &str) -> String {
        hex(hmac::sign(&self.csrf, format!("notice:{notice}").as_bytes()).as_ref())
    }

    /// Whether `signature` is the console's own for `notice`.
    pub fn notice_ok(&self, notice: &str, signature: &str) -> bool {
        hex_decode(signature).is_some_and(|tag| {
            hmac::verify(&self.csrf, format!("notice:{notice}").as_bytes(), &tag).is_ok()
        })
    }

    /// How long a session lasts, for the cookie's `Max-Age`.
    pub fn session_seconds() -> u64 {
        SESSION.as_secs()
    }
}

fn csrf_message(actor: &Actor) -> String {
    match actor {
        Actor::Session(session) => format!("csrf:session:{session}"),
        Actor::Proxy(user) => format!("csrf:proxy:{user}"),
    }
}

/// A browser's request came from one of the console's pages: its `Origin`
/// (or, without one, `Sec-Fetch-Site`) says so. A request no browser made
/// carries neither; it still needs the session and CSRF token.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
        (None, _) => header("sec-fetch-site").is_none_or(|site| site == "same-origin"),
    }
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn without_settings_nobody_may_act() {
        let access = Access::new(None, None).unwrap();
        assert!(!access.actions_enabled());
        assert_eq!(access.actor(&headers(&[("x-forwarded-user", "eve")])), None);
        assert_eq!(
            access.actor(&headers(&[("cookie", "sluice_console=v1.99999999999.00")])),
            None
        );
        assert_eq!(access.sign_in("anything at all, really"), None);
    }

    #[test]
    fn a_token_signs_in_and_a_forged_or_expired_session_does_not_count() {
        assert!(Access::new(Some("short"), None).is_err());
        let access = Access::new(Some("a-token-long-enough"), None).unwrap();
        assert_eq!(access.sign_in("a-token-long-enougH"), None);
        let session = access.sign_in("a-token-long-enough").unwrap();
        let actor = access
            .actor(&headers(&[(
                "cookie",
                &format!("theme=dark; {COOKIE}={session}"),
            )]))
            .unwrap();
        assert_eq!(actor, Actor::Session(session.clone()));
        // Another expiry under the same signature, and another token's session.
        let (_, signature) = session.rsplit_once('.').unwrap();
        let forged = format!("v1.{}.{signature}", now() + 10 * 365 * 86400);
        assert_eq!(
            access.actor(&headers(&[("cookie", &format!("{COOKIE}={forged}"))])),
            None
        );
        let other = Access::new(Some("another-token-long-enough"), None).unwrap();
        assert_eq!(
            other.actor(&headers(&[("cookie", &format!("{COOKIE}={session}"))])),
            None
        );
        // A proxy header means nothing unless configured.
        assert_eq!(access.actor(&headers(&[("x-forwarded-user", "eve")])), None);
        // Two replicas with one token accept each other's sessions.
        let replica = Access::new(Some("a-token-long-enough"), None).unwrap();
        assert!(replica
            .actor(&headers(&[("cookie", &format!("{COOKIE}={session}"))]))
            .is_some());
        assert!(replica.csrf_ok(&actor, &access.csrf_token(&actor)));
    }

    #[test]
    fn a_csrf_token_is_bound_to_who_acts() {
        let access = Access::new(None, Some("X-Forwarded-User")).unwrap();
        let alice = access
            .actor(&headers(&[("x-forwarded-user", "alice")]))
            .unwrap();
        let bob = Actor::Proxy("bob".into());
        let token = access.csrf_token(&alice);
        assert!(access.csrf_ok(&alice, &token));
        assert!(!access.csrf_ok(&bob, &token));
        assert!(!access.csrf_ok(&alice, ""));
        assert!(!access.csrf_ok(&alice, "zz"));
        let signed = access.sign_notice("Replayed 1 dead letter(s).");
        assert!(access.notice_ok("Replayed 1 dead letter(s).", &signed));
        assert!(!access.notice_ok("Session expired: sign in at https://evil.example", &signed));
    }

    #[test]
    fn only_the_consoles_own_origin_may_post() {
        let host = ("host", "console.example:8080");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://console.example:8080")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://console.example:8080")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin(&headers(&[host])));
    }
}
