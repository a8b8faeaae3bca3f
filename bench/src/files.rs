//! Where the bench's files are served from: by default Python's
//! `http.server` (an ordinary server: a thread per connection, HTTP/1.0, a
//! new connection per file, no compression), as a user's files would be
//! served, not the test suite's tuned Rust server.

use std::{path::PathBuf, process::Stdio, time::Duration};

use bytes::Bytes;
use sluice_devkit::{Dataset, FileServer, Route};

/// The server the bench downloads from.
pub enum Files {
    /// The devkit's server (`--files builtin`).
    Builtin(FileServer),
    /// `python3 -m http.server` over a folder of this run's own.
    Python {
        dir: PathBuf,
        port: u16,
        _server: tokio::process::Child,
    },
}

impl Files {
    pub async fn start(kind: &str) -> Result<Files, String> {
        if kind == "builtin" {
            return FileServer::start()
                .await
                .map(Files::Builtin)
                .map_err(|e| e.to_string());
        }
        let dir = std::env::temp_dir().join(format!("sluice-bench-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = sluice_devkit::free_port().map_err(|e| e.to_string())?;
        let python = std::env::var("SLUICE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let server = tokio::process::Command::new(python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start python3 -m http.server: {e}"))?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Files::Python {
                    dir,
                    port,
                    _server: server,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("python3 -m http.server did not answer within 5 s".into())
    }

    /// What the report says serves the files.
    pub fn name(&self) -> &'static str {
        match self {
            Files::Builtin(_) => "the test suite's HTTP server (Rust, hyper)",
            Files::Python { .. } => "Python's http.server",
        }
    }

    pub fn url(&self, path: &str) -> String {
        match self {
            Files::Builtin(server) => server.url(path),
            Files::Python { port, .. } => format!("http://127.0.0.1:{port}{path}"),
        }
    }

    pub fn set(&self, path: &str, body: impl Into<Bytes>) {
        match self {
            Files::Builtin(server) => server.set(path, Route::new(body)),
            Files::Python { dir, .. } => {
                let file = dir.join(path.trim_start_matches('/'));
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).expect("the bench's file folder");
                }
                std::fs::write(file, body.into()).expect("the bench's file folder");
            }
        }
    }

    pub fn add_dataset(&self, dataset: &Dataset) {
        for (path, body) in &dataset.files {
            self.set(path, body.clone());
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        if let Files::Python { dir, .. } = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
