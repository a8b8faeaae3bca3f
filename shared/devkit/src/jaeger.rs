//! A Jaeger of its own, for the trace test and the traced benchmark: the
//! binary `just tools` builds from the Go module proxy, with the repo's
//! in-memory configuration, on free ports.

use std::{
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Jaeger {
    pub otlp_port: u16,
    pub query_port: u16,
    child: Child,
}

impl Jaeger {
    /// Starts `binary` with `config` (deploy/local/jaeger/config.yaml) and
    /// waits until it takes spans and answers queries.
    pub fn start(binary: &Path, config: &Path) -> anyhow::Result<Jaeger> {
        let (otlp_port, query_port, grpc_port) = (
            crate::free_port()?,
            crate::free_port()?,
            crate::free_port()?,
        );
        let child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .env("SLUICE_JAEGER_OTLP_HTTP", format!("127.0.0.1:{otlp_port}"))
            .env("SLUICE_JAEGER_UI", format!("127.0.0.1:{query_port}"))
            .env("SLUICE_JAEGER_QUERY_GRPC", format!("127.0.0.1:{grpc_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                let message = format!("cannot start {} (run `just tools`): {e}", binary.display());
                anyhow::Error::new(e).context(message)
            })?;
        let jaeger = Jaeger {
            otlp_port,
            query_port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [otlp_port, query_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    anyhow::bail!("Jaeger did not listen on port {port} within 30 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(jaeger)
    }

    /// Where services send their spans (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn otlp_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_port)
    }

    /// The base of Jaeger's HTTP query API.
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.query_port)
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
