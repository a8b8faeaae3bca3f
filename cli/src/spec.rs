//! `sluice spec put|list|show|rm`: the import specs every service reads,
//! kept in the key-value bucket `IMPORT_SPECS`; `put` also makes the
//! spec's tables fit (docs/specs.md).

use anyhow::anyhow;
use sluice_stage::{
    specs::{Specs, SpecsError},
    NatsArgs,
};

use crate::imports::DatabaseArgs;

#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    #[command(subcommand)]
    command: SpecCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SpecCommand {
    /// Check a spec file, store it (a new revision if its name exists), and create or check its tables.
    Put(PutArgs),
    /// The specs stored, with their revisions and tables (the built-in `accounts` first).
    List(ListArgs),
    /// A spec's text as it was put (`--revision`: an earlier one).
    Show(ShowArgs),
    /// Remove a spec (imports that pinned a revision keep it while the bucket's history does).
    Rm(RmArgs),
}

#[derive(clap::Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// The spec file (TOML); `-` reads standard input.
    file: String,
    /// Only check the file; store nothing and leave the database alone.
    #[arg(long)]
    check: bool,
    /// Store the spec without creating or checking its tables.
    #[arg(long)]
    skip_database: bool,
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    nats: NatsArgs,
}

#[derive(clap::Args, Debug)]
struct ShowArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The spec's name.
    name: String,
    /// An earlier revision (as `spec list` and `spec put` print them).
    #[arg(long)]
    revision: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct RmArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The spec's name.
    name: String,
}

pub async fn run(args: SpecArgs) -> anyhow::Result<()> {
    match args.command {
        SpecCommand::Put(args) => put(args).await,
        SpecCommand::List(args) => list(args).await,
        SpecCommand::Show(args) => show(args).await,
        SpecCommand::Rm(args) => rm(args).await,
    }
}

async fn open(nats: &NatsArgs) -> anyhow::Result<Specs> {
    let (_client, js) = crate::explain::connect_nats(nats, "sluice-spec").await?;
    Ok(Specs::open(&js, &nats.namespace, usize::from(nats.stream_replicas)).await?)
}

/// A refused spec is the user's to fix: its problems, one per line, are
/// the whole message.
fn explained(e: SpecsError) -> anyhow::Error {
    match e {
        SpecsError::Invalid(invalid) => {
            anyhow!("the spec is refused:\n  {}", invalid.problems.join("\n  "))
        }
        other => anyhow::Error::new(other),
    }
}

async fn put(args: PutArgs) -> anyhow::Result<()> {
    let text = if args.file == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| anyhow!("cannot read the spec from standard input: {e}"))?
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| anyhow!("cannot read the spec file {}: {e}", args.file))?
    };
    if args.check {
        let spec =
            sluice_spec::Spec::parse(&text).map_err(|e| explained(SpecsError::Invalid(e)))?;
        outln!("spec {} is valid ({} levels)", spec.name, spec.levels.len());
        return Ok(());
    }
    // Checked before anything is stored: a refused spec changes nothing.
    let spec = sluice_spec::Spec::parse(&text).map_err(|e| explained(SpecsError::Invalid(e)))?;
    if !args.skip_database {
        let db = args.database.connect_readable().await?;
        let reports = sluice_saver::tables::ensure_tables(&db, &spec)
            .await
            .map_err(|e| {
                crate::explain::postgres("check the spec's tables", &args.database.database_url, &e)
            })?;
        let unfit: Vec<String> = reports
            .iter()
            .filter(|r| !r.fits())
            .map(ToString::to_string)
            .collect();
        for report in reports.iter().filter(|r| r.fits()) {
            outln!("{report}");
        }
        if !unfit.is_empty() {
            return Err(anyhow!(
                "spec {} is not stored: its tables do not fit it\n{}",
                spec.name,
                unfit.join("\n")
            ));
        }
    }
    let stored = open(&args.nats)
        .await?
        .put(&text)
        .await
        .map_err(explained)?;
    outln!(
        "spec {} stored (revision {})",
        stored.spec.name,
        stored.revision
    );
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (specs, unreadable) = open(&args.nats).await?.list().await.map_err(explained)?;
    for problem in &unreadable {
        eprintln!("sluice: {problem}");
    }
    for stored in specs {
        let tables: Vec<&str> = stored
            .spec
            .levels
            .values()
            .filter_map(|l| l.table.as_deref())
            .collect();
        let revision = match stored.revision {
            0 => "built-in".to_owned(),
            n => format!("revision {n}"),
        };
        outln!(
            "{}\t{revision}\t{} levels\ttables: {}",
            stored.spec.name,
            stored.spec.levels.len(),
            tables.join(", ")
        );
    }
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let specs = open(&args.nats).await?;
    let found = match args.revision {
        Some(revision) => specs.get_revision(&args.name, revision).await,
        None => specs.get(&args.name).await,
    }
    .map_err(explained)?;
    match found {
        Some(stored) => {
            outln!("{}", stored.text.trim_end());
            Ok(())
        }
        None => Err(anyhow!(
            "no spec {}{}: `sluice spec list` shows the specs stored",
            args.name,
            args.revision
                .map(|r| format!(" at revision {r}"))
                .unwrap_or_default()
        )),
    }
}

async fn rm(args: RmArgs) -> anyhow::Result<()> {
    if open(&args.nats)
        .await?
        .remove(&args.name)
        .await
        .map_err(explained)?
    {
        outln!("spec {} removed", args.name);
        Ok(())
    } else {
        Err(anyhow!("no spec {}: nothing removed", args.name))
    }
}
