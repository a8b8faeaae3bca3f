//! What sluice keeps in NATS JetStream besides the messages it works on:
//! how it logs in (`login`), its streams and durable consumers
//! ([`topology`]), and its key-value buckets ([`buckets`]: the import id
//! registry, the row budget, the import specs, the file checkpoints).

pub mod buckets;
pub mod cancellations;
pub mod checkpoints;
pub mod import_ids;
pub(crate) mod login;
pub mod row_budget;
pub mod specs;
pub mod topology;
