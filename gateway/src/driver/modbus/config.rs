//! The Modbus driver's config: `[modbus]` (driver defaults and templates of
//! poll groups shared by devices of one model) and `[devices.modbus]` (where
//! a device is and what to read from it). [`configure`] validates both and
//! names every bad key by its path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use fieldlink_model::register::{Area, DataType, Order};
use serde::{Deserialize, Serialize};

use super::plan;
use crate::device::{DeviceInfo, TagInfo, ValueKind};
use crate::driver::poll::{PollGroup, PolledDevice, Timing};
use crate::driver::{ConfiguredDevice, DriverConfig, parse_section};

/// `[modbus]`: driver defaults and templates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSection {
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
    /// Poll-group sets shared by devices of one model, by name.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateConfig>,
}

/// `[modbus.templates.NAME]`: poll groups shared by devices of one model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// The poll groups.
    pub poll_groups: Vec<PollGroupConfig>,
}

/// `[devices.modbus]`: one Modbus TCP device.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    /// `host:port` of the device, with a numeric IP address.
    pub endpoint: String,
    /// Modbus unit id (slave id), 0..=255; 1 when absent.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Name of a `[modbus.templates.NAME]` whose poll groups the device uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The device's own poll groups (after the template's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poll_groups: Vec<PollGroupConfig>,
}

/// `[[...poll_groups]]`: tags read together at one interval.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollGroupConfig {
    /// How often the group is read: at least 10ms, or 0 to read it back to
    /// back (each read goes out as soon as the last one is answered — as
    /// fast as the device answers, for saturation tests).
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

impl TagConfig {
    /// The kind of value the tag decodes to.
    pub fn value_kind(&self) -> ValueKind {
        let unscaled = self.scale == 1.0 && self.offset == 0.0;
        match self.data_type {
            DataType::Bool => ValueKind::Bool,
            DataType::String => ValueKind::String,
            DataType::F32 | DataType::F64 => ValueKind::Double,
            _ if unscaled => ValueKind::Int,
            _ => ValueKind::Double,
        }
    }
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
fn default_unit_id() -> u8 {
    1
}
fn default_data_type() -> DataType {
    DataType::U16
}
fn default_scale() -> f64 {
    1.0
}

impl Default for ModbusSection {
    fn default() -> Self {
        ModbusSection {
            timeout: default_timeout(),
            backoff_min: default_backoff_min(),
            backoff_max: default_backoff_max(),
            max_registers_per_read: default_max_registers(),
            max_bits_per_read: default_max_bits(),
            failures_before_offline: default_failures_offline(),
            templates: BTreeMap::new(),
        }
    }
}

impl ModbusSection {
    /// The poll loop's timing.
    pub fn timing(&self) -> Timing {
        Timing {
            timeout: self.timeout,
            backoff_min: self.backoff_min,
            backoff_max: self.backoff_max,
            failures_before_offline: self.failures_before_offline.max(1),
        }
    }
}

/// What devices of one template (or one device with its own groups) share:
/// the tags in group order, the groups as id ranges, and the read plans.
#[derive(Debug)]
pub struct Layout {
    /// Every tag, in group order (a tag's index is its id).
    pub tags: Vec<TagConfig>,
    /// The tag table that is announced.
    pub infos: Arc<[TagInfo]>,
    /// Poll groups as ranges of tag ids.
    pub groups: Arc<[PollGroup]>,
    /// Per group, its reads; a read's tag indexes are within the group.
    pub plans: Vec<Vec<plan::Read>>,
}

impl Layout {
    fn new(groups: &[PollGroupConfig], section: &ModbusSection) -> Layout {
        let mut tags = Vec::new();
        let mut ranges = Vec::new();
        let mut plans = Vec::new();
        for g in groups {
            // Bounded by validation: at most 65 536 tags per device.
            let first = tags.len() as u32;
            tags.extend(g.tags.iter().cloned());
            ranges.push(PollGroup {
                interval: g.interval,
                tags: first..tags.len() as u32,
            });
            plans.push(plan::plan(
                &g.tags,
                section.max_registers_per_read,
                section.max_bits_per_read,
            ));
        }
        let infos = tags
            .iter()
            .map(|t| TagInfo::new(t.name.clone(), t.value_kind()).with_unit(t.unit.clone()))
            .collect();
        Layout {
            tags,
            infos,
            groups: ranges.into(),
            plans,
        }
    }

    /// The tags of group `group`.
    pub fn group_tags(&self, group: usize) -> Option<&[TagConfig]> {
        let range = &self.groups.get(group)?.tags;
        self.tags.get(range.start as usize..range.end as usize)
    }
}

/// Where one device is and how to read it.
#[derive(Debug)]
pub struct Target {
    /// Its address.
    pub addr: SocketAddr,
    /// Its unit id.
    pub unit_id: u8,
    /// Its tags and plans.
    pub layout: Arc<Layout>,
}

/// The validated driver: its timing, its defaults and its devices.
#[derive(Debug)]
pub struct Configured {
    /// `[modbus]`.
    pub section: ModbusSection,
    /// The devices, ready for the poller.
    pub devices: Vec<PolledDevice<Target>>,
}

/// Validates `[modbus]` and every `[devices.modbus]`.
///
/// # Errors
/// Every problem, each naming its key path.
pub fn configure(config: DriverConfig<'_>) -> Result<Configured, Vec<String>> {
    let mut problems = Vec::new();
    let section: ModbusSection = match config.section {
        Some(value) => parse_section("modbus", value).unwrap_or_else(|e| {
            problems.push(e);
            ModbusSection::default()
        }),
        None => ModbusSection::default(),
    };
    check_section(&section, &mut problems);
    let layouts: HashMap<&str, Arc<Layout>> = section
        .templates
        .iter()
        .map(|(name, t)| {
            (
                name.as_str(),
                Arc::new(Layout::new(&t.poll_groups, &section)),
            )
        })
        .collect();
    let mut endpoints: HashMap<(SocketAddr, u8), String> = HashMap::new();
    let mut devices = Vec::with_capacity(config.devices.len());
    for device in config.devices {
        if let Some(d) = check_device(device, &section, &layouts, &mut endpoints, &mut problems) {
            devices.push(d);
        }
    }
    if problems.is_empty() {
        Ok(Configured { section, devices })
    } else {
        Err(problems)
    }
}

fn check_section(m: &ModbusSection, problems: &mut Vec<String>) {
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
    for (name, template) in &m.templates {
        let key = format!("modbus.templates.{name}");
        check_groups(&key, &template.poll_groups, problems);
        check_unique_names(&key, template.poll_groups.iter(), problems);
    }
}

fn check_device(
    device: ConfiguredDevice<'_>,
    section: &ModbusSection,
    layouts: &HashMap<&str, Arc<Layout>>,
    endpoints: &mut HashMap<(SocketAddr, u8), String>,
    problems: &mut Vec<String>,
) -> Option<PolledDevice<Target>> {
    let key = format!("{}.modbus", device.key);
    let Some(value) = device.section else {
        problems.push(format!(
            "{}: a {} device needs a [devices.modbus] section with `endpoint`",
            device.key, device.info.protocol
        ));
        return None;
    };
    let d: ModbusDeviceConfig = parse_section(&key, value)
        .map_err(|e| problems.push(e))
        .ok()?;
    let before = problems.len();
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
        Some(name) => match section.templates.get(name) {
            Some(t) => Some((name.as_str(), t)),
            None => {
                problems.push(format!(
                    "{key}.template: no template `{name}` in [modbus.templates]"
                ));
                None
            }
        },
        None => None,
    };
    check_groups(&key, &d.poll_groups, problems);
    let layout = match template {
        // Devices of one template share its layout; own groups make a copy.
        Some((name, _)) if d.poll_groups.is_empty() => layouts.get(name).cloned(),
        template => {
            let groups: Vec<PollGroupConfig> = template
                .iter()
                .flat_map(|(_, t)| t.poll_groups.iter())
                .chain(&d.poll_groups)
                .cloned()
                .collect();
            if groups.is_empty() {
                problems.push(format!(
                    "{key}: no poll groups (set `template` or `poll_groups`)"
                ));
            }
            check_unique_names(&key, groups.iter(), problems);
            Some(Arc::new(Layout::new(&groups, section)))
        }
    };
    if let Some(addr) = addr
        && let Some(other) = endpoints.insert((addr, d.unit_id), device.info.id.clone())
    {
        problems.push(format!(
            "{key}.endpoint: {addr} unit {} is also device `{other}`",
            d.unit_id
        ));
    }
    if problems.len() > before {
        return None;
    }
    let (addr, layout) = (addr?, layout?);
    let info = DeviceInfo {
        endpoint: d.endpoint.clone(),
        ..device.info
    };
    Some(PolledDevice {
        info,
        tags: layout.infos.clone(),
        groups: layout.groups.clone(),
        target: Arc::new(Target {
            addr,
            unit_id: d.unit_id,
            layout,
        }),
    })
}

fn check_unique_names<'a>(
    key: &str,
    groups: impl Iterator<Item = &'a PollGroupConfig>,
    problems: &mut Vec<String>,
) {
    let mut names = HashSet::new();
    for tag in groups.flat_map(|g| &g.tags) {
        if !names.insert(tag.name.as_str()) {
            problems.push(format!("{key}: tag `{}` is defined twice", tag.name));
        }
    }
}

fn check_groups(key: &str, groups: &[PollGroupConfig], problems: &mut Vec<String>) {
    for (g, group) in groups.iter().enumerate() {
        let gkey = format!("{key}.poll_groups[{g}]");
        if !group.interval.is_zero() && group.interval < Duration::from_millis(10) {
            problems.push(format!(
                "{gkey}.interval: must be at least 10ms (or 0: back to back)"
            ));
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
                    "{tkey}.type: a {} holds bits; the type must be bool",
                    tag.area.code()
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
