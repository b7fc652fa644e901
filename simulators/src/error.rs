//! Errors of the simulator library.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can go wrong planning, writing or serving a simulated fleet.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A fleet specification that cannot be planned; names the flag or field.
    #[error("{field}: {message}")]
    Spec {
        /// Flag or field at fault (`--mix`, `devices`, ...).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file or directory could not be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A device endpoint could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A generated file could not be serialized.
    #[error("cannot write {what} as TOML: {message}")]
    Toml {
        /// Which file.
        what: String,
        /// The serializer's message.
        message: String,
    },
    /// The operating system's random source failed (tenant tokens).
    #[error("no random numbers for tenant tokens: {0}")]
    Random(String),
    /// A simulated server could not be built or started.
    #[error("simulated server: {0}")]
    Server(String),
    /// A shard process could not be started or failed.
    #[error("shard process for devices {from}..{to}: {message}")]
    Shard {
        /// First device of the shard.
        from: u32,
        /// One past its last device.
        to: u32,
        /// What happened.
        message: String,
    },
}

impl SimError {
    pub(crate) fn spec(field: &'static str, message: impl Into<String>) -> SimError {
        SimError::Spec {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> SimError {
        SimError::Io {
            path: path.into(),
            source,
        }
    }
}
