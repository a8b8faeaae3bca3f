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
    /// Draft a spec from the first rows of a file and of a few of the files it links to.
    Infer(InferArgs),
}

#[derive(clap::Args, Debug)]
struct InferArgs {
    #[command(flatten)]
    download: sluice_download::DownloadArgs,
    /// The file an import would name (the root level).
    url: String,
    /// The spec's name (default: from the file's name).
    #[arg(long)]
    name: Option<String>,
    /// Bytes read from each sampled file (never the whole file).
    #[arg(long, default_value = "64KiB", value_parser = sluice_messages::units::parse_size)]
    sample_size: u64,
    /// Child files sampled per level, through the column that links to them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    files: u32,
    /// The download credential to sample with, one of those
    /// `--download-credentials` configures (as an import's `credentials`).
    #[arg(long)]
    credentials: Option<String>,
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
        SpecCommand::Infer(args) => infer(args).await,
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

/// Levels below the root that `spec infer` follows.
const INFER_DEPTH: usize = 3;

/// Rows of each sampled file the draft is made from.
const INFER_ROWS: usize = 1_000;

async fn infer(args: InferArgs) -> anyhow::Result<()> {
    let downloader = sluice_download::Downloader::new(&args.download.options()?)?;
    let root = sample_level(&downloader, &args, vec![args.url.clone()], 0).await?;
    // By default the spec is named as its root level: after the file.
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| sluice_spec::infer::level_name(&args.url));
    let draft = sluice_spec::infer::draft(&name, &root);
    outln!("{}", draft.trim_end());
    let questions = draft.matches("# QUESTION:").count();
    if questions > 0 {
        eprintln!(
            "sluice: {questions} question(s) in the draft: answer them, then `sluice spec put` it"
        );
    }
    Ok(())
}

/// Samples `urls` (files of one level) and, through each column whose
/// values are links, a few of their child files, to `INFER_DEPTH` levels.
fn sample_level<'a>(
    downloader: &'a sluice_download::Downloader,
    args: &'a InferArgs,
    urls: Vec<String>,
    depth: usize,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = anyhow::Result<sluice_spec::infer::Sample>> + 'a>,
> {
    Box::pin(async move {
        let mut sample = sluice_spec::infer::Sample::default();
        // Each file's records, its first row included: whether that row is
        // a header is decided from the first file.
        let mut files = Vec::new();
        for (file, url) in urls.iter().take(args.files as usize).enumerate() {
            let (base, bytes) = downloader
                .sample(
                    url,
                    args.credentials.as_deref(),
                    usize::try_from(args.sample_size).unwrap_or(usize::MAX),
                )
                .await?;
            let (text, encoding, invalid) = decoded(&bytes, bytes.len() as u64 >= args.sample_size);
            if file == 0 {
                sample.url = sluice_messages::redact_file_url(url);
                sample.delimiter = sluice_spec::infer::sniff_delimiter(&text);
                sample.encoding = encoding;
                sample.invalid_utf8 = invalid;
            }
            let mut reader = csv_async::AsyncReaderBuilder::new()
                .delimiter(sample.delimiter as u8)
                .flexible(true)
                .has_headers(false)
                .create_reader(text.as_bytes());
            let mut records = reader.records();
            let mut rows = Vec::new();
            // The first row may be a header: one more than the rows drafted from.
            while rows.len() <= INFER_ROWS {
                let Some(record) = futures_util::StreamExt::next(&mut records).await else {
                    break;
                };
                let record = record.map_err(|e| {
                    anyhow!(
                        "cannot read {} as CSV: {e}",
                        sluice_messages::redact_file_url(url)
                    )
                })?;
                rows.push(record.iter().map(str::to_owned).collect::<Vec<String>>());
            }
            files.push((base, rows));
        }
        let Some(first) = files.first().and_then(|(_, rows)| rows.first()).cloned() else {
            return Err(anyhow!(
                "{} has no rows to draft a spec from",
                sluice_messages::redact_file_url(&urls[0])
            ));
        };
        sample.headerless = !sluice_spec::infer::has_header(&first, &files[0].1[1..]);
        sample.header = match sample.headerless {
            true => (1..=first.len()).map(|i| format!("column_{i}")).collect(),
            false => first,
        };
        let mut bases = Vec::new();
        for (file, (base, rows)) in files.into_iter().enumerate() {
            let skip = usize::from(!sample.headerless);
            for row in rows.into_iter().skip(skip).take(INFER_ROWS) {
                sample.records.push(row);
                sample.files.push(file);
                bases.push(base.clone());
            }
        }
        if depth < INFER_DEPTH {
            for column in 0..sample.header.len() {
                let links: Vec<(usize, &str)> = sample
                    .records
                    .iter()
                    .enumerate()
                    .filter_map(|(n, r)| r.get(column).map(|v| (n, v.trim())))
                    .filter(|(_, v)| !v.is_empty())
                    .collect();
                if links.is_empty()
                    || !links
                        .iter()
                        .all(|(_, v)| sluice_spec::infer::looks_like_url(v))
                {
                    continue;
                }
                let children: Vec<String> = links
                    .iter()
                    .take(args.files as usize)
                    .filter_map(|(n, v)| bases[*n].join(v).ok().map(|u| u.to_string()))
                    .collect();
                if children.is_empty() {
                    continue;
                }
                // A column whose links cannot be sampled is drafted as a
                // text column, and said so: the rest of the draft stands.
                match sample_level(downloader, args, children, depth + 1).await {
                    Ok(child) => sample.children.push((column, child)),
                    Err(e) => eprintln!(
                        "sluice: column {:?} looks like links to files, but they cannot be sampled ({e}); it is drafted as text",
                        sample.header[column]
                    ),
                }
            }
        }
        Ok(sample)
    })
}

/// The sample as text, the encoding it was read in, and how many of its
/// bytes are not UTF-8 though the rest is: UTF-16 after its byte order
/// mark; UTF-8 (a byte order mark dropped) when its bytes are, or when its
/// valid multi-byte characters outnumber the bytes that are not (a stray
/// bad byte, whose rows will be refused); else Windows-1252. A sample cut
/// short loses its last, partial line.
fn decoded(bytes: &[u8], cut: bool) -> (String, sluice_spec::Encoding, usize) {
    use sluice_download::encoding_rs::{Encoding as Charset, UTF_8, WINDOWS_1252};
    use sluice_spec::Encoding;
    let whole_lines = |text: &str| match (cut, text.rfind('\n')) {
        (true, Some(end)) => text[..=end].to_owned(),
        _ => text.to_owned(),
    };
    if let Some((utf16, bom)) = Charset::for_bom(bytes).filter(|(e, _)| *e != UTF_8) {
        let (text, _) = utf16.decode_without_bom_handling(&bytes[bom..]);
        return (whole_lines(&text), Encoding::Utf16, 0);
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let bytes = match (cut, bytes.iter().rposition(|b| *b == b'\n')) {
        (true, Some(end)) => &bytes[..=end],
        _ => bytes,
    };
    let (text, invalid) = UTF_8.decode_without_bom_handling(bytes);
    if !invalid {
        return (text.into_owned(), Encoding::Utf8, 0);
    }
    let bad = text.matches(char::REPLACEMENT_CHARACTER).count();
    let good = text.chars().filter(|c| !c.is_ascii()).count() - bad;
    if good > bad {
        return (text.into_owned(), Encoding::Utf8, bad);
    }
    let (text, _) = WINDOWS_1252.decode_without_bom_handling(bytes);
    (text.into_owned(), Encoding::Windows1252, 0)
}
