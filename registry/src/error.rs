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
