//! Errors of the broker library.

use std::net::SocketAddr;
use std::path::PathBuf;

pub use fieldlink_model::ConfigError;

/// A failure to start or run the broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A listener failed.
    #[error("listener {addr}: {source}")]
    Listen {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An in-process link asked for a tenant that is not configured.
    #[error("no tenant `{0}` in the broker configuration")]
    UnknownTenant(String),
    /// The broker has stopped: no new links.
    #[error("the broker has stopped")]
    Stopped,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{}: {why}", path.display())]
    Pem {
        /// Config key of the file (`cert`, `key`, `client_ca`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the certificates or key.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA set cannot verify clients.
    #[error("client CA: {0}")]
    ClientCa(String),
}

impl TlsError {
    /// The key under `[tls]` the problem is about.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Pem { key, .. } => key,
            TlsError::Rustls(_) => "cert",
            TlsError::ClientCa(_) => "client_ca",
        }
    }
}

/// A failure to make test certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    /// rcgen failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file cannot be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}
