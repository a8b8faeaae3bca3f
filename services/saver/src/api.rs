//! The service API (`sluice_messages::api`): the saver owns the tracking
//! tables, so it answers what they say, over NATS, to `sluice status` and
//! any other client, and cancels imports (`sluice cancel`). Every replica
//! answers in one queue group, so a request goes to one of them.

use async_nats::jetstream::{self, kv};
use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use sluice_messages::{
    api::{
        code, DeadLettersReply, DeadLettersRequest, Endpoint, ImportRequest, ImportsReply,
        ImportsRequest, Lag, ReplayRequest, StageLag, StagesReply, SERVICE,
    },
    Namespace,
};
use sluice_operator::dead_letters::{DeadLetters, Filter};
use sluice_stage::{cancellations, topology, StageError};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::{
    guard::{self, Cancelled},
    reports, Database, Wakeups,
};

/// What the API works with.
pub struct Api {
    pub js: jetstream::Context,
    pub ns: Namespace,
    pub database: Database,
    /// Told of a cancelled import, so its completion event goes out now.
    pub wakeups: Wakeups,
    /// Servers each of sluice's buckets lives on (`CANCELLED_IMPORTS`).
    pub replicas: usize,
}

/// Answers the service's requests until `stop`. An API that cannot start
/// is logged and left: the saver's work does not depend on it.
pub async fn serve(api: Api, stop: CancellationToken) -> Result<(), StageError> {
    if let Err(e) = answer_until(api, &stop).await {
        tracing::error!(error = %e, "not answering sluice's service API; `sluice status` needs DATABASE_URL meanwhile");
        stop.cancelled().await;
    }
    Ok(())
}

async fn answer_until(api: Api, stop: &CancellationToken) -> Result<(), StageError> {
    let (client, ns) = (api.js.client(), &api.ns);
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("namespace".to_owned(), ns.name().unwrap_or("").to_owned());
    let service = client
        .service_builder()
        .description(
            "sluice: imports, their progress and what they reported (answered by the saver)",
        )
        .metadata(metadata)
        .start(SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| StageError::outage(format!("cannot start the service API: {e}")))?;
    // Every endpoint's requests in one stream, each with its endpoint.
    let mut endpoints = Vec::with_capacity(Endpoint::ALL.len());
    for e in Endpoint::ALL {
        let served = service
            .endpoint_builder()
            .name(e.name())
            .add(ns.api(e))
            .await
            .map_err(|err| StageError::outage(format!("cannot serve {}: {err}", ns.api(e))))?;
        endpoints.push(served.map(move |request| (request, e)));
    }
    let mut requests = futures_util::stream::select_all(endpoints);
    tracing::info!(service = SERVICE, subjects = %ns.api(Endpoint::Imports).replace(".imports", ".*"), "answering the service API");
    let mut answerer = Answerer {
        client: None,
        bucket: None,
        letters: None,
        api: &api,
    };
    loop {
        let (request, endpoint) = tokio::select! {
            Some(next) = requests.next() => next,
            _ = stop.cancelled() => break,
            else => break,
        };
        // A request nobody waits for any more is not worth an answer, and
        // one slow answer must not hold the next ones (or the stop) for
        // long: each gets at most ANSWER_WITHIN. A replay is not cut short
        // (between a republish and its letter's deletion): it is bounded
        // by the 200 letters a request may name instead.
        let within = match endpoint {
            Endpoint::Replay => REPLAY_WITHIN,
            _ => ANSWER_WITHIN,
        };
        let answered = tokio::select! {
            answer = tokio::time::timeout(within, answerer.answer(endpoint, &request.message.payload)) => answer,
            _ = stop.cancelled() => break,
        };
        let answer = answered.unwrap_or_else(|_| {
            let from = match endpoint {
                Endpoint::Imports | Endpoint::Import | Endpoint::Cancel => {
                    // The query may still run: the next answer opens a new session.
                    answerer.client = None;
                    "the database"
                }
                _ => "JetStream",
            };
            Err(error(
                code::UNAVAILABLE,
                format!("no answer from {from} within {} s", within.as_secs()),
            ))
        });
        if let Err(e) = request.respond(answer).await {
            tracing::debug!(error = %e, "could not answer a service request");
        }
    }
    if let Err(e) = service.stop().await {
        tracing::debug!(error = %e, "could not stop the service API cleanly");
    }
    Ok(())
}

/// The longest an answer may take: less than the 5 s `sluice` waits, so a
/// slow database gets a 503 in words rather than a time-out.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(4);

/// The longest a replay may take before it is abandoned (NATS stalled):
/// what it republished then is deduplicated when it is asked again.
const REPLAY_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// One database session for the answers, opened when first needed and
/// again after a failure.
struct Answerer<'a> {
    client: Option<Client>,
    /// `CANCELLED_IMPORTS`, opened when first needed.
    bucket: Option<kv::Store>,
    /// `DEAD_LETTERS`, opened when first needed.
    letters: Option<DeadLetters>,
    api: &'a Api,
}

type Answer = Result<Bytes, service::error::Error>;

impl Answerer<'_> {
    async fn answer(&mut self, endpoint: Endpoint, body: &[u8]) -> Answer {
        let answer = match endpoint {
            Endpoint::Imports if blank(body) => self.imports(ImportsRequest::default()).await,
            Endpoint::Imports => self.imports(parse::<ImportsRequest>(body)?).await,
            Endpoint::Import => self.import(parse::<ImportRequest>(body)?).await,
            Endpoint::Cancel => self.cancel(parse::<ImportRequest>(body)?).await,
            Endpoint::DeadLetters if blank(body) => {
                self.dead_letters(DeadLettersRequest::default()).await
            }
            Endpoint::DeadLetters => self.dead_letters(parse(body)?).await,
            Endpoint::Replay => self.replay(parse(body)?).await,
            Endpoint::Stages if blank(body) || body == b"{}" => self.stages().await,
            Endpoint::Stages => Err(error(
                code::BAD_REQUEST,
                "stages takes an empty request".into(),
            )),
        };
        if answer.as_ref().is_err_and(|e| e.code == code::UNAVAILABLE) {
            self.client = None;
        }
        answer
    }

    async fn client(&mut self) -> Result<&mut Client, service::error::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let client = self
                .api
                .database
                .connect()
                .await
                .map_err(|e| unavailable(&e.to_string()))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    async fn imports(&mut self, request: ImportsRequest) -> Answer {
        let limit = request.limit.unwrap_or(ImportsRequest::DEFAULT_LIMIT);
        if !(1..=ImportsRequest::MAX_LIMIT).contains(&limit) {
            return Err(error(
                code::BAD_REQUEST,
                format!("limit must be 1 to {}", ImportsRequest::MAX_LIMIT),
            ));
        }
        let db = self.client().await?;
        let imports = reports::recent(db, limit.into())
            .await
            .map_err(|e| read_failed(&e))?;
        reply(&ImportsReply { imports })
    }

    async fn import(&mut self, request: ImportRequest) -> Answer {
        let id = request.id;
        sluice_messages::validate_import_id(&id)
            .map_err(|e| error(code::BAD_REQUEST, e.to_string()))?;
        self.import_reply(&id).await
    }

    /// Import `id` as `sluice.api.import` answers it.
    async fn import_reply(&mut self, id: &str) -> Answer {
        let db = self.client().await?;
        match reports::import_reply(db, id)
            .await
            .map_err(|e| read_failed(&e))?
        {
            Some(found) => reply(&found),
            None => Err(not_found(id)),
        }
    }

    /// Cancels an import: first in the tracking tables (after which the
    /// saver writes nothing of it), then for the other stages, which stop
    /// working on it. Again is the same: a cancel whose second half failed
    /// is completed by the next.
    async fn cancel(&mut self, request: ImportRequest) -> Answer {
        let id = request.id;
        sluice_messages::validate_import_id(&id)
            .map_err(|e| error(code::BAD_REQUEST, e.to_string()))?;
        let db = self.client().await?;
        match guard::cancel(db, &id).await.map_err(|e| read_failed(&e))? {
            Cancelled::Unknown => return Err(not_found(&id)),
            Cancelled::Ended(status) => {
                return Err(error(
                    code::CONFLICT,
                    format!("import {id} ended already ({status}): there is nothing to cancel"),
                ))
            }
            Cancelled::Done => {}
        }
        tracing::info!(import_id = %id, "import cancelled");
        self.api.wakeups.wake();
        if self.bucket.is_none() {
            let api = self.api;
            let opened = cancellations::open(&api.js, &api.ns, api.replicas).await;
            self.bucket = Some(opened.map_err(|e| told_nobody(&id, &e))?);
        }
        let bucket = self.bucket.as_ref().expect("opened");
        cancellations::cancel(bucket, &id)
            .await
            .map_err(|e| told_nobody(&id, &e))?;
        self.import_reply(&id).await
    }
}

/// The endpoints that read NATS, not the tracking tables.
impl Answerer<'_> {
    async fn letters(&mut self) -> Result<&mut DeadLetters, service::error::Error> {
        if self.letters.is_none() {
            let opened = DeadLetters::open(&self.api.js, &self.api.ns).await;
            self.letters = Some(opened.map_err(|e| nats_unavailable(&e))?);
        }
        Ok(self.letters.as_mut().expect("opened"))
    }

    async fn dead_letters(&mut self, request: DeadLettersRequest) -> Answer {
        let limit = request.limit.unwrap_or(DeadLettersRequest::DEFAULT_LIMIT);
        if !(1..=DeadLettersRequest::MAX_LIMIT).contains(&limit) {
            return Err(error(
                code::BAD_REQUEST,
                format!("limit must be 1 to {}", DeadLettersRequest::MAX_LIMIT),
            ));
        }
        if let Some(id) = &request.import_id {
            sluice_messages::validate_import_id(id)
                .map_err(|e| error(code::BAD_REQUEST, e.to_string()))?;
        }
        let filter = Filter {
            import_id: request.import_id,
            ..Filter::default()
        };
        let (letters, in_stream) = self
            .letters()
            .await?
            .recent(&filter, limit as usize)
            .await
            .map_err(|e| nats_unavailable(&e))?;
        reply(&DeadLettersReply {
            dead_letters: letters.iter().map(|l| l.summary()).collect(),
            in_stream,
        })
    }

    async fn replay(&mut self, request: ReplayRequest) -> Answer {
        let chosen = match (&request.import_id, request.sequences.len()) {
            (Some(_), 1..) | (None, 0) => {
                return Err(error(
                    code::BAD_REQUEST,
                    "name either sequences or an import_id".into(),
                ))
            }
            (None, n) if n > ReplayRequest::MAX_SEQUENCES => {
                return Err(error(
                    code::BAD_REQUEST,
                    format!("at most {} sequences at once", ReplayRequest::MAX_SEQUENCES),
                ))
            }
            (Some(id), _) => {
                sluice_messages::validate_import_id(id)
                    .map_err(|e| error(code::BAD_REQUEST, e.to_string()))?;
                let filter = Filter {
                    import_id: Some(id.clone()),
                    ..Filter::default()
                };
                // Bounded like a listing: a request for more asks again.
                let letters = self.letters().await?;
                let most = ReplayRequest::MAX_SEQUENCES;
                (letters.recent(&filter, most).await)
                    .map_err(|e| nats_unavailable(&e))?
                    .0
            }
            (None, _) => {
                let letters = self.letters().await?;
                let mut chosen: Vec<sluice_operator::dead_letters::StoredLetter> = Vec::new();
                let mut named = request.sequences.clone();
                named.sort_unstable();
                named.dedup();
                for sequence in &named {
                    if let Some(found) = letters
                        .get(*sequence)
                        .await
                        .map_err(|e| nats_unavailable(&e))?
                    {
                        chosen.push(found);
                    }
                }
                chosen
            }
        };
        let letters = self.letters().await?;
        let mut answer = letters
            .replay_all(&chosen)
            .await
            .map_err(|e| nats_unavailable(&e))?;
        answer.missing = (request.sequences.iter())
            .filter(|s| !chosen.iter().any(|c| c.sequence == **s))
            .copied()
            .collect();
        answer.missing.sort_unstable();
        answer.missing.dedup();
        if !answer.replayed.is_empty() {
            tracing::info!(replayed = ?answer.replayed, "dead letters replayed through the service API");
        }
        reply(&answer)
    }

    async fn stages(&mut self) -> Answer {
        let (js, ns) = (&self.api.js, &self.api.ns);
        let mut stages = Vec::with_capacity(topology::CONSUMERS.len());
        for consumer in topology::CONSUMERS {
            let info = topology::consumer_info(js, ns, consumer).await.ok();
            stages.push(StageLag {
                consumer: consumer.to_owned(),
                stream: topology::input_of(consumer)
                    .map(|s| ns.stream(s))
                    .unwrap_or_default(),
                lag: info.map(|i| Lag {
                    pending: i.num_pending,
                    ack_pending: i.num_ack_pending as u64,
                    redelivered: i.num_redelivered as u64,
                    waiting: i.num_waiting as u64,
                }),
            });
        }
        reply(&StagesReply { stages })
    }
}

fn nats_unavailable(e: &sluice_operator::Error) -> service::error::Error {
    error(
        code::UNAVAILABLE,
        format!(
            "JetStream cannot be read now: {}",
            sluice_stage::error_chain(e)
        ),
    )
}

fn not_found(id: &str) -> service::error::Error {
    error(code::NOT_FOUND, format!("no record of import {id} (yet)"))
}

/// The import is cancelled, but the stages could not be told to stop.
fn told_nobody(id: &str, e: &StageError) -> service::error::Error {
    error(
        code::UNAVAILABLE,
        format!(
            "import {id} is cancelled (nothing more of it is saved), but the other stages could not be told: {e}; cancel it again to stop their work on it"
        ),
    )
}

fn blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, service::error::Error> {
    serde_json::from_slice(body)
        .map_err(|e| error(code::BAD_REQUEST, format!("not a valid request: {e}")))
}

fn reply<T: Serialize>(body: &T) -> Answer {
    Ok(serde_json::to_vec(body).expect("replies encode").into())
}

fn error(code: usize, status: String) -> service::error::Error {
    // The status travels in a header: one line.
    let status = status.replace(['\r', '\n'], " ");
    service::error::Error { status, code }
}

fn unavailable(why: &str) -> service::error::Error {
    error(
        code::UNAVAILABLE,
        format!("the tracking tables cannot be read now: {why}"),
    )
}

fn read_failed(e: &tokio_postgres::Error) -> service::error::Error {
    unavailable(&sluice_stage::error_chain(e))
}
