//! A 3-node JetStream cluster of the test's own on loopback: real
//! nats-server processes joined by routes, each killable (`kill -9`) and
//! restartable on its own port and store, as a node loss in production.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, stream};

use crate::servers::{free_port, scratch_dir, wait_for_port, PrivateNats};

/// TLS and logins for the clients and the routes between nodes.
pub struct Secured {
    /// PEM files: the nodes' certificate and key (valid for 127.0.0.1, as
    /// server and as client, since a route is both), and the CA that signed
    /// it and that clients' certificates must chain to.
    pub cert: String,
    pub key: String,
    pub ca: String,
    /// The user and password clients log in with.
    pub client: (String, String),
    /// The user and password nodes log in to each other's routes with.
    pub route: (String, String),
}

struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Three nodes, plain.
    pub async fn start() -> NatsCluster {
        NatsCluster::start_with(None).await
    }

    /// Three nodes requiring TLS and a login from clients and from each other.
    pub async fn start_secured(secured: Secured) -> NatsCluster {
        NatsCluster::start_with(Some(secured)).await
    }

    async fn start_with(secured: Option<Secured>) -> NatsCluster {
        let dir = scratch_dir("nats-cluster");
        let cluster_name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_login = secured
            .as_ref()
            .map(|s| format!("{}:{}@", s.route.0, s.route.1))
            .unwrap_or_default();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("\"nats-route://{route_login}127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, cluster_port) in cluster_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let (port, monitor_port) = (free_port(), free_port());
            let store = dir.join(&name);
            let mut config = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor_port}\"\n\
                 log_file: \"{log}\"\n\
                 jetstream {{ store_dir: \"{store}\", max_memory_store: 256MB, max_file_store: 4GB }}\n\
                 cluster {{\n  name: {cluster_name}\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{routes}]\n",
                log = dir.join(format!("{name}.log")).display(),
                store = store.display(),
            );
            if let Some(s) = &secured {
                let tls = format!(
                    "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true, timeout: 5 }}",
                    s.cert, s.key, s.ca
                );
                config.push_str(&format!(
                    "  authorization {{ user: \"{}\", password: \"{}\" }}\n  {tls}\n}}\n{tls}\n\
                     authorization {{ user: \"{}\", password: \"{}\" }}\n",
                    s.route.0, s.route.1, s.client.0, s.client.1
                ));
            } else {
                config.push_str("}\n");
            }
            let config_path = dir.join(format!("{name}.conf"));
            std::fs::write(&config_path, config).expect("node config written");
            nodes.push(Node {
                name,
                port,
                cluster_port: *cluster_port,
                monitor_port,
                config: config_path,
                child: None,
            });
        }
        let mut cluster = NatsCluster { nodes, dir };
        for i in 0..3 {
            cluster.launch(i);
        }
        for i in 0..3 {
            cluster.wait_until_healthy(i).await;
        }
        eprintln!("NATS cluster logs: {}", cluster.dir.display());
        cluster
    }

    /// Every node's client URL, comma-separated, as the services take them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node with server name `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn launch(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = Command::new(PrivateNats::binary())
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        node.child = Some(child);
    }

    /// Waits until node `i` listens and its JetStream is current with the
    /// cluster (`/healthz` answers 200).
    pub async fn wait_until_healthy(&self, i: usize) {
        let node = &self.nodes[i];
        wait_for_port(node.port, "a cluster node to listen").await;
        let port = node.monitor_port;
        crate::wait_until(
            Duration::from_secs(60),
            &format!("node {} healthy", node.name),
            || async move {
                crate::get(port, "/healthz")
                    .await
                    .is_some_and(|(code, _)| code == 200)
            },
        )
        .await;
    }

    /// `kill -9` of node `i`: no goodbye to clients or peers.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its port and store, and waits until it has
    /// caught up.
    pub async fn restart(&mut self, i: usize) {
        self.launch(i);
        self.wait_until_healthy(i).await;
    }

    /// Starts nodes `which` again at once (quorum comes back with the
    /// second), and waits until each has caught up.
    pub async fn restart_all(&mut self, which: &[usize]) {
        for &i in which {
            self.launch(i);
        }
        for &i in which {
            self.wait_until_healthy(i).await;
        }
    }

    /// What `stream` says of itself, once it has a leader to answer.
    async fn stream_info(&self, js: &jetstream::Context, stream: &str) -> Option<stream::Info> {
        // A request sent while there is no leader gets no answer: ask often.
        let mut js = js.clone();
        js.set_timeout(Duration::from_millis(500));
        js.get_stream(stream)
            .await
            .ok()
            .map(|s| s.cached_info().clone())
    }

    /// The sequence of the last message `stream` stored.
    pub async fn last_sequence(&self, js: &jetstream::Context, stream: &str) -> u64 {
        let started = Instant::now();
        loop {
            if let Some(info) = self.stream_info(js, stream).await {
                return info.state.last_sequence;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{stream} does not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node leading `stream`'s RAFT group, once there is one.
    pub async fn stream_leader(&self, js: &jetstream::Context, stream: &str) -> usize {
        let started = Instant::now();
        loop {
            if let Some(info) = self.stream_info(js, stream).await {
                if let Some(leader) = info.cluster.and_then(|c| c.leader) {
                    return self.index_of(&leader);
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{stream} has no leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `stream` is led by a node other than `old`: how long the
    /// cluster went without a leader for it.
    pub async fn new_leader(&self, js: &jetstream::Context, stream: &str, old: usize) -> usize {
        let started = Instant::now();
        loop {
            let leader = self.stream_leader(js, stream).await;
            if leader != old {
                return leader;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{stream} has no new leader"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What node `i` says first to a route connecting in the clear: an INFO
    /// line, or nothing when its routes take TLS only (the handshake comes
    /// first then).
    pub async fn route_greeting(&self, i: usize) -> String {
        use tokio::io::AsyncBufReadExt;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.nodes[i].cluster_port))
            .await
            .expect("the route port answers");
        let mut line = String::new();
        let _ = tokio::io::BufReader::new(stream).read_line(&mut line).await;
        line
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // A failed test's node logs stay for a look; their configs, which
        // hold the passwords, do not.
        if std::thread::panicking() {
            for node in &self.nodes {
                let _ = std::fs::remove_file(&node.config);
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
