//! Errors of the registry's library parts.

use std::path::PathBuf;

pub use fieldlink_model::ConfigError;

/// A failure of the device store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed.
    #[error("device store: {0}")]
    Database(String),
    /// A stored record cannot be decoded.
    #[error("device store: corrupted record {key}: {why}")]
    Corrupted {
        /// The record's key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The store's directory cannot be used.
    #[error("device store at {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A failure to start or run the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listener failed.
    #[error("{what}: {source}")]
    Io {
        /// Which listener or task.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// A `GatewayMessage` the registry cannot read. The stream that sent it is
/// ended with `INVALID_ARGUMENT` naming the field; batches acknowledged
/// before it stay applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A field runs past the end of its message (or a varint is cut).
    #[error("malformed GatewayMessage: `{field}` is truncated")]
    Truncated {
        /// The field, as `Message.field`.
        field: &'static str,
    },
    /// A known field with another wire type than the schema's.
    #[error("malformed GatewayMessage: `{field}` has wire type {got}")]
    WireType {
        /// The field.
        field: &'static str,
        /// The wire type it came with.
        got: u8,
    },
    /// A string field that is not UTF-8.
    #[error("malformed GatewayMessage: `{field}` is not UTF-8")]
    Utf8 {
        /// The field.
        field: &'static str,
    },
    /// A message prost could not decode.
    #[error("malformed GatewayMessage: `{field}`: {source}")]
    Message {
        /// The message or field.
        field: &'static str,
        /// Why.
        source: prost::DecodeError,
    },
}

impl WireError {
    pub(crate) fn message(field: &'static str, source: prost::DecodeError) -> Self {
        WireError::Message { field, source }
    }
}
