//! gRPC ingest: one bidirectional stream per gateway session.
//!
//! [`server`] is the gRPC face, whose codec reads each message through
//! [`lean`] (per point only its tag id, time and quality); [`service`]
//! authenticates the stream and reads it; [`prepare`] checks each batch on
//! the stream's task; [`committer`] makes batches from all streams durable
//! together and acknowledges them.

pub(crate) mod committer;
pub(crate) mod lean;
pub(crate) mod prepare;
#[cfg(test)]
mod read_model_tests;
pub mod server;
pub mod service;

pub use server::IngestServer;
pub use service::IngestService;
