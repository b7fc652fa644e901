//! gRPC ingest: one bidirectional stream per gateway session.
//!
//! [`service`] authenticates the stream and reads it; [`prepare`] checks each
//! batch on the stream's task; [`committer`] makes batches from all streams
//! durable together and acknowledges them.

pub(crate) mod committer;
pub(crate) mod prepare;
#[cfg(test)]
mod read_model_tests;
pub mod service;

pub use service::IngestService;
