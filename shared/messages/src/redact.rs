//! Secrets kept out of what sluice shows: logs, errors, dead letters,
//! `status`. Server settings are parsed with their real grammars (URLs,
//! libpq's `key = value` connection strings) rather than split on
//! separators, since a password may hold a comma, a space or a quote.

/// A server setting fit to show: a URL's password (or a token standing
/// alone as the user) replaced by `***`, and its query string by `?…`,
/// since query parameters may carry secrets too; several comma-separated
/// URLs (NATS) are redacted each. A libpq connection string
/// (`host=db password='a b'`) shows `password=***` and `sslpassword=***`.
pub fn redact_url(setting: &str) -> String {
    let setting = setting.trim();
    if starts_with_scheme(setting) {
        split_urls(setting)
            .iter()
            .map(|url| redact_one_url(url.trim()))
            .collect::<Vec<_>>()
            .join(",")
    } else if setting.contains('=') {
        redact_conninfo(setting)
    } else {
        // `host:port`, or `user:pass@host:port` without a scheme.
        match setting.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => setting.to_owned(),
        }
    }
}

/// Whether `text` begins as a URL does (`scheme://`): a connection string
/// may hold `://` inside a quoted value.
fn starts_with_scheme(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    })
}

/// Splits a list of NATS URLs at its commas, as sluice's NATS settings
/// read it (a comma in a NATS password must be percent-encoded). Only NATS
/// takes lists: `postgres://u:pa,ss@db` is one URL whatever it holds.
fn split_urls(list: &str) -> Vec<&str> {
    let scheme = list.split("://").next().unwrap_or("").to_ascii_lowercase();
    if matches!(scheme.as_str(), "nats" | "tls" | "ws" | "wss") {
        list.split(',').filter(|u| !u.trim().is_empty()).collect()
    } else {
        vec![list]
    }
}

/// One URL: everything up to its last `@` is userinfo, and what follows
/// `?` after it is the query. A raw `@`, `/`, `?` or `,` in a password must
/// not let any of it through, so this may mask more than a URL parser
/// would (an `@` in the query hides the host), never less.
fn redact_one_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_url(url);
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, _)) => (r, "?…"),
        None => (rest, ""),
    };
    let user = match userinfo {
        // The user name is shown; a password in it (a raw `?` or `/`
        // before the `:`) would make it no URL a client reads.
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _)) if !user.contains(['/', '?', '#']) => format!("{user}:***@"),
            Some(_) => "***@".to_owned(),
            // `nats://TOKEN@host`: the lone user may be the secret.
            None if scheme.starts_with("nats") || scheme == "tls" => "***@".to_owned(),
            None if userinfo.contains(['/', '?', '#']) => "***@".to_owned(),
            None => format!("{userinfo}@"),
        },
        None => String::new(),
    };
    format!("{scheme}://{user}{rest}{query}")
}

/// libpq's `key = value` form: spaces around `=` allowed, values quoted
/// with `'…'` (with `\'` and `\\` inside) or bare (with `\` escapes).
/// What cannot be read as such is not shown past the first secret key.
fn redact_conninfo(conninfo: &str) -> String {
    const SECRET_KEYS: [&str; 2] = ["password", "sslpassword"];
    let mut shown = Vec::new();
    let mut rest = conninfo.trim_start();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            return mask_from_secret(conninfo, &SECRET_KEYS);
        };
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return mask_from_secret(conninfo, &SECRET_KEYS);
        }
        let (value, after) = match conninfo_value(rest[eq + 1..].trim_start()) {
            Some(found) => found,
            None => return mask_from_secret(conninfo, &SECRET_KEYS),
        };
        if SECRET_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k)) {
            shown.push(format!("{key}=***"));
        } else {
            shown.push(format!("{key}={value}"));
        }
        rest = after.trim_start();
    }
    shown.join(" ")
}

/// A value and what follows it, or `None` for an unterminated quote.
fn conninfo_value(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    if let Some(quoted) = text.strip_prefix('\'') {
        let mut chars = quoted.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next()?.1),
                '\'' => return Some((format!("'{value}'"), &quoted[at + 1..])),
                c => value.push(c),
            }
        }
        return None;
    }
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next().map_or('\\', |(_, c)| c)),
            c if c.is_whitespace() => return Some((value, &text[at..])),
            c => value.push(c),
        }
    }
    Some((value, ""))
}

/// Everything from the first secret key on, masked: for text that is not
/// a connection string libpq could read either.
fn mask_from_secret(text: &str, keys: &[&str]) -> String {
    let lower = text.to_ascii_lowercase();
    match keys.iter().filter_map(|k| lower.find(k)).min() {
        Some(at) => format!("{}***", &text[..at]),
        None => text.to_owned(),
    }
}

/// The URL of a file fit to show or store for display: without userinfo
/// (`reader:TOKEN@`), query (`?sig=…` of a presigned URL becomes `?…`) or
/// fragment. Used for every file URL in errors, dead-letter fields, facts,
/// logs and `sluice status`; the messages themselves keep the real URL.
pub fn redact_file_url(url: &str) -> String {
    // What the downloader will fetch, spelled the way it reads it: the
    // parser takes `http:user:pass@host` and `http:\\host` as URLs too.
    if let Ok(mut parsed) = url::Url::parse(url.trim()) {
        if parsed.has_host() {
            let had_query = parsed.query().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut shown = parsed.to_string();
            if had_query {
                shown.push_str("?…");
            }
            return shown;
        }
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        let head = url.split(['?', '#']).next().unwrap_or("");
        return head.rsplit_once('@').map_or(head, |(_, h)| h).to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..end]
        .rsplit_once('@')
        .map_or(&rest[..end], |(_, h)| h);
    let rest = &rest[end..];
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let query = if rest[path_end..].starts_with('?') {
        "?…"
    } else {
        ""
    };
    format!("{scheme}://{host}{}{query}", &rest[..path_end])
}

#[cfg(test)]
mod redact_tests {
    use super::{redact_file_url, redact_url};

    #[test]
    fn file_urls_lose_userinfo_query_and_fragment() {
        assert_eq!(
            redact_file_url("http://reader:TOKEN@host:8080/a/file.csv?sig=SIGNATURE&x=1#frag"),
            "http://host:8080/a/file.csv?…"
        );
        assert_eq!(redact_file_url("https://TOKEN@host?x=1"), "https://host/?…");
        assert_eq!(redact_file_url("https://h/p/f.csv"), "https://h/p/f.csv");
        assert_eq!(
            redact_file_url("https://h/p@x/f.csv"),
            "https://h/p@x/f.csv"
        );
        // Spellings the URL parser accepts as the same URL.
        assert_eq!(
            redact_file_url("http:reader:TOKEN@host/a.csv"),
            "http://host/a.csv"
        );
        assert_eq!(
            redact_file_url("http:\\\\u:TOKEN@host/a.csv?s=1"),
            "http://host/a.csv?…"
        );
        // Not a URL at all: nothing after `?` or `#`, or before `@`.
        assert_eq!(redact_file_url("not a url?secret"), "not a url");
        assert_eq!(redact_file_url("user:TOKEN@nowhere"), "nowhere");
    }

    #[test]
    fn redacted_urls_show_no_secret() {
        assert_eq!(
            redact_url("postgres://sluice:s3cret@db:5432/sluice?sslmode=require&password=x"),
            "postgres://sluice:***@db:5432/sluice?…"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/sluice"),
            "postgres://postgres@127.0.0.1:5432/sluice"
        );
        assert_eq!(
            redact_url("nats://tok3n@a:4222, nats://u:p@b:4222"),
            "nats://***@a:4222,nats://u:***@b:4222"
        );
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("host=db password=x user=u"),
            "host=db password=*** user=u"
        );
    }

    #[test]
    fn passwords_of_every_shape_are_hidden() {
        // (setting, what is shown): a comma, a space, quotes, spaces
        // around `=`, a raw `@`, an escaped quote.
        for (setting, shown) in [
            (
                "postgres://u:PG,SECRET@db:5432/x",
                "postgres://u:***@db:5432/x",
            ),
            ("password='PG SECRET' host=db", "password=*** host=db"),
            (
                "host=db password = PGSECRET user=u",
                "host=db password=*** user=u",
            ),
            ("password='it\\'s SECRET'", "password=***"),
            ("postgres://u:PG@SECRET@db/x", "postgres://u:***@db/x"),
            ("postgres://u:PG?SECRET@db/x?a=1", "postgres://u:***@db/x?…"),
            ("postgres://u:PG/SE#CRET@db/x", "postgres://u:***@db/x"),
            (
                "nats://u:SECRET@h1:4222, nats://h2:4222",
                "nats://u:***@h1:4222,nats://h2:4222",
            ),
            ("host=db sslpassword=SECRET", "host=db sslpassword=***"),
            ("host=db password='a://SECRET'", "host=db password=***"),
            // Unreadable as a connection string: nothing from the key on.
            ("host=db password='SECRET", "host=db ***"),
            ("u:SECRET@127.0.0.1:4222", "***@127.0.0.1:4222"),
        ] {
            let redacted = redact_url(setting);
            assert_eq!(redacted, shown, "{setting}");
            assert!(!redacted.contains("SECRET"), "{setting}: {redacted}");
        }
        assert_eq!(
            redact_url("host='my db' port=5432"),
            "host='my db' port=5432"
        );
    }
}
