//! The MQTT JSON face's payloads.

use std::fmt::Write;

use crate::catalog::DataType;
use crate::files::attributes;
use crate::plan::PlannedDevice;
use crate::signal::SimDevice;

/// The field a grown device adds to its telemetry (see
/// [`crate::Controls::add_field`]).
pub const EXTRA_FIELD: &str = "sim_extra";

/// Appends the telemetry of `device` at `unix_ms` to `out`:
/// `{"ts":<ms>,"<tag>":<value>,...}` over its process tags (strings left
/// out), booleans for bits.
pub fn telemetry_json(device: &SimDevice, unix_ms: i64, extra: bool, out: &mut String) {
    let ty = device.device_type();
    let _ = write!(out, "{{\"ts\":{unix_ms}");
    let first = ty.tag_count() - ty.tags.len();
    for (i, tag) in ty.tags.iter().enumerate() {
        let v = device.value(first + i, unix_ms);
        if v.is_nan() {
            continue;
        }
        if tag.data_type == DataType::Bool {
            let _ = write!(out, ",\"{}\":{}", tag.name, v != 0.0);
        } else {
            let _ = write!(out, ",\"{}\":{}", tag.name, v);
        }
    }
    if extra {
        let _ = write!(out, ",\"{EXTRA_FIELD}\":1");
    }
    out.push('}');
}

/// The registration of `d`: class, category, type, name, attributes.
pub fn meta_json(d: &PlannedDevice, tenant: &str) -> String {
    let ty = d.device_type;
    let mut attrs = serde_json::Map::new();
    for (k, v) in attributes(d) {
        attrs.insert(k.to_owned(), v.into());
    }
    attrs.insert("tenant".to_owned(), tenant.into());
    serde_json::json!({
        "class": ty.class().code(),
        "category": ty.category.code(),
        "type": ty.model,
        "name": d.name(),
        "attributes": attrs,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FleetPlan, FleetSpec};

    #[test]
    fn telemetry_is_json_with_every_numeric_tag() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 30,
            ..FleetSpec::default()
        })
        .unwrap();
        for d in plan.devices() {
            let sim = plan.sim_device(d.index).unwrap();
            let mut out = String::new();
            telemetry_json(&sim, 1_780_000_000_000, true, &mut out);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["ts"], 1_780_000_000_000i64);
            assert_eq!(v[EXTRA_FIELD], 1);
            let numeric = d
                .device_type
                .tags
                .iter()
                .filter(|t| t.data_type != DataType::String)
                .count();
            assert_eq!(v.as_object().unwrap().len(), numeric + 2, "{out}");
            let meta: serde_json::Value = serde_json::from_str(&meta_json(&d, "t")).unwrap();
            assert_eq!(meta["category"], d.device_type.category.code());
        }
    }
}
