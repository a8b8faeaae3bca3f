//! URL redaction never shows what a URL's userinfo or query held, however
//! the URL parser normalises the rest (case, percent-encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_messages::redact_file_url;

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
});
