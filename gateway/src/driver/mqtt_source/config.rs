//! The broker keys both MQTT drivers share, at the top of their own section
//! (`[mqtt]`, `[sparkplug]`): where the broker is and how to log in.
//! [`split`] takes them out of the section so that each driver parses the
//! rest strictly; [`BrokerSection::validate`] names every bad key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Keys of the broker settings, in every MQTT driver's section.
pub const BROKER_KEYS: &[&str] = &[
    "broker",
    "tenant",
    "client_id",
    "username",
    "password",
    "keep_alive",
    "clean_session",
    "connect_timeout",
    "reconnect_min",
    "reconnect_max",
    "ca_file",
    "max_packet_bytes",
];

/// The broker keys of a driver section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// `embedded` (the broker in this process, `fieldlink demo` or a gateway
    /// started beside `fieldlink broker`), or `mqtt://HOST:PORT` /
    /// `mqtts://HOST:PORT` for an external broker (mosquitto, EMQX, ...).
    pub broker: String,
    /// The tenant the gateway serves: `{tenant}` in topics, the Sparkplug
    /// group by default, and the clients the embedded broker's link hands
    /// over. Messages of other tenants are ignored and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// MQTT client id at an external broker; `fieldlink-<section>-<tenant>`
    /// and a random suffix when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// User name at an external broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password at an external broker (needs `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// MQTT clean session (Sparkplug requires `true`).
    #[serde(default = "default_true")]
    pub clean_session: bool,
    /// Time allowed for TCP, TLS and MQTT CONNECT.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First delay after a lost or refused connection; doubles with jitter.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest delay between connection attempts.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// PEM file of the CA certificates that sign an `mqtts://` broker's
    /// certificate; the system's roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Largest MQTT packet accepted from an external broker; a larger one
    /// breaks the connection (it is refused before it is buffered). Keep it
    /// above the driver's `max_payload_bytes` so that oversized payloads
    /// are counted as malformed instead.
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(200)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_packet_bytes() -> usize {
    16 << 20
}

/// Where the broker is.
#[derive(Debug, Clone)]
pub enum Target {
    /// The in-process broker (`Resources::embedded_mqtt`).
    Embedded,
    /// An external broker.
    External(External),
}

/// An external broker's address and TLS.
#[derive(Clone)]
pub struct External {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS client config for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Validated broker settings.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Where.
    pub target: Target,
    /// The tenant served, if set.
    pub tenant: Option<String>,
    /// Client id at an external broker.
    pub client_id: String,
    /// Credentials at an external broker.
    pub credentials: Option<(String, String)>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Clean session.
    pub clean_session: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Reconnect backoff bounds.
    pub reconnect: (Duration, Duration),
    /// Largest packet from an external broker.
    pub max_packet_bytes: usize,
}

impl BrokerSettings {
    /// `mqtt://host:port/`, `mqtts://...` or `embedded`, for endpoints and
    /// logs.
    pub fn url(&self) -> String {
        match &self.target {
            Target::Embedded => "embedded".to_owned(),
            Target::External(e) => {
                let scheme = if e.tls.is_some() { "mqtts" } else { "mqtt" };
                format!("{scheme}://{}:{}", e.host, e.port)
            }
        }
    }
}

/// Splits a driver section into its broker keys and the rest.
///
/// # Errors
/// `section: must be a table` when it is not one.
pub fn split(section: &str, value: &toml::Value) -> Result<(toml::Value, toml::Value), String> {
    let Some(table) = value.as_table() else {
        return Err(format!("{section}: must be a table"));
    };
    let (broker, rest): (toml::Table, toml::Table) = table
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| BROKER_KEYS.contains(&k.as_str()));
    Ok((broker.into(), rest.into()))
}

/// Whether `name` can be a tenant name (the registry's rule: 1 to 64
/// letters, digits, `-` or `_`), so that it is one MQTT topic level.
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl BrokerSection {
    /// Checks every key; `section` prefixes the key paths.
    ///
    /// # Errors
    /// Every problem, `section.key: what is wrong`.
    pub fn validate(&self, section: &str) -> Result<BrokerSettings, Vec<String>> {
        let mut problems = Vec::new();
        let target = match parse_url(&self.broker) {
            Ok(UrlTarget::Embedded) => Some(Target::Embedded),
            Ok(UrlTarget::External { host, port, tls }) => {
                let tls = if tls {
                    match tls_config(self.ca_file.as_deref()) {
                        Ok(config) => Some(config),
                        Err(e) => {
                            problems.push(format!("{section}.ca_file: {e}"));
                            None
                        }
                    }
                } else {
                    if self.ca_file.is_some() {
                        problems.push(format!("{section}.ca_file: only for an mqtts:// broker"));
                    }
                    None
                };
                Some(Target::External(External { host, port, tls }))
            }
            Err(e) => {
                problems.push(format!("{section}.broker: {e}"));
                None
            }
        };
        if let Some(tenant) = &self.tenant
            && !valid_tenant(tenant)
        {
            problems.push(format!(
                "{section}.tenant: `{tenant}` must be 1 to 64 letters, digits, `-` or `_`"
            ));
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 256 || id.chars().any(char::is_control))
        {
            problems.push(format!(
                "{section}.client_id: must be 1 to 256 bytes without control characters"
            ));
        }
        let credentials = match (&self.username, &self.password) {
            (Some(u), p) => Some((u.clone(), p.clone().unwrap_or_default())),
            (None, Some(_)) => {
                problems.push(format!("{section}.password: needs `username`"));
                None
            }
            (None, None) => None,
        };
        if self.keep_alive < Duration::from_secs(1) || self.keep_alive > Duration::from_secs(65_535)
        {
            problems.push(format!("{section}.keep_alive: must be 1s..=65535s"));
        }
        if self.connect_timeout < Duration::from_secs(1) {
            problems.push(format!("{section}.connect_timeout: must be at least 1s"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            problems.push(format!(
                "{section}.reconnect_min: must be above zero and at most {section}.reconnect_max"
            ));
        }
        if !(1024..=268_435_455).contains(&self.max_packet_bytes) {
            problems.push(format!(
                "{section}.max_packet_bytes: must be 1024..=268435455 (the MQTT maximum)"
            ));
        }
        let client_id = self.client_id.clone().unwrap_or_else(|| {
            format!(
                "fieldlink-{section}-{}-{:08x}",
                self.tenant.as_deref().unwrap_or("all"),
                rand::random::<u32>()
            )
        });
        match target {
            Some(target) if problems.is_empty() => Ok(BrokerSettings {
                target,
                tenant: self.tenant.clone(),
                client_id,
                credentials,
                keep_alive: self.keep_alive,
                clean_session: self.clean_session,
                connect_timeout: self.connect_timeout,
                reconnect: (self.reconnect_min, self.reconnect_max),
                max_packet_bytes: self.max_packet_bytes,
            }),
            _ => Err(problems),
        }
    }
}

enum UrlTarget {
    Embedded,
    External { host: String, port: u16, tls: bool },
}

fn parse_url(url: &str) -> Result<UrlTarget, String> {
    if url == "embedded" {
        return Ok(UrlTarget::Embedded);
    }
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else {
        return Err(format!(
            "`{url}` is neither `embedded` nor mqtt://HOST:PORT or mqtts://HOST:PORT"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{url}`: port `{port}` is not 1..=65535"))?;
            (host, port)
        }
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return Err(format!("`{url}`: no host, or a path, user or query in it"));
    }
    Ok(UrlTarget::External {
        host: host.to_owned(),
        port,
        tls,
    })
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate in it", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system certificate rustls cannot use is skipped.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system CA certificates found; set it".to_owned());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> BrokerSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn urls_and_defaults() {
        let s = section("broker = \"mqtt://127.0.0.1:1884\"")
            .validate("mqtt")
            .unwrap();
        assert_eq!(s.url(), "mqtt://127.0.0.1:1884");
        assert!(s.clean_session && s.credentials.is_none());
        assert!(s.client_id.starts_with("fieldlink-mqtt-all-"));
        let s = section("broker = \"mqtt://broker.local\"\ntenant = \"acme\"\nusername = \"gw\"")
            .validate("mqtt")
            .unwrap();
        assert_eq!(s.url(), "mqtt://broker.local:1883");
        assert_eq!(s.credentials, Some(("gw".into(), String::new())));
        let s = section("broker = \"embedded\"")
            .validate("sparkplug")
            .unwrap();
        assert!(matches!(s.target, Target::Embedded));
    }

    #[test]
    fn every_bad_key_is_named() {
        let s = section(
            "broker = \"tcp://x\"\ntenant = \"a b\"\npassword = \"p\"\nkeep_alive = \"0s\"\nmax_packet_bytes = 10",
        );
        let problems = s.validate("mqtt").unwrap_err();
        for key in [
            "mqtt.broker",
            "mqtt.tenant",
            "mqtt.password",
            "mqtt.keep_alive",
            "mqtt.max_packet_bytes",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} in {problems:?}"
            );
        }
        let p = section("broker = \"mqtt://h:99999\"")
            .validate("x")
            .unwrap_err();
        assert!(p[0].contains("port"), "{p:?}");
        let p = section("broker = \"mqtts://h:8883\"\nca_file = \"/nonexistent.pem\"")
            .validate("x")
            .unwrap_err();
        assert!(p[0].starts_with("x.ca_file"), "{p:?}");
    }

    #[test]
    fn split_separates_broker_keys() {
        let v: toml::Value =
            toml::from_str("broker = \"embedded\"\nhost_id = \"h\"\nkeep_alive = \"5s\"").unwrap();
        let (b, rest) = split("sparkplug", &v).unwrap();
        assert_eq!(b.as_table().unwrap().len(), 2);
        assert_eq!(rest.as_table().unwrap().len(), 1);
    }
}
