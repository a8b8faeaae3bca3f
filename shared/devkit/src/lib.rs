//! What sluice's tests and demo run against: real servers, isolated.
//!
//! - [`data`]: sample accounts and transactions files, with the rows they
//!   must produce.
//! - [`http`]: a real HTTP/1.1 server for those files, with options to
//!   gzip, trickle or fail a response.
//! - [`sandbox`]: a private namespace on NATS and a private PostgreSQL database,
//!   both removed on drop.
//! - [`process`]: the real service binaries, started, killed, restarted.
//! - [`jaeger`]: a real Jaeger to export traces to.
//! - [`free_port`]: a port for a server started as a child process.

pub mod data;
pub mod http;
pub mod jaeger;
pub mod process;
pub mod sandbox;

pub use data::{Dataset, ExpectedRow};
pub use http::{Fault, FileServer, Route};
pub use process::{binary_dir, Deployment, DeploymentPlan, Process};
pub use sandbox::Sandbox;

/// A short random lowercase hex string for unique names.
pub fn unique_suffix() -> String {
    format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

/// A loopback port free now, for a server another process will bind.
///
/// Not one the kernel hands out for outgoing connections (its ephemeral
/// range, 32768-60999 by default): between this check and the child's bind,
/// any connection (a NATS node's route to its peers, say) could take such a
/// port, and the child would fail with "address already in use". Ports
/// handed out once by this process are never handed out again.
pub fn free_port() -> std::io::Result<u16> {
    use std::{collections::HashSet, sync::Mutex};
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let (low, high) = ephemeral_ports();
    // The larger span outside the ephemeral range, above the privileged ports.
    let (from, to) = match low.saturating_sub(10_000) >= 65_535u16.saturating_sub(high) {
        true => (10_000, low),
        false => (high.saturating_add(1), 65_535),
    };
    let mut handed_out = HANDED_OUT.lock().expect("never poisoned");
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..1_000 {
        let port = fastrand::u16(from..to);
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free loopback port in {from}-{to}"),
    ))
}

/// The kernel's range of ports for outgoing connections.
fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut bounds = range.split_whitespace().map(|b| b.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32_768, 60_999))
}
