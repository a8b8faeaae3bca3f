//! `sluice dead-letters list | show | replay`.

use anyhow::anyhow;

use clap::Subcommand;
use sluice_messages::DeadLetterKind;
use sluice_operator::dead_letters::{DeadLetters, Filter, StoredLetter};
use sluice_stage::NatsArgs;

#[derive(clap::Args, Debug)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One line per dead letter, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter in full, as JSON.
    Show { sequence: u64 },
    /// Publish dead-lettered messages again on their original subjects, then
    /// delete them. Name sequences, or select with filters (`--all` for every one).
    Replay {
        sequences: Vec<u64>,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args, Debug)]
struct FilterArgs {
    /// Only this import's dead letters.
    #[arg(long = "import")]
    import_id: Option<String>,
    /// Only this stage's: importer, fetcher or saver.
    #[arg(long, value_parser = ["importer", "fetcher", "saver"])]
    stage: Option<String>,
    /// Only this kind: permanent, exhausted, malformed-row or conflict.
    #[arg(long, value_parser = parse_kind)]
    kind: Option<DeadLetterKind>,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            import_id: self.import_id.clone(),
            stage: self.stage.clone(),
            kind: self.kind,
        }
    }

    fn is_empty(&self) -> bool {
        self.import_id.is_none() && self.stage.is_none() && self.kind.is_none()
    }
}

fn parse_kind(text: &str) -> anyhow::Result<DeadLetterKind> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        anyhow!("{text:?} is not one of permanent, exhausted, malformed-row, conflict")
    })
}

pub async fn run(args: DeadLettersArgs) -> anyhow::Result<()> {
    let (client, js) = crate::explain::connect_nats(&args.nats, "sluice-dead-letters").await?;
    let mut store = DeadLetters::open(&js, &args.nats.namespace).await?;
    let result = match args.command {
        Command::List { filter, json } => list(&mut store, &filter.filter(), json).await,
        Command::Show { sequence } => match store.get(sequence).await? {
            Some(stored) => {
                let shown = for_display(&stored.letter);
                outln!(
                    "{}",
                    escape_c1(serde_json::to_string_pretty(&shown).expect("encodes"))
                );
                Ok(())
            }
            None => Err(anyhow!("there is no dead letter {sequence}")),
        },
        Command::Replay {
            sequences,
            filter,
            all,
        } => replay(&mut store, sequences, &filter, all).await,
    };
    let _ = client.flush().await;
    result
}

async fn list(store: &mut DeadLetters, filter: &Filter, json: bool) -> anyhow::Result<()> {
    let letters = store.list(filter).await?;
    if json {
        for stored in &letters {
            let mut value = for_display(&stored.letter);
            value["sequence"] = stored.sequence.into();
            outln!("{}", escape_c1(value.to_string()));
        }
        return Ok(());
    }
    for line in table(&letters) {
        outln!("{line}");
    }
    eprintln!("{} dead letter(s)", letters.len());
    Ok(())
}

async fn replay(
    store: &mut DeadLetters,
    sequences: Vec<u64>,
    filter: &FilterArgs,
    all: bool,
) -> anyhow::Result<()> {
    let chosen: Vec<StoredLetter> = if !sequences.is_empty() {
        let mut chosen = Vec::new();
        for sequence in sequences {
            chosen.push(
                store
                    .get(sequence)
                    .await?
                    .ok_or_else(|| format!("there is no dead letter {sequence}"))
                    .map_err(anyhow::Error::msg)?,
            );
        }
        chosen
    } else if all || !filter.is_empty() {
        store.list(&filter.filter()).await?
    } else {
        return Err(anyhow!(
            "name the dead letters to replay: sequences, --import/--stage/--kind, or --all"
        ));
    };
    let report = store.replay_all(&chosen).await?;
    for sequence in &report.replayed {
        if let Some(stored) = chosen.iter().find(|s| s.sequence == *sequence) {
            outln!(
                "replayed {} to {}",
                stored.sequence,
                printable(&stored.letter.subject)
            );
        }
    }
    for refusal in &report.refused {
        eprintln!("{}", printable(&refusal.reason));
    }
    let (replayed, skipped, refused) = (
        report.replayed.len(),
        report.skipped.len(),
        report.refused.len(),
    );
    eprintln!(
        "replayed {replayed} dead letter(s); skipped {skipped} malformed-row report(s){}",
        if refused > 0 {
            format!(", refused {refused} that named no input of their stage")
        } else {
            String::new()
        }
    );
    if refused > 0 {
        return Err(anyhow!("{refused} dead letter(s) refused"));
    }
    Ok(())
}

/// The table `list` prints, one line per letter: the IMPORT column as wide
/// as the widest id shown (ids are up to 128 characters), so no column is
/// pushed out of line and no id is cut.
fn table(letters: &[StoredLetter]) -> Vec<String> {
    let imports: Vec<String> = letters
        .iter()
        .map(|s| printable(s.letter.import_id.as_deref().unwrap_or("-")))
        .collect();
    let width = imports
        .iter()
        .map(|id| id.chars().count())
        .chain(["IMPORT".len()])
        .max()
        .unwrap_or_default();
    let mut lines = vec![format!(
        "{:>6}  {:<20}  {:<8}  {:<13}  {:<width$}  ERROR",
        "SEQ", "TIME", "STAGE", "KIND", "IMPORT"
    )];
    for (
        StoredLetter {
            sequence, letter, ..
        },
        import,
    ) in letters.iter().zip(&imports)
    {
        lines.push(format!(
            "{sequence:>6}  {:<20}  {:<8}  {:<13}  {import:<width$}  {}",
            printable(letter.time.get(..19).unwrap_or(&letter.time)),
            printable(&letter.stage),
            letter.kind.as_str(),
            printable(&letter.error)
        ));
    }
    lines
}

/// Text from a dead letter, safe on a terminal: a letter is data anyone able
/// to publish can forge, and control characters in it could rewrite the
/// screen, so they are shown escaped (`\u{1b}`).
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// JSON escapes C0 controls but leaves DEL and the C1 range (some terminals
/// read U+009B as an escape sequence): escape those too, still valid JSON.
fn escape_c1(json: String) -> String {
    json.chars()
        .map(|c| match c {
            '\u{7f}'..='\u{9f}' => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// A letter as shown: the URLs it quotes without userinfo or query (the
/// stored body keeps them, since a replay needs the real URL).
fn for_display(letter: &sluice_messages::DeadLetter) -> serde_json::Value {
    use serde_json::Value;
    let mut value = serde_json::to_value(letter).expect("encodes");
    let redact_fields = |body: &mut Value| {
        if let Value::Object(fields) = body {
            for key in ["url", "transactions_url"] {
                if let Some(Value::String(url)) = fields.get_mut(key) {
                    *url = sluice_messages::redact_file_url(url);
                }
            }
        }
    };
    redact_fields(&mut value);
    // A body that is not UTF-8 is stored as base64, which would show its
    // secrets to anyone who decodes it: it is shown as text, lossily,
    // redacted like any other body, and never as base64.
    let body = match (&letter.body, &letter.body_base64) {
        (Some(body), _) => Some(body.clone()),
        (None, Some(encoded)) => {
            use base64::Engine;
            if let Value::Object(fields) = &mut value {
                fields.remove("body_base64");
                fields.insert("body_not_utf8".into(), true.into());
            }
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .unwrap_or_default(),
            )
        }
        (None, None) => None,
    };
    if let Some(body) = &body {
        let shown = match serde_json::from_str::<Value>(body) {
            Ok(mut json) => {
                redact_fields(&mut json);
                json.to_string()
            }
            // A plain-text import request is the URL itself.
            Err(_) => sluice_messages::redact_file_url(body.trim()),
        };
        value["body"] = shown.into();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(sequence: u64, import_id: Option<&str>) -> StoredLetter {
        StoredLetter {
            sequence,
            subject: "dead-letters.fetcher".into(),
            letter: serde_json::from_value(serde_json::json!({
                "stage": "fetcher", "kind": "permanent", "error": "HTTP 404",
                "import_id": import_id, "subject": "account-updates",
                "delivered": 1, "time": "2026-12-03T07:43:07.123456Z"
            }))
            .unwrap(),
            headers: async_nats::HeaderMap::new(),
        }
    }

    #[test]
    fn the_import_column_fits_the_widest_id() {
        let lines = table(&[
            stored(1, Some("12345-20261203T074307Z")),
            stored(22, None),
            stored(333, Some("march")),
        ]);
        let error_at = lines[0].find("ERROR").unwrap();
        for line in &lines[1..] {
            assert_eq!(line.find("HTTP 404"), Some(error_at), "{lines:#?}");
        }
        assert!(
            lines[1].contains("  12345-20261203T074307Z  HTTP 404"),
            "{lines:#?}"
        );
        // Short ids: the column is as wide as its header.
        let short = table(&[stored(1, Some("march"))]);
        assert!(
            short[0].ends_with("KIND           IMPORT  ERROR"),
            "{short:#?}"
        );
    }

    #[test]
    fn letters_are_shown_without_control_characters_or_secrets() {
        assert_eq!(
            printable("bad\u{1b}[2J\r\nrow\u{9b}31m"),
            "bad\\u{1b}[2J\\r\\nrow\\u{9b}31m"
        );
        assert_eq!(
            escape_c1("\"a\u{9b}b\u{7f}\"".into()),
            "\"a\\u009bb\\u007f\""
        );
        let letter: sluice_messages::DeadLetter = serde_json::from_value(serde_json::json!({
            "stage": "fetcher", "kind": "permanent", "error": "e", "subject": "account-updates",
            "body": "{\"import_id\":\"1\",\"account_id\":2,\"transactions_url\":\"http://u:TOKEN@h/f.csv?sig=SIG\"}",
            "delivered": 1, "time": "t"
        }))
        .unwrap();
        let shown = for_display(&letter).to_string();
        assert!(
            !shown.contains("TOKEN") && !shown.contains("SIG"),
            "{shown}"
        );
        assert!(shown.contains("http://h/f.csv?…"), "{shown}");

        // A body that is not UTF-8 travels as base64: never shown as such.
        use base64::Engine;
        let raw = b"http://reader:SECRET@h/a.csv?sig=SIG\xff";
        let letter: sluice_messages::DeadLetter = serde_json::from_value(serde_json::json!({
            "stage": "importer", "kind": "permanent", "error": "e", "subject": "imports",
            "body_base64": base64::engine::general_purpose::STANDARD.encode(raw),
            "delivered": 1, "time": "t"
        }))
        .unwrap();
        let shown = for_display(&letter);
        let text = shown.to_string();
        assert!(!text.contains("SECRET") && !text.contains("SIG"), "{text}");
        assert!(shown.get("body_base64").is_none(), "{text}");
        assert_eq!(shown["body"], "http://h/a.csv?…", "{text}");
    }
}
