//! What an operator does with a running sluice: follow imports to their
//! completion, wait for the services' consumers, list, show and replay
//! dead letters, and ask the service API. The `sluice` command, the
//! console and the tests use it; of the services, only the saver, which
//! answers the service API's dead-letter requests with it.

pub mod api;
pub mod consumers;
pub mod dead_letters;
mod error;
pub mod imports;

pub use error::{Error, Result};
