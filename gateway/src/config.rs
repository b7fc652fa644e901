//! Gateway configuration: one TOML file (see `deploy/gateway.example.toml`).
//!
//! Parsing is strict (`deny_unknown_fields`); [`GatewayConfig::validate`]
//! checks every value, resolves templates, and reports every problem at once,
//! each naming its key and device (`devices[3] (cnc-7).poll_groups[0].tags[2].address: ...`).
//! Runtime code sees only [`Settings`].

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fieldlink_model::{Category, DeviceClass, Protocol, validate_device_id};
use serde::{Deserialize, Serialize};

use crate::device::DeviceInfo;
use crate::driver::{self, ConfiguredDevice, DriverConfig, DriverInstance, Limits};
use crate::error::ConfigError;

/// Top-level keys of the gateway's own (not a driver's).
const CORE_KEYS: &[&str] = &[
    "gateway_id",
    "data_dir",
    "uplink",
    "spool",
    "ledger",
    "utc_offset",
    "metrics",
    "limits",
    "devices",
];

/// Keys of a `[[devices]]` entry common to every protocol.
const DEVICE_KEYS: &[&str] = &[
    "id",
    "class",
    "category",
    "type",
    "name",
    "protocol",
    "attributes",
];

/// The gateway's configuration file, as written. Besides the keys below,
/// each driver owns a top-level section named after it (`[modbus]`,
/// `[opcua]`, `[mqtt]`, `[sparkplug]`), collected in `drivers`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GatewayConfig {
    /// Stable id of this gateway within its tenant.
    pub gateway_id: String,
    /// Directory of the disk spool; created when missing.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The registry it streams to.
    pub uplink: UplinkConfig,
    /// Disk spool limits.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Append a line per device, day and batch of what was spooled
    /// (`device_id,day,points`) to this file; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<PathBuf>,
    /// Offset of the time zone the ledger cuts days in (the registry's).
    #[serde(default)]
    pub utc_offset: fieldlink_model::UtcOffset,
    /// Prometheus `/metrics` listener; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Bounds on what drivers may discover.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The devices this gateway connects (drivers may discover more).
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Driver sections by name (`modbus`, `opcua`, ...), each validated by
    /// its driver.
    #[serde(flatten)]
    pub drivers: BTreeMap<String, toml::Value>,
}

/// `[uplink]`: the gRPC stream to the registry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// gRPC URL of the registry, e.g. `http://127.0.0.1:7600`.
    pub registry: String,
    /// Tenant token (`Bearer`); decides the cloud the devices count under.
    pub token: String,
    /// Most points in one batch.
    #[serde(default = "default_batch_max_points")]
    pub batch_max_points: usize,
    /// Longest a point waits before its batch is sealed.
    #[serde(default = "default_batch_max_delay", with = "humantime_serde")]
    pub batch_max_delay: Duration,
    /// Batches sent but not yet acknowledged, at most.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_batches: usize,
    /// First reconnect delay; doubles up to `reconnect_max`, with jitter.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Backlog batches replayed per second after an outage (live data keeps flowing).
    #[serde(default = "default_replay_rate")]
    pub replay_batches_per_sec: u32,
}

/// `[spool]`: the on-disk queue of unacknowledged batches.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Most bytes kept; past it the oldest batches are dropped (and counted).
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Size of one segment file.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// `true`: fsync every append (survives power loss, slower);
    /// `false`: the OS writes back (survives a crash or kill -9 of the gateway).
    #[serde(default)]
    pub fsync: bool,
}

/// `[metrics]`: where `/metrics` is served.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address, e.g. `127.0.0.1:9600`.
    pub listen: SocketAddr,
}

/// `[limits]`: bounds on what drivers may declare.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most devices the gateway serves, configured and discovered.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
    /// Most tags per device; tags discovered beyond it are dropped and
    /// counted.
    #[serde(default = "default_max_tags")]
    pub max_tags_per_device: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_devices: default_max_devices(),
            max_tags_per_device: default_max_tags(),
        }
    }
}

/// `[[devices]]`: one device. The keys here are common to every protocol;
/// how to reach the device is in its driver's section, `[devices.modbus]`,
/// `[devices.opcua]`, ... (collected in `driver`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DeviceConfig {
    /// Globally unique device id.
    pub id: String,
    /// Class code: operating, processing, mobile, other.
    pub class: String,
    /// Category code of that class.
    pub category: String,
    /// Model name.
    #[serde(rename = "type")]
    pub device_type: String,
    /// Human name.
    pub name: String,
    /// Protocol code (`modbus-tcp`, `opc-ua`, ...); picks the driver.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Static attributes (vendor, serial number, site, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The driver's section of the device, by driver name.
    #[serde(flatten)]
    pub driver: BTreeMap<String, toml::Value>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data/gateway")
}
fn default_batch_max_points() -> usize {
    10_000
}
fn default_batch_max_delay() -> Duration {
    Duration::from_millis(200)
}
fn default_max_inflight() -> usize {
    // The registry reads 64 per stream by default; a smaller window caps a
    // busy gateway at window / ack latency batches per second.
    64
}
fn default_reconnect_min() -> Duration {
    Duration::from_millis(200)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_replay_rate() -> u32 {
    200
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
fn default_protocol() -> String {
    Protocol::ModbusTcp.code().to_owned()
}
fn default_max_devices() -> usize {
    1_000_000
}
fn default_max_tags() -> usize {
    10_000
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: default_spool_max_bytes(),
            segment_bytes: default_segment_bytes(),
            fsync: false,
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Gateway id.
    pub gateway_id: String,
    /// Spool directory.
    pub data_dir: PathBuf,
    /// Uplink settings.
    pub uplink: UplinkConfig,
    /// Spool settings.
    pub spool: SpoolConfig,
    /// Metrics listener.
    pub metrics: Option<SocketAddr>,
    /// Ledger file.
    pub ledger: Option<PathBuf>,
    /// Time zone of the ledger's days.
    pub utc_offset: fieldlink_model::UtcOffset,
    /// Bounds on declared devices and tags.
    pub limits: Limits,
    /// The configured drivers, one per kind with something to do.
    pub drivers: Vec<Arc<dyn DriverInstance>>,
    /// Devices from config, over every driver.
    pub configured_devices: usize,
}

impl GatewayConfig {
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
        let config: GatewayConfig = toml::from_str(text).map_err(ConfigError::parse)?;
        // The driver sections are collected by name; anything else is a typo.
        let sections: Vec<&str> = driver::KINDS.iter().map(|k| k.section()).collect();
        if let Some(key) = config
            .drivers
            .keys()
            .find(|k| !sections.contains(&k.as_str()))
        {
            return Err(ConfigError::parse(format!(
                "unknown field `{key}`, expected one of {}, or a driver section: {}",
                CORE_KEYS.join(", "),
                sections.join(", ")
            )));
        }
        Ok(config)
    }

    /// Checks every value; returns all problems, each naming key and device.
    ///
    /// # Errors
    /// `ConfigError::Invalid` listing every problem.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        if let Err(e) = validate_device_id(&self.gateway_id) {
            problems.push(format!("gateway_id: {e}"));
        }
        let u = &self.uplink;
        if !(u.registry.starts_with("http://") || u.registry.starts_with("https://")) {
            problems.push(format!(
                "uplink.registry: `{}` must be an http:// or https:// URL",
                u.registry
            ));
        }
        if u.token.len() < 16 {
            problems.push("uplink.token: must be at least 16 characters".to_owned());
        }
        if !(1..=1_000_000).contains(&u.batch_max_points) {
            problems.push(format!(
                "uplink.batch_max_points: must be 1..=1000000, got {}",
                u.batch_max_points
            ));
        }
        if !(1..=1024).contains(&u.max_inflight_batches) {
            problems.push(format!(
                "uplink.max_inflight_batches: must be 1..=1024, got {}",
                u.max_inflight_batches
            ));
        }
        if u.reconnect_min.is_zero() || u.reconnect_min > u.reconnect_max {
            problems.push(
                "uplink.reconnect_min: must be above zero and at most uplink.reconnect_max"
                    .to_owned(),
            );
        }
        if u.replay_batches_per_sec == 0 {
            problems.push("uplink.replay_batches_per_sec: must be at least 1".to_owned());
        }
        if self.spool.segment_bytes < 4096 || self.spool.segment_bytes > self.spool.max_bytes {
            problems.push(format!(
                "spool.segment_bytes: must be 4096..=spool.max_bytes ({}), got {}",
                self.spool.max_bytes, self.spool.segment_bytes
            ));
        }
        let l = &self.limits;
        if l.max_devices == 0 || l.max_tags_per_device == 0 {
            problems.push("limits: max_devices and max_tags_per_device must be at least 1".into());
        }
        let (drivers, configured_devices) = self.configure_drivers(&mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                file: None,
                problems,
            });
        }
        Ok(Settings {
            gateway_id: self.gateway_id.clone(),
            data_dir: self.data_dir.clone(),
            uplink: self.uplink.clone(),
            spool: self.spool.clone(),
            metrics: self.metrics.as_ref().map(|m| m.listen),
            ledger: self.ledger.clone(),
            utc_offset: self.utc_offset,
            limits: Limits {
                max_devices: l.max_devices,
                max_tags_per_device: l.max_tags_per_device,
            },
            drivers,
            configured_devices,
        })
    }

    /// What `kind` is configured from: its section and its devices, their
    /// common keys checked. For tests and tools that use one driver alone.
    ///
    /// # Errors
    /// `ConfigError::Invalid` when a device of the kind has bad common keys.
    pub fn driver_config(
        &self,
        kind: &dyn driver::DriverKind,
    ) -> Result<DriverConfig<'_>, ConfigError> {
        let mut problems = Vec::new();
        let mut devices = Vec::new();
        for (n, d) in self.devices.iter().enumerate() {
            let key = format!("devices[{n}] ({})", d.id);
            if let Some((k, device)) = check_device(&key, d, &mut problems)
                && driver::KINDS[k].section() == kind.section()
            {
                devices.push(device);
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                file: None,
                problems,
            });
        }
        Ok(DriverConfig {
            section: self.drivers.get(kind.section()),
            devices,
            data_dir: &self.data_dir,
        })
    }

    /// Checks the common keys of every device, then hands each driver kind
    /// its section and its devices.
    fn configure_drivers(
        &self,
        problems: &mut Vec<String>,
    ) -> (Vec<Arc<dyn DriverInstance>>, usize) {
        let mut per_kind: Vec<Vec<ConfiguredDevice<'_>>> =
            driver::KINDS.iter().map(|_| Vec::new()).collect();
        let mut ids = HashSet::new();
        for (n, d) in self.devices.iter().enumerate() {
            let key = format!("devices[{n}] ({})", d.id);
            if !ids.insert(d.id.as_str()) {
                problems.push(format!("{key}.id: `{}` is listed twice", d.id));
            }
            if let Some((kind, device)) = check_device(&key, d, problems) {
                per_kind[kind].push(device);
            }
        }
        let mut drivers = Vec::new();
        let mut count = 0;
        for (kind, devices) in driver::KINDS.iter().zip(per_kind) {
            let section = self.drivers.get(kind.section());
            if section.is_none() && devices.is_empty() {
                continue;
            }
            let input = DriverConfig {
                section,
                devices,
                data_dir: &self.data_dir,
            };
            match kind.configure(input) {
                Ok(driver) => {
                    count += driver.device_count();
                    drivers.push(driver);
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        (drivers, count)
    }
}

/// Checks a device's common keys; returns the index of its driver kind in
/// [`driver::KINDS`] and what the kind is configured from.
fn check_device<'a>(
    key: &str,
    d: &'a DeviceConfig,
    problems: &mut Vec<String>,
) -> Option<(usize, ConfiguredDevice<'a>)> {
    let before = problems.len();
    if let Err(e) = validate_device_id(&d.id) {
        problems.push(format!("{key}.id: {e}"));
    }
    let class = d
        .class
        .parse::<DeviceClass>()
        .map_err(|e| problems.push(format!("{key}.class: {e}")))
        .ok();
    let category = match d.category.parse::<Category>() {
        Ok(c) if class.is_some_and(|class| c.class() != class) => {
            problems.push(format!(
                "{key}.category: `{c}` belongs to class `{}`, not `{}`",
                c.class(),
                d.class
            ));
            None
        }
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("{key}.category: {e}"));
            None
        }
    };
    let sections: Vec<&str> = driver::KINDS.iter().map(|k| k.section()).collect();
    let kind = match d.protocol.parse::<Protocol>() {
        Ok(p) => match driver::KINDS
            .iter()
            .position(|k| k.protocols().contains(&p))
        {
            Some(kind) => Some((p, kind)),
            None => {
                let available: Vec<&str> = driver::supported_protocols()
                    .iter()
                    .map(|p| p.code())
                    .collect();
                problems.push(format!(
                    "{key}.protocol: `{p}` has no driver in this gateway (available: {})",
                    available.join(", ")
                ));
                None
            }
        },
        Err(e) => {
            problems.push(format!("{key}.protocol: {e}"));
            None
        }
    };
    let own_section = kind.map(|(_, k)| driver::KINDS[k].section());
    for name in d.driver.keys() {
        if Some(name.as_str()) == own_section {
            continue;
        }
        if sections.contains(&name.as_str()) {
            problems.push(format!(
                "{key}.{name}: the device's protocol is `{}`; its section is [devices.{}]",
                d.protocol,
                own_section.unwrap_or("?")
            ));
        } else {
            problems.push(format!(
                "{key}: unknown key `{name}` (expected one of {}, or the driver section [devices.{}])",
                DEVICE_KEYS.join(", "),
                own_section.unwrap_or("<driver>")
            ));
        }
    }
    let (protocol, kind) = kind?;
    if problems.len() > before && !d.driver.contains_key(driver::KINDS[kind].section()) {
        return None;
    }
    // With bad common keys the driver still checks its section, so that
    // every problem is reported at once; the config is refused anyway.
    let info = DeviceInfo {
        id: d.id.clone(),
        category: category.unwrap_or(Category::ALL[0]),
        protocol,
        device_type: d.device_type.clone(),
        name: d.name.clone(),
        endpoint: String::new(),
        attributes: d.attributes.clone(),
    };
    let section = own_section.and_then(|name| d.driver.get(name));
    Some((
        kind,
        ConfiguredDevice {
            key: key.to_owned(),
            info,
            section,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/gateway.example.toml");

    #[test]
    fn shipped_example_parses_and_validates() {
        let settings = GatewayConfig::from_toml(EXAMPLE)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(settings.configured_devices, 3);
        assert_eq!(
            settings.drivers.len(),
            2,
            "the Modbus and OPC UA drivers have devices"
        );
        assert_eq!(settings.limits.max_tags_per_device, 10_000);
    }

    #[test]
    fn shipped_mqtt_example_parses_and_validates() {
        let text = include_str!("../../deploy/gateway.mqtt.example.toml");
        let settings = GatewayConfig::from_toml(text).unwrap().validate().unwrap();
        assert_eq!(settings.drivers.len(), 2, "MQTT JSON and Sparkplug");
        assert_eq!(settings.configured_devices, 1);
    }

    #[test]
    fn problems_name_the_key_and_the_device() {
        let text = r#"
            gateway_id = "gw"
            [uplink]
            registry = "127.0.0.1:7600"
            token = "0123456789abcdef"
            [[devices]]
            id = "d1"
            class = "processing"
            category = "mining"
            type = "t"
            name = "n"
            [devices.modbus]
            endpoint = "plc.local:502"
            template = "nope"
            poll_groups = [ { interval = "1s", tags = [
              { name = "a", area = "coil", address = 0, type = "u16" },
              { name = "s", area = "holding-register", address = 65535, type = "f32" },
            ] } ]
            [[devices]]
            id = "d2"
            class = "processing"
            category = "robots"
            type = "t"
            name = "n"
            protocol = "modbus-rtu"
            [[devices]]
            id = "d3"
            class = "processing"
            category = "robots"
            type = "t"
            name = "n"
            [devices.modbuss]
            endpoint = "127.0.0.1:502"
            [[devices]]
            id = "d4"
            class = "processing"
            category = "robots"
            type = "t"
            name = "n"
            [devices.modbus]
            endpoint = "127.0.0.1:502"
            unit = 3
        "#;
        let err = GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for needle in [
            "uplink.registry: `127.0.0.1:7600` must be an http:// or https:// URL",
            "devices[0] (d1).category: `mining` belongs to class `operating`, not `processing`",
            "devices[0] (d1).modbus.endpoint: `plc.local:502` is not host:port",
            "devices[0] (d1).modbus.template: no template `nope`",
            "devices[0] (d1).modbus.poll_groups[0].tags[0] (a).type",
            "devices[0] (d1).modbus.poll_groups[0].tags[1] (s).address",
            "devices[1] (d2).protocol: `modbus-rtu` has no driver in this gateway",
            "devices[2] (d3): unknown key `modbuss` (expected one of id, class",
            "devices[3] (d4).modbus: unknown field `unit`",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = GatewayConfig::from_toml(
            "gateway_id = \"g\"\nsurprise = 1\n[uplink]\nregistry = \"http://x\"\ntoken = \"t\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `surprise`"), "{err}");
        assert!(err.contains("a driver section: modbus"), "{err}");
    }

    #[test]
    fn a_driver_section_alone_is_configured() {
        let text = r#"
            gateway_id = "gw"
            [uplink]
            registry = "http://127.0.0.1:7600"
            token = "0123456789abcdef"
            [modbus]
            max_registers_per_read = 126
        "#;
        let err = GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("modbus.max_registers_per_read: must be 1..=125, got 126"),
            "{err}"
        );
    }
}
