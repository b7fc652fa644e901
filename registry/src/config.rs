//! Registry configuration: one TOML file (see `deploy/registry.example.toml`),
//! plus optional tenant files (`--tenants`) written by `fieldlink sim`.
//!
//! Parsing is strict (`deny_unknown_fields`, so a typo is an error, not a
//! default); [`RegistryConfig::validate`] then checks every value and reports
//! all problems at once, each naming its key. Runtime code sees only
//! [`Settings`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fieldlink_model::{Cloud, UtcOffset};
use serde::Deserialize;

use crate::error::ConfigError;

/// The registry's configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directory of the embedded device store; created when missing.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Page cache of the embedded store, bytes (redb's own default is 1 GiB).
    #[serde(default = "default_store_cache_bytes")]
    pub store_cache_bytes: usize,
    /// Where the registry listens.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Time zone and time windows of the counts.
    #[serde(default)]
    pub time: TimeConfig,
    /// Limits of the gRPC ingest.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Tenants: each gateway authenticates with a tenant's token, and the
    /// tenant decides the cloud its devices count under.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

/// `[listen]`: socket addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// gRPC ingest for gateways.
    #[serde(default = "default_grpc")]
    pub grpc: SocketAddr,
    /// HTTP API, metrics and (later) the dashboard.
    #[serde(default = "default_http")]
    pub http: SocketAddr,
}

/// `[time]`: the registry's day and the windows points must fall in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// Offset of the registry's time zone; days start at 00:00 there.
    #[serde(default)]
    pub utc_offset: UtcOffset,
    /// How far in the past a point may be stamped and still count.
    #[serde(default = "default_backfill", with = "humantime_serde")]
    pub backfill: Duration,
    /// How far in the future a point may be stamped (gateway clock drift).
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How many days of per-day figures are kept.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

/// `[ingest]`: limits of gateway streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest gRPC message accepted, in bytes; a larger one ends its stream
    /// with an error (what was acknowledged before stays).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Batches a stream may have in flight (received, not yet acknowledged).
    #[serde(default = "default_max_inflight")]
    pub max_inflight_batches: usize,
    /// Most batches made durable together in one storage commit.
    #[serde(default = "default_commit_max_batches")]
    pub commit_max_batches: usize,
    /// Most rows (announces, statuses, device-days) in one storage commit.
    #[serde(default = "default_commit_max_items")]
    pub commit_max_items: usize,
    /// How long a gateway's devices stay online after its stream drops.
    #[serde(default = "default_offline_grace", with = "humantime_serde")]
    pub offline_grace: Duration,
}

/// `[[tenants]]`: who may stream, and under which cloud.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant name: letters, digits, `-` and `_`.
    pub name: String,
    /// `public` or `private`.
    pub cloud: Cloud,
    /// Bearer token its gateways present; at least 16 characters.
    pub token: String,
}

/// A file of `[[tenants]]` only, as `fieldlink sim` writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    /// The tenants.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data/registry")
}
fn default_store_cache_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_grpc() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7600))
}
fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7680))
}
fn default_backfill() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_retention_days() -> u32 {
    400
}
fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_inflight() -> usize {
    64
}
fn default_commit_max_batches() -> usize {
    4096
}
fn default_commit_max_items() -> usize {
    50_000
}
fn default_offline_grace() -> Duration {
    Duration::from_secs(60)
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            grpc: default_grpc(),
            http: default_http(),
        }
    }
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            utc_offset: UtcOffset::default(),
            backfill: default_backfill(),
            clock_skew: default_clock_skew(),
            retention_days: default_retention_days(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_message_bytes: default_max_message_bytes(),
            max_inflight_batches: default_max_inflight(),
            commit_max_batches: default_commit_max_batches(),
            commit_max_items: default_commit_max_items(),
            offline_grace: default_offline_grace(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            data_dir: default_data_dir(),
            store_cache_bytes: default_store_cache_bytes(),
            listen: ListenConfig::default(),
            time: TimeConfig::default(),
            ingest: IngestConfig::default(),
            tenants: Vec::new(),
        }
    }
}

/// A validated tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Tenant name.
    pub name: String,
    /// The cloud its devices count under.
    pub cloud: Cloud,
    /// Its bearer token.
    pub token: String,
}

/// Validated settings: what the running registry uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Page cache of the embedded store, bytes.
    pub store_cache_bytes: usize,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// The registry's time zone.
    pub utc_offset: UtcOffset,
    /// Backfill window.
    pub backfill: Duration,
    /// Allowed clock skew into the future.
    pub clock_skew: Duration,
    /// Days of per-day figures kept.
    pub retention_days: u32,
    /// Largest gRPC message, bytes.
    pub max_message_bytes: usize,
    /// Batches in flight per stream.
    pub max_inflight_batches: usize,
    /// Batches per storage commit, at most.
    pub commit_max_batches: usize,
    /// Rows per storage commit, at most.
    pub commit_max_items: usize,
    /// Grace period before a dropped gateway's devices go offline.
    pub offline_grace: Duration,
    /// Tenants.
    pub tenants: Vec<Tenant>,
}

impl RegistryConfig {
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

    /// Adds the tenants of a tenants file (`--tenants`).
    ///
    /// # Errors
    /// `ConfigError` naming the file and the bad key.
    pub fn add_tenants_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = ConfigError::read(path)?;
        let file: TenantsFile =
            toml::from_str(&text).map_err(|e| ConfigError::parse(e).in_file(path))?;
        self.tenants.extend(file.tenants);
        Ok(())
    }

    /// Checks every value; returns all problems, each naming its key.
    ///
    /// # Errors
    /// `ConfigError::Invalid` listing every problem found.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: String, what: String| problems.push(format!("{key}: {what}"));

        if self.listen.grpc == self.listen.http && self.listen.grpc.port() != 0 {
            problem(
                "listen.http".into(),
                format!("same address as listen.grpc ({})", self.listen.grpc),
            );
        }
        if !(1 << 20..=1 << 40).contains(&self.store_cache_bytes) {
            problem(
                "store_cache_bytes".into(),
                format!("must be 1 MiB..=1 TiB, got {}", self.store_cache_bytes),
            );
        }
        let t = &self.time;
        if t.retention_days == 0 || t.retention_days > 3660 {
            problem(
                "time.retention_days".into(),
                format!("must be 1..=3660, got {}", t.retention_days),
            );
        }
        if t.backfill.as_secs() > u64::from(t.retention_days) * 86_400 {
            problem(
                "time.backfill".into(),
                format!(
                    "{} is longer than time.retention_days ({} days)",
                    humantime::format_duration(t.backfill),
                    t.retention_days
                ),
            );
        }
        if t.clock_skew > Duration::from_secs(86_400) {
            problem(
                "time.clock_skew".into(),
                "must be at most 1 day".to_string(),
            );
        }
        let i = &self.ingest;
        if !(1024..=256 * 1024 * 1024).contains(&i.max_message_bytes) {
            problem(
                "ingest.max_message_bytes".into(),
                format!("must be 1024..=268435456, got {}", i.max_message_bytes),
            );
        }
        if !(1..=65_536).contains(&i.max_inflight_batches) {
            problem(
                "ingest.max_inflight_batches".into(),
                format!("must be 1..=65536, got {}", i.max_inflight_batches),
            );
        }
        if !(1..=1_000_000).contains(&i.commit_max_batches) {
            problem(
                "ingest.commit_max_batches".into(),
                format!("must be 1..=1000000, got {}", i.commit_max_batches),
            );
        }
        if !(1..=10_000_000).contains(&i.commit_max_items) {
            problem(
                "ingest.commit_max_items".into(),
                format!("must be 1..=10000000, got {}", i.commit_max_items),
            );
        }
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        for (n, tenant) in self.tenants.iter().enumerate() {
            let key = |field: &str| format!("tenants[{n}].{field}");
            let name_ok = !tenant.name.is_empty()
                && tenant.name.len() <= 64
                && tenant
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                problem(
                    key("name"),
                    format!(
                        "`{}` must be 1 to 64 letters, digits, `-` or `_`",
                        tenant.name
                    ),
                );
            } else if !names.insert(tenant.name.as_str()) {
                problem(key("name"), format!("`{}` is listed twice", tenant.name));
            }
            if tenant.token.len() < 16 || tenant.token.chars().any(|c| c.is_whitespace()) {
                problem(
                    key("token"),
                    "must be at least 16 characters without white space".to_string(),
                );
            } else if !tokens.insert(tenant.token.as_str()) {
                problem(key("token"), "is the token of another tenant".to_string());
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                file: None,
                problems,
            });
        }
        Ok(Settings {
            data_dir: self.data_dir.clone(),
            store_cache_bytes: self.store_cache_bytes,
            grpc_addr: self.listen.grpc,
            http_addr: self.listen.http,
            utc_offset: t.utc_offset,
            backfill: t.backfill,
            clock_skew: t.clock_skew,
            retention_days: t.retention_days,
            max_message_bytes: i.max_message_bytes,
            max_inflight_batches: i.max_inflight_batches,
            commit_max_batches: i.commit_max_batches,
            commit_max_items: i.commit_max_items,
            offline_grace: i.offline_grace,
            tenants: self
                .tenants
                .iter()
                .map(|t| Tenant {
                    name: t.name.clone(),
                    cloud: t.cloud,
                    token: t.token.clone(),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/registry.example.toml");

    #[test]
    fn shipped_example_parses_and_validates() {
        let config = RegistryConfig::from_toml(EXAMPLE).unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.utc_offset.to_string(), "+08:00");
        assert_eq!(settings.backfill, Duration::from_secs(7 * 86_400));
        assert_eq!(settings.clock_skew, Duration::from_secs(300));
        assert_eq!(settings.tenants.len(), 2);
        assert!(settings.tenants.iter().any(|t| t.cloud == Cloud::Private));
    }

    #[test]
    fn empty_file_means_defaults() {
        let settings = RegistryConfig::from_toml("").unwrap().validate().unwrap();
        assert_eq!(settings.utc_offset, UtcOffset::CHINA);
        assert_eq!(settings.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(settings.offline_grace, Duration::from_secs(60));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = RegistryConfig::from_toml("[ingest]\nmax_mesage_bytes = 10\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("max_mesage_bytes"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn bad_values_are_all_named() {
        let text = r#"
            [time]
            utc_offset = "+08:00"
            retention_days = 3
            [ingest]
            max_message_bytes = 10
            [[tenants]]
            name = "a b"
            cloud = "public"
            token = "short"
            [[tenants]]
            name = "ok"
            cloud = "private"
            token = "0123456789abcdef0"
            [[tenants]]
            name = "ok"
            cloud = "private"
            token = "0123456789abcdef0"
        "#;
        let err = RegistryConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for key in [
            "time.backfill",
            "ingest.max_message_bytes",
            "tenants[0].name",
            "tenants[0].token",
            "tenants[2].name",
            "tenants[2].token",
        ] {
            assert!(err.contains(key), "{key} missing in: {err}");
        }
    }

    #[test]
    fn bad_cloud_and_offset_are_refused_at_parse() {
        let err = RegistryConfig::from_toml(
            "[[tenants]]\nname = \"a\"\ncloud = \"hybrid\"\ntoken = \"0123456789abcdef\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown cloud `hybrid`"), "{err}");
        let err = RegistryConfig::from_toml("[time]\nutc_offset = \"8\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid UTC offset"), "{err}");
    }
}
