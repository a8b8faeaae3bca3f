//! NATS decentralized authentication ("operator mode") for tests: the
//! JWTs and the credentials file `nsc` would make, signed here with `nkeys`
//! so that no Go tool is needed. The formats are those of nats-io/jwt v2.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use nkeys::KeyPair;
use serde_json::{json, Value};

/// The only header v2 writes. nats-server takes an operator JWT written
/// inline in its config only if it starts with `eyJ` (`{"` in base64).
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// A JWT in which `issuer` vouches for `subject`; `nats` is what the type
/// of claim adds.
fn encode(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = json!({
        // nats-io/jwt derives the id from a hash of the claims; nothing
        // checks how, it only has to be unique.
        "jti": format!("{:016X}{:016X}", fastrand::u64(..), fastrand::u64(..)),
        "iat": issued_at,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    // v2 signs the header and the claims together (v1 signed the claims).
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer.sign(signed.as_bytes()).expect("an NKey with a seed");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The operator's own JWT: it signs itself, and the server trusts it.
pub fn operator_jwt(operator: &KeyPair, system_account: &str) -> String {
    encode(
        operator,
        &operator.public_key(),
        "sluice-test-operator",
        json!({ "type": "operator", "version": 2, "system_account": system_account }),
    )
}

/// An account the operator signed. Every limit is spelt out: a limit left
/// out reads as 0, which for payloads or connections means none at all and
/// for storage means no JetStream.
pub fn account_jwt(operator: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1,
        "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[limit] = json!(-1);
        }
    }
    encode(
        operator,
        &account.public_key(),
        name,
        json!({ "type": "account", "version": 2, "limits": limits }),
    )
}

/// A user the account signed, with no limits and every permission.
pub fn user_jwt(account: &KeyPair, user: &KeyPair, name: &str) -> String {
    encode(
        account,
        &user.public_key(),
        name,
        json!({ "type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1 }),
    )
}

/// A credentials file as `nsc generate creds` writes it (what
/// `nats --creds` and the clients read): the user's JWT and its seed.
pub fn creds(user_jwt: &str, user: &KeyPair) -> String {
    let seed = user.seed().expect("a user made with its seed");
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}
