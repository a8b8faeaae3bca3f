//! The real sluice binaries as child processes.

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::process::{Child, Command};

/// Where cargo put the binaries: beside the running executable, or one level
/// up for a test executable in `target/<profile>/deps`.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe
        .parent()
        .expect("executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir
    }
}

/// One running service binary, its output appended to a log file.
pub struct Process {
    pub name: String,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `binary_dir()/name` with `env` added to the environment.
    pub fn start(
        name: &str,
        env: Vec<(String, String)>,
        log_dir: &Path,
    ) -> std::io::Result<Process> {
        Process::start_replica(name, name, env, log_dir)
    }

    /// Like [`Process::start`], logging to `<replica>.log` (one of several
    /// replicas of the same binary).
    pub fn start_replica(
        name: &str,
        replica: &str,
        env: Vec<(String, String)>,
        log_dir: &Path,
    ) -> std::io::Result<Process> {
        let binary = binary_dir().join(name);
        if !binary.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is not built (run `cargo build --workspace --bins`)",
                    binary.display()
                ),
            ));
        }
        Process::start_program(name, replica, binary, Vec::new(), env, log_dir)
    }

    /// Runs `program args…` in the place of service `name`: another
    /// implementation of the same stage.
    pub fn start_program(
        name: &str,
        replica: &str,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log_dir: &Path,
    ) -> std::io::Result<Process> {
        std::fs::create_dir_all(log_dir)?;
        let mut process = Process {
            name: name.to_owned(),
            binary: program,
            args,
            env,
            log: log_dir.join(format!("{replica}.log")),
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The most resident memory the process has used so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGKILL: the process gets no chance to finish anything.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then waits up to `timeout` for a graceful exit (SIGKILL after).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stop_with(libc::SIGTERM, timeout).await
    }

    /// Sends `signal`, then waits up to `timeout` for an exit (SIGKILL after).
    pub async fn stop_with(
        &mut self,
        signal: libc::c_int,
        timeout: Duration,
    ) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            send_signal(pid, signal);
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// Starts the same binary again with the same environment.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.spawn()
    }

    /// Whether it exited on its own, and how.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

/// The three sluice services running against one sandbox.
pub struct Deployment {
    pub services: Vec<Process>,
    pub log_dir: PathBuf,
    keep_logs: bool,
}

impl Deployment {
    /// The service binaries sluice consists of (the saver also runs the
    /// import tracker).
    pub const SERVICES: [&'static str; 3] = ["importer", "fetcher", "saver"];

    /// Starts every service with the sandbox's environment plus `env`, its
    /// logs in a folder named after the sandbox's database.
    pub fn start(sandbox: &crate::Sandbox, env: &[(&str, &str)]) -> std::io::Result<Deployment> {
        Deployment::plan(sandbox).env(env).start()
    }

    /// A deployment to shape before starting it: more replicas, settings
    /// per replica, a service swapped for another program.
    pub fn plan(sandbox: &crate::Sandbox) -> DeploymentPlan<'_> {
        DeploymentPlan {
            sandbox,
            env: Vec::new(),
            replicas: 1,
            per_replica: Box::new(|_| Vec::new()),
            swapped: None,
        }
    }

    /// Loopback, which downloads refuse by default, is where the local file
    /// server of tests, the demo and the bench lives: allowed explicitly.
    pub const ALLOW_LOOPBACK: (&'static str, &'static str) =
        ("SLUICE_ALLOW_NETWORKS", "127.0.0.0/8,::1");

    pub fn service(&mut self, name: &str) -> &mut Process {
        self.services
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Whether the services' logs stay when the deployment is dropped
    /// (they are removed otherwise): for a failure someone must read about.
    pub fn keep_logs(&mut self, keep: bool) {
        self.keep_logs = keep;
    }

    /// SIGTERM to every service; says which did not exit 0 within `timeout`.
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for service in &mut self.services {
            match service.terminate(timeout).await {
                Some(status) if status.success() => {}
                other => failed.push(format!(
                    "{} did not exit cleanly on SIGTERM: {other:?} (log: {})",
                    service.name,
                    service.log_path().display()
                )),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            self.keep_logs = true;
            Err(anyhow::anyhow!(failed.join("; ")))
        }
    }
}

impl Drop for Deployment {
    /// The services' logs go with them, unless something failed: a test
    /// (then where they are is said) or a caller that kept them.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the services' logs are kept in {}", self.log_dir.display());
        } else if !self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// Settings added to one replica's environment, by the replica's name.
pub type PerReplica<'a> = Box<dyn Fn(&str) -> Vec<(String, String)> + 'a>;

/// What [`Deployment::plan`] will start.
pub struct DeploymentPlan<'a> {
    sandbox: &'a crate::Sandbox,
    env: Vec<(String, String)>,
    replicas: usize,
    per_replica: PerReplica<'a>,
    swapped: Option<(String, PathBuf, Vec<String>)>,
}

impl<'a> DeploymentPlan<'a> {
    /// Settings added for every service (after the sandbox's own).
    pub fn env(mut self, env: &[(&str, &str)]) -> Self {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// `replicas` copies of every service, all on the same consumers (at
    /// least one).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Settings added to one replica's environment, by its name (`fetcher`,
    /// `fetcher-2`, …): its own metrics port, say.
    pub fn per_replica(mut self, settings: impl Fn(&str) -> Vec<(String, String)> + 'a) -> Self {
        self.per_replica = Box::new(settings);
        self
    }

    /// Service `name` replaced by `program args…` (a stage written in
    /// another language, say), in its first replica.
    pub fn swap(mut self, name: &str, program: PathBuf, args: Vec<String>) -> Self {
        self.swapped = Some((name.to_owned(), program, args));
        self
    }

    /// Starts every replica of every service, its logs in a folder named
    /// after the sandbox's database.
    pub fn start(self) -> std::io::Result<Deployment> {
        let log_dir = std::env::temp_dir().join(format!("sluice-{}", self.sandbox.database));
        let mut service_env = self.sandbox.service_env();
        let (allow, networks) = Deployment::ALLOW_LOOPBACK;
        service_env.push((allow.into(), networks.into()));
        if std::env::var_os("RUST_LOG").is_none() {
            service_env.push(("RUST_LOG".into(), "info,async_nats=warn".into()));
        }
        service_env.extend(self.env);
        let mut services = Vec::new();
        for n in 1..=self.replicas {
            for name in Deployment::SERVICES {
                let replica = match n {
                    1 => name.to_owned(),
                    n => format!("{name}-{n}"),
                };
                let mut env = service_env.clone();
                env.extend((self.per_replica)(&replica));
                services.push(match &self.swapped {
                    Some((swapped, program, args)) if swapped == name && n == 1 => {
                        Process::start_program(
                            name,
                            name,
                            program.clone(),
                            args.clone(),
                            env,
                            &log_dir,
                        )?
                    }
                    _ => Process::start_replica(name, &replica, env, &log_dir)?,
                });
            }
        }
        Ok(Deployment {
            services,
            log_dir,
            keep_logs: false,
        })
    }
}

/// Sends `signal` to process `pid` (one of this test's own children, not
/// yet reaped, so the pid cannot name another process). The one place the
/// test tools need `unsafe`.
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; a stale pid only fails.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Whether this process runs as root (PostgreSQL refuses to).
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
