//! The Sparkplug host's config: `[sparkplug]` (the broker keys of
//! [`crate::driver::mqtt_source::config`], the host id, groups, device id
//! templates, limits) and `[[sparkplug.devices]]` (class and category by
//! group, edge node and device id patterns). Sparkplug devices are always
//! discovered from births; `[[devices]]` entries with protocol
//! `sparkplug-b` are refused.

use std::time::Duration;

use fieldlink_model::sparkplug::valid_id;
use fieldlink_model::{Category, DeviceClass};
use serde::{Deserialize, Serialize};

use crate::driver::mqtt_source::config::{self as broker, BrokerSection, BrokerSettings};
use crate::driver::{DriverConfig, parse_section};

/// `[sparkplug]` without the broker keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugSection {
    /// This host application's id (`spBv1.0/STATE/{host_id}`);
    /// `fieldlink-<tenant>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Publish the host's STATE (birth, will, death) as a primary host does.
    #[serde(default = "default_true")]
    pub primary: bool,
    /// Sparkplug groups served; `["+"]` for all. The tenant's name when
    /// absent (the convention: group id = tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Device id of a Sparkplug device: `{group}`, `{edge}`, `{device}`.
    #[serde(default = "default_device_id")]
    pub device_id: String,
    /// Device id of an edge node that is a device itself.
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// Whether edge nodes are devices: `auto` (when their birth has metrics
    /// beyond bdSeq and Node Control), `always`, `never`.
    #[serde(default)]
    pub nodes_as_devices: NodesAsDevices,
    /// Payloads larger than this are refused unread.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Most metrics in one payload; a birth with more is refused.
    #[serde(default = "default_max_metrics")]
    pub max_metrics: usize,
    /// Least time between two rebirth requests to one edge node.
    #[serde(default = "default_rebirth_interval", with = "humantime_serde")]
    pub rebirth_interval: Duration,
    /// How long a missing sequence number may take to arrive before a
    /// rebirth is requested (0: at once).
    #[serde(default, with = "humantime_serde")]
    pub reorder_timeout: Duration,
    /// Identity of devices whose births carry none, by id patterns.
    #[serde(default)]
    pub devices: Vec<IdentityRule>,
}

/// Whether an edge node is a device of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodesAsDevices {
    /// When it has metrics of its own.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// `[[sparkplug.devices]]`: identity by id patterns (`*` matches any run of
/// characters); the first rule that matches applies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRule {
    /// Group id pattern.
    #[serde(default = "star")]
    pub group: String,
    /// Edge node id pattern.
    #[serde(default = "star")]
    pub edge: String,
    /// Device id pattern; the edge node itself has the empty device id.
    #[serde(default = "star")]
    pub device: String,
    /// Class code (checked against the category).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Category code.
    pub category: String,
    /// Model name.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// Human name; `{group}`, `{edge}`, `{device}` are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_device_id() -> String {
    "{group}/{edge}/{device}".to_owned()
}
fn default_node_id() -> String {
    "{group}/{edge}".to_owned()
}
fn default_max_payload() -> usize {
    4 << 20
}
fn default_max_metrics() -> usize {
    10_000
}
fn default_rebirth_interval() -> Duration {
    Duration::from_secs(2)
}
fn star() -> String {
    "*".to_owned()
}

/// A validated identity rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Patterns.
    pub group: String,
    /// Patterns.
    pub edge: String,
    /// Patterns.
    pub device: String,
    /// Category.
    pub category: Category,
    /// Model name.
    pub device_type: Option<String>,
    /// Name template.
    pub name: Option<String>,
}

/// Everything the host runs on.
#[derive(Debug, Clone)]
pub struct Configured {
    /// The broker.
    pub broker: BrokerSettings,
    /// `[sparkplug]`.
    pub section: SparkplugSection,
    /// The host id.
    pub host_id: String,
    /// Groups served (`+` for all).
    pub groups: Vec<String>,
    /// Identity rules.
    pub rules: Vec<Rule>,
}

/// `*` matches any run of characters, everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Renders an id template.
pub fn render(template: &str, group: &str, edge: &str, device: &str) -> String {
    template
        .replace("{group}", group)
        .replace("{edge}", edge)
        .replace("{device}", device)
}

/// Validates `[sparkplug]`.
///
/// # Errors
/// Every problem, each naming its key path.
pub fn configure(config: DriverConfig<'_>) -> Result<Configured, Vec<String>> {
    let mut problems = Vec::new();
    for d in &config.devices {
        problems.push(format!(
            "{}.protocol: Sparkplug B devices are discovered from their births; configure their identity in [[sparkplug.devices]] instead",
            d.key
        ));
    }
    let Some(value) = config.section else {
        return Err(problems);
    };
    let (broker_value, rest) = match broker::split("sparkplug", value) {
        Ok(parts) => parts,
        Err(e) => return Err(vec![e]),
    };
    let broker = parse_section::<BrokerSection>("sparkplug", &broker_value)
        .map_err(|e| problems.push(e))
        .ok()
        .and_then(|b| {
            b.validate("sparkplug")
                .map_err(|mut p| problems.append(&mut p))
                .ok()
        });
    let Some(section) = parse_section::<SparkplugSection>("sparkplug", &rest)
        .map_err(|e| problems.push(e))
        .ok()
    else {
        return Err(problems);
    };
    if let Some(b) = &broker
        && !b.clean_session
    {
        problems.push("sparkplug.clean_session: Sparkplug requires a clean session".to_owned());
    }
    let tenant = broker.as_ref().and_then(|b| b.tenant.clone());
    let host_id = section
        .host_id
        .clone()
        .unwrap_or_else(|| format!("fieldlink-{}", tenant.as_deref().unwrap_or("host")));
    if !valid_id(&host_id) || host_id.len() > 256 {
        problems.push(format!(
            "sparkplug.host_id: `{host_id}` must be 1 to 256 bytes without `/`, `+` or `#`"
        ));
    }
    let groups = match (&section.groups, &tenant) {
        (Some(g), _) => g.clone(),
        (None, Some(t)) => vec![t.clone()],
        (None, None) => vec!["+".to_owned()],
    };
    if groups.is_empty() {
        problems.push("sparkplug.groups: empty (use [\"+\"] for every group)".to_owned());
    }
    for g in &groups {
        if g != "+" && !valid_id(g) {
            problems.push(format!(
                "sparkplug.groups: `{g}` is not a group id (no `/`, `+` or `#`), nor `+`"
            ));
        }
    }
    for (key, t, need) in [
        ("device_id", &section.device_id, "{device}"),
        ("node_id", &section.node_id, "{edge}"),
    ] {
        if !t.contains(need) || t.len() > 128 {
            problems.push(format!(
                "sparkplug.{key}: `{t}` must contain `{need}` (and is at most 128 bytes)"
            ));
        }
    }
    if !(64..=256 << 20).contains(&section.max_payload_bytes) {
        problems.push("sparkplug.max_payload_bytes: must be 64..=268435456".to_owned());
    }
    if section.max_metrics == 0 {
        problems.push("sparkplug.max_metrics: must be at least 1".to_owned());
    }
    if section.rebirth_interval < Duration::from_millis(100) {
        problems.push("sparkplug.rebirth_interval: must be at least 100ms".to_owned());
    }
    let mut rules = Vec::new();
    for (i, r) in section.devices.iter().enumerate() {
        let key = format!("sparkplug.devices[{i}]");
        let category = match r.category.parse::<Category>() {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{key}.category: {e}"));
                continue;
            }
        };
        if let Some(class) = &r.class {
            match class.parse::<DeviceClass>() {
                Ok(c) if c == category.class() => {}
                Ok(c) => problems.push(format!(
                    "{key}.category: `{category}` belongs to class `{}`, not `{c}`",
                    category.class()
                )),
                Err(e) => problems.push(format!("{key}.class: {e}")),
            }
        }
        rules.push(Rule {
            group: r.group.clone(),
            edge: r.edge.clone(),
            device: r.device.clone(),
            category,
            device_type: r.device_type.clone(),
            name: r.name.clone(),
        });
    }
    match broker {
        Some(broker) if problems.is_empty() => Ok(Configured {
            broker,
            section,
            host_id,
            groups,
            rules,
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "abc"));
        assert!(glob("edge-*", "edge-7"));
        assert!(!glob("edge-*", "node-7"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcd"));
        assert!(glob("", ""));
        assert!(!glob("", "x"));
        assert!(glob("x", "x"));
        assert!(!glob("ab*ba", "aba"));
    }
}
