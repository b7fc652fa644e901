//! Test certificates for `fieldlink certs`: a CA, a server certificate for
//! `localhost` and `127.0.0.1`, and a client certificate, all PEM, made with
//! rcgen (ECDSA P-256). For trials and tests; production uses the site's PKI.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::error::CertsError;

/// The PEM texts of a test PKI.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// CA certificate.
    pub ca_cert: String,
    /// CA private key (to sign more certificates).
    pub ca_key: String,
    /// Server certificate (SAN `localhost`, `127.0.0.1`, `::1`).
    pub server_cert: String,
    /// Server private key.
    pub server_key: String,
    /// Client certificate (CN `client`, for mutual TLS).
    pub client_cert: String,
    /// Client private key.
    pub client_key: String,
}

/// The files [`TestPki::write`] creates, in order.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

impl TestPki {
    /// Makes a fresh CA and the two certificates it signs.
    ///
    /// # Errors
    /// `CertsError::Generate` when rcgen fails.
    pub fn generate() -> Result<TestPki, CertsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Fieldlink test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client.distinguished_name.push(DnType::CommonName, "client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key)?;

        Ok(TestPki {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        })
    }

    /// Writes [`FILES`] into `dir` (created when missing); keys are
    /// readable by the owner only. Returns the paths written.
    ///
    /// # Errors
    /// `CertsError::Write` naming the file.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, CertsError> {
        std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let texts = [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
        ];
        let mut written = Vec::new();
        for (name, text) in FILES.iter().zip(texts) {
            let path = dir.join(name);
            write_file(&path, text, name.ends_with(".key")).map_err(|source| {
                CertsError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            written.push(path);
        }
        Ok(written)
    }
}

fn write_file(path: &Path, text: &str, private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_load_as_a_tls_server_with_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate().unwrap();
        let files = pki.write(dir.path()).unwrap();
        assert_eq!(files.len(), FILES.len());
        let config = crate::tls::server_config(
            &dir.path().join("server.pem"),
            &dir.path().join("server.key"),
            Some(&dir.path().join("ca.pem")),
        );
        assert!(config.is_ok(), "{:?}", config.err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("server.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}
