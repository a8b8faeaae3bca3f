//! Routes: pages (GET), live fragments (server-sent events) and the two
//! actions (POST), each answered through the service API.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::{body::Frame, body::Incoming, header, Method, Request, Response, StatusCode};
use maud::Markup;
use serde::{de::DeserializeOwned, Serialize};
use sluice_messages::{
    api::{
        DeadLettersReply, DeadLettersRequest, Endpoint, ImportReply, ImportRequest, ImportsReply,
        ImportsRequest, ReplayReply, ReplayRequest, StagesReply,
    },
    Namespace,
};
use sluice_operator::api::{ask, AskError};

use crate::{
    access::{self, Access, Actor},
    pages::{self, Viewer},
};

pub struct Console {
    pub client: async_nats::Client,
    pub ns: Namespace,
    pub access: Access,
    /// One permit per open live view (`MAX_LIVE`).
    pub live: Arc<tokio::sync::Semaphore>,
    /// The fragments live views show, by view (`""` the overview, else an
    /// import id), as last fetched: viewers of one view share one fetch a
    /// second, so more tabs do not mean more requests to the service API.
    fresh: tokio::sync::Mutex<std::collections::HashMap<String, Fetched>>,
}

/// A live view's fragment, when it was fetched, and whether it is final.
struct Fetched {
    at: tokio::time::Instant,
    html: String,
    done: bool,
}

impl Console {
    pub fn new(client: async_nats::Client, ns: Namespace, access: Access) -> Self {
        Console {
            client,
            ns,
            access,
            live: Arc::new(tokio::sync::Semaphore::new(MAX_LIVE)),
            fresh: tokio::sync::Mutex::default(),
        }
    }

    /// View `key`'s fragment: the one fetched less than a refresh ago, or
    /// a new one from `fetch`. The lock is held while fetching, so viewers
    /// who come meanwhile wait for it rather than fetch again.
    async fn shared<Fut>(&self, key: &str, fetch: Fut) -> (String, bool)
    where
        Fut: std::future::Future<Output = (Markup, bool)>,
    {
        let mut fresh = self.fresh.lock().await;
        let now = tokio::time::Instant::now();
        if let Some(seen) = fresh.get(key).filter(|f| now - f.at < REFRESH / 2) {
            return (seen.html.clone(), seen.done);
        }
        let (markup, done) = fetch.await;
        let html = markup.into_string();
        // Views nobody watches any more are forgotten.
        fresh.retain(|_, f| now - f.at < REFRESH * 10);
        let at = tokio::time::Instant::now();
        fresh.insert(
            key.to_owned(),
            Fetched {
                at,
                html: html.clone(),
                done,
            },
        );
        (html, done)
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How often a live view is refreshed.
const REFRESH: Duration = Duration::from_secs(1);

/// The most a form may send, and the longest it may take to arrive.
const MAX_FORM: usize = 16 * 1024;
const FORM_WITHIN: Duration = Duration::from_secs(10);

/// Live views open at once: each holds a connection and asks the service
/// API every second, so they are capped below the connection limit; past
/// it a page still loads, and its view is not live.
const MAX_LIVE: usize = 32;

/// How many imports the overview lists.
const LISTED: u32 = 50;

pub async fn respond(
    request: Request<Incoming>,
    console: Arc<Console>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let response = match (request.method(), segments.as_slice()) {
        (&Method::GET, [""]) => overview(&console, &request).await,
        (&Method::GET, ["events"]) => live_overview(console.clone()),
        (&Method::GET, ["imports", id]) => match import_id(id) {
            Some(id) => import(&console, &request, id).await,
            None => not_found(),
        },
        (&Method::GET, ["imports", id, "events"]) => match import_id(id) {
            Some(id) => live_import(console.clone(), id.to_owned()),
            None => not_found(),
        },
        (&Method::POST, ["imports", id, "cancel"]) => match import_id(id) {
            Some(id) => match allowed(&console, request).await {
                Ok((viewer, _)) => done(&console, &viewer, cancel(&console, id).await),
                Err(refused) => refused,
            },
            None => not_found(),
        },
        (&Method::GET, ["dead-letters"]) => dead_letters(&console, &request).await,
        (&Method::POST, ["dead-letters", "replay"]) => match allowed(&console, request).await {
            Ok((viewer, form)) => done(&console, &viewer, replay(&console, form).await),
            Err(refused) => refused,
        },
        (&Method::GET, ["login"]) if console.access.sign_in_enabled() => page(
            StatusCode::OK,
            "Sign in",
            &anonymous(&console),
            None,
            pages::sign_in_page(false),
        ),
        (&Method::POST, ["login"]) if console.access.sign_in_enabled() => {
            sign_in(&console, request).await
        }
        (&Method::POST, ["logout"]) => sign_out(&console, request).await,
        (&Method::GET, ["static", "console.js"]) => asset("text/javascript", JS),
        (&Method::GET, ["static", "console.css"]) => asset("text/css", CSS),
        (&Method::GET, ["healthz"]) => asset("text/plain", "ok\n"),
        // Browsers ask for it on every page; there is none.
        (&Method::GET, ["favicon.ico"]) => no_content(),
        (_, _) => not_found(),
    };
    Ok(harden(response))
}

const JS: &str = include_str!("../static/console.js");
const CSS: &str = include_str!("../static/console.css");

/// Headers on every answer: no script, style, frame or form target but the
/// console's own, nothing cached, nothing sniffed.
fn harden(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    response
}

fn import_id(text: &str) -> Option<&str> {
    sluice_messages::validate_import_id(text)
        .ok()
        .map(|()| text)
}

fn viewer(console: &Console, request: &Request<Incoming>) -> Viewer {
    match console.access.actor(request.headers()) {
        Some(actor) => Viewer {
            csrf: Some(console.access.csrf_token(&actor)),
            name: Some(actor.name().to_owned()),
            sign_in: false,
            session: matches!(actor, Actor::Session(_)),
        },
        None => anonymous(console),
    }
}

fn anonymous(console: &Console) -> Viewer {
    Viewer {
        csrf: None,
        name: None,
        sign_in: console.access.sign_in_enabled(),
        session: false,
    }
}

/// One request to the service API, with its failure as words for a page.
async fn call<R: DeserializeOwned>(
    console: &Console,
    endpoint: Endpoint,
    body: &impl Serialize,
) -> Result<Option<R>, String> {
    ask(&console.client, console.ns.api(endpoint), body)
        .await
        .map_err(|e| match e {
            AskError::NoResponders { .. } => {
                format!("{e}: start the saver, which answers the console's questions")
            }
            other => other.to_string(),
        })
}

async fn overview_of(console: &Console) -> Result<(ImportsReply, StagesReply), String> {
    let (listed, empty) = (
        ImportsRequest {
            limit: Some(LISTED),
        },
        serde_json::json!({}),
    );
    let imports = call(console, Endpoint::Imports, &listed);
    let stages = call(console, Endpoint::Stages, &empty);
    let (imports, stages) = futures_util::future::join(imports, stages).await;
    let imports = imports?.unwrap_or(ImportsReply { imports: vec![] });
    let stages = stages?.unwrap_or(StagesReply { stages: vec![] });
    Ok((imports, stages))
}

async fn overview(console: &Console, request: &Request<Incoming>) -> Response<Body> {
    let viewer = viewer(console, request);
    match overview_of(console).await {
        Ok((imports, stages)) => {
            let body = maud::html! {
                div #live data-live="/events" { (pages::overview(&imports.imports, &stages.stages)) }
            };
            page(StatusCode::OK, "Imports", &viewer, None, body)
        }
        Err(why) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Imports",
            &viewer,
            None,
            pages::problem(&why),
        ),
    }
}

async fn import(console: &Console, request: &Request<Incoming>, id: &str) -> Response<Body> {
    let viewer = viewer(console, request);
    let notice = notice(console, request);
    let title = format!("Import {id}");
    let asked = ImportRequest { id: id.to_owned() };
    let of_import = DeadLettersRequest {
        import_id: Some(id.to_owned()),
        limit: Some(DeadLettersRequest::DEFAULT_LIMIT),
    };
    let found = call::<ImportReply>(console, Endpoint::Import, &asked);
    let letters = call::<DeadLettersReply>(console, Endpoint::DeadLetters, &of_import);
    match futures_util::future::join(found, letters).await {
        (Ok(Some(reply)), letters) => {
            // The import without its letters beats no page at all.
            let letters = letters.map(|l| {
                l.unwrap_or(DeadLettersReply {
                    dead_letters: vec![],
                    in_stream: 0,
                })
            });
            let body = pages::import_page(&reply, letters, viewer.csrf.as_deref());
            page(StatusCode::OK, &title, &viewer, notice.as_deref(), body)
        }
        (Ok(None), _) => page(
            StatusCode::NOT_FOUND,
            &title,
            &viewer,
            None,
            pages::problem(&format!("No record of import {id} (yet).")),
        ),
        (Err(why), _) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            &title,
            &viewer,
            None,
            pages::problem(&why),
        ),
    }
}

async fn dead_letters(console: &Console, request: &Request<Incoming>) -> Response<Body> {
    let viewer = viewer(console, request);
    let notice = notice(console, request);
    match call::<DeadLettersReply>(
        console,
        Endpoint::DeadLetters,
        &DeadLettersRequest::default(),
    )
    .await
    {
        Ok(letters) => {
            let letters = letters.unwrap_or(DeadLettersReply {
                dead_letters: vec![],
                in_stream: 0,
            });
            let body = pages::dead_letters_page(&letters, viewer.csrf.as_deref());
            page(
                StatusCode::OK,
                "Dead letters",
                &viewer,
                notice.as_deref(),
                body,
            )
        }
        Err(why) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Dead letters",
            &viewer,
            None,
            pages::problem(&why),
        ),
    }
}

/// A notice carried by a redirect after an action (`?notice=…&sig=…`),
/// shown only with the console's own signature (and escaped like
/// everything else).
fn notice(console: &Console, request: &Request<Incoming>) -> Option<String> {
    let query = request.uri().query()?;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let value = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let (text, signature) = (value("notice")?, value("sig")?);
    console
        .access
        .notice_ok(text, signature)
        .then(|| text.chars().take(1000).collect())
}

/// Whether an action may go ahead: only for someone allowed, from the
/// console's own page, with their CSRF token. Answers with the form, or
/// the page refusing it.
async fn allowed(
    console: &Console,
    request: Request<Incoming>,
) -> Result<(Viewer, Vec<(String, String)>), Response<Body>> {
    let viewer = viewer(console, &request);
    let Some(actor) = console.access.actor(request.headers()) else {
        let why = if console.access.actions_enabled() {
            "Sign in to act."
        } else {
            "This console is read-only: its operator set neither SLUICE_CONSOLE_TOKEN nor SLUICE_CONSOLE_AUTH_HEADER."
        };
        return Err(page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &viewer,
            None,
            pages::problem(why),
        ));
    };
    match checked_form(console, &actor, request).await {
        Some(form) => Ok((viewer, form)),
        None => Err(page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &viewer,
            None,
            pages::problem("This form did not come from this console's page (CSRF check failed): reload the page and try again."),
        )),
    }
}

/// After an action: to the page it names with a signed notice, or a page
/// saying why it was not done.
fn done(
    console: &Console,
    viewer: &Viewer,
    outcome: Result<(String, String), (StatusCode, String)>,
) -> Response<Body> {
    match outcome {
        Ok((to, notice)) => see_other(&format!(
            "{to}?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("notice", &notice)
                .append_pair("sig", &console.access.sign_notice(&notice))
                .finish()
        )),
        Err((status, why)) => page(status, "Not done", viewer, None, pages::problem(&why)),
    }
}

/// The form of a request from the console's own page, carrying `actor`'s
/// CSRF token.
async fn checked_form(
    console: &Console,
    actor: &Actor,
    request: Request<Incoming>,
) -> Option<Vec<(String, String)>> {
    if !access::same_origin(request.headers()) {
        return None;
    }
    let form = read_form(request).await?;
    let csrf = form
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())?;
    console.access.csrf_ok(actor, csrf).then_some(form)
}

async fn read_form(request: Request<Incoming>) -> Option<Vec<(String, String)>> {
    let read = Limited::new(request.into_body(), MAX_FORM).collect();
    // A form trickled in would hold a connection for its whole lifetime.
    let body = tokio::time::timeout(FORM_WITHIN, read)
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some(url::form_urlencoded::parse(&body).into_owned().collect())
}

async fn cancel(console: &Console, id: &str) -> Result<(String, String), (StatusCode, String)> {
    let to = pages::import_href(id);
    let request = ImportRequest { id: id.to_owned() };
    match call::<ImportReply>(console, Endpoint::Cancel, &request).await {
        Ok(Some(reply)) => Ok((
            to,
            format!(
                "Import cancelled: {} rows were saved, nothing more of it will be.",
                reply.import.transactions_saved
            ),
        )),
        Ok(None) => Err((StatusCode::NOT_FOUND, format!("No record of import {id}."))),
        Err(why) => Err((StatusCode::CONFLICT, why)),
    }
}

async fn replay(
    console: &Console,
    form: Vec<(String, String)>,
) -> Result<(String, String), (StatusCode, String)> {
    let sequences: Vec<u64> = form
        .iter()
        .filter(|(k, _)| k == "sequence")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    if sequences.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "Name a dead letter to replay.".into(),
        ));
    }
    let request = ReplayRequest {
        sequences,
        import_id: None,
    };
    match call::<ReplayReply>(console, Endpoint::Replay, &request).await {
        Ok(Some(reply)) => Ok(("/dead-letters".into(), pages::replayed(&reply))),
        Ok(None) => Err((StatusCode::NOT_FOUND, "No such dead letter.".into())),
        Err(why) => Err((StatusCode::SERVICE_UNAVAILABLE, why)),
    }
}

async fn sign_in(console: &Console, request: Request<Incoming>) -> Response<Body> {
    let secure = behind_https(&request);
    if !access::same_origin(request.headers()) {
        return page(
            StatusCode::FORBIDDEN,
            "Sign in",
            &anonymous(console),
            None,
            pages::sign_in_page(true),
        );
    }
    let form = read_form(request).await.unwrap_or_default();
    let offered = form
        .iter()
        .find(|(k, _)| k == "token")
        .map_or("", |(_, v)| v.as_str());
    match console.access.sign_in(offered) {
        Some(session) => {
            let mut response = see_other("/");
            let cookie = format!(
                "{}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                access::COOKIE,
                Access::session_seconds(),
                if secure { "; Secure" } else { "" }
            );
            response.headers_mut().insert(
                header::SET_COOKIE,
                cookie.parse().expect("a cookie of plain characters"),
            );
            tracing::info!("console: signed in with the token");
            response
        }
        None => {
            tracing::warn!("console: a sign-in offered a wrong token");
            page(
                StatusCode::UNAUTHORIZED,
                "Sign in",
                &anonymous(console),
                None,
                pages::sign_in_page(true),
            )
        }
    }
}

async fn sign_out(console: &Console, request: Request<Incoming>) -> Response<Body> {
    let Some(actor) = console.access.actor(request.headers()) else {
        return see_other("/");
    };
    if checked_form(console, &actor, request).await.is_none() {
        return page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &anonymous(console),
            None,
            pages::problem("CSRF check failed."),
        );
    }
    let mut response = see_other("/");
    response.headers_mut().insert(
        header::SET_COOKIE,
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            access::COOKIE
        )
        .parse()
        .expect("a cookie of plain characters"),
    );
    response
}

/// Whether the proxy in front says the browser reached it over HTTPS: the
/// session cookie is then `Secure`.
fn behind_https(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// The imports and stages, every second, as a fragment for `#live`.
fn live_overview(console: Arc<Console>) -> Response<Body> {
    events(console, |console| async move {
        let fetch = async {
            let fragment = match overview_of(&console).await {
                Ok((imports, stages)) => pages::overview(&imports.imports, &stages.stages),
                Err(why) => pages::problem(&why),
            };
            (fragment, false)
        };
        console.shared("", fetch).await
    })
}

/// One import's summary, every second, until it ends.
fn live_import(console: Arc<Console>, id: String) -> Response<Body> {
    events(console, move |console| {
        let id = id.clone();
        async move {
            let fetch = async {
                let asked = ImportRequest { id: id.clone() };
                match call::<ImportReply>(&console, Endpoint::Import, &asked).await {
                    Ok(Some(reply)) => {
                        let done = reply.import.status != "running";
                        (pages::import_summary(&reply), done)
                    }
                    Ok(None) => (
                        pages::problem(&format!("No record of import {id} (yet).")),
                        false,
                    ),
                    Err(why) => (pages::problem(&why), false),
                }
            };
            console.shared(&id, fetch).await
        }
    })
}

/// A stream of server-sent events: `update` with the fragment `next`
/// renders, every [`REFRESH`], then `done` once `next` says it is.
fn events<F, Fut>(console: Arc<Console>, next: F) -> Response<Body>
where
    F: Fn(Arc<Console>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (String, bool)> + Send,
{
    let Ok(permit) = console.live.clone().try_acquire_owned() else {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(header::RETRY_AFTER, "30")
            .body(full("too many live views open\n"))
            .expect("static response parts are valid");
    };
    let stream = futures_util::stream::unfold(
        (console, next, 0u64, false, permit),
        |(console, next, sent, done, permit)| async move {
            if done {
                return None;
            }
            if sent > 0 {
                tokio::time::sleep(REFRESH).await;
            }
            let (fragment, finished) = next(console.clone()).await;
            let mut event = sse("update", &fragment);
            if finished {
                event.push_str(&sse("done", ""));
            }
            let frame = Ok::<_, Infallible>(Frame::data(Bytes::from(event)));
            Some((frame, (console, next, sent + 1, finished, permit)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .expect("static response parts are valid")
}

/// One event; `data` may span lines (each gets its own `data:`).
fn sse(event: &str, data: &str) -> String {
    let mut text = format!("event: {event}\n");
    // A lone CR ends a line for the browser as LF does.
    for line in data.split(['\r', '\n']) {
        text.push_str("data: ");
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    text
}

fn page(
    status: StatusCode,
    title: &str,
    viewer: &Viewer,
    notice: Option<&str>,
    body: Markup,
) -> Response<Body> {
    let html = pages::layout(title, viewer, notice, body).into_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(full(html))
        .expect("static response parts are valid")
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "max-age=300")
        .body(full(text))
        .expect("static response parts are valid")
}

fn see_other(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(full(""))
        .expect("a local path is a valid location")
}

fn no_content() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(full(""))
        .expect("static response parts are valid")
}

fn not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full("not found\n"))
        .expect("static response parts are valid")
}

fn full(text: impl Into<Bytes>) -> Body {
    BodyExt::boxed_unsync(Full::new(text.into()))
}

#[cfg(test)]
mod tests {
    use super::sse;

    #[test]
    fn an_event_of_many_lines_is_one_event() {
        assert_eq!(sse("update", "a\nb"), "event: update\ndata: a\ndata: b\n\n");
        assert_eq!(sse("done", ""), "event: done\ndata: \n\n");
        assert_eq!(
            sse("update", "a\revent: x"),
            "event: update\ndata: a\ndata: event: x\n\n"
        );
    }
}
