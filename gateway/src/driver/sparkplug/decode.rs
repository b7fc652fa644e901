//! Sparkplug B payloads to values: a cheap count of a payload's metrics
//! before it is decoded (a birth with a million metrics is refused without
//! building a million structs), datatypes to value kinds, metric values to
//! point values, and a device's identity from its birth.

use fieldlink_model::proto::point::Value as PointValue;
use fieldlink_model::sparkplug::proto::DataType;
use fieldlink_model::sparkplug::proto::payload::{Metric, metric, property_value};
use fieldlink_model::sparkplug::{CATEGORY_KEY, CLASS_KEY, NAME_KEY, TYPE_KEY};

use crate::device::ValueKind;

/// Why a payload cannot be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a protobuf message: {0}")]
pub struct WalkError(&'static str);

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, WalkError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at).ok_or(WalkError("truncated varint"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WalkError("varint longer than 10 bytes"))
}

/// Counts the top-level `metrics` fields (number 2) of a Payload without
/// decoding them; stops at `limit + 1`.
///
/// # Errors
/// [`WalkError`] when the bytes are not a protobuf message.
pub fn count_metrics(buf: &[u8], limit: usize) -> Result<usize, WalkError> {
    let mut at = 0;
    let mut count = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(buf, &mut at)?;
            }
            1 => at = at.checked_add(8).ok_or(WalkError("overflow"))?,
            2 => {
                let len = usize::try_from(varint(buf, &mut at)?)
                    .map_err(|_| WalkError("length does not fit"))?;
                at = at.checked_add(len).ok_or(WalkError("overflow"))?;
                if field == 2 {
                    count += 1;
                    if count > limit {
                        return Ok(count);
                    }
                }
            }
            5 => at = at.checked_add(4).ok_or(WalkError("overflow"))?,
            _ => return Err(WalkError("unsupported wire type")),
        }
        if at > buf.len() {
            return Err(WalkError("field runs past the end"));
        }
    }
    Ok(count)
}

/// The value kind of a Sparkplug datatype, `None` for the ones not turned
/// into points (datasets, templates, arrays, property sets, unknown).
pub fn kind_of(datatype: u32) -> Option<ValueKind> {
    let dt = DataType::try_from(i32::try_from(datatype).ok()?).ok()?;
    Some(match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::DateTime => ValueKind::Int,
        DataType::UInt64 | DataType::Float | DataType::Double => ValueKind::Double,
        DataType::Boolean => ValueKind::Bool,
        DataType::String | DataType::Text | DataType::Uuid => ValueKind::String,
        DataType::Bytes | DataType::File => ValueKind::Bytes,
        _ => return None,
    })
}

/// A metric's value as a point value of `datatype`: `Ok(None)` when null;
/// `Err` when the value does not fit the datatype.
pub fn value_of(datatype: u32, m: &Metric) -> Result<Option<PointValue>, &'static str> {
    if m.is_null == Some(true) || m.value.is_none() {
        return Ok(None);
    }
    let dt = i32::try_from(datatype)
        .ok()
        .and_then(|d| DataType::try_from(d).ok())
        .ok_or("unknown datatype")?;
    use metric::Value as V;
    let v = m.value.as_ref().ok_or("no value")?;
    let value = match (dt, v) {
        // Signed values are two's complement in the low bits.
        (DataType::Int8, V::IntValue(x)) => PointValue::IntValue(i64::from(*x as u8 as i8)),
        (DataType::Int16, V::IntValue(x)) => PointValue::IntValue(i64::from(*x as u16 as i16)),
        (DataType::Int32, V::IntValue(x)) => PointValue::IntValue(i64::from(*x as i32)),
        (DataType::Int64, V::LongValue(x)) => PointValue::IntValue(*x as i64),
        (DataType::UInt8 | DataType::UInt16 | DataType::UInt32, V::IntValue(x)) => {
            PointValue::IntValue(i64::from(*x))
        }
        // Some publishers put small types into long_value.
        (
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32,
            V::LongValue(x),
        ) => PointValue::IntValue(*x as i64),
        (DataType::UInt64, V::LongValue(x)) => PointValue::DoubleValue(*x as f64),
        (DataType::DateTime, V::LongValue(x)) => {
            PointValue::IntValue(i64::try_from(*x).map_err(|_| "DateTime out of range")?)
        }
        (DataType::Float, V::FloatValue(x)) => PointValue::DoubleValue(f64::from(*x)),
        (DataType::Double, V::DoubleValue(x)) => PointValue::DoubleValue(*x),
        (DataType::Double, V::FloatValue(x)) => PointValue::DoubleValue(f64::from(*x)),
        (DataType::Boolean, V::BooleanValue(b)) => PointValue::BoolValue(*b),
        (DataType::String | DataType::Text | DataType::Uuid, V::StringValue(s)) => {
            PointValue::StringValue(s.clone())
        }
        (DataType::Bytes | DataType::File, V::BytesValue(b)) => PointValue::BytesValue(b.to_vec()),
        _ => return Err("the value does not match the metric's datatype"),
    };
    if let PointValue::DoubleValue(x) = value
        && !x.is_finite()
    {
        return Ok(None);
    }
    Ok(Some(value))
}

/// What a birth says about the device's identity (see
/// `fieldlink_model::sparkplug`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Class code.
    pub class: Option<String>,
    /// Category code.
    pub category: Option<String>,
    /// Model name.
    pub device_type: Option<String>,
    /// Human name.
    pub name: Option<String>,
}

impl Identity {
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        match key {
            CLASS_KEY => Some(&mut self.class),
            CATEGORY_KEY => Some(&mut self.category),
            TYPE_KEY => Some(&mut self.device_type),
            NAME_KEY => Some(&mut self.name),
            _ => None,
        }
    }

    /// Whether a metric of this name carries identity (and is no tag).
    pub fn is_identity_metric(name: &str) -> bool {
        matches!(name, CLASS_KEY | CATEGORY_KEY | TYPE_KEY | NAME_KEY)
    }

    /// Collects identity from the properties and identity metrics of a
    /// birth's metrics.
    pub fn of_birth(metrics: &[Metric]) -> Identity {
        let mut id = Identity::default();
        let short =
            |s: &str| (s.len() <= 256 && !s.chars().any(char::is_control)).then(|| s.to_owned());
        for m in metrics {
            if let (Some(name), Some(metric::Value::StringValue(s))) = (&m.name, &m.value)
                && let Some(slot) = id.slot(name)
            {
                *slot = short(s);
            }
            if let Some(props) = &m.properties {
                for (k, v) in props.keys.iter().zip(&props.values) {
                    if let (Some(slot), Some(property_value::Value::StringValue(s))) =
                        (id.slot(k), &v.value)
                    {
                        *slot = short(s);
                    }
                }
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use fieldlink_model::sparkplug::proto::Payload;
    use fieldlink_model::sparkplug::proto::payload::{PropertySet, PropertyValue};
    use prost::Message;

    use super::*;

    #[test]
    fn metrics_are_counted_without_decoding() {
        let p = Payload {
            seq: Some(1),
            metrics: vec![Metric::default(); 5],
            ..Payload::default()
        };
        assert_eq!(count_metrics(&p.encode_to_vec(), 100), Ok(5));
        assert_eq!(
            count_metrics(&p.encode_to_vec(), 2),
            Ok(3),
            "stops past the limit"
        );
        for bad in [&[0x12, 0x80][..], &[0x12, 0x05, 0x00], &[0x0f], &[0xff; 11]] {
            assert!(count_metrics(bad, 10).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_follow_datatypes() {
        let m = |v| Metric {
            value: Some(v),
            ..Metric::default()
        };
        use metric::Value as V;
        let int8 = DataType::Int8 as u32;
        assert_eq!(
            value_of(int8, &m(V::IntValue(0xFF))),
            Ok(Some(PointValue::IntValue(-1)))
        );
        assert_eq!(
            value_of(int8, &m(V::IntValue(0xFFFF_FFFF))),
            Ok(Some(PointValue::IntValue(-1)))
        );
        assert_eq!(
            value_of(DataType::Int64 as u32, &m(V::LongValue(u64::MAX))),
            Ok(Some(PointValue::IntValue(-1)))
        );
        assert_eq!(
            value_of(DataType::Float as u32, &m(V::FloatValue(1.5))),
            Ok(Some(PointValue::DoubleValue(1.5)))
        );
        assert!(value_of(DataType::Boolean as u32, &m(V::IntValue(1))).is_err());
        let null = Metric {
            is_null: Some(true),
            value: Some(V::DoubleValue(1.0)),
            ..Metric::default()
        };
        assert_eq!(value_of(DataType::Double as u32, &null), Ok(None));
        assert_eq!(kind_of(DataType::DataSet as u32), None);
        assert_eq!(kind_of(99), None);
    }

    #[test]
    fn identity_from_properties_or_metrics() {
        let props = PropertySet {
            keys: vec![CLASS_KEY.into(), CATEGORY_KEY.into(), "other".into()],
            values: vec![
                PropertyValue {
                    value: Some(property_value::Value::StringValue("mobile".into())),
                    ..PropertyValue::default()
                },
                PropertyValue {
                    value: Some(property_value::Value::StringValue("logistics".into())),
                    ..PropertyValue::default()
                },
            ],
        };
        let metrics = vec![
            Metric {
                name: Some("speed".into()),
                properties: Some(props),
                ..Metric::default()
            },
            Metric {
                name: Some(TYPE_KEY.into()),
                value: Some(metric::Value::StringValue("AGV-3".into())),
                ..Metric::default()
            },
        ];
        let id = Identity::of_birth(&metrics);
        assert_eq!(id.class.as_deref(), Some("mobile"));
        assert_eq!(id.category.as_deref(), Some("logistics"));
        assert_eq!(id.device_type.as_deref(), Some("AGV-3"));
        assert_eq!(id.name, None);
    }
}
