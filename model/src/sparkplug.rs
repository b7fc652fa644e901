//! The Sparkplug B 3.0 vocabulary the gateway's host application and the
//! simulators share: the payload schema ([`proto`], compiled from
//! `proto/sparkplug_b/sparkplug_b.proto`), the topic namespace ([`Topic`]),
//! the names the specification fixes (`bdSeq`, `Node Control/Rebirth`) and
//! Fieldlink's own convention for a device's identity in its birth
//! ([`CLASS_KEY`] and its siblings).
//!
//! # Identity convention
//! A Sparkplug device (or an edge node that is itself a device) tells the
//! gateway its class, category, type and name in its NBIRTH/DBIRTH, either
//! way:
//! - as properties of any metric of the birth: keys [`CLASS_KEY`]
//!   (`fieldlink/class`), [`CATEGORY_KEY`], [`TYPE_KEY`], [`NAME_KEY`], with
//!   string values;
//! - or as string metrics of the birth with those names (for libraries that
//!   cannot set properties). Such metrics describe the device; they are not
//!   tags.
//!
//! Values are the API codes (`operating`, `machine-tools`, ...).

use std::fmt;

/// Generated types of the Sparkplug B payload (`sparkplug_b` package).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("sparkplug_b");
}

/// The first topic level of Sparkplug B 3.0.
pub const NAMESPACE: &str = "spBv1.0";
/// The birth/death sequence metric of NBIRTH and NDEATH.
pub const BD_SEQ: &str = "bdSeq";
/// The metric of a rebirth request (NCMD, boolean true) and of every NBIRTH
/// (boolean false).
pub const REBIRTH: &str = "Node Control/Rebirth";
/// Property key (or metric name) carrying a device's class code.
pub const CLASS_KEY: &str = "fieldlink/class";
/// Property key (or metric name) carrying a device's category code.
pub const CATEGORY_KEY: &str = "fieldlink/category";
/// Property key (or metric name) carrying a device's model name.
pub const TYPE_KEY: &str = "fieldlink/type";
/// Property key (or metric name) carrying a device's human name.
pub const NAME_KEY: &str = "fieldlink/name";

/// A Sparkplug verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Edge node birth certificate.
    NBirth,
    /// Edge node death certificate (the will).
    NDeath,
    /// Edge node data.
    NData,
    /// Command to an edge node.
    NCmd,
    /// Device birth certificate.
    DBirth,
    /// Device death certificate.
    DDeath,
    /// Device data.
    DData,
    /// Command to a device.
    DCmd,
}

impl MessageType {
    /// Every verb.
    pub const ALL: [MessageType; 8] = [
        MessageType::NBirth,
        MessageType::NDeath,
        MessageType::NData,
        MessageType::NCmd,
        MessageType::DBirth,
        MessageType::DDeath,
        MessageType::DData,
        MessageType::DCmd,
    ];

    /// The topic level (`NBIRTH`, ...).
    pub const fn code(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::NData => "NDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DDeath => "DDEATH",
            MessageType::DData => "DDATA",
            MessageType::DCmd => "DCMD",
        }
    }

    /// The verb of a topic level.
    pub fn parse(code: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether the verb addresses a device (its topic has a device id).
    pub const fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DDeath | MessageType::DData | MessageType::DCmd
        )
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A parsed Sparkplug topic, borrowing the topic text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `spBv1.0/STATE/{host_id}`: a host application's state.
    State {
        /// The host id.
        host_id: &'a str,
    },
    /// `spBv1.0/{group}/{N*}/{edge}`.
    Node {
        /// Group id.
        group: &'a str,
        /// The verb (an `N*` one).
        kind: MessageType,
        /// Edge node id.
        edge: &'a str,
    },
    /// `spBv1.0/{group}/{D*}/{edge}/{device}`.
    Device {
        /// Group id.
        group: &'a str,
        /// The verb (a `D*` one).
        kind: MessageType,
        /// Edge node id.
        edge: &'a str,
        /// Device id.
        device: &'a str,
    },
}

/// Why a topic is not a Sparkplug B topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Sparkplug B topic: {why}")]
pub struct TopicError {
    /// What is wrong.
    pub why: &'static str,
}

fn bad(why: &'static str) -> TopicError {
    TopicError { why }
}

/// Whether `id` may be a group, edge node, device or host id: non-empty,
/// without `/`, `+` or `#`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#'])
}

impl<'a> Topic<'a> {
    /// Parses a topic name (no wildcards).
    ///
    /// # Errors
    /// [`TopicError`] saying what is wrong.
    pub fn parse(topic: &'a str) -> Result<Topic<'a>, TopicError> {
        let mut levels = topic.split('/');
        if levels.next() != Some(NAMESPACE) {
            return Err(bad("the namespace is not spBv1.0"));
        }
        let group = levels.next().ok_or_else(|| bad("no group id"))?;
        let second = levels.next().ok_or_else(|| bad("no message type"))?;
        if group == "STATE" {
            if levels.next().is_some() || !valid_id(second) {
                return Err(bad("STATE needs exactly one host id"));
            }
            return Ok(Topic::State { host_id: second });
        }
        let kind = MessageType::parse(second).ok_or_else(|| bad("unknown message type"))?;
        let edge = levels.next().ok_or_else(|| bad("no edge node id"))?;
        let device = levels.next();
        if levels.next().is_some() {
            return Err(bad("too many levels"));
        }
        if !valid_id(group) || !valid_id(edge) {
            return Err(bad("empty group or edge node id"));
        }
        match (kind.is_device(), device) {
            (false, None) => Ok(Topic::Node { group, kind, edge }),
            (true, Some(device)) if valid_id(device) => Ok(Topic::Device {
                group,
                kind,
                edge,
                device,
            }),
            (true, _) => Err(bad("a device message needs one device id")),
            (false, Some(_)) => Err(bad("an edge node message has no device id")),
        }
    }

    /// The group id (`None` for STATE).
    pub fn group(&self) -> Option<&'a str> {
        match *self {
            Topic::State { .. } => None,
            Topic::Node { group, .. } | Topic::Device { group, .. } => Some(group),
        }
    }
}

/// `spBv1.0/{group}/{kind}/{edge}`.
pub fn node_topic(group: &str, kind: MessageType, edge: &str) -> String {
    format!("{NAMESPACE}/{group}/{kind}/{edge}")
}

/// `spBv1.0/{group}/{kind}/{edge}/{device}`.
pub fn device_topic(group: &str, kind: MessageType, edge: &str, device: &str) -> String {
    format!("{NAMESPACE}/{group}/{kind}/{edge}/{device}")
}

/// `spBv1.0/STATE/{host_id}`.
pub fn state_topic(host_id: &str) -> String {
    format!("{NAMESPACE}/STATE/{host_id}")
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::proto::{Payload, payload::Metric, payload::metric::Value};
    use super::*;

    #[test]
    fn topics_parse_and_print() {
        assert_eq!(
            Topic::parse("spBv1.0/plant/NBIRTH/edge-1"),
            Ok(Topic::Node {
                group: "plant",
                kind: MessageType::NBirth,
                edge: "edge-1"
            })
        );
        let t = device_topic("g", MessageType::DData, "e", "d");
        assert_eq!(t, "spBv1.0/g/DDATA/e/d");
        assert_eq!(
            Topic::parse(&t),
            Ok(Topic::Device {
                group: "g",
                kind: MessageType::DData,
                edge: "e",
                device: "d"
            })
        );
        assert_eq!(
            Topic::parse(&state_topic("host")),
            Ok(Topic::State { host_id: "host" })
        );
        for bad in [
            "spAv1.0/g/NDATA/e",
            "spBv1.0/g/NDATA",
            "spBv1.0/g/XDATA/e",
            "spBv1.0/g/NDATA/e/d",
            "spBv1.0/g/DDATA/e",
            "spBv1.0/g/DDATA/e/d/x",
            "spBv1.0//NDATA/e",
            "spBv1.0/STATE/a/b",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payloads_round_trip_and_keep_presence() {
        let p = Payload {
            timestamp: Some(1),
            seq: Some(0),
            metrics: vec![Metric {
                name: Some(BD_SEQ.into()),
                alias: None,
                datatype: Some(proto::DataType::Int64 as u32),
                value: Some(Value::LongValue(3)),
                ..Metric::default()
            }],
            ..Payload::default()
        };
        let bytes = p.encode_to_vec();
        let back = Payload::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.metrics[0].alias, None);
    }
}
