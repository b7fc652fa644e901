//! The Modbus face's part of the fleet files: `[modbus.templates.<type>]`
//! per device type (process tags at the plan's interval, the identification
//! block at [`IDENT_INTERVAL`]) and `[devices.modbus]` per device (its own
//! 127.x.y.z address, unit id 1).

use std::collections::BTreeMap;
use std::time::Duration;

use fieldlink_model::Protocol;
use serde::Serialize;

use super::{FaceFiles, to_value};
use crate::catalog::{Area, DataType, IDENT_TAGS, Order, TagDef};
use crate::error::SimError;
use crate::plan::{FleetPlan, PlannedDevice};

/// The identification block is polled at this interval, or the process
/// interval when that is longer.
pub const IDENT_INTERVAL: Duration = Duration::from_secs(60);

/// The Modbus TCP face's files.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModbusFiles;

#[derive(Serialize)]
struct Section {
    templates: BTreeMap<&'static str, Template>,
}

#[derive(Serialize)]
struct Template {
    poll_groups: Vec<PollGroup>,
}

#[derive(Serialize)]
struct PollGroup {
    interval: String,
    tags: Vec<Tag>,
}

#[derive(Serialize)]
struct Tag {
    name: &'static str,
    area: Area,
    address: u16,
    #[serde(rename = "type")]
    data_type: DataType,
    #[serde(skip_serializing_if = "is_zero")]
    length: u16,
    #[serde(skip_serializing_if = "is_one")]
    scale: f64,
    #[serde(skip_serializing_if = "is_zero_f")]
    offset: f64,
    #[serde(skip_serializing_if = "str::is_empty")]
    unit: &'static str,
    #[serde(skip_serializing_if = "is_big")]
    word_order: Order,
}

#[derive(Serialize)]
struct Device {
    endpoint: String,
    unit_id: u8,
    template: &'static str,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
fn is_zero_f(v: &f64) -> bool {
    *v == 0.0
}
fn is_big(v: &Order) -> bool {
    *v == Order::Big
}

fn tag(t: &TagDef) -> Tag {
    Tag {
        name: t.name,
        area: t.area,
        address: t.address,
        data_type: t.data_type,
        length: if t.data_type == DataType::String {
            t.length
        } else {
            0
        },
        scale: t.scale,
        offset: t.offset,
        unit: t.unit,
        word_order: t.word_order,
    }
}

fn interval_text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl FaceFiles for ModbusFiles {
    fn protocol(&self) -> Protocol {
        Protocol::ModbusTcp
    }

    fn endpoint(&self, _plan: &FleetPlan, d: &PlannedDevice) -> String {
        d.endpoint.to_string()
    }

    fn gateway_sections(
        &self,
        plan: &FleetPlan,
        _tenant: usize,
        devices: &[PlannedDevice],
    ) -> Result<toml::Table, SimError> {
        let interval = plan.spec().interval;
        let mut templates = BTreeMap::new();
        for d in devices {
            let ty = d.device_type;
            templates.entry(ty.key).or_insert_with(|| Template {
                poll_groups: vec![
                    PollGroup {
                        interval: interval_text(interval),
                        tags: ty.tags.iter().map(tag).collect(),
                    },
                    PollGroup {
                        interval: interval_text(interval.max(IDENT_INTERVAL)),
                        tags: IDENT_TAGS.iter().map(tag).collect(),
                    },
                ],
            });
        }
        let mut table = toml::Table::new();
        table.insert(
            "modbus".into(),
            to_value("[modbus]", &Section { templates })?,
        );
        Ok(table)
    }

    fn gateway_device(
        &self,
        _plan: &FleetPlan,
        d: &PlannedDevice,
    ) -> Result<Option<(String, toml::Value)>, SimError> {
        let device = Device {
            endpoint: d.endpoint.to_string(),
            unit_id: 1,
            template: d.device_type.key,
        };
        Ok(Some((
            "modbus".into(),
            to_value("[devices.modbus]", &device)?,
        )))
    }
}
