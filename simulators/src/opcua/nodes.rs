//! The address space of simulated devices: `Objects/Devices/<device id>`
//! objects with one variable per catalog tag (`ns=2;s=<id>/<tag>`) whose
//! value is computed on every read or sample from [`SimDevice::value`] at
//! that instant (the DataValue's source timestamp is the instant used), and
//! the identity properties `Class`, `Category`, `Model`, `Name`, `Vendor`,
//! `SerialNumber`. A device switched off ([`Fault::Off`]) answers
//! `BadNoCommunication` on every variable.

use std::sync::Arc;

use opcua::server::address_space::{AccessLevel, AddressSpace, ObjectBuilder, VariableBuilder};
use opcua::server::node_manager::memory::SimpleNodeManager;
use opcua::types::{
    DataTypeId, DataValue, DateTime, NodeId, ObjectId, ObjectTypeId, QualifiedName, StatusCode,
    VariableTypeId, Variant,
};

use crate::catalog::{DataType, Ident, Signal, TagDef};
use crate::faults::{Fault, Faults};
use crate::plan::PlannedDevice;
use crate::server::Clock;
use crate::signal::SimDevice;

/// Namespace index of the simulator's nodes.
pub const NS: u16 = 2;
/// Namespace URI of the simulator's nodes.
pub const NAMESPACE_URI: &str = "urn:fieldlink:sim";
/// Ticks (100 ns) between 1601-01-01 and 1970-01-01.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// NodeId of the `Devices` folder.
pub fn devices_folder() -> NodeId {
    NodeId::new(NS, "Devices")
}

/// NodeId of device `id`'s object.
pub fn device_node(id: &str) -> NodeId {
    NodeId::new(NS, id)
}

/// NodeId of tag `tag` of device `id`.
pub fn tag_node(id: &str, tag: &str) -> NodeId {
    NodeId::new(NS, format!("{id}/{tag}"))
}

/// An OPC UA DateTime from Unix milliseconds.
pub fn date_time(unix_ms: i64) -> DateTime {
    DateTime::from(UNIX_EPOCH_TICKS + unix_ms * 10_000)
}

/// The DataType a tag is served as: booleans as Boolean, text as String,
/// unscaled integers as their integer type, everything else as Double.
pub fn data_type(tag: &TagDef) -> DataTypeId {
    let unscaled = tag.scale == 1.0 && tag.offset == 0.0;
    match tag.data_type {
        DataType::Bool => DataTypeId::Boolean,
        DataType::String => DataTypeId::String,
        DataType::U16 if unscaled => DataTypeId::UInt16,
        DataType::I16 if unscaled => DataTypeId::Int16,
        DataType::U32 if unscaled => DataTypeId::UInt32,
        DataType::I32 if unscaled => DataTypeId::Int32,
        DataType::U64 if unscaled => DataTypeId::UInt64,
        DataType::I64 if unscaled => DataTypeId::Int64,
        _ => DataTypeId::Double,
    }
}

/// The value of tag `tag` (index into the type's tags) of `device` at
/// `unix_ms`, as a Variant of [`data_type`].
pub fn value(device: &SimDevice, tag: usize, unix_ms: i64) -> Variant {
    let ty = device.device_type();
    let Some(def) = ty.tag(tag) else {
        return Variant::Empty;
    };
    if def.data_type == DataType::String {
        let text = match def.signal {
            Signal::Text(s) => s,
            Signal::Ident(Ident::Model) => ty.model,
            _ => "",
        };
        return Variant::from(text);
    }
    let v = device.value(tag, unix_ms);
    match data_type(def) {
        DataTypeId::Boolean => Variant::Boolean(v != 0.0),
        DataTypeId::UInt16 => Variant::UInt16(v as u16),
        DataTypeId::Int16 => Variant::Int16(v as i16),
        DataTypeId::UInt32 => Variant::UInt32(v as u32),
        DataTypeId::Int32 => Variant::Int32(v as i32),
        DataTypeId::UInt64 => Variant::UInt64(v as u64),
        DataTypeId::Int64 => Variant::Int64(v as i64),
        _ => Variant::Double(v),
    }
}

/// What a device's variables read from.
#[derive(Debug, Clone)]
pub struct Source {
    /// Time of the signals.
    pub clock: Clock,
    /// Device faults (only `Off` matters here).
    pub faults: Faults,
}

fn data_value(variant: Variant, unix_ms: i64) -> DataValue {
    let t = date_time(unix_ms);
    DataValue {
        value: Some(variant),
        status: Some(StatusCode::Good),
        source_timestamp: Some(t),
        server_timestamp: Some(t),
        ..Default::default()
    }
}

fn off(unix_ms: i64) -> DataValue {
    let t = date_time(unix_ms);
    DataValue {
        value: None,
        status: Some(StatusCode::BadNoCommunication),
        source_timestamp: Some(t),
        server_timestamp: Some(t),
        ..Default::default()
    }
}

/// Adds the `Devices` folder.
pub fn add_folder(space: &mut AddressSpace) {
    ObjectBuilder::new(
        &devices_folder(),
        QualifiedName::new(NS, "Devices"),
        "Devices",
    )
    .is_folder()
    .organized_by(ObjectId::ObjectsFolder)
    .insert(space);
}

/// Adds device `d` (signals `device`) under the `Devices` folder.
pub fn add_device(
    nm: &SimpleNodeManager,
    space: &mut AddressSpace,
    d: &PlannedDevice,
    device: SimDevice,
    source: &Source,
) {
    let id = d.id();
    let object = device_node(&id);
    let ty = d.device_type;
    ObjectBuilder::new(&object, QualifiedName::new(NS, id.as_str()), id.as_str())
        .organized_by(devices_folder())
        .has_type_definition(ObjectTypeId::BaseObjectType)
        .insert(space);
    let properties = [
        ("Class", ty.class().code().to_owned()),
        ("Category", ty.category.code().to_owned()),
        ("Model", ty.model.to_owned()),
        ("Name", d.name()),
        ("Vendor", ty.vendor.to_owned()),
        ("SerialNumber", d.serial().to_string()),
    ];
    for (name, text) in properties {
        VariableBuilder::new(&tag_node(&id, name), QualifiedName::new(NS, name), name)
            .property_of(object.clone())
            .has_type_definition(VariableTypeId::PropertyType)
            .data_type(DataTypeId::String)
            .value(text)
            .access_level(AccessLevel::CURRENT_READ)
            .user_access_level(AccessLevel::CURRENT_READ)
            .insert(space);
    }
    for (i, tag) in ty.all_tags().enumerate() {
        let node = tag_node(&id, tag.name);
        let mut builder = VariableBuilder::new(&node, QualifiedName::new(NS, tag.name), tag.name)
            .component_of(object.clone())
            .has_type_definition(VariableTypeId::BaseDataVariableType)
            .data_type(data_type(tag))
            .value(value(&device, i, source.clock.now_ms()))
            .access_level(AccessLevel::CURRENT_READ)
            .user_access_level(AccessLevel::CURRENT_READ);
        if !tag.unit.is_empty() {
            builder = builder.description(tag.unit);
        }
        builder.insert(space);
        let source = source.clone();
        let index = d.index;
        nm.inner().add_read_callback(node, move |_, _, _| {
            let now = source.clock.now_ms();
            if source.faults.get(index) == Fault::Off {
                return Ok(off(now));
            }
            Ok(data_value(value(&device, i, now), now))
        });
    }
}

/// Adds variable `name` to device `id` at run time: a Double counting
/// seconds since the Unix epoch (a tag that was not there before).
pub fn add_extra(
    nm: &SimpleNodeManager,
    space: &mut AddressSpace,
    id: &str,
    index: u32,
    name: &str,
    source: &Source,
) {
    let node = tag_node(id, name);
    VariableBuilder::new(&node, QualifiedName::new(NS, name), name)
        .component_of(device_node(id))
        .has_type_definition(VariableTypeId::BaseDataVariableType)
        .data_type(DataTypeId::Double)
        .value(0.0)
        .access_level(AccessLevel::CURRENT_READ)
        .user_access_level(AccessLevel::CURRENT_READ)
        .insert(space);
    let source = source.clone();
    nm.inner().add_read_callback(node, move |_, _, _| {
        let now = source.clock.now_ms();
        if source.faults.get(index) == Fault::Off {
            return Ok(off(now));
        }
        Ok(data_value(Variant::Double((now / 1000) as f64), now))
    });
}

/// Shared handle of the node manager.
pub type NodeManager = Arc<SimpleNodeManager>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CATALOG;

    #[test]
    fn every_tag_has_a_type_and_values_follow_the_signal() {
        let t0 = 1_780_000_000_000;
        for (ty_index, ty) in CATALOG.iter().enumerate() {
            let d = SimDevice::new(1, 5, ty_index).unwrap();
            for (i, tag) in ty.all_tags().enumerate() {
                let v = value(&d, i, t0);
                match (data_type(tag), &v) {
                    (DataTypeId::Double, Variant::Double(x)) => assert_eq!(*x, d.value(i, t0)),
                    (DataTypeId::Boolean, Variant::Boolean(_))
                    | (DataTypeId::String, Variant::String(_))
                    | (DataTypeId::UInt16, Variant::UInt16(_))
                    | (DataTypeId::Int16, Variant::Int16(_))
                    | (DataTypeId::UInt32, Variant::UInt32(_))
                    | (DataTypeId::Int32, Variant::Int32(_))
                    | (DataTypeId::UInt64, Variant::UInt64(_))
                    | (DataTypeId::Int64, Variant::Int64(_)) => {}
                    other => panic!("{}.{}: {other:?}", ty.key, tag.name),
                }
            }
        }
        assert_eq!(i64::from(date_time(0)), UNIX_EPOCH_TICKS);
    }
}
