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
