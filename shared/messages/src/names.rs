use std::fmt;

/// The streams of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Import requests (`imports`).
    Imports,
    /// One message per file to read below an import's root: an account
    /// (`account-updates`), or a file of a spec's level (`import-files`).
    AccountUpdates,
    /// Rows to save, one message per window of a file's rows: transactions
    /// (`transactions.<account_id>`), or a spec's table rows (`rows.<table>`).
    Transactions,
    /// What a stage gave up on (`dead-letters.<stage>`).
    DeadLetters,
    /// Import lifecycle: progress facts the stages report
    /// (`import-progress.<id>.<fact>`) and the completion events sluice
    /// publishes (`import-events.<id>`).
    ImportEvents,
}

impl Stream {
    /// Every stream, in the order `sluice setup` declares them.
    pub const ALL: [Stream; 5] = [
        Stream::Imports,
        Stream::AccountUpdates,
        Stream::Transactions,
        Stream::DeadLetters,
        Stream::ImportEvents,
    ];

    /// Stream name without namespace, as in the contract.
    pub const fn base_name(self) -> &'static str {
        match self {
            Stream::Imports => "IMPORTS",
            Stream::AccountUpdates => "ACCOUNT_UPDATES",
            Stream::Transactions => "TRANSACTIONS",
            Stream::DeadLetters => "DEAD_LETTERS",
            Stream::ImportEvents => "IMPORT_EVENTS",
        }
    }

    /// Subject patterns without namespace.
    const fn base_subjects(self) -> &'static [&'static str] {
        match self {
            Stream::Imports => &["imports"],
            Stream::AccountUpdates => &["account-updates", "import-files"],
            Stream::Transactions => &["transactions.>", "rows.>"],
            Stream::DeadLetters => &["dead-letters.>"],
            Stream::ImportEvents => &["import-events.>", "import-progress.>"],
        }
    }
}

/// Places every stream and subject of one sluice deployment.
///
/// The default namespace is empty and gives exactly the contract's names
/// (`IMPORTS`, `imports`, ...). A namespace `ns` gives `ns_IMPORTS` and
/// `ns.imports`, so several deployments (or parallel tests) can share one
/// NATS account without seeing each other's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace(Option<String>);

/// A namespace that cannot prefix subjects and stream names: why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidNamespace(String);

impl fmt::Display for InvalidNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "namespace {:?} is invalid: use 1 to 32 characters of a-z, 0-9 and -",
            self.0
        )
    }
}

impl std::error::Error for InvalidNamespace {}

impl Namespace {
    /// `None` or an empty string is the default namespace.
    pub fn new(name: Option<&str>) -> Result<Self, InvalidNamespace> {
        match name {
            None | Some("") => Ok(Namespace(None)),
            Some(n)
                if n.len() <= 32
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Ok(Namespace(Some(n.to_owned())))
            }
            Some(n) => Err(InvalidNamespace(n.to_owned())),
        }
    }

    /// The prefix, if any.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The name of `stream` in this namespace (`<NS>_TRANSACTIONS`).
    pub fn stream(&self, stream: Stream) -> String {
        match &self.0 {
            None => stream.base_name().to_owned(),
            // Stream names may not contain '.', and '-' reads badly next to
            // the upper-case base: NS_IMPORTS.
            Some(ns) => format!("{}_{}", ns.replace('-', "_"), stream.base_name()),
        }
    }

    /// The subject filters a stream captures.
    pub fn stream_subjects(&self, stream: Stream) -> Vec<String> {
        stream
            .base_subjects()
            .iter()
            .map(|s| self.subject(s))
            .collect()
    }

    /// Progress facts of every import: what the saver's tracker consumes.
    pub fn all_import_progress(&self) -> String {
        self.subject("import-progress.>")
    }

    /// A progress fact of import `id`: `started`, `listed`, `fetched`, `failed`.
    pub fn import_progress(&self, id: &str, fact: &str) -> String {
        self.subject(&format!("import-progress.{id}.{fact}"))
    }

    /// The key-value bucket of the row budget's counts.
    pub fn import_rows_bucket(&self) -> String {
        match &self.0 {
            None => "IMPORT_ROWS".to_owned(),
            Some(ns) => format!("{}_IMPORT_ROWS", ns.replace('-', "_")),
        }
    }

    /// The key-value bucket of import specs, one key per spec name (its
    /// TOML text), each edit a new revision.
    pub fn import_specs_bucket(&self) -> String {
        match &self.0 {
            None => "IMPORT_SPECS".to_owned(),
            Some(ns) => format!("{}_IMPORT_SPECS", ns.replace('-', "_")),
        }
    }

    /// The key-value bucket of cancelled imports.
    pub fn cancelled_imports_bucket(&self) -> String {
        match &self.0 {
            None => "CANCELLED_IMPORTS".to_owned(),
            Some(ns) => format!("{}_CANCELLED_IMPORTS", ns.replace('-', "_")),
        }
    }

    /// The key-value bucket of where each file's reading stopped.
    pub fn file_checkpoints_bucket(&self) -> String {
        match &self.0 {
            None => "FILE_CHECKPOINTS".to_owned(),
            Some(ns) => format!("{}_FILE_CHECKPOINTS", ns.replace('-', "_")),
        }
    }

    /// The key-value bucket of the import id registry.
    pub fn import_ids_bucket(&self) -> String {
        match &self.0 {
            None => "IMPORT_IDS".to_owned(),
            Some(ns) => format!("{}_IMPORT_IDS", ns.replace('-', "_")),
        }
    }

    /// Where the completion event of import `id` is published.
    pub fn import_events(&self, id: &str) -> String {
        self.subject(&format!("import-events.{id}"))
    }

    /// Where the service API's `endpoint` is asked
    /// (`sluice.api.<endpoint>`).
    pub fn api(&self, endpoint: crate::api::Endpoint) -> String {
        self.subject(&endpoint.base_subject())
    }

    /// Where import requests are published.
    pub fn imports(&self) -> String {
        self.subject("imports")
    }

    /// Where the importer publishes one message per account.
    pub fn account_updates(&self) -> String {
        self.subject("account-updates")
    }

    /// Where the fetcher publishes account `account_id`'s transactions.
    pub fn transactions(&self, account_id: i64) -> String {
        self.subject(&format!("transactions.{account_id}"))
    }

    /// Where the files of spec levels below the root are published.
    pub fn import_files(&self) -> String {
        self.subject("import-files")
    }

    /// Where the rows of a spec's table `table` are published (a
    /// `schema.name` table takes two tokens).
    pub fn rows(&self, table: &str) -> String {
        self.subject(&format!("rows.{table}"))
    }

    /// Where `stage` publishes what it gave up on.
    pub fn dead_letters(&self, stage: &str) -> String {
        self.subject(&format!("dead-letters.{stage}"))
    }

    /// Whether `subject` is one that stage `stage` reads in this namespace:
    /// the only place a replay of its dead letters may go. Never a
    /// JetStream API, system or inbox subject, nor another namespace's.
    pub fn is_input_of(&self, stage: &str, subject: &str) -> bool {
        let Some(base) = (match &self.0 {
            None => Some(subject),
            Some(ns) => subject
                .strip_prefix(ns.as_str())
                .and_then(|rest| rest.strip_prefix('.')),
        }) else {
            return false;
        };
        let tokens: Vec<&str> = base.split('.').collect();
        match (stage, tokens.as_slice()) {
            ("importer", ["imports"]) => true,
            ("fetcher", ["account-updates" | "import-files"]) => true,
            ("saver", ["transactions", account]) => account.parse::<i64>().is_ok(),
            ("saver", ["rows", table @ ..]) => {
                (1..=2).contains(&table.len())
                    && table.iter().all(|t| {
                        !t.is_empty()
                            && t.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    })
            }
            ("tracker", ["import-progress", id, fact]) => {
                crate::validate_import_id(id).is_ok()
                    && ["started", "listed", "fetched", "read", "failed"].contains(fact)
            }
            _ => false,
        }
    }

    fn subject(&self, base: &str) -> String {
        match &self.0 {
            None => base.to_owned(),
            Some(ns) => format!("{ns}.{base}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_is_the_contract() {
        let ns = Namespace::default();
        assert_eq!(ns.stream(Stream::Imports), "IMPORTS");
        assert_eq!(ns.imports(), "imports");
        assert_eq!(ns.transactions(-4), "transactions.-4");
        assert_eq!(ns.stream_subjects(Stream::DeadLetters), ["dead-letters.>"]);
        assert_eq!(ns.import_events("42"), "import-events.42");
    }

    #[test]
    fn namespaces_prefix_everything() {
        let ns = Namespace::new(Some("t-1a")).unwrap();
        assert_eq!(ns.stream(Stream::AccountUpdates), "t_1a_ACCOUNT_UPDATES");
        assert_eq!(ns.account_updates(), "t-1a.account-updates");
        assert_eq!(
            ns.stream_subjects(Stream::Transactions),
            ["t-1a.transactions.>", "t-1a.rows.>"]
        );
        assert_eq!(ns.rows("shop.orders"), "t-1a.rows.shop.orders");
        assert!(ns.is_input_of("saver", "t-1a.rows.shop.orders"));
        assert!(ns.is_input_of("fetcher", "t-1a.import-files"));
        assert!(!ns.is_input_of("saver", "t-1a.rows.a.b.c"));
        assert_eq!(
            ns.import_progress("7", "listed"),
            "t-1a.import-progress.7.listed"
        );
        assert!(Namespace::new(Some("Bad.Name")).is_err());
    }

    #[test]
    fn only_a_stage_input_in_this_namespace_is_an_input() {
        let ns = Namespace::new(Some("t-1a")).unwrap();
        assert!(ns.is_input_of("fetcher", "t-1a.account-updates"));
        assert!(ns.is_input_of("saver", "t-1a.transactions.-4"));
        assert!(ns.is_input_of("importer", "t-1a.imports"));
        assert!(ns.is_input_of("tracker", "t-1a.import-progress.42.fetched"));
        for (stage, subject) in [
            ("fetcher", "$JS.API.STREAM.PURGE.TRANSACTIONS"),
            ("fetcher", "t-1a.$JS.API.STREAM.PURGE.TRANSACTIONS"),
            ("fetcher", "$SYS.REQ.SERVER.PING"),
            ("fetcher", "_INBOX.abc"),
            ("fetcher", "other.account-updates"),
            ("fetcher", "account-updates"),
            ("fetcher", "t-1a.imports"),
            ("saver", "t-1a.transactions.x"),
            ("saver", "t-1a.transactions.1.2"),
            ("tracker", "t-1a.import-progress.a b.listed"),
            ("tracker", "t-1a.import-progress.42.purge"),
            ("nobody", "t-1a.imports"),
        ] {
            assert!(!ns.is_input_of(stage, subject), "{stage} {subject}");
        }
        assert!(Namespace::default().is_input_of("fetcher", "account-updates"));
        assert!(!Namespace::default().is_input_of("fetcher", "t-1a.account-updates"));
    }
}
