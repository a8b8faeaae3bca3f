//! `sluice dead-letters list | show | replay`.

use clap::Subcommand;
use sluice_messages::DeadLetterKind;
use sluice_stage::{
    dead_letters::{DeadLetters, Filter, StoredLetter},
    NatsArgs,
};

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
    /// Only this kind: permanent, exhausted or malformed-row.
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

fn parse_kind(text: &str) -> Result<DeadLetterKind, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?} is not one of permanent, exhausted, malformed-row"))
}

pub async fn run(args: DeadLettersArgs) -> Result<(), String> {
    let (client, js) = crate::explain::connect_nats(&args.nats, "sluice-dead-letters").await?;
    let mut store = DeadLetters::open(&js, &args.nats.namespace).await?;
    let result = match args.command {
        Command::List { filter, json } => list(&mut store, &filter.filter(), json).await,
        Command::Show { sequence } => match store.get(sequence).await? {
            Some(stored) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&stored.letter).expect("encodes")
                );
                Ok(())
            }
            None => Err(format!("there is no dead letter {sequence}")),
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

async fn list(store: &mut DeadLetters, filter: &Filter, json: bool) -> Result<(), String> {
    let letters = store.list(filter).await?;
    if json {
        for stored in &letters {
            let mut value = serde_json::to_value(&stored.letter).expect("encodes");
            value["sequence"] = stored.sequence.into();
            println!("{value}");
        }
        return Ok(());
    }
    println!(
        "{:>6}  {:<20}  {:<8}  {:<13}  {:<12}  ERROR",
        "SEQ", "TIME", "STAGE", "KIND", "IMPORT"
    );
    for StoredLetter { sequence, letter } in &letters {
        println!(
            "{sequence:>6}  {:<20}  {:<8}  {:<13}  {:<12}  {}",
            letter.time.get(..19).unwrap_or(&letter.time),
            letter.stage,
            letter.kind.as_str(),
            letter.import_id.as_deref().unwrap_or("-"),
            letter.error
        );
    }
    eprintln!("{} dead letter(s)", letters.len());
    Ok(())
}

async fn replay(
    store: &mut DeadLetters,
    sequences: Vec<u64>,
    filter: &FilterArgs,
    all: bool,
) -> Result<(), String> {
    let chosen: Vec<StoredLetter> = if !sequences.is_empty() {
        let mut chosen = Vec::new();
        for sequence in sequences {
            chosen.push(
                store
                    .get(sequence)
                    .await?
                    .ok_or_else(|| format!("there is no dead letter {sequence}"))?,
            );
        }
        chosen
    } else if all || !filter.is_empty() {
        store.list(&filter.filter()).await?
    } else {
        return Err(
            "name the dead letters to replay: sequences, --import/--stage/--kind, or --all".into(),
        );
    };
    let (mut replayed, mut skipped) = (0, 0);
    for stored in &chosen {
        if stored.letter.kind == DeadLetterKind::MalformedRow {
            // A row report carries no message to replay; its file is fixed
            // by replaying the message that read it, or by importing again.
            skipped += 1;
            continue;
        }
        store.replay(stored).await?;
        println!("replayed {} to {}", stored.sequence, stored.letter.subject);
        replayed += 1;
    }
    eprintln!("replayed {replayed} dead letter(s); skipped {skipped} malformed-row report(s)");
    Ok(())
}
