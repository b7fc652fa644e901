//! Errors of the registry's library parts.

use std::path::{Path, PathBuf};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a bad value.
    #[error("{}{message}", file_prefix(file))]
    Parse {
        /// The file, when known.
        file: Option<PathBuf>,
        /// The parser's message: it names the key and the line.
        message: String,
    },
    /// Values that parse but cannot be used; one line per problem.
    #[error("{}invalid configuration:\n  {}", file_prefix(file), problems.join("\n  "))]
    Invalid {
        /// The file, when known.
        file: Option<PathBuf>,
        /// `key: what is wrong`, one per problem.
        problems: Vec<String>,
    },
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

impl ConfigError {
    /// The same error, naming the file it came from.
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                file: Some(path.to_owned()),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                file: Some(path.to_owned()),
                problems,
            },
            other => other,
        }
    }
}

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
