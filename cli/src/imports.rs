//! What the saver's `imports` table says about imports, for `import --wait`
//! and `status`.

use crate::explain::Problem;
use tokio_postgres::Client;

/// The saver's database, as a flag shared by the commands that read it.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// The saver's database, where import progress is recorded.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/sluice"
    )]
    pub database_url: String,
}

/// The saver's database for the commands that can do without it: set,
/// they read its tables directly; unset, they ask the saver over NATS
/// (sluice's service API, `crate::api`).
#[derive(clap::Args, Debug, Clone)]
pub struct OptionalDatabaseArgs {
    /// The saver's database, to read its tables directly. Unset, the saver
    /// is asked over NATS (sluice's service API), so NATS credentials are
    /// all this command needs.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl OptionalDatabaseArgs {
    /// The database when one is set.
    pub fn get(&self) -> Option<DatabaseArgs> {
        self.database_url
            .clone()
            .map(|database_url| DatabaseArgs { database_url })
    }
}

impl DatabaseArgs {
    pub async fn connect(&self) -> Result<Client, crate::explain::Problem> {
        self.database()?.connect().await.map_err(|e| {
            crate::explain::postgres("connect to the saver's database", &self.database_url, &e)
        })
    }

    /// A connection to a database whose schema this binary can read: one a
    /// newer release migrated is refused, since its tables may mean other
    /// things now.
    pub async fn connect_readable(&self) -> Result<Client, Problem> {
        let client = self.connect().await?;
        readable(&client).await?;
        Ok(client)
    }

    /// The settings DATABASE_URL holds, TLS ones included.
    pub fn database(&self) -> Result<sluice_postgres::Database, crate::explain::Problem> {
        self.database_url.parse().map_err(|e| {
            Problem::new(format!(
                "DATABASE_URL ({}) is invalid: {e}",
                sluice_stage::config::redact_url(&self.database_url)
            ))
        })
    }
}

/// Refuses a schema newer than this binary. A database without the
/// schema yet passes: the queries after say what is missing.
pub async fn readable(client: &Client) -> Result<(), Problem> {
    let Ok(Some(row)) = client
        .query_opt("SELECT MAX(version) FROM sluice_migrations", &[])
        .await
    else {
        return Ok(());
    };
    match row
        .get::<_, Option<i32>>(0)
        .map(sluice_saver::schema::compare)
    {
        Some(Err(ahead @ sluice_saver::schema::Mismatch::Ahead { .. })) => Err(Problem::new(
            ahead.to_string(),
        )
        .fix("upgrade sluice (this command and the services) to the release that migrated it")),
        _ => Ok(()),
    }
}

pub use sluice_saver::reports::{Clash, Conflict, ImportRow};

/// `None` while the saver has recorded nothing of it yet.
pub async fn one(db: &Client, id: &str, url: &str) -> Result<Option<ImportRow>, Problem> {
    sluice_saver::reports::one(db, id)
        .await
        .map_err(|e| crate::explain::postgres("read imports", url, &e))
}

pub async fn recent(db: &Client, limit: i64, url: &str) -> Result<Vec<ImportRow>, Problem> {
    sluice_saver::reports::recent(db, limit)
        .await
        .map_err(|e| crate::explain::postgres("read imports", url, &e))
}

pub use sluice_saver::reports::announced_transactions;

pub use sluice_messages::units::group;
