//! What the gateway announces about a device: its identity ([`DeviceInfo`])
//! and its tag table ([`TagInfo`]); and the handles drivers use to refer to
//! them cheaply on the hot path ([`DeviceHandle`], [`TagId`]).

use std::collections::BTreeMap;

use fieldlink_model::proto::{self, point::Value};
use fieldlink_model::{Category, Protocol};

/// A device as the registry sees it: who it is, not how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Globally unique, stable device id.
    pub id: String,
    /// Category (the class follows).
    pub category: Category,
    /// Protocol the gateway speaks to it.
    pub protocol: Protocol,
    /// Model name.
    pub device_type: String,
    /// Human name.
    pub name: String,
    /// Where the gateway reaches it, for people (`10.0.0.7:502/unit/1`,
    /// `opc.tcp://plc:4840#ns=2;s=Boiler7`, `mqtt://broker/plant/d-1`).
    pub endpoint: String,
    /// Static attributes (vendor, serial number, site, ...).
    pub attributes: BTreeMap<String, String>,
}

impl DeviceInfo {
    /// The announce message for this device and its tag table.
    pub fn announce(&self, tags: &[TagInfo]) -> proto::DeviceAnnounce {
        proto::DeviceAnnounce {
            device_id: self.id.clone(),
            class: self.category.class().code().to_owned(),
            category: self.category.code().to_owned(),
            r#type: self.device_type.clone(),
            name: self.name.clone(),
            protocol: self.protocol.code().to_owned(),
            endpoint: self.endpoint.clone(),
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tags: tags.iter().map(TagInfo::descriptor).collect(),
        }
    }
}

/// The kind of value a tag carries (the `oneof value` of a point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A floating-point number.
    Double,
    /// A signed integer.
    Int,
    /// A boolean.
    Bool,
    /// Text.
    String,
    /// Raw bytes.
    Bytes,
}

impl ValueKind {
    /// The code in a tag descriptor.
    pub const fn code(self) -> &'static str {
        match self {
            ValueKind::Double => "double",
            ValueKind::Int => "int",
            ValueKind::Bool => "bool",
            ValueKind::String => "string",
            ValueKind::Bytes => "bytes",
        }
    }

    /// The kind of `value`.
    pub fn of(value: &Value) -> ValueKind {
        match value {
            Value::DoubleValue(_) => ValueKind::Double,
            Value::IntValue(_) => ValueKind::Int,
            Value::BoolValue(_) => ValueKind::Bool,
            Value::StringValue(_) => ValueKind::String,
            Value::BytesValue(_) => ValueKind::Bytes,
        }
    }
}

/// One entry of a device's tag table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagInfo {
    /// Tag name, unique within the device.
    pub name: String,
    /// The kind of value it carries.
    pub kind: ValueKind,
    /// Engineering unit, for people; may be empty.
    pub unit: String,
}

impl TagInfo {
    /// A tag without a unit.
    pub fn new(name: impl Into<String>, kind: ValueKind) -> TagInfo {
        TagInfo {
            name: name.into(),
            kind,
            unit: String::new(),
        }
    }

    /// The same tag with a unit.
    pub fn with_unit(mut self, unit: impl Into<String>) -> TagInfo {
        self.unit = unit.into();
        self
    }

    fn descriptor(&self) -> proto::TagDescriptor {
        proto::TagDescriptor {
            name: self.name.clone(),
            r#type: self.kind.code().to_owned(),
            unit: self.unit.clone(),
        }
    }
}

/// A device declared to the core: a dense index, cheap to copy into every
/// reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceHandle(pub(crate) u32);

impl DeviceHandle {
    /// The handle of dense index `index` (handles come from
    /// [`crate::driver::Sink::declare`]; this is for tests).
    pub fn from_index(index: u32) -> DeviceHandle {
        DeviceHandle(index)
    }

    /// The dense index.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// A tag of a device: its index in the device's announced tag table. Ids
/// never change while the gateway runs (the table only grows), so they can
/// go on the wire in place of names.
pub type TagId = u32;
