//! What an operator does with a running sluice, for the `sluice` command
//! and the tests: follow imports to their completion, wait for the
//! services' consumers, list, show and replay dead letters. The services
//! never link it.

pub mod consumers;
pub mod dead_letters;
mod error;
pub mod imports;

pub use error::{Error, Result};
