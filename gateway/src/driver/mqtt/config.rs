//! The MQTT JSON driver's config: `[mqtt]` (the broker keys of
//! [`crate::driver::mqtt_source::config`], the registration and status
//! topics, limits, and `[[mqtt.topics]]` templates mapping payloads to tags)
//! and `[devices.mqtt]` (a configured device's template, topic or own tags).
//! [`configure`] validates both and names every bad key by its path.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fieldlink_model::{Category, DeviceClass};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::payload::{JsonType, TimeFormat, value_kind};
use super::topic::TopicTemplate;
use crate::device::{DeviceInfo, TagInfo};
use crate::driver::mqtt_source::config::{self as broker, BrokerSection, BrokerSettings};
use crate::driver::{DriverConfig, parse_section};

/// `[mqtt]` without the broker keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// Payloads larger than this are refused unread (counted as malformed).
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Registration topic (retained JSON `class`, `category`, `type`,
    /// `name`, `attributes`); `""` turns registration off.
    #[serde(default = "default_meta_topic")]
    pub meta_topic: String,
    /// Status topic (`online`/`offline`, retained; the device's Last Will
    /// says `offline`); `""` turns it off.
    #[serde(default = "default_status_topic")]
    pub status_topic: String,
    /// QoS of the subscriptions.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// A device that sent nothing for this long goes offline (for devices
    /// without a status topic on an external broker); never when absent.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub offline_after: Option<Duration>,
    /// Most tags one device may get from automatic mapping (the gateway's
    /// `limits.max_tags_per_device` applies on top).
    #[serde(default = "default_max_tags")]
    pub max_tags_per_device: usize,
    /// Topic templates, tried in order.
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
}

/// `[[mqtt.topics]]`: the telemetry topic of a kind of device.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Name devices refer to (`[devices.mqtt] template`); `topics[N]` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The template, with `{device_id}` and optionally `{tenant}`, other
    /// `{placeholders}`, `+` and a final `#`.
    pub topic: String,
    /// `"auto"` (every numeric and boolean top-level field is a tag, new
    /// fields become new tags) or a list of tags by JSON pointer.
    pub tags: TagsConfig,
    /// Where the payload's source time is; the time of receipt when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimestampText>,
    /// Identity of devices first seen on this topic that are neither
    /// configured nor registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_register: Option<AutoRegister>,
    /// What happens to such devices: `register` (needs `auto_register`,
    /// the default when it is present) or `ignore` (counted and logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<Unknown>,
}

/// Tags of a template or device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TagsConfig {
    /// Every numeric and boolean top-level field (serialized as `"auto"`).
    Auto(AutoMarker),
    /// These.
    List(Vec<TagConfig>),
}

/// The string `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AutoMarker {
    /// `auto`.
    #[serde(rename = "auto")]
    Auto,
}

impl<'de> Deserialize<'de> for TagsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TagsConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a list of tags")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TagsConfig, E> {
                if s == "auto" {
                    Ok(TagsConfig::Auto(AutoMarker::Auto))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TagsConfig, A::Error> {
                Vec::<TagConfig>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(TagsConfig::List)
            }
        }
        d.deserialize_any(V)
    }
}

/// One mapped tag.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Tag name, unique within the device.
    pub name: String,
    /// JSON pointer into the payload (`/temp`, `/sensors/0/value`).
    pub pointer: String,
    /// How the field is read.
    #[serde(rename = "type", default = "default_type")]
    pub ty: JsonType,
    /// Engineering value = raw × scale + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit.
    #[serde(default)]
    pub unit: String,
    /// A payload without the field is fine (else it counts as malformed).
    #[serde(default)]
    pub optional: bool,
}

/// Identity given to auto-registered devices.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRegister {
    /// Class code (checked against the category).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Category code.
    pub category: String,
    /// Model name.
    #[serde(rename = "type", default = "default_device_type")]
    pub device_type: String,
    /// Human name; `{device_id}` and `{tenant}` are replaced.
    #[serde(default = "default_name")]
    pub name: String,
    /// Static attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// What to do with unknown devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// Declare them with `auto_register`'s identity.
    Register,
    /// Count them in `ignored` and log (rate-limited).
    Ignore,
}

/// `[devices.mqtt]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDeviceConfig {
    /// The `[[mqtt.topics]]` entry whose tags the device has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A topic of its own that carries no device id (`{tenant}` allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Its own tags (instead of the template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<TagsConfig>,
    /// Its own timestamp field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimestampText>,
}

/// `timestamp = { pointer = "/ts", format = "epoch_ms", required = false }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampText {
    /// JSON pointer of the field.
    pub pointer: String,
    /// How it is written.
    #[serde(default)]
    pub format: TimeFormat,
    /// A payload without it is malformed (else it gets the time of receipt).
    #[serde(default)]
    pub required: bool,
}

fn default_max_payload() -> usize {
    256 << 10
}
fn default_meta_topic() -> String {
    "{tenant}/{device_id}/meta".to_owned()
}
fn default_status_topic() -> String {
    "{tenant}/{device_id}/status".to_owned()
}
fn default_qos() -> u8 {
    1
}
fn default_max_tags() -> usize {
    1000
}
fn default_type() -> JsonType {
    JsonType::Double
}
fn default_scale() -> f64 {
    1.0
}
fn default_device_type() -> String {
    "mqtt-device".to_owned()
}
fn default_name() -> String {
    "{device_id}".to_owned()
}

/// A mapped tag, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedTag {
    /// JSON pointer.
    pub pointer: String,
    /// How it is read.
    pub ty: JsonType,
    /// Scale.
    pub scale: f64,
    /// Offset.
    pub offset: f64,
    /// Missing is fine.
    pub optional: bool,
}

/// The source-time field, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeField {
    /// JSON pointer.
    pub pointer: String,
    /// Format.
    pub format: TimeFormat,
    /// Missing is malformed.
    pub required: bool,
}

/// How a payload becomes readings.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Automatic: every numeric and boolean top-level field.
    pub auto: bool,
    /// Mapped tags (empty when automatic).
    pub tags: Vec<MappedTag>,
    /// Their tag table, in the same order.
    pub infos: Vec<TagInfo>,
    /// The source time.
    pub time: Option<TimeField>,
}

/// Identity of auto-registered devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Category.
    pub category: Category,
    /// Model name.
    pub device_type: String,
    /// Name template.
    pub name: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
}

/// A validated template.
#[derive(Debug, Clone)]
pub struct Template {
    /// Its name.
    pub name: String,
    /// Its topic.
    pub topic: TopicTemplate,
    /// Its mapping.
    pub mapping: Arc<Mapping>,
    /// How unknown devices are registered; `None`: ignored.
    pub register: Option<Registration>,
}

/// A configured device, validated.
#[derive(Debug, Clone)]
pub struct DeviceEntry {
    /// Identity (endpoint filled in).
    pub info: DeviceInfo,
    /// Its own topic, rendered.
    pub topic: Option<String>,
    /// Its mapping (own tags, else its template's); `None`: whichever
    /// template its messages match.
    pub mapping: Option<Arc<Mapping>>,
}

/// Everything the driver runs on.
#[derive(Debug, Clone)]
pub struct Configured {
    /// The broker.
    pub broker: BrokerSettings,
    /// `[mqtt]`.
    pub section: MqttSection,
    /// Registration topic.
    pub meta: Option<TopicTemplate>,
    /// Status topic.
    pub status: Option<TopicTemplate>,
    /// Telemetry templates.
    pub templates: Vec<Template>,
    /// Configured devices.
    pub devices: Vec<DeviceEntry>,
}

/// Validates `[mqtt]` and every `[devices.mqtt]`.
///
/// # Errors
/// Every problem, each naming its key path.
pub fn configure(config: DriverConfig<'_>) -> Result<Configured, Vec<String>> {
    let mut problems = Vec::new();
    let Some(value) = config.section else {
        return Err(vec![
            "mqtt: devices use protocol mqtt-json but there is no [mqtt] section with `broker`"
                .to_owned(),
        ]);
    };
    let (broker_value, rest) = match broker::split("mqtt", value) {
        Ok(parts) => parts,
        Err(e) => return Err(vec![e]),
    };
    let broker = parse_section::<BrokerSection>("mqtt", &broker_value)
        .map_err(|e| problems.push(e))
        .ok()
        .and_then(|b| {
            b.validate("mqtt")
                .map_err(|mut p| problems.append(&mut p))
                .ok()
        });
    let section: Option<MqttSection> = parse_section("mqtt", &rest)
        .map_err(|e| problems.push(e))
        .ok();
    let Some(section) = section else {
        return Err(problems);
    };
    check_section(&section, &mut problems);
    let tenant = broker.as_ref().and_then(|b| b.tenant.clone());
    let topic_of = |key: &str, text: &str, problems: &mut Vec<String>| {
        if text.is_empty() {
            return None;
        }
        TopicTemplate::parse(text, true)
            .map_err(|e| problems.push(format!("mqtt.{key}: {e}")))
            .ok()
    };
    let meta = topic_of("meta_topic", &section.meta_topic, &mut problems);
    let status = topic_of("status_topic", &section.status_topic, &mut problems);
    let mut templates = Vec::new();
    let mut names = HashSet::new();
    for (i, t) in section.topics.iter().enumerate() {
        let name = t.name.clone().unwrap_or_else(|| format!("topics[{i}]"));
        let key = format!("mqtt.topics[{i}]");
        if !names.insert(name.clone()) {
            problems.push(format!("{key}.name: `{name}` is used twice"));
        }
        if let Some(t) = check_template(&key, name, t, &mut problems) {
            templates.push(t);
        }
    }
    let url = broker.as_ref().map(BrokerSettings::url).unwrap_or_default();
    let mut devices = Vec::new();
    let mut own_topics = HashSet::new();
    for device in config.devices {
        let key = format!("{}.mqtt", device.key);
        let d: MqttDeviceConfig = match device.section {
            Some(v) => match parse_section(&key, v) {
                Ok(d) => d,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            },
            None => MqttDeviceConfig::default(),
        };
        let template = match &d.template {
            Some(name) => match templates.iter().find(|t| &t.name == name) {
                Some(t) => Some(t),
                None => {
                    problems.push(format!("{key}.template: no [[mqtt.topics]] named `{name}`"));
                    continue;
                }
            },
            None => None,
        };
        let own = match &d.tags {
            Some(tags) => check_mapping(&key, tags, d.timestamp.as_ref(), &mut problems),
            None if d.timestamp.is_some() => {
                problems.push(format!(
                    "{key}.timestamp: only with the device's own `tags`"
                ));
                None
            }
            None => None,
        };
        let mapping = own.or_else(|| template.map(|t| t.mapping.clone()));
        let topic = match &d.topic {
            Some(text) => {
                let rendered = text.replace("{tenant}", tenant.as_deref().unwrap_or("{tenant}"));
                match TopicTemplate::parse(&rendered, false) {
                    Ok(t) if t.filter(None) == rendered && !t.has_device() => {
                        if mapping.is_none() {
                            problems.push(format!(
                                "{key}.topic: a device with its own topic needs `tags` or `template`"
                            ));
                        }
                        if !own_topics.insert(rendered.clone()) {
                            problems.push(format!(
                                "{key}.topic: `{rendered}` is another device's topic too"
                            ));
                        }
                        Some(rendered)
                    }
                    Ok(_) => {
                        problems.push(format!(
                            "{key}.topic: `{text}` must be a plain topic (only `{{tenant}}` is replaced, and it needs mqtt.tenant)"
                        ));
                        None
                    }
                    Err(e) => {
                        problems.push(format!("{key}.topic: {e}"));
                        None
                    }
                }
            }
            None => None,
        };
        let place = topic.clone().or_else(|| {
            template.or(templates.first()).and_then(|t| {
                t.topic
                    .render(tenant.as_deref().unwrap_or("+"), &device.info.id)
            })
        });
        let endpoint = match place {
            Some(p) => format!("{url}/{p}"),
            None => format!("{url}/{}", device.info.id),
        };
        devices.push(DeviceEntry {
            info: DeviceInfo {
                endpoint,
                ..device.info
            },
            topic,
            mapping,
        });
    }
    if templates.is_empty() && devices.iter().all(|d| d.topic.is_none()) {
        problems.push(
            "mqtt.topics: no telemetry topic (add a [[mqtt.topics]] template or a device with its own topic)"
                .to_owned(),
        );
    }
    match broker {
        Some(broker) if problems.is_empty() => Ok(Configured {
            broker,
            section,
            meta,
            status,
            templates,
            devices,
        }),
        _ => Err(problems),
    }
}

fn check_section(s: &MqttSection, problems: &mut Vec<String>) {
    if !(16..=256 << 20).contains(&s.max_payload_bytes) {
        problems.push("mqtt.max_payload_bytes: must be 16..=268435456".to_owned());
    }
    if s.qos > 2 {
        problems.push(format!("mqtt.qos: must be 0, 1 or 2, got {}", s.qos));
    }
    if s.max_tags_per_device == 0 {
        problems.push("mqtt.max_tags_per_device: must be at least 1".to_owned());
    }
    if s.offline_after.is_some_and(|d| d < Duration::from_secs(1)) {
        problems.push("mqtt.offline_after: must be at least 1s".to_owned());
    }
}

fn check_template(
    key: &str,
    name: String,
    t: &TopicConfig,
    problems: &mut Vec<String>,
) -> Option<Template> {
    let topic = TopicTemplate::parse(&t.topic, true)
        .map_err(|e| problems.push(format!("{key}.topic: {e}")))
        .ok();
    let mapping = check_mapping(key, &t.tags, t.timestamp.as_ref(), problems);
    let register = match (&t.auto_register, t.unknown) {
        (Some(a), None | Some(Unknown::Register)) => check_register(key, a, problems),
        (None, Some(Unknown::Register)) => {
            problems.push(format!(
                "{key}.unknown: `register` needs an auto_register block"
            ));
            None
        }
        (_, _) => None,
    };
    Some(Template {
        name,
        topic: topic?,
        mapping: mapping?,
        register,
    })
}

fn check_register(key: &str, a: &AutoRegister, problems: &mut Vec<String>) -> Option<Registration> {
    let category = a
        .category
        .parse::<Category>()
        .map_err(|e| problems.push(format!("{key}.auto_register.category: {e}")))
        .ok()?;
    if let Some(class) = &a.class {
        match class.parse::<DeviceClass>() {
            Ok(c) if c != category.class() => {
                problems.push(format!(
                    "{key}.auto_register.category: `{category}` belongs to class `{}`, not `{c}`",
                    category.class()
                ));
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                problems.push(format!("{key}.auto_register.class: {e}"));
                return None;
            }
        }
    }
    Some(Registration {
        category,
        device_type: a.device_type.clone(),
        name: a.name.clone(),
        attributes: a.attributes.clone(),
    })
}

fn check_pointer(key: &str, pointer: &str, problems: &mut Vec<String>) -> bool {
    let ok = pointer.is_empty() || (pointer.starts_with('/') && pointer.len() <= 1024);
    if !ok {
        problems.push(format!(
            "{key}: `{pointer}` is not a JSON pointer (`/field`, `/list/0/value`)"
        ));
    }
    ok
}

fn check_mapping(
    key: &str,
    tags: &TagsConfig,
    timestamp: Option<&TimestampText>,
    problems: &mut Vec<String>,
) -> Option<Arc<Mapping>> {
    let before = problems.len();
    let time = timestamp.and_then(|t| {
        check_pointer(&format!("{key}.timestamp.pointer"), &t.pointer, problems).then(|| {
            TimeField {
                pointer: t.pointer.clone(),
                format: t.format,
                required: t.required,
            }
        })
    });
    let mapping = match tags {
        TagsConfig::Auto(_) => Mapping {
            auto: true,
            tags: Vec::new(),
            infos: Vec::new(),
            time,
        },
        TagsConfig::List(list) => {
            let mut names = HashSet::new();
            let mut tags = Vec::with_capacity(list.len());
            let mut infos = Vec::with_capacity(list.len());
            if list.is_empty() {
                problems.push(format!("{key}.tags: empty (use \"auto\" or list tags)"));
            }
            for (i, t) in list.iter().enumerate() {
                let tkey = format!("{key}.tags[{i}] ({})", t.name);
                if t.name.is_empty() || t.name.len() > 128 {
                    problems.push(format!("{tkey}.name: must be 1 to 128 bytes"));
                }
                if !names.insert(t.name.as_str()) {
                    problems.push(format!("{tkey}.name: defined twice"));
                }
                check_pointer(&format!("{tkey}.pointer"), &t.pointer, problems);
                if !t.scale.is_finite() || t.scale == 0.0 || !t.offset.is_finite() {
                    problems.push(format!(
                        "{tkey}.scale: scale must be finite and non-zero, offset finite"
                    ));
                }
                let scaled = t.scale != 1.0 || t.offset != 0.0;
                if scaled && matches!(t.ty, JsonType::Bool | JsonType::String) {
                    problems.push(format!("{tkey}.scale: only numbers are scaled"));
                }
                tags.push(MappedTag {
                    pointer: t.pointer.clone(),
                    ty: t.ty,
                    scale: t.scale,
                    offset: t.offset,
                    optional: t.optional,
                });
                infos.push(
                    TagInfo::new(t.name.clone(), value_kind(t.ty, t.scale, t.offset))
                        .with_unit(t.unit.clone()),
                );
            }
            Mapping {
                auto: false,
                tags,
                infos,
                time,
            }
        }
    };
    (problems.len() == before).then(|| Arc::new(mapping))
}
