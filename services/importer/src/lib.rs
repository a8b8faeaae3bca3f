//! importer: one import request in, one `account-updates` message per
//! account listed in its accounts CSV out.

#![deny(clippy::let_underscore_must_use)]

use sluice_download::{DownloadOptions, Downloader, Record, Row, Url, WebhookTargets};
use sluice_levels::LevelFiles;
use sluice_messages::{
    stage, validate_import_id, AccountUpdate, FileTask, ImportProgress, ImportRequest,
};
use sluice_stage::{
    import_ids::{Claim, ImportIds},
    specs::PinnedSpecs,
    telemetry::KeyValue,
    Delivery, Emitter, Fault, FlatMap, StageError,
};

const COLUMNS: [&str; 2] = ["accountId", "transactionsUrl"];

/// An import request, and the import it starts.
pub struct Request {
    request: ImportRequest,
    import_id: String,
    /// The publisher chose the id (it may be another request's).
    chosen: bool,
    /// When JetStream stored the request: the spec revision current then
    /// is the import's.
    stored_at: time::OffsetDateTime,
}

pub struct Importer {
    downloader: Downloader,
    max_accounts: u64,
    ids: ImportIds,
    /// Imports run with a spec of the user's: the specs, and how a file is read.
    specs: Option<(PinnedSpecs, LevelFiles)>,
    /// The webhook targets a request may name (names only: the saver posts).
    webhooks: WebhookTargets,
}

impl Importer {
    /// `max_accounts`: most accounts one import may list, so one file
    /// cannot fan out into unbounded work. `ids`: who owns which import id.
    pub fn new(
        download: &DownloadOptions,
        max_accounts: u64,
        ids: ImportIds,
    ) -> Result<Self, StageError> {
        Ok(Importer {
            downloader: Downloader::new(download)?,
            max_accounts,
            ids,
            specs: None,
            webhooks: WebhookTargets::default(),
        })
    }

    /// Accepts requests naming one of `webhooks`; others are refused.
    pub fn with_webhooks(mut self, webhooks: WebhookTargets) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// Reports that the import started, with its webhook target when this
    /// importer knows it; a target it does not know then fails the import
    /// (`permanent`), so the import ends at once, with its event, and the
    /// saver is never asked to post to a name nobody configured.
    async fn start(
        &self,
        request: &ImportRequest,
        import_id: &str,
        spec: Option<String>,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let refused = (request.webhook.as_deref()).and_then(|name| self.webhooks.refusal(name));
        out.report(&ImportProgress::Started {
            import_id: import_id.to_owned(),
            url: sluice_messages::redact_file_url(&request.url),
            time: sluice_stage::now(),
            spec,
            webhook: request.webhook.clone().filter(|_| refused.is_none()),
        })
        .await?;
        match refused {
            Some(why) => Err(StageError::permanent(why)),
            None => Ok(()),
        }
    }

    /// Runs imports that name a spec with `specs`, their files read as
    /// `files` says; without, such a request is refused.
    pub fn with_specs(mut self, specs: PinnedSpecs, files: LevelFiles) -> Self {
        self.specs = Some((specs, files));
        self
    }

    /// Reads the root file of an import run with spec `name`.
    async fn import_with_spec(
        &self,
        request: &ImportRequest,
        import_id: &str,
        name: &str,
        requested: time::OffsetDateTime,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        let Some((specs, files)) = &self.specs else {
            return Err(StageError::permanent(format!(
                "this importer runs the built-in spec only, and the request names spec {name:?}"
            )));
        };
        let spec = specs.current(name, requested).await?;
        let pinned = format!("{}@{}", spec.spec.name, spec.revision);
        self.start(request, import_id, Some(pinned), out).await?;
        let root = FileTask {
            import_id: import_id.to_owned(),
            spec: spec.spec.name.clone(),
            revision: spec.revision,
            level: spec.spec.root.clone(),
            url: request.url.clone(),
            path: Vec::new(),
            inherited: Vec::new(),
            credentials: request.credentials.clone(),
        };
        files.read(&self.downloader, &root, &spec, out).await
    }
}

impl FlatMap for Importer {
    const NAME: &'static str = stage::IMPORTER;
    // Each request is one file; a few at once keep the network busy.
    const DEFAULT_CONCURRENCY: u16 = 4;

    type Input = Request;

    fn decode(&self, input: &Delivery) -> Result<Request, StageError> {
        let request = ImportRequest::parse(input.payload())
            .map_err(|e| StageError::caused_by(Fault::Permanent, e))?;
        let chosen = chosen_id(&request, input).is_some();
        let import_id = import_id(&request, input)?;
        Ok(Request {
            request,
            import_id,
            chosen,
            stored_at: input.stored_at(),
        })
    }

    fn import_id<'a>(&self, input: &'a Request) -> Option<&'a str> {
        Some(&input.import_id)
    }

    async fn process(&self, input: &Request, out: &mut Emitter) -> Result<(), StageError> {
        let Request {
            request,
            import_id,
            chosen,
            stored_at,
        } = input;
        let import_id = import_id.clone();
        // A derived id is this message's own; a chosen one may be taken.
        if *chosen && self.ids.claim(&import_id, request).await? == Claim::Taken {
            out.detach_from_import();
            return Err(StageError::permanent(format!(
                "import id {import_id} already names another request (another URL or spec); an id names one \
                 request forever, so this one is refused and import {import_id} is left as it was: \
                 publish it under a new id"
            )));
        }
        out.set_key(&import_id);
        if let Some(name) = request
            .spec
            .as_deref()
            .filter(|s| *s != sluice_spec::BUILTIN)
        {
            return self
                .import_with_spec(request, &import_id, name, *stored_at, out)
                .await;
        }

        self.start(request, &import_id, None, out).await?;
        let mut file = self
            .downloader
            .open(&request.url, request.credentials.as_deref(), &COLUMNS)
            .await?;
        let (url, shown) = (file.url().clone(), file.shown_url());
        let subject = out.namespace().account_updates();
        let mut accounts = 0;
        while let Some(row) = file.next_row().await? {
            match row {
                Row::Record(record) => match account_update(request, &import_id, &url, &record) {
                    Ok(_) if accounts == self.max_accounts => {
                        return Err(StageError::permanent(format!(
                            "{shown} lists more than {} accounts (SLUICE_MAX_ACCOUNTS_PER_IMPORT); \
                             the first {} are imported",
                            self.max_accounts, self.max_accounts
                        )))
                    }
                    Ok(update) => {
                        out.publish_json(subject.clone(), record.line(), &update)
                            .await?;
                        accounts += 1;
                    }
                    Err(reason) => out.reject_row(&shown, record.line(), reason).await?,
                },
                Row::Malformed { line, reason } => out.reject_row(&shown, line, reason).await?,
            }
        }
        let rejected_rows = out.rejected_rows();
        out.annotate([
            KeyValue::new("sluice.file.url", shown),
            KeyValue::new("sluice.rows.read", (accounts + rejected_rows) as i64),
            KeyValue::new("sluice.rows.rejected", rejected_rows as i64),
        ]);
        out.report_after_stored(&ImportProgress::Listed {
            import_id,
            accounts,
            rejected_rows,
        })
        .await
    }
}

/// The publisher's id (JSON `id`, then the `Sluice-Import-Id` header), else
/// one derived from where and when the request was stored: stable across
/// redeliveries, unique even if `IMPORTS` is recreated.
fn import_id(request: &ImportRequest, input: &Delivery) -> Result<String, StageError> {
    match chosen_id(request, input) {
        Some(id) => {
            validate_import_id(id).map_err(|e| StageError::caused_by(Fault::Permanent, e))?;
            Ok(id.to_owned())
        }
        None => Ok(sluice_messages::derived_import_id(
            input.stream_sequence(),
            input.stored_at(),
        )),
    }
}

/// The id the publisher chose, if any.
fn chosen_id<'a>(request: &'a ImportRequest, input: &'a Delivery) -> Option<&'a str> {
    let header = input
        .headers()
        .and_then(|h| h.get(sluice_messages::HEADER_IMPORT_ID))
        .map(|v| v.as_str());
    request.id.as_deref().or(header)
}

fn account_update(
    request: &ImportRequest,
    import_id: &str,
    accounts_url: &Url,
    record: &Record<'_>,
) -> Result<AccountUpdate, String> {
    let (account, link) = (record.get(0), record.get(1));
    let account_id = account
        .parse::<i64>()
        .map_err(|_| format!("accountId {account:?} is not a 64-bit integer"))?;
    if link.is_empty() {
        return Err("transactionsUrl is empty".into());
    }
    // Relative links resolve against the accounts file, as in a browser.
    let transactions_url = accounts_url.join(link).map_err(|e| {
        let link = sluice_messages::redact_file_url(link);
        format!("transactionsUrl {link:?} is not a URL: {e}")
    })?;
    Ok(AccountUpdate {
        import_id: import_id.to_owned(),
        account_id,
        transactions_url: transactions_url.into(),
        credentials: request.credentials.clone(),
    })
}
