//! Files in an S3-compatible object store: `s3://bucket/key`, read with the
//! `object_store` crate as a stream, under the same guards as an HTTP
//! download (address guard, size, gzip expansion, rate).
//!
//! Credentials come from the usual AWS chain, as the SDKs read it from the
//! environment: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_SESSION_TOKEN`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` +
//! `AWS_ROLE_ARN`: IRSA), the ECS or EKS Pod Identity container endpoint,
//! then the EC2 instance metadata service. `AWS_ENDPOINT_URL` names an
//! S3-compatible store (MinIO, Ceph, R2…); `AWS_REGION` its region.
//!
//! Only the buckets the operator lists (`SLUICE_S3_BUCKETS`, each with an
//! optional key prefix) can be read: the service's AWS identity is the
//! operator's, and a stranger's file must not point it at another bucket.
//!
//! Every request goes through sluice's own HTTP client, so the download
//! guard holds for custom endpoints too. Only the fixed addresses of the
//! AWS credential services pass it, and only for requests addressed to
//! them by IP literal, which an import cannot write: the store's data
//! requests go to the endpoint, with the bucket in the path. What the
//! store answers in an error body is never shown: S3 echoes session
//! tokens there.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use object_store::{
    aws::{AmazonS3, AmazonS3Builder},
    client::{
        ClientConfigKey, ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind,
        HttpRequest, HttpResponse, HttpResponseBody, HttpService,
    },
    path::Path,
    Attribute, GetOptions, GetRange, ObjectStore, RetryConfig,
};
use url::Url;

use crate::{address, AddressPolicy, Body, DownloadError};

/// The addresses of the AWS credential services (instance metadata, ECS
/// and EKS Pod Identity container endpoints), IPv4 and IPv6.
const CREDENTIAL_SERVICES: [&str; 5] = [
    "169.254.169.254",
    "169.254.170.2",
    "169.254.170.23",
    "fd00:ec2::254",
    "fd00:ec2::23",
];

/// One client per bucket, made on first use.
#[derive(Clone, Debug)]
pub(crate) struct ObjectStores {
    http: Guarded,
    /// What may be read: buckets, each with a key prefix ("" for any).
    allowed: Arc<Vec<(String, String)>>,
    buckets: Arc<Mutex<HashMap<String, Arc<AmazonS3>>>>,
}

/// A stored object as it streams in.
pub(crate) struct Object {
    pub body: Body,
    pub size: u64,
    /// `Content-Encoding` stored with it, lowercased.
    pub encoding: Option<String>,
    /// Its ETag, what a later ranged read must match.
    pub etag: Option<String>,
    /// The byte the body starts at (a range was read).
    pub from: u64,
}

impl ObjectStores {
    pub fn new(
        guarded: reqwest::Client,
        addresses: Arc<AddressPolicy>,
        allowed: Vec<(String, String)>,
    ) -> Self {
        ObjectStores {
            allowed: Arc::new(allowed),
            http: Guarded {
                client: guarded,
                allow_http: false,
                credential_services: reqwest::Client::builder()
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("a client without TLS settings builds"),
                addresses,
            },
            buckets: Arc::default(),
        }
    }

    /// Starts reading `url` (`s3://bucket/key`); given `resume` (an offset
    /// and the ETag an earlier read saw), only the rest of it if the object
    /// is still that one, else all of it.
    pub async fn get(
        &self,
        url: &Url,
        resume: Option<(u64, &str)>,
    ) -> Result<Object, DownloadError> {
        let refuse = |reason: &str| DownloadError::Object {
            url: url.clone(),
            reason: reason.to_owned(),
            transient: false,
        };
        let bucket = url.host_str().unwrap_or_default();
        let key = url.path().trim_start_matches('/');
        if bucket.is_empty() || key.is_empty() {
            return Err(refuse("an object URL is s3://BUCKET/KEY"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(refuse(
                "an object URL is s3://BUCKET/KEY, without user, query or fragment",
            ));
        }
        if !valid_bucket(bucket) {
            return Err(refuse(
                "not a bucket name (3 to 63 characters of a-z 0-9 . -)",
            ));
        }
        if !self
            .allowed
            .iter()
            .any(|(b, prefix)| b == bucket && key.starts_with(prefix.as_str()))
        {
            return Err(refuse(
                "refused: not in the buckets and key prefixes SLUICE_S3_BUCKETS allows",
            ));
        }
        let store = self.bucket(bucket).map_err(|e| DownloadError::Object {
            url: url.clone(),
            reason: format!("cannot set up the object store client: {e}"),
            transient: false,
        })?;
        let key = Path::from_url_path(key).map_err(|e| DownloadError::Object {
            url: url.clone(),
            reason: format!("not an object key: {e}"),
            transient: false,
        })?;
        let ranged = match resume {
            Some((offset, etag)) => {
                let options = GetOptions {
                    range: Some(GetRange::Offset(offset)),
                    if_match: Some(etag.to_owned()),
                    ..GetOptions::default()
                };
                match store.get_opts(&key, options).await {
                    Ok(result) => Some(result),
                    // Another object now: read it whole (its ETag tells).
                    Err(object_store::Error::Precondition { .. }) => None,
                    Err(e) => return Err(failed(url, e)),
                }
            }
            None => None,
        };
        let result = match ranged {
            Some(result) => result,
            None => store
                .get_opts(&key, GetOptions::default())
                .await
                .map_err(|e| failed(url, e))?,
        };
        let from = result.range.start;
        let encoding = result
            .attributes
            .get(&Attribute::ContentEncoding)
            .map(|v| v.as_ref().trim().to_ascii_lowercase());
        let size = result.meta.size;
        let etag = result.meta.e_tag.clone();
        let body: Body = Box::pin(
            result
                .into_stream()
                .map_err(|e| io::Error::other(e.to_string())),
        );
        Ok(Object {
            body,
            size,
            encoding,
            etag,
            from,
        })
    }

    fn bucket(&self, bucket: &str) -> object_store::Result<Arc<AmazonS3>> {
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if let Some(store) = buckets.get(bucket) {
            return Ok(store.clone());
        }
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_http_connector(self.http.clone())
            // The stage retries with its own back-off; a short inner retry
            // only rides out a blip.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(30),
                ..RetryConfig::default()
            })
            .build()?;
        let store = Arc::new(store);
        buckets.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }
}

/// S3's bucket naming rules (legacy upper case and underscores too).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// What went wrong reading an object, and whether trying again may help.
/// object_store's own message is never shown: it quotes the store's error
/// body, where S3 echoes session tokens.
fn failed(url: &Url, error: object_store::Error) -> DownloadError {
    use object_store::Error as E;
    let (reason, transient) = match &error {
        E::NotFound { .. } => ("not found (404)".to_owned(), false),
        E::PermissionDenied { .. } => ("access denied (403)".to_owned(), false),
        E::Unauthenticated { .. } => (
            "not authenticated (401): check the AWS credentials".to_owned(),
            false,
        ),
        _ => match address::refusal_in(&error) {
            Some(refused) => {
                return DownloadError::Refused {
                    url: url.clone(),
                    reason: refused,
                }
            }
            None => classify(&error),
        },
    };
    DownloadError::Object {
        url: url.clone(),
        reason,
        transient,
    }
}

/// The status (and S3 error code) of a failed request, read from
/// object_store's error without showing any of the rest.
fn classify(error: &object_store::Error) -> (String, bool) {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            let transient = !matches!(http.kind(), HttpErrorKind::Unknown | HttpErrorKind::Decode);
            // Our own refusal of plain http says what to set.
            let own = std::error::Error::source(http)
                .map(ToString::to_string)
                .filter(|m| m.starts_with("plain http to the object store"));
            if let Some(own) = own {
                return (own, false);
            }
            let what = match http.kind() {
                HttpErrorKind::Connect => "cannot connect to the store",
                HttpErrorKind::Timeout => "the store did not answer in time",
                HttpErrorKind::Interrupted | HttpErrorKind::Request => {
                    "the connection to the store broke"
                }
                _ => "the request to the store failed",
            };
            return (what.to_owned(), transient);
        }
        next = e.source();
    }
    let text = error.to_string();
    if text.contains("Received redirect without LOCATION") {
        return (
            "the bucket is in another region than AWS_REGION says".to_owned(),
            false,
        );
    }
    let status = text
        .split("status code: ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()));
    match status {
        Some(status) => (
            format!(
                "the store answered HTTP {status}{}",
                code.map(|c| format!(" {c}")).unwrap_or_default()
            ),
            status >= 500 || status == 408 || status == 429,
        ),
        None => ("the store's answer could not be used".to_owned(), false),
    }
}

/// object_store's requests, sent with sluice's guarded HTTP client.
#[derive(Clone)]
struct Guarded {
    client: reqwest::Client,
    /// `AWS_ALLOW_HTTP`: plain http to the store (the credential services
    /// are always plain http).
    allow_http: bool,
    /// For the AWS credential services only: they live on link-local
    /// addresses the guard denies.
    credential_services: reqwest::Client,
    addresses: Arc<AddressPolicy>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sluice's guarded HTTP client")
    }
}

impl HttpConnector for Guarded {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let allow_http = options
            .get_config_value(&ClientConfigKey::AllowHttp)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(HttpClient::new(Guarded {
            allow_http,
            ..self.clone()
        }))
    }
}

#[async_trait::async_trait]
impl HttpService for Guarded {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let host = parts.uri.host().unwrap_or_default();
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let credential_service = literal.is_some_and(|ip| {
            CREDENTIAL_SERVICES
                .iter()
                .any(|s| s.parse::<IpAddr>().ok() == Some(ip))
        });
        if parts.uri.scheme_str() == Some("http") && !self.allow_http && !credential_service {
            return Err(HttpError::new(
                HttpErrorKind::Unknown,
                io::Error::other(
                    "plain http to the object store: set AWS_ALLOW_HTTP=true to allow it",
                ),
            ));
        }
        // Host names meet the guard in the resolver; literals here.
        if let (Some(ip), false) = (literal, credential_service) {
            if let Err(refused) = self.addresses.check(ip) {
                return Err(HttpError::new(HttpErrorKind::Unknown, refused));
            }
        }
        let client = if credential_service {
            &self.credential_services
        } else {
            &self.client
        };
        let body = match body.as_bytes() {
            Some(bytes) => bytes.clone(),
            None => body
                .collect()
                .await
                .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?
                .to_bytes(),
        };
        let response = client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let kind = if address::refusal_in(&e).is_some() {
                    HttpErrorKind::Unknown
                } else if e.is_timeout() {
                    HttpErrorKind::Timeout
                } else if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e.without_url())
            })?;
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        let frames = response.bytes_stream().map(|chunk| {
            chunk
                .map(http_body::Frame::data)
                .map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e.without_url()))
        });
        answer
            .body(HttpResponseBody::new(StreamBody::new(frames)))
            .map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))
    }
}
