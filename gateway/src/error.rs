//! Errors of the gateway's library parts.

use std::path::PathBuf;

pub use fieldlink_model::ConfigError;

/// A failure talking to a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The connection failed or broke.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The device answered with a protocol exception.
    #[error("device exception: {0}")]
    Exception(String),
    /// The device's answer makes no sense (wrong length, ...).
    #[error("bad response: {0}")]
    BadResponse(String),
    /// The request cannot be made (unknown tag, read-only area, ...).
    #[error("{0}")]
    Invalid(String),
}

/// A failure of the disk spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A record failed its checksum or length check.
    #[error("spool {}: corrupted record at offset {offset}: {why}", path.display())]
    Corrupted {
        /// The segment.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// A single batch is larger than a segment.
    #[error("batch of {size} bytes is larger than spool.segment_bytes ({limit})")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Segment size.
        limit: u64,
    },
}

/// A failure to start or run the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The ledger file cannot be opened.
    #[error("ledger {}: {source}", path.display())]
    Ledger {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The uplink's thread could not be started.
    #[error("cannot start the uplink thread: {0}")]
    Uplink(std::io::Error),
    /// The metrics listener failed.
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        /// Its address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
