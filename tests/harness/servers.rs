//! Private NATS and PostgreSQL servers for tests that restart them: the
//! machine's shared servers must keep serving the tests running beside.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

pub fn free_port() -> u16 {
    sluice_devkit::free_port().expect("a free port")
}

pub(crate) fn scratch_dir(kind: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sluice-{kind}-{}", sluice_devkit::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

pub async fn wait_for_port(port: u16, what: &str) {
    crate::wait_until(Duration::from_secs(20), what, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

/// A JetStream server of its own: `SLUICE_TEST_NATS_SERVER` names the binary
/// (default `nats-server` on the PATH, else Debian's `/usr/sbin/nats-server`).
pub struct PrivateNats {
    pub port: u16,
    store: PathBuf,
    jetstream: bool,
    /// More arguments: TLS, logins, a config file.
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateNats {
    pub async fn start() -> PrivateNats {
        PrivateNats::start_with(true).await
    }

    /// A plain NATS server, as a misconfigured deployment would have.
    pub async fn start_without_jetstream() -> PrivateNats {
        PrivateNats::start_with(false).await
    }

    /// A JetStream server started with `extra` arguments (TLS, a login).
    pub async fn start_secured(extra: Vec<String>) -> PrivateNats {
        let mut nats = PrivateNats {
            port: free_port(),
            store: scratch_dir("nats"),
            jetstream: true,
            extra,
            child: None,
        };
        nats.launch().await;
        nats
    }

    async fn start_with(jetstream: bool) -> PrivateNats {
        let mut nats = PrivateNats {
            port: free_port(),
            store: scratch_dir("nats"),
            jetstream,
            extra: Vec::new(),
            child: None,
        };
        nats.launch().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn binary() -> String {
        local_setting("SLUICE_TEST_NATS_SERVER").unwrap_or_else(|| "nats-server".into())
    }

    async fn launch(&mut self) {
        let mut command = Command::new(Self::binary());
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(&self.store);
        }
        command.args(&self.extra);
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        wait_for_port(self.port, "private NATS to listen").await;
    }

    /// Kills the server (as a crash would) and starts it again on the same
    /// port and store after `down`.
    pub async fn restart(&mut self, down: Duration) {
        self.kill();
        tokio::time::sleep(down).await;
        self.launch().await;
    }

    /// Stops the server without closing its connections (SIGSTOP), as a
    /// hung or partitioned server looks to its clients; `thaw` resumes it.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server runs");
        sluice_devkit::process::send_signal(child.id(), signal);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A Jaeger of its own (`SLUICE_TEST_JAEGER`, built by `just tools` from
/// the Go module proxy), with in-memory storage, taking OTLP over HTTP.
pub fn private_jaeger() -> sluice_devkit::jaeger::Jaeger {
    let binary = local_setting("SLUICE_TEST_JAEGER").expect("`just tools` records jaeger");
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/jaeger/config.yaml");
    sluice_devkit::jaeger::Jaeger::start(binary.as_ref(), &config).expect("Jaeger starts")
}

/// A PostgreSQL cluster of its own, from the machine's installation, run as
/// the `postgres` user when the tests run as root.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Who runs the server when the tests run as root (PostgreSQL refuses root).
    user: Option<String>,
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(None).await
    }

    /// A server that checks passwords (scram-sha-256) over TCP; the
    /// superuser `postgres` has `password`.
    pub async fn start_with_password(password: &str) -> PrivatePostgres {
        PrivatePostgres::start_with(Some(password)).await
    }

    /// A server that takes connections over TLS only (`hostssl`), with
    /// `cert` and `key` (PEM): Debian's PostgreSQL (`SLUICE_TEST_PG_TLS_BIN`,
    /// which `just tools` records), since the embedded one has no TLS. The
    /// superuser `client` logs in with a client certificate that `client_ca`
    /// signed and whose common name is `client` (`cert` authentication);
    /// the others need none.
    pub async fn start_with_tls(cert: &str, key: &str, client_ca: &str) -> PrivatePostgres {
        let bin = PathBuf::from(local_setting("SLUICE_TEST_PG_TLS_BIN").expect(
            "SLUICE_TEST_PG_TLS_BIN names a PostgreSQL bin folder built with TLS (`just tools` records Debian's)",
        ));
        let pg = PrivatePostgres::init(bin, None);
        let data = PathBuf::from(pg.data());
        for (name, pem) in [
            ("server.crt", cert),
            ("server.key", key),
            ("root.crt", client_ca),
        ] {
            let path = data.join(name);
            std::fs::write(&path, pem).expect("certificate written");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("permissions");
            if let Some(user) = &pg.user {
                let _ = Command::new("chown").arg(user).arg(&path).status();
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n",
        );
        std::fs::write(&conf, text).expect("postgresql.conf written");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all client 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .expect("pg_hba.conf written");
        pg.launch().await;
        pg.run(
            "psql",
            &[
                "-h",
                &pg.dir.display().to_string(),
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "-c",
                "CREATE ROLE client LOGIN SUPERUSER",
            ],
        );
        pg
    }

    async fn start_with(password: Option<&str>) -> PrivatePostgres {
        let bin = PathBuf::from(local_setting("SLUICE_TEST_PG_BIN").expect(
            "SLUICE_TEST_PG_BIN names PostgreSQL's bin folder (`just services` records it in .local/env)",
        ));
        let pg = PrivatePostgres::init(bin, password);
        pg.launch().await;
        pg
    }

    /// A new cluster in a scratch folder (not started).
    fn init(bin: PathBuf, password: Option<&str>) -> PrivatePostgres {
        let user = local_setting("SLUICE_TEST_PG_USER").filter(|u| !u.is_empty());
        let dir = scratch_dir("postgres");
        let pg = PrivatePostgres {
            port: free_port(),
            dir,
            bin,
            user,
        };
        if let Some(user) = &pg.user {
            let _ = Command::new("chown").arg(user).arg(&pg.dir).status();
        }
        let data = pg.data();
        let mut initdb = vec![
            "-D",
            &data,
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--auth-local=trust",
        ];
        let pwfile = pg.dir.join("pwfile");
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        match password {
            Some(password) => {
                std::fs::write(&pwfile, format!("{password}\n")).expect("password file");
                if let Some(user) = &pg.user {
                    let _ = Command::new("chown").arg(user).arg(&pwfile).status();
                }
                initdb.extend(["--auth-host=scram-sha-256", &pwfile_arg]);
            }
            None => initdb.push("--auth-host=trust"),
        }
        pg.run("initdb", &initdb);
        let _ = std::fs::remove_file(&pwfile);
        pg
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// PostgreSQL refuses to run as root: run its tools as `user` then.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        match &self.user {
            Some(user) if is_root() => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            _ => Command::new(program),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("PostgreSQL tool runs");
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn launch(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        wait_for_port(self.port, "private PostgreSQL to listen").await;
    }

    /// Stops the server abruptly (every connection cut, as in a crash) and
    /// starts it again after `down`.
    pub async fn restart(&self, down: Duration) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        tokio::time::sleep(down).await;
        self.launch().await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A setting for the tests: the environment variable, else what
/// `just services` recorded in `.local/env` at the workspace root.
pub fn local_setting(key: &str) -> Option<String> {
    if let Ok(value) = std::env::var(key) {
        return Some(value);
    }
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/env");
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k == key).then(|| v.to_owned())
        })
}

fn is_root() -> bool {
    sluice_devkit::process::is_root()
}
