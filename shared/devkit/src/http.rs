//! A real HTTP/1.1 file server on a loopback port, for tests and the demo.
//!
//! Files live in memory and can be added, replaced or removed while it
//! runs. A route can gzip its body, trickle it in small delayed chunks, and
//! misbehave a given number of times first: answer an error status, stall
//! mid-body, reset the connection mid-body, or send a truncated body.
//! It can also require a header (a bearer token), redirect, and tell which
//! headers each request carried. Like nginx, it sends an `ETag` and
//! `Last-Modified` and answers `Range: bytes=N-` (checked against
//! `If-Range`) with 206, unless a route says it cannot; it counts the body
//! bytes it actually sent.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Frame, server::conn::http1, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

/// How one path is served.
#[derive(Debug, Clone)]
pub struct Route {
    body: Bytes,
    gzip: bool,
    /// A comment in the gzip header: filler that expands to nothing.
    gzip_comment: Option<Vec<u8>>,
    chunk_size: Option<usize>,
    chunk_delay: Duration,
    /// How long the server thinks before it answers at all.
    first_byte_delay: Duration,
    /// Faults served, in order, before the body is served whole.
    faults: VecDeque<Fault>,
    /// A header every request must carry with this value, else 401.
    required: Option<(String, String)>,
    /// Answer `302 Found` to this location instead of the body.
    redirect: Option<String>,
    /// Answer `Range` requests with a part of the body (206).
    ranges: bool,
}

/// One way of failing a request.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer this HTTP status.
    Status(u16),
    /// Answer nothing at all (no status, no header) this long, then as
    /// usual: a server that never got to the request.
    Silent(Duration),
    /// Send the first half of the body, then go silent this long.
    Stall(Duration),
    /// Send the first half of the body, then drop the connection.
    Reset,
    /// Send only the first half of the (possibly gzipped) body, as if it were
    /// all: a clean response with a cut-off file.
    Truncate,
}

impl Route {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Route {
            body: body.into(),
            gzip: false,
            gzip_comment: None,
            chunk_size: None,
            chunk_delay: Duration::ZERO,
            first_byte_delay: Duration::ZERO,
            faults: VecDeque::new(),
            required: None,
            redirect: None,
            ranges: true,
        }
    }

    /// Ignores `Range` (answers 200 with the whole body), as a server that
    /// cannot send parts of a file does.
    pub fn without_ranges(mut self) -> Self {
        self.ranges = false;
        self
    }

    /// Answers 401 to a request without header `name: value` (as a server
    /// that wants `Authorization: Bearer …` does).
    pub fn require_header(mut self, name: &str, value: &str) -> Self {
        self.required = Some((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers `302 Found` with `Location: location` (absolute or relative)
    /// once any required header is checked.
    pub fn redirect(location: &str) -> Self {
        Route {
            redirect: Some(location.to_owned()),
            ..Route::new(Bytes::new())
        }
    }

    /// Answers every request (faults too) only after `delay`: a slow server.
    pub fn first_byte_after(mut self, delay: Duration) -> Self {
        self.first_byte_delay = delay;
        self
    }

    /// Sends the body gzip-compressed with `Content-Encoding: gzip`.
    pub fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }

    /// Like [`Route::gzip`], with `comment` in the gzip header (as a
    /// decompression bomb pads its size on the wire).
    pub fn gzip_with_comment(mut self, comment: Vec<u8>) -> Self {
        self.gzip = true;
        self.gzip_comment = Some(comment);
        self
    }

    /// Sends the body in chunks of `size` bytes, `delay` apart (each one its
    /// own write on a no-delay socket, so the client sees them separately).
    pub fn trickle(mut self, size: usize, delay: Duration) -> Self {
        self.chunk_size = Some(size.max(1));
        self.chunk_delay = delay;
        self
    }

    /// Answers `status` for the next `times` requests, then serves the body.
    pub fn fail_first(self, status: u16, times: usize) -> Self {
        self.fault_first(Fault::Status(status), times)
    }

    /// Serves `fault` for the next `times` requests, then the body.
    pub fn fault_first(mut self, fault: Fault, times: usize) -> Self {
        self.faults.extend(std::iter::repeat_n(fault, times));
        self
    }
}

type Routes = Arc<Mutex<HashMap<String, Route>>>;

/// A request as the server saw it: its path and headers.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: hyper::HeaderMap,
}

type Requests = Arc<Mutex<Vec<Seen>>>;

/// Serves routes until dropped.
pub struct FileServer {
    addr: SocketAddr,
    routes: Routes,
    requests: Requests,
    sent: Sent,
    task: JoinHandle<()>,
}

/// Body bytes sent, by path.
type Sent = Arc<Mutex<HashMap<String, u64>>>;

impl FileServer {
    pub async fn start() -> std::io::Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let routes: Routes = Arc::default();
        let requests: Requests = Arc::default();
        let sent: Sent = Arc::default();
        let (r, q, b) = (routes.clone(), requests.clone(), sent.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let (routes, requests, sent) = (r.clone(), q.clone(), b.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        serve(routes.clone(), requests.clone(), sent.clone(), req)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(FileServer {
            addr,
            routes,
            requests,
            sent,
            task,
        })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    pub fn remove(&self, path: &str) {
        self.routes.lock().unwrap().remove(path);
    }

    /// Serves every file of a data set.
    pub fn add_dataset(&self, dataset: &crate::Dataset) {
        for (path, body) in &dataset.files {
            self.set(path, Route::new(body.clone()));
        }
    }

    /// How many requests asked for `path` so far.
    pub fn request_count(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|seen| seen.path == path)
            .count()
    }

    /// Body bytes sent (handed to the connection) for `path` so far.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        self.sent.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn never(e: Infallible) -> std::io::Error {
    match e {}
}

async fn serve(
    routes: Routes,
    requests: Requests,
    sent: Sent,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = answer(routes, requests, req).await?;
    // Counted as the connection takes each frame: a client that goes away
    // mid-body is charged only for what it was sent.
    let (parts, body) = response.into_parts();
    let counted = Counted { body, path, sent };
    Ok(Response::from_parts(parts, BodyExt::boxed(counted)))
}

/// A body that counts what it yields, keeping its size known (so a whole
/// body still goes out with its `Content-Length`).
struct Counted {
    body: Body,
    path: String,
    sent: Sent,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let mut sent = self.sent.lock().unwrap();
                *sent.entry(self.path.clone()).or_default() += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn answer(
    routes: Routes,
    requests: Requests,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    requests.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: req.headers().clone(),
    });
    let (route, fault) = {
        let mut routes = routes.lock().unwrap();
        match routes.get_mut(&path) {
            None => return Ok(status_response(404)),
            Some(route) => {
                let fault = route.faults.pop_front();
                (route.clone(), fault)
            }
        }
    };
    if !route.first_byte_delay.is_zero() {
        tokio::time::sleep(route.first_byte_delay).await;
    }
    if let Some(Fault::Silent(silence)) = fault {
        tokio::time::sleep(silence).await;
    }
    if let Some(Fault::Status(status)) = fault {
        return Ok(status_response(status));
    }
    if let Some((name, value)) = &route.required {
        if req.headers().get(name.as_str()).map(|v| v.as_bytes()) != Some(value.as_bytes()) {
            return Ok(status_response(401));
        }
    }
    if let Some(location) = &route.redirect {
        let mut response = status_response(302);
        response.headers_mut().insert(
            hyper::header::LOCATION,
            location.parse().expect("a valid Location"),
        );
        return Ok(response);
    }
    let mut response = Response::builder().header("Content-Type", "text/csv; charset=utf-8");
    let body = if route.gzip {
        response = response.header("Content-Encoding", "gzip");
        let mut builder = flate2::GzBuilder::new();
        if let Some(comment) = &route.gzip_comment {
            builder = builder.comment(comment.clone());
        }
        let mut encoder = builder.write(Vec::new(), flate2::Compression::best());
        encoder.write_all(&route.body).expect("writing to memory");
        Bytes::from(encoder.finish().expect("writing to memory"))
    } else {
        route.body.clone()
    };
    // The validators nginx sends: an ETag of the content, Last-Modified.
    let etag = format!("\"{:016x}\"", fnv1a(&route.body));
    response = response
        .header("ETag", &etag)
        .header("Last-Modified", "Tue, 01 Dec 2026 00:00:00 GMT");
    let mut body = body;
    if route.ranges && !route.gzip {
        response = response.header("Accept-Ranges", "bytes");
        let same = req
            .headers()
            .get("if-range")
            .is_none_or(|v| v.as_bytes() == etag.as_bytes());
        let from = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes="))
            .and_then(|v| v.strip_suffix('-'))
            .and_then(|v| v.parse::<usize>().ok());
        if let (Some(from), true) = (from, same) {
            if from < body.len() {
                response = response.status(206).header(
                    "Content-Range",
                    format!("bytes {from}-{}/{}", body.len() - 1, body.len()),
                );
                body = body.slice(from..);
            }
        }
    }
    let half = body.slice(..body.len() / 2);
    match fault {
        Some(Fault::Truncate) => {
            return Ok(response
                .body(Full::new(half).map_err(never).boxed())
                .unwrap())
        }
        Some(Fault::Stall(pause)) => {
            let rest = body.slice(half.len()..);
            let frames = stream::iter([Ok(Frame::data(half))]).chain(stream::once(async move {
                tokio::time::sleep(pause).await;
                Ok(Frame::data(rest))
            }));
            return Ok(response
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap());
        }
        Some(Fault::Reset) => {
            let frames = stream::iter([
                Ok(Frame::data(half)),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fault injected",
                )),
            ]);
            return Ok(response
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap());
        }
        Some(Fault::Status(_) | Fault::Silent(_)) | None => {}
    }
    let body: Body = match route.chunk_size {
        None => Full::new(body).map_err(never).boxed(),
        Some(size) => {
            let delay = route.chunk_delay;
            let chunks: Vec<Bytes> = (0..body.len())
                .step_by(size)
                .map(|i| body.slice(i..(i + size).min(body.len())))
                .collect();
            let frames = stream::unfold(
                (chunks.into_iter(), true),
                move |(mut chunks, first)| async move {
                    let chunk = chunks.next()?;
                    if !first && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Some((Ok::<_, std::io::Error>(Frame::data(chunk)), (chunks, false)))
                },
            );
            BodyExt::boxed(StreamBody::new(frames))
        }
    };
    Ok(response
        .body(body)
        .expect("static response parts are valid"))
}

/// A content hash for ETags (FNV-1a, 64 bits): stable, not secure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn status_response(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Response::builder()
        .status(status)
        .body(
            Full::new(Bytes::from(format!("{status}\n")))
                .map_err(never)
                .boxed(),
        )
        .expect("static response parts are valid")
}
