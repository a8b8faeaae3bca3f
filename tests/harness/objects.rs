//! A real S3-compatible server for tests: moto's server (PyPI `moto[server]`,
//! installed by `just tools` into the test venv), on a port of its own,
//! ended by its PID when dropped.

use std::process::{Child, Command, Stdio};

use crate::servers::{free_port, local_setting, wait_for_port};

pub struct S3Server {
    pub port: u16,
    child: Child,
    http: reqwest::Client,
}

impl S3Server {
    /// A server that takes any request, signed or not.
    pub async fn start() -> S3Server {
        S3Server::launch(None).await
    }

    /// A server that answers the first `open` requests without checking
    /// who asks (to fill buckets), then only requests signed with keys of
    /// its own IAM users: keys it never issued get 403.
    pub async fn start_checking_after(open: usize) -> S3Server {
        S3Server::launch(Some(open)).await
    }

    async fn launch(open: Option<usize>) -> S3Server {
        let python =
            local_setting("SLUICE_TEST_PYTHON").expect("`just tools` records the venv's python");
        let moto = std::path::Path::new(&python).with_file_name("moto_server");
        // Everything that may panic comes before the spawn: a child not yet
        // in an `S3Server` would outlive the test.
        sluice_download::install_tls_provider();
        let http = reqwest::Client::new();
        let port = free_port();
        let mut command = Command::new(&moto);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(open) = open {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", open.to_string());
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{} starts (`just tools` installs it): {e}", moto.display())
            });
        let server = S3Server { port, child, http };
        wait_for_port(port, "moto's S3 server to listen").await;
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the services need to read from it, as the AWS SDKs name it,
    /// and the buckets they may read (`SLUICE_S3_BUCKETS`).
    pub fn env(&self, buckets: &str) -> Vec<(String, String)> {
        [
            ("SLUICE_S3_BUCKETS", buckets.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "sluice-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "sluice-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let response = self
            .http
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(
            response.status().is_success(),
            "create bucket {bucket}: {}",
            response.status()
        );
    }

    /// Stores `body` at `key`, with `Content-Encoding: encoding` if given.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<bytes::Bytes>,
        encoding: Option<&str>,
    ) {
        let mut request = self
            .http
            .put(format!("{}/{bucket}/{key}", self.endpoint()))
            .body(reqwest::Body::from(body.into()));
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        let response = request.send().await.expect("put object");
        assert!(
            response.status().is_success(),
            "put {bucket}/{key}: {}",
            response.status()
        );
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
