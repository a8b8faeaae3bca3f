//! Redaction never shows a secret: what a file URL's userinfo or query
//! held, however the URL parser normalises the rest (case,
//! percent-encoding); and a password of any shape in a server setting,
//! as a URL or as libpq's `key = value` form, quoted or not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_messages::{redact_file_url, redact_url};

fuzz_target!(|input: (&str, &str, &str, &str)| {
    let (host, path, secret, query) = input;
    // A secret of letters and digits, long enough not to occur by chance in
    // `https` or an encoding, and nowhere else in the URL.
    let lower = secret.to_ascii_lowercase();
    if secret.len() < 6
        || !secret.bytes().all(|b| b.is_ascii_alphanumeric())
        || host.to_ascii_lowercase().contains(&lower)
        || path.to_ascii_lowercase().contains(&lower)
    {
        return;
    }
    // Host and path the parser keeps as they are (it lowercases, maps and
    // percent-encodes others, which could spell the secret by accident):
    // the property is about userinfo and query, whatever they hold.
    let kept = |s: &str, extra: &[u8]| s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if host.is_empty() || !kept(host, b"-.") || !kept(path, b"-._~/") {
        return;
    }
    let url = format!("https://user:{secret}@{host}/{path}?sig={secret}{query}");
    let shown = redact_file_url(&url);
    assert!(
        !shown.to_ascii_lowercase().contains(&lower),
        "{url:?} shown as {shown:?}"
    );
    assert!(shown.ends_with("?…"), "{url:?} shown as {shown:?}");

    // A password made of the secret and whatever the fuzzer puts around it
    // (`query` stands for the characters a person may type: commas,
    // spaces, quotes, `@`, `=`), in each form a server setting takes.
    let password = format!("{query}{secret}{query}");
    // The secret must be found only where it was put: not in what is
    // around it, nor in the words of the settings themselves.
    const WORDS: &str = "postgres://sluice:***@:5432/ host= password='' user=sluice nats://:4222,";
    if password.contains(['\0', '\n', '\r']) || query.contains(secret) || WORDS.contains(secret) {
        return;
    }
    let escaped = password.replace('\\', "\\\\").replace('\'', "\\'");
    for setting in [
        format!("postgres://sluice:{password}@{host}:5432/{path}"),
        format!("host={host} password='{escaped}' user=sluice"),
        format!("host={host} password = '{escaped}'"),
    ] {
        let shown = redact_url(&setting);
        assert!(!shown.contains(secret), "{setting:?} shown as {shown:?}");
    }
    // NATS takes a list of URLs separated by commas, so a comma cannot be
    // part of a NATS password (it must be percent-encoded).
    if !password.contains(',') {
        let setting = format!("nats://sluice:{password}@{host}:4222, nats://{host}:4223");
        let shown = redact_url(&setting);
        assert!(!shown.contains(secret), "{setting:?} shown as {shown:?}");
    }
    if !password.contains(char::is_whitespace) && !password.contains(['\'', '\\']) {
        let setting = format!("host={host} password={password} user=sluice");
        let shown = redact_url(&setting);
        assert!(!shown.contains(secret), "{setting:?} shown as {shown:?}");
    }
});
