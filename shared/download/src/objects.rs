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
//! Every request goes through sluice's own HTTP client, so the download
//! guard holds for custom endpoints too. Only the fixed addresses of the
//! AWS credential services pass it, and only for requests addressed to
//! them by IP literal, which an import cannot write: the store's data
//! requests go to the endpoint, with the bucket in the path.

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
        ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
        HttpResponse, HttpResponseBody, HttpService,
    },
    path::Path,
    Attribute, GetOptions, ObjectStore, RetryConfig,
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
    buckets: Arc<Mutex<HashMap<String, Arc<AmazonS3>>>>,
}

/// A stored object as it streams in.
pub(crate) struct Object {
    pub body: Body,
    pub size: u64,
    /// `Content-Encoding` stored with it, lowercased.
    pub encoding: Option<String>,
}

impl ObjectStores {
    pub fn new(guarded: reqwest::Client, addresses: Arc<AddressPolicy>) -> Self {
        ObjectStores {
            http: Guarded {
                client: guarded,
                credential_services: reqwest::Client::builder()
                    .no_proxy()
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("a client without TLS settings builds"),
                addresses,
            },
            buckets: Arc::default(),
        }
    }

    /// Starts reading `url` (`s3://bucket/key`).
    pub async fn get(&self, url: &Url) -> Result<Object, DownloadError> {
        let bucket = url.host_str().unwrap_or_default();
        let key = url.path().trim_start_matches('/');
        if bucket.is_empty() || key.is_empty() {
            return Err(DownloadError::Object {
                url: url.clone(),
                reason: "an object URL is s3://BUCKET/KEY".into(),
                transient: false,
            });
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
        let result = store
            .get_opts(&key, GetOptions::default())
            .await
            .map_err(|e| failed(url, e))?;
        let encoding = result
            .attributes
            .get(&Attribute::ContentEncoding)
            .map(|v| v.as_ref().trim().to_ascii_lowercase());
        let size = result.meta.size;
        let body: Body = Box::pin(
            result
                .into_stream()
                .map_err(|e| io::Error::other(e.to_string())),
        );
        Ok(Object {
            body,
            size,
            encoding,
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

/// What went wrong reading an object, and whether trying again may help.
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
            None => (format!("{error}"), true),
        },
    };
    DownloadError::Object {
        url: url.clone(),
        reason,
        transient,
    }
}

/// object_store's requests, sent with sluice's guarded HTTP client.
#[derive(Clone)]
struct Guarded {
    client: reqwest::Client,
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
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.clone()))
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
