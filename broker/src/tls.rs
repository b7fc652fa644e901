//! The TLS listener's rustls configuration.
//!
//! The crypto provider is `ring`: it builds with a C compiler alone (no
//! cmake, no Go, no OpenSSL), compiles in a fraction of aws-lc-rs's time on
//! two cores, and covers what MQTT clients use (TLS 1.2 and 1.3, ECDSA and
//! RSA certificates). The broker's password hashing uses the same crate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::TlsError;

/// The crypto provider every TLS object of the broker uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain.
///
/// # Errors
/// `TlsError::Pem` naming the file.
pub fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |why: String| TlsError::Pem {
        key,
        path: path.to_owned(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

/// Builds the server configuration: certificate and key, and when a client
/// CA is given, required client certificates signed by it.
///
/// # Errors
/// `TlsError` naming the file or what rustls refused.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs("cert", cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
        key: "key",
        path: key.to_owned(),
        why: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certs("client_ca", path)? {
                roots.add(ca)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(chain, private)?))
}
