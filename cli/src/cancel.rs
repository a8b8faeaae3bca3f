//! `sluice cancel ID`: asks the saver, over the service API, to cancel a
//! running import. Once it answers, nothing more of the import is saved;
//! the importer and fetcher drop its remaining messages, and its completion
//! event says `cancelled`, with what was saved before.

use sluice_messages::api::{Endpoint, ImportReply, ImportRequest};
use sluice_stage::NatsArgs;

use crate::{api::ask, explain, explain::Problem, imports::group};

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The import to cancel.
    id: String,
    /// JSON for scripts: the import as it ended (as `sluice status ID
    /// --json` shows an import).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: CancelArgs) -> anyhow::Result<()> {
    let (client, _) = explain::connect_nats_server(&args.nats, "sluice-cancel").await?;
    let request = ImportRequest {
        id: args.id.clone(),
    };
    let reply: Option<ImportReply> =
        ask(&client, args.nats.namespace.api(Endpoint::Cancel), &request).await?;
    let _ = client.flush().await;
    let Some(reply) = reply else {
        return Err(Problem::new(format!(
            "the saver has no record of import {} (yet)",
            args.id
        ))
        .into());
    };
    let import = reply.import;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&import).expect("imports encode")
        );
        return Ok(());
    }
    outln!(
        "import {} cancelled: {} transactions saved before it stopped; nothing more of it is saved, and its completion event says cancelled",
        import.id,
        group(import.transactions_saved.into())
    );
    Ok(())
}
