//! Broker configuration: one TOML file (see `deploy/broker.example.toml`).
//!
//! Parsing is strict (`deny_unknown_fields`); [`BrokerConfig::validate`]
//! checks every value, reads the TLS files, parses every password hash and
//! ACL pattern, and reports every problem at once, each naming its key
//! (`users[2] (dev7).tenant: no tenant `acme``). Runtime code sees only
//! [`Settings`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::acl::{AclPatterns, Pattern};
use crate::auth::PasswordHash;
use crate::error::ConfigError;

/// The broker's configuration file, as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// MQTT over plain TCP, e.g. `0.0.0.0:1883`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// MQTT over TLS; none when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Limits that bound what one client (or a flood of them) can cost.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Memory of the rumqttd router.
    #[serde(default)]
    pub router: RouterConfig,
    /// Prometheus `/metrics` and `/healthz`; none when absent.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Tenants: every user belongs to one; its ACL patterns apply.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Users (devices and services) with their password hashes.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// The lean device ingress, run as shard processes beside the broker;
    /// none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressConfig>,
}

/// `[ingress]`: the lean telemetry ingress for very many device
/// connections ([`crate::ingress`]), run as `shards` processes sharing one
/// port (`SO_REUSEPORT`), each with the gateways of `gateways` on its links.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Address every shard listens on, e.g. `0.0.0.0:1884`; the kernel
    /// spreads new connections over the shards.
    #[serde(default = "default_ingress_listen")]
    pub listen: SocketAddr,
    /// Shard processes (each holds at most `max_connections`).
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// Client connections one shard holds (a process may open 20 000
    /// files; the rest is kept for the gateway, logs and accepting).
    #[serde(default = "default_shard_connections")]
    pub max_connections: usize,
    /// Gateway config files each shard runs on its links (one per tenant,
    /// with `broker = "embedded"` in `[mqtt]`); shard K runs them with
    /// gateway id `<gateway_id>-s<K>` and data dir `<data_dir>/s<K>`.
    /// Relative paths are taken from the broker config's directory.
    #[serde(default)]
    pub gateways: Vec<PathBuf>,
    /// `/metrics` of shard K on this address's port + K; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

/// Most connections `ingress.max_connections` allows a shard.
pub const MAX_SHARD_CONNECTIONS: usize = 19_000;

/// `[tls]`: the TLS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Listen address, e.g. `0.0.0.0:8883`.
    pub listen: SocketAddr,
    /// Server certificate chain, PEM (leaf first).
    pub cert: PathBuf,
    /// Private key of the certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates, PEM: when set, clients must present a certificate
    /// signed by one of them (mutual TLS), on top of their password.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Client connections at once over both listeners; past it new ones are
    /// closed at once (counted as `max_connections`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest packet a client may send, bytes of remaining length; a larger
    /// declared length ends the connection before it is buffered.
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// Time from accept to a complete CONNECT (TLS handshake included).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest keep-alive granted; a client asking more (or 0 = none) gets
    /// this (MQTT 5: server keep-alive). A client silent for 1.5× its
    /// keep-alive is disconnected.
    #[serde(default = "default_max_keep_alive", with = "humantime_serde")]
    pub max_keep_alive: Duration,
    /// QoS 2 messages a client may have in flight (MQTT 5 receive maximum).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Subscriptions one client may hold.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions: usize,
    /// A client that takes no bytes for this long while messages wait for it
    /// is disconnected (`slow_consumer`).
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Events an in-process link buffers; when full, publishers of its
    /// tenant wait (backpressure), nothing is dropped.
    #[serde(default = "default_link_capacity")]
    pub link_capacity: usize,
    /// Slow password checks (PBKDF2) running at once; more wait their turn,
    /// so a wrong-password flood cannot take every core.
    #[serde(default = "default_auth_concurrency")]
    pub auth_concurrency: usize,
}

/// `[router]`: rumqttd's in-memory commit logs, one per subscription filter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Bytes of one segment of a filter's log (at least 1024).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: usize,
    /// Segments a filter keeps; a subscriber further behind than
    /// `segment_bytes × segments` loses the oldest messages.
    #[serde(default = "default_segments")]
    pub segments: usize,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address, e.g. `127.0.0.1:9883`.
    pub listen: SocketAddr,
}

/// `[[tenants]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant name: letters, digits, `-`, `_` (it is a topic level).
    pub name: String,
    /// ACL of its devices; each list left out takes the device default.
    #[serde(default)]
    pub device: AclConfig,
    /// ACL of its services; each list left out takes the service default.
    #[serde(default)]
    pub service: AclConfig,
}

/// `[tenants.device]` / `[tenants.service]`: ACL pattern lists.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Topics that may be published (`%u`, `%c`, `%t`, `+`, `#`).
    #[serde(default)]
    pub publish: Option<Vec<String>>,
    /// Filters that may be subscribed (every topic they match must be allowed).
    #[serde(default)]
    pub subscribe: Option<Vec<String>>,
}

/// `[[users]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// MQTT user name (no `/`, `+`, `#`: it fills `%u` in topics).
    pub username: String,
    /// `$7$...` (mosquitto_passwd), `$6$...` or `$sha256$...`; see
    /// `fieldlink broker passwd`.
    pub password_hash: String,
    /// Tenant the user belongs to.
    pub tenant: String,
    /// `device` or `service`.
    pub role: Role,
    /// The client id must equal the user name (default: true for devices,
    /// false for services). An empty client id then becomes the user name.
    #[serde(default)]
    pub client_id_must_match: Option<bool>,
}

/// What a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A device: its own topics only.
    Device,
    /// A service of the tenant (a gateway's own client): the whole tenant.
    Service,
}

impl Role {
    /// `device` or `service`.
    pub fn label(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Service => "service",
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_ingress_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1884))
}
fn default_shards() -> usize {
    1
}
fn default_shard_connections() -> usize {
    15_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_packet_size() -> usize {
    256 * 1024
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_keep_alive() -> Duration {
    Duration::from_secs(300)
}
fn default_max_inflight() -> u16 {
    32
}
fn default_max_subscriptions() -> usize {
    64
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_link_capacity() -> usize {
    4096
}
fn default_auth_concurrency() -> usize {
    2
}
fn default_segment_bytes() -> usize {
    1 << 20
}
fn default_segments() -> usize {
    4
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections(),
            max_packet_size: default_max_packet_size(),
            connect_timeout: default_connect_timeout(),
            max_keep_alive: default_max_keep_alive(),
            max_inflight: default_max_inflight(),
            max_subscriptions: default_max_subscriptions(),
            write_timeout: default_write_timeout(),
            link_capacity: default_link_capacity(),
            auth_concurrency: default_auth_concurrency(),
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            segment_bytes: default_segment_bytes(),
            segments: default_segments(),
        }
    }
}

/// Validated TLS listener settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// The rustls server configuration (certificates loaded).
    pub server: Arc<rustls::ServerConfig>,
    /// Whether clients must present a certificate.
    pub mutual: bool,
}

/// A validated tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Name.
    pub name: Arc<str>,
    /// Patterns of its devices.
    pub device: AclPatterns,
    /// Patterns of its services.
    pub service: AclPatterns,
}

/// A validated user.
#[derive(Debug, Clone)]
pub struct User {
    /// User name.
    pub username: Arc<str>,
    /// Password hash.
    pub hash: PasswordHash,
    /// Tenant.
    pub tenant: Arc<str>,
    /// Role.
    pub role: Role,
    /// Client id must equal the user name.
    pub client_id_must_match: bool,
}

/// Longest client id taken, bytes.
pub const MAX_CLIENT_ID: usize = 256;

impl User {
    /// The client id a connection of this user gets for the `requested`
    /// one, and whether the broker assigned it (an empty id with a clean
    /// session: the user name for devices bound to it, else `auto-N` from
    /// `next`).
    ///
    /// # Errors
    /// Why the id is refused: empty without a clean session, too long or
    /// with NUL, or not the user name when it must be.
    pub fn client_id_for(
        &self,
        requested: &str,
        clean: bool,
        next: impl FnOnce() -> u64,
    ) -> Result<(String, bool), &'static str> {
        let mut assigned = false;
        let mut client_id = requested.to_owned();
        if client_id.is_empty() {
            if !clean {
                return Err("empty client id needs a clean session");
            }
            client_id = if self.client_id_must_match {
                self.username.to_string()
            } else {
                format!("auto-{}", next())
            };
            assigned = true;
        }
        if client_id.len() > MAX_CLIENT_ID || client_id.contains('\0') {
            return Err("client id too long or with NUL");
        }
        if self.client_id_must_match && client_id != *self.username {
            return Err("a device's client id must be its user name");
        }
        Ok((client_id, assigned))
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Plain TCP listener address.
    pub listen: SocketAddr,
    /// TLS listener.
    pub tls: Option<TlsSettings>,
    /// Limits.
    pub limits: LimitsConfig,
    /// Router memory.
    pub router: RouterConfig,
    /// Metrics listener address.
    pub metrics: Option<SocketAddr>,
    /// Tenants by name.
    pub tenants: HashMap<Arc<str>, Tenant>,
    /// Users by name.
    pub users: HashMap<Arc<str>, User>,
    /// The lean ingress, as configured (checked).
    pub ingress: Option<IngressConfig>,
}

impl BrokerConfig {
    /// Reads and parses a config file.
    ///
    /// # Errors
    /// `ConfigError` naming the file and the bad key.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = ConfigError::read(path)?;
        Self::from_toml(&text).map_err(|e| e.in_file(path))
    }

    /// Parses config text.
    ///
    /// # Errors
    /// `ConfigError::Parse` with the TOML error (it names key and line).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(ConfigError::parse)
    }

    /// Checks every value, loads the TLS files; returns all problems, each
    /// naming its key. Relative TLS paths are taken as given (from the
    /// working directory).
    ///
    /// # Errors
    /// `ConfigError::Invalid` listing every problem.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let l = &self.limits;
        if !(1..=1_000_000).contains(&l.max_connections) {
            problems.push(format!(
                "limits.max_connections: must be 1..=1000000, got {}",
                l.max_connections
            ));
        }
        if !(128..=268_435_455).contains(&l.max_packet_size) {
            problems.push(format!(
                "limits.max_packet_size: must be 128..=268435455 bytes, got {}",
                l.max_packet_size
            ));
        }
        if l.connect_timeout.is_zero() || l.connect_timeout > Duration::from_secs(300) {
            problems.push("limits.connect_timeout: must be above zero and at most 5m".to_owned());
        }
        if l.max_keep_alive < Duration::from_secs(1) || l.max_keep_alive.as_secs() > 65_535 {
            problems.push(
                "limits.max_keep_alive: must be 1s..=65535s (MQTT keep-alive is 16-bit seconds)"
                    .to_owned(),
            );
        }
        if l.max_inflight == 0 {
            problems.push("limits.max_inflight: must be at least 1".to_owned());
        }
        if !(1..=10_000).contains(&l.max_subscriptions) {
            problems.push(format!(
                "limits.max_subscriptions: must be 1..=10000, got {}",
                l.max_subscriptions
            ));
        }
        if l.write_timeout < Duration::from_millis(100) {
            problems.push("limits.write_timeout: must be at least 100ms".to_owned());
        }
        if !(1..=1_000_000).contains(&l.link_capacity) {
            problems.push(format!(
                "limits.link_capacity: must be 1..=1000000, got {}",
                l.link_capacity
            ));
        }
        if !(1..=256).contains(&l.auth_concurrency) {
            problems.push(format!(
                "limits.auth_concurrency: must be 1..=256, got {}",
                l.auth_concurrency
            ));
        }
        if !(1024..=(1 << 30)).contains(&self.router.segment_bytes) {
            problems.push(format!(
                "router.segment_bytes: must be 1024..=1073741824, got {}",
                self.router.segment_bytes
            ));
        }
        if !(1..=1024).contains(&self.router.segments) {
            problems.push(format!(
                "router.segments: must be 1..=1024, got {}",
                self.router.segments
            ));
        }
        let mut addrs = vec![("listen", self.listen)];
        let tls = self.tls.as_ref().and_then(|t| {
            addrs.push(("tls.listen", t.listen));
            let mut ok = true;
            for (key, path) in [("tls.cert", Some(&t.cert)), ("tls.key", Some(&t.key))]
                .into_iter()
                .chain([("tls.client_ca", t.client_ca.as_ref())])
            {
                if let Some(path) = path
                    && !path.is_file()
                {
                    problems.push(format!("{key}: no file {}", path.display()));
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            match crate::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref()) {
                Ok(server) => Some(TlsSettings {
                    listen: t.listen,
                    server,
                    mutual: t.client_ca.is_some(),
                }),
                Err(e) => {
                    problems.push(format!("tls.{}: {e}", e.key()));
                    None
                }
            }
        });
        if let Some(m) = &self.metrics {
            addrs.push(("metrics.listen", m.listen));
        }
        if let Some(i) = &self.ingress {
            addrs.push(("ingress.listen", i.listen));
        }
        for (i, (key, addr)) in addrs.iter().enumerate() {
            if addr.port() != 0
                && let Some((other, _)) = addrs[..i].iter().find(|(_, a)| a == addr)
            {
                problems.push(format!("{key}: {addr} is also {other}"));
            }
        }

        if let Some(ingress) = &self.ingress {
            check_ingress(ingress, &mut problems);
        }

        let mut tenants = HashMap::new();
        for (n, t) in self.tenants.iter().enumerate() {
            let key = format!("tenants[{n}] ({})", t.name);
            let name_ok = !t.name.is_empty()
                && t.name.len() <= 64
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                problems.push(format!(
                    "{key}.name: `{}` must be 1 to 64 letters, digits, - or _",
                    t.name
                ));
                continue;
            }
            let device = acl(
                &format!("{key}.device"),
                &t.device,
                AclPatterns::device_defaults(),
                &mut problems,
            );
            let service = acl(
                &format!("{key}.service"),
                &t.service,
                AclPatterns::service_defaults(),
                &mut problems,
            );
            let name: Arc<str> = Arc::from(t.name.as_str());
            if tenants
                .insert(
                    name.clone(),
                    Tenant {
                        name,
                        device,
                        service,
                    },
                )
                .is_some()
            {
                problems.push(format!("{key}.name: `{}` is listed twice", t.name));
            }
        }

        let mut users = HashMap::new();
        let mut seen = HashSet::new();
        for (n, u) in self.users.iter().enumerate() {
            let key = format!("users[{n}] ({})", u.username);
            let before = problems.len();
            if u.username.is_empty()
                || u.username.len() > 256
                || u.username.contains(['/', '+', '#', '\0'])
            {
                problems.push(format!(
                    "{key}.username: must be 1 to 256 bytes without /, + or #"
                ));
            } else if !seen.insert(u.username.as_str()) {
                problems.push(format!("{key}.username: `{}` is listed twice", u.username));
            }
            let hash = u
                .password_hash
                .parse::<PasswordHash>()
                .map_err(|e| problems.push(format!("{key}.password_hash: {e}")))
                .ok();
            let tenant = tenants
                .get(u.tenant.as_str())
                .map(|t: &Tenant| t.name.clone());
            if tenant.is_none() {
                problems.push(format!("{key}.tenant: no tenant `{}`", u.tenant));
            }
            if problems.len() > before {
                continue;
            }
            if let (Some(hash), Some(tenant)) = (hash, tenant) {
                let username: Arc<str> = Arc::from(u.username.as_str());
                users.insert(
                    username.clone(),
                    User {
                        username,
                        hash,
                        tenant,
                        role: u.role,
                        client_id_must_match: u
                            .client_id_must_match
                            .unwrap_or(u.role == Role::Device),
                    },
                );
            }
        }

        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                file: None,
                problems,
            });
        }
        Ok(Settings {
            listen: self.listen,
            tls,
            limits: self.limits.clone(),
            router: self.router.clone(),
            metrics: self.metrics.as_ref().map(|m| m.listen),
            tenants,
            users,
            ingress: self.ingress.clone(),
        })
    }
}

fn check_ingress(ingress: &IngressConfig, problems: &mut Vec<String>) {
    if !(1..=1024).contains(&ingress.shards) {
        problems.push(format!(
            "ingress.shards: must be 1..=1024, got {}",
            ingress.shards
        ));
    }
    if !(1..=MAX_SHARD_CONNECTIONS).contains(&ingress.max_connections) {
        problems.push(format!(
            "ingress.max_connections: must be 1..={MAX_SHARD_CONNECTIONS} (a process may open 20 000 files), got {}",
            ingress.max_connections
        ));
    }
    if let Some(metrics) = ingress.metrics
        && usize::from(metrics.port()) + ingress.shards > 65_536
    {
        problems.push(format!(
            "ingress.metrics: port {} + {} shards is past 65535",
            metrics.port(),
            ingress.shards
        ));
    }
    if ingress.metrics.is_some_and(|m| m.port() == 0) {
        problems.push("ingress.metrics: needs a port (shard K serves port + K)".to_owned());
    }
}

fn acl(
    key: &str,
    config: &AclConfig,
    defaults: AclPatterns,
    problems: &mut Vec<String>,
) -> AclPatterns {
    let list = |name: &str,
                given: &Option<Vec<String>>,
                default: Vec<Pattern>,
                problems: &mut Vec<String>| match given {
        None => default,
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                Pattern::new(p)
                    .map_err(|e| problems.push(format!("{key}.{name}[{i}]: {e}")))
                    .ok()
            })
            .collect(),
    };
    AclPatterns {
        publish: list("publish", &config.publish, defaults.publish, problems),
        subscribe: list("subscribe", &config.subscribe, defaults.subscribe, problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/broker.example.toml");

    #[test]
    fn the_examples_ingress_section_validates_once_uncommented() {
        let start = EXAMPLE.find("# [ingress]").expect("an [ingress] example");
        let mut text = EXAMPLE[..start].to_owned();
        for line in EXAMPLE[start..].lines() {
            // `# key = value` lines are the section; `# # ...` its comments.
            if let Some(rest) = line.strip_prefix("# ")
                && !rest.starts_with('#')
            {
                text.push_str(rest);
                text.push('\n');
            }
        }
        let settings = BrokerConfig::from_toml(&text).unwrap().validate().unwrap();
        let ingress = settings.ingress.expect("the section is read");
        assert_eq!((ingress.shards, ingress.max_connections), (4, 15_000));
        assert_eq!(ingress.gateways, [PathBuf::from("gateway.ingress.toml")]);
    }

    #[test]
    fn bad_ingress_values_are_named() {
        let text = "[ingress]\nlisten = \"127.0.0.1:1883\"\nshards = 0\nmax_connections = 20000\nmetrics = \"127.0.0.1:65535\"\n";
        let err = BrokerConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for key in [
            "ingress.shards",
            "ingress.max_connections",
            "ingress.listen: 127.0.0.1:1883 is also listen",
        ] {
            assert!(err.contains(key), "{key} in {err}");
        }
        let text = "[ingress]\nshards = 10\nmetrics = \"127.0.0.1:65530\"\n";
        let err = BrokerConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingress.metrics"), "{err}");
    }

    #[test]
    fn shipped_example_parses_and_validates() {
        let settings = BrokerConfig::from_toml(EXAMPLE)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(settings.tenants.len(), 2);
        assert!(
            settings.tls.is_none(),
            "the example's TLS section is commented out"
        );
        let dev = &settings.users["acme-dev-1"];
        assert_eq!(dev.role, Role::Device);
        assert!(dev.client_id_must_match);
        assert!(dev.hash.verify(b"acme-dev-1-token-change-me-0001"));
        let gw = &settings.users["acme-gateway"];
        assert!(!gw.client_id_must_match);
        assert!(gw.hash.verify(b"gateway password change me"));
        let plant = &settings.tenants["plant"];
        assert_eq!(plant.device.publish.len(), 1, "plant's own device ACL");
        assert_eq!(
            plant.device.subscribe,
            AclPatterns::device_defaults().subscribe,
            "lists left out take the defaults"
        );
    }

    #[test]
    fn problems_name_every_key() {
        let text = r#"
            listen = "127.0.0.1:1883"
            [limits]
            max_packet_size = 10
            max_connections = 0
            [router]
            segment_bytes = 100
            [metrics]
            listen = "127.0.0.1:1883"
            [tls]
            listen = "127.0.0.1:8883"
            cert = "/nonexistent/server.pem"
            key = "/nonexistent/server.key"
            [[tenants]]
            name = "acme co"
            [[tenants]]
            name = "plant"
            device = { publish = ["%t/%x/#", "a/#/b"] }
            [[users]]
            username = "dev/1"
            password_hash = "plain-password"
            tenant = "nope"
            role = "device"
        "#;
        let err = BrokerConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for needle in [
            "limits.max_packet_size: must be 128..=268435455 bytes, got 10",
            "limits.max_connections: must be 1..=1000000, got 0",
            "router.segment_bytes: must be 1024",
            "metrics.listen: 127.0.0.1:1883 is also listen",
            "tls.cert: no file /nonexistent/server.pem",
            "tls.key: no file /nonexistent/server.key",
            "tenants[0] (acme co).name",
            "tenants[1] (plant).device.publish[0]: ACL pattern `%t/%x/#`",
            "tenants[1] (plant).device.publish[1]: ACL pattern `a/#/b`",
            "users[0] (dev/1).username",
            "users[0] (dev/1).password_hash: password hash `(hidden)`",
            "users[0] (dev/1).tenant: no tenant `nope`",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
        assert!(!err.contains("plain-password"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = BrokerConfig::from_toml("[limits]\nmax_conections = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `max_conections`"), "{err}");
    }
}
