//! Gateway configuration: one TOML file (see `deploy/gateway.example.toml`).
//!
//! Parsing is strict (`deny_unknown_fields`); [`GatewayConfig::validate`]
//! checks every value, resolves templates, and reports every problem at once,
//! each naming its key and device (`devices[3] (cnc-7).poll_groups[0].tags[2].address: ...`).
//! Runtime code sees only [`Settings`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fieldlink_model::{Category, DeviceClass, Protocol, validate_device_id};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The gateway's configuration file, as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default)]
    pub ledger: Option<PathBuf>,
    /// Offset of the time zone the ledger cuts days in (the registry's).
    #[serde(default)]
    pub utc_offset: fieldlink_model::UtcOffset,
    /// Prometheus `/metrics` listener; none when absent.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Defaults of the Modbus driver.
    #[serde(default)]
    pub modbus: ModbusConfig,
    /// Poll-group sets shared by many devices, by name.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateConfig>,
    /// The devices this gateway connects.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
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

/// `[modbus]`: driver defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Time allowed for a connect or one request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First delay after a device fails; doubles up to `backoff_max`.
    #[serde(default = "default_backoff_min", with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest delay between attempts to reach a failing device.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Most registers in one read (protocol limit 125).
    #[serde(default = "default_max_registers")]
    pub max_registers_per_read: u16,
    /// Most coils or discrete inputs in one read (protocol limit 2000).
    #[serde(default = "default_max_bits")]
    pub max_bits_per_read: u16,
    /// Consecutive failed polls after which a device is offline.
    #[serde(default = "default_failures_offline")]
    pub failures_before_offline: u32,
}

/// `[templates.NAME]`: poll groups shared by devices of one model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// The poll groups.
    pub poll_groups: Vec<PollGroupConfig>,
}

/// `[[devices]]`: one device.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
    /// Protocol code; `modbus-tcp` is the driver available now.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// `host:port` of the device.
    pub endpoint: String,
    /// Modbus unit id (slave id), 0..=255; 1 when absent.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Name of a template whose poll groups the device uses.
    #[serde(default)]
    pub template: Option<String>,
    /// The device's own poll groups (after the template's).
    #[serde(default)]
    pub poll_groups: Vec<PollGroupConfig>,
    /// Static attributes (vendor, serial number, site, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `[[...poll_groups]]`: tags read together at one interval.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollGroupConfig {
    /// How often the group is read.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The tags.
    pub tags: Vec<TagConfig>,
}

/// `[[...tags]]`: one value on the device.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Tag name, unique within the device.
    pub name: String,
    /// Register area.
    pub area: Area,
    /// Zero-based address in the area.
    pub address: u16,
    /// Data type.
    #[serde(rename = "type", default = "default_data_type")]
    pub data_type: DataType,
    /// Registers of a `string` tag (two characters each).
    #[serde(default)]
    pub length: u16,
    /// Bit (0..=15) of a register read as `bool`.
    #[serde(default)]
    pub bit: Option<u8>,
    /// Byte order within a register.
    #[serde(default)]
    pub byte_order: Order,
    /// Register order of multi-register values.
    #[serde(default)]
    pub word_order: Order,
    /// Engineering value = raw × scale + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit, for people.
    #[serde(default)]
    pub unit: String,
}

/// Modbus register areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    /// Read/write bits (function 1).
    Coil,
    /// Read-only bits (function 2).
    DiscreteInput,
    /// Read-only registers (function 4).
    InputRegister,
    /// Read/write registers (function 3).
    HoldingRegister,
}

impl Area {
    /// True for coils and discrete inputs.
    pub fn is_bits(self) -> bool {
        matches!(self, Area::Coil | Area::DiscreteInput)
    }
}

/// Data types of tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// A bit, or one bit of a register.
    Bool,
    /// One register, unsigned.
    U16,
    /// One register, signed.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, signed.
    I32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, signed.
    I64,
    /// Two registers, IEEE 754.
    F32,
    /// Four registers, IEEE 754.
    F64,
    /// `length` registers of ASCII, NULs trimmed.
    String,
}

impl DataType {
    /// Registers the type spans (`length` for strings).
    pub fn registers(self, length: u16) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length,
        }
    }
}

/// Byte or word order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most significant first (Modbus default).
    #[default]
    Big,
    /// Least significant first.
    Little,
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
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_min() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_max_registers() -> u16 {
    125
}
fn default_max_bits() -> u16 {
    2000
}
fn default_failures_offline() -> u32 {
    3
}
fn default_protocol() -> String {
    Protocol::ModbusTcp.code().to_owned()
}
fn default_unit_id() -> u8 {
    1
}
fn default_data_type() -> DataType {
    DataType::U16
}
fn default_scale() -> f64 {
    1.0
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

impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig {
            timeout: default_timeout(),
            backoff_min: default_backoff_min(),
            backoff_max: default_backoff_max(),
            max_registers_per_read: default_max_registers(),
            max_bits_per_read: default_max_bits(),
            failures_before_offline: default_failures_offline(),
        }
    }
}

/// A validated device: codes parsed, template resolved, endpoint resolved.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id.
    pub id: String,
    /// Category (the class follows).
    pub category: Category,
    /// Protocol.
    pub protocol: Protocol,
    /// Model name.
    pub device_type: String,
    /// Human name.
    pub name: String,
    /// Endpoint as written.
    pub endpoint: String,
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// Modbus unit id.
    pub unit_id: u8,
    /// Poll groups (template's, then the device's own); devices of one
    /// template share them.
    pub poll_groups: Arc<[PollGroupConfig]>,
    /// Static attributes.
    pub attributes: BTreeMap<String, String>,
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
    /// Modbus defaults.
    pub modbus: ModbusConfig,
    /// Devices.
    pub devices: Vec<Device>,
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
        toml::from_str(text).map_err(ConfigError::parse)
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
        let m = &self.modbus;
        if !(1..=125).contains(&m.max_registers_per_read) {
            problems.push(format!(
                "modbus.max_registers_per_read: must be 1..=125, got {}",
                m.max_registers_per_read
            ));
        }
        if !(1..=2000).contains(&m.max_bits_per_read) {
            problems.push(format!(
                "modbus.max_bits_per_read: must be 1..=2000, got {}",
                m.max_bits_per_read
            ));
        }
        if m.timeout.is_zero() || m.backoff_min.is_zero() || m.backoff_min > m.backoff_max {
            problems.push(
                "modbus: timeout and backoff_min must be above zero, backoff_min at most backoff_max"
                    .to_owned(),
            );
        }
        for (name, template) in &self.templates {
            check_groups(
                &format!("templates.{name}"),
                &template.poll_groups,
                &mut problems,
            );
        }
        let shared: HashMap<&str, Arc<[PollGroupConfig]>> = self
            .templates
            .iter()
            .map(|(name, t)| (name.as_str(), Arc::from(t.poll_groups.as_slice())))
            .collect();
        let mut ids = HashSet::new();
        let mut devices = Vec::with_capacity(self.devices.len());
        let mut endpoints: HashMap<(SocketAddr, u8), &str> = HashMap::new();
        for (n, d) in self.devices.iter().enumerate() {
            let key = format!("devices[{n}] ({})", d.id);
            if let Some(device) = self.check_device(&key, d, &shared, &mut problems) {
                if !ids.insert(d.id.as_str()) {
                    problems.push(format!("{key}.id: `{}` is listed twice", d.id));
                }
                if let Some(other) = endpoints.insert((device.addr, device.unit_id), &d.id) {
                    problems.push(format!(
                        "{key}.endpoint: {} unit {} is also device `{other}`",
                        device.addr, device.unit_id
                    ));
                }
                devices.push(device);
            }
        }
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
            modbus: self.modbus.clone(),
            devices,
        })
    }

    fn check_device(
        &self,
        key: &str,
        d: &DeviceConfig,
        shared: &HashMap<&str, Arc<[PollGroupConfig]>>,
        problems: &mut Vec<String>,
    ) -> Option<Device> {
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
        let protocol = match d.protocol.parse::<Protocol>() {
            Ok(Protocol::ModbusTcp) => Some(Protocol::ModbusTcp),
            Ok(p) => {
                problems.push(format!(
                    "{key}.protocol: `{p}` has no driver in this gateway yet (available: modbus-tcp)"
                ));
                None
            }
            Err(e) => {
                problems.push(format!("{key}.protocol: {e}"));
                None
            }
        };
        let addr = d
            .endpoint
            .parse::<SocketAddr>()
            .map_err(|_| {
                problems.push(format!(
                    "{key}.endpoint: `{}` is not host:port with a numeric IP address",
                    d.endpoint
                ))
            })
            .ok();
        let template = match &d.template {
            Some(name) => match shared.get(name.as_str()) {
                Some(groups) => Some(groups.clone()),
                None => {
                    problems.push(format!("{key}.template: no template `{name}`"));
                    None
                }
            },
            None => None,
        };
        check_groups(key, &d.poll_groups, problems);
        // Devices of one template share its groups; own groups make a copy.
        let poll_groups: Arc<[PollGroupConfig]> = match template {
            Some(groups) if d.poll_groups.is_empty() => groups,
            template => template
                .iter()
                .flat_map(|t| t.iter())
                .chain(&d.poll_groups)
                .cloned()
                .collect(),
        };
        if poll_groups.is_empty() {
            problems.push(format!(
                "{key}: no poll groups (set `template` or `poll_groups`)"
            ));
        }
        let mut names = HashSet::new();
        for tag in poll_groups.iter().flat_map(|g| &g.tags) {
            if !names.insert(tag.name.as_str()) {
                problems.push(format!("{key}: tag `{}` is defined twice", tag.name));
            }
        }
        if problems.len() > before {
            return None;
        }
        Some(Device {
            id: d.id.clone(),
            category: category?,
            protocol: protocol?,
            device_type: d.device_type.clone(),
            name: d.name.clone(),
            endpoint: d.endpoint.clone(),
            addr: addr?,
            unit_id: d.unit_id,
            poll_groups,
            attributes: d.attributes.clone(),
        })
    }
}

fn check_groups(key: &str, groups: &[PollGroupConfig], problems: &mut Vec<String>) {
    for (g, group) in groups.iter().enumerate() {
        let gkey = format!("{key}.poll_groups[{g}]");
        if group.interval < Duration::from_millis(10) {
            problems.push(format!("{gkey}.interval: must be at least 10ms"));
        }
        if group.tags.is_empty() {
            problems.push(format!("{gkey}.tags: empty"));
        }
        for (t, tag) in group.tags.iter().enumerate() {
            let tkey = format!("{gkey}.tags[{t}] ({})", tag.name);
            if tag.name.is_empty() || tag.name.len() > 128 {
                problems.push(format!("{tkey}.name: must be 1 to 128 bytes"));
            }
            if tag.area.is_bits() && tag.data_type != DataType::Bool {
                problems.push(format!(
                    "{tkey}.type: a {:?} holds bits; the type must be bool",
                    tag.area
                ));
            }
            if tag.data_type == DataType::String && !(1..=125).contains(&tag.length) {
                problems.push(format!("{tkey}.length: a string needs 1..=125 registers"));
            }
            if let Some(bit) = tag.bit
                && (bit > 15 || tag.data_type != DataType::Bool || tag.area.is_bits())
            {
                problems.push(format!(
                    "{tkey}.bit: only a bool in a register area, 0..=15"
                ));
            }
            let span = u32::from(tag.data_type.registers(tag.length));
            if u32::from(tag.address) + span > 65_536 {
                problems.push(format!(
                    "{tkey}.address: {} + {span} registers passes 65535",
                    tag.address
                ));
            }
            if !tag.scale.is_finite() || tag.scale == 0.0 || !tag.offset.is_finite() {
                problems.push(format!(
                    "{tkey}.scale: scale must be finite and non-zero, offset finite"
                ));
            }
        }
    }
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
        assert_eq!(settings.devices.len(), 2);
        let cnc = &settings.devices[0];
        assert_eq!(cnc.category, Category::MachineTools);
        assert_eq!(cnc.poll_groups.len(), 2, "from the template");
        assert_eq!(
            settings.devices[1].poll_groups[0].tags[0].word_order,
            Order::Little
        );
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
            endpoint = "plc.local:502"
            template = "nope"
            poll_groups = [ { interval = "1s", tags = [
              { name = "a", area = "coil", address = 0, type = "u16" },
              { name = "s", area = "holding-register", address = 65535, type = "f32" },
            ] } ]
        "#;
        let err = GatewayConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for needle in [
            "uplink.registry: `127.0.0.1:7600` must be an http:// or https:// URL",
            "devices[0] (d1).category: `mining` belongs to class `operating`, not `processing`",
            "devices[0] (d1).endpoint: `plc.local:502` is not host:port",
            "devices[0] (d1).template: no template `nope`",
            "devices[0] (d1).poll_groups[0].tags[0] (a).type",
            "devices[0] (d1).poll_groups[0].tags[1] (s).address",
        ] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = GatewayConfig::from_toml("gateway_id = \"g\"\nsurprise = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `surprise`"), "{err}");
    }
}
