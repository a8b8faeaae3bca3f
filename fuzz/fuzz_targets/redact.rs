//! URL redaction never shows what a URL's userinfo or query held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_messages::redact_file_url;

fuzz_target!(|input: (&str, &str, &str, &str)| {
    let (host, path, secret, query) = input;
    // `…` is what redaction writes in place of a query.
    let clean = |s: &str| !s.is_empty() && !s.contains(['@', '/', '?', '#', ':', ' ', '…']);
    // A secret short enough to occur in `https` by chance proves nothing.
    if secret.len() < 6 || !clean(host) || !clean(secret) || host.contains(secret) || path.contains(secret) {
        return;
    }
    if path.contains(['?', '#']) {
        return;
    }
    let url = format!("https://user:{secret}@{host}/{path}?sig={secret}{query}");
    let shown = redact_file_url(&url);
    assert!(!shown.contains(secret), "{url} shown as {shown}");
    assert_eq!(shown, format!("https://{host}/{path}?…"));
});
