//! OPC UA values as readings: status code → quality, Variant → point value,
//! DataValue timestamps → source time, DataType → tag kind.
//!
//! - Status: Good* → GOOD, Uncertain* → UNCERTAIN (with its value), Bad* →
//!   BAD without a value.
//! - Time: the source timestamp; the server timestamp when the source gave
//!   none; the receive time when neither is present.
//! - Values: Boolean → bool; SByte..Int64 (and UInt64 up to `i64::MAX`) →
//!   int; Float, Double → double; String, LocalizedText (its text) → string;
//!   ByteString → bytes; DateTime → int (Unix milliseconds). Arrays,
//!   structures (ExtensionObject) and the other built-in types are not
//!   represented: such a value is counted as ignored and no point is sent.
//! - A value of another kind than the tag's is converted when nothing is
//!   lost (int ↔ double for whole numbers, any scalar to string); otherwise
//!   the reading is BAD and counted as malformed.

use fieldlink_model::proto::{Quality, point::Value};
use opcua::types::{DataTypeId, DataValue, DateTime, NodeId, StatusCode, Variant};

use crate::device::ValueKind;

/// Ticks (100 ns) between 1601-01-01 and 1970-01-01.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// The quality of a status code.
pub fn quality(status: StatusCode) -> Quality {
    if status.is_bad() {
        Quality::Bad
    } else if status.is_uncertain() {
        Quality::Uncertain
    } else {
        Quality::Good
    }
}

/// Nanoseconds since the Unix epoch of an OPC UA DateTime; `None` for the
/// null time (and times before 1970).
pub fn unix_nanos(time: &DateTime) -> Option<i64> {
    if time.is_null() {
        return None;
    }
    let ticks = time.checked_ticks().checked_sub(UNIX_EPOCH_TICKS)?;
    if ticks <= 0 {
        return None;
    }
    ticks.checked_mul(100)
}

/// The DataValue's time: source, else server, else `received`.
pub fn source_time(value: &DataValue, received: i64) -> i64 {
    value
        .source_timestamp
        .as_ref()
        .and_then(unix_nanos)
        .or_else(|| value.server_timestamp.as_ref().and_then(unix_nanos))
        .unwrap_or(received)
}

/// What became of a variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Converted {
    /// A point value.
    Value(Value),
    /// No value at all (Empty).
    Empty,
    /// A type the gateway does not represent (arrays, structures, ...).
    Unsupported,
    /// A scalar of a kind that cannot become the tag's kind.
    Mismatch,
}

/// Converts `variant` to a value of `kind`.
pub fn convert(variant: Variant, kind: ValueKind) -> Converted {
    let value = match variant {
        Variant::Empty => return Converted::Empty,
        Variant::Boolean(b) => Value::BoolValue(b),
        Variant::SByte(v) => Value::IntValue(i64::from(v)),
        Variant::Byte(v) => Value::IntValue(i64::from(v)),
        Variant::Int16(v) => Value::IntValue(i64::from(v)),
        Variant::UInt16(v) => Value::IntValue(i64::from(v)),
        Variant::Int32(v) => Value::IntValue(i64::from(v)),
        Variant::UInt32(v) => Value::IntValue(i64::from(v)),
        Variant::Int64(v) => Value::IntValue(v),
        Variant::UInt64(v) => match i64::try_from(v) {
            Ok(v) => Value::IntValue(v),
            Err(_) => Value::DoubleValue(v as f64),
        },
        Variant::Float(v) => Value::DoubleValue(f64::from(v)),
        Variant::Double(v) => Value::DoubleValue(v),
        Variant::String(s) => Value::StringValue(s.value().clone().unwrap_or_default()),
        Variant::LocalizedText(t) => Value::StringValue(t.text.value().clone().unwrap_or_default()),
        Variant::ByteString(b) => Value::BytesValue(b.value.unwrap_or_default()),
        Variant::DateTime(t) => match unix_nanos(&t) {
            Some(ns) => Value::IntValue(ns / 1_000_000),
            None => Value::IntValue(0),
        },
        _ => return Converted::Unsupported,
    };
    coerce(value, kind)
}

fn coerce(value: Value, kind: ValueKind) -> Converted {
    let out = match (value, kind) {
        (v @ Value::DoubleValue(_), ValueKind::Double)
        | (v @ Value::IntValue(_), ValueKind::Int)
        | (v @ Value::BoolValue(_), ValueKind::Bool)
        | (v @ Value::StringValue(_), ValueKind::String)
        | (v @ Value::BytesValue(_), ValueKind::Bytes) => v,
        (Value::IntValue(i), ValueKind::Double) => Value::DoubleValue(i as f64),
        (Value::DoubleValue(d), ValueKind::Int)
            if d.fract() == 0.0 && d >= i64::MIN as f64 && d <= i64::MAX as f64 =>
        {
            Value::IntValue(d as i64)
        }
        (Value::BoolValue(b), ValueKind::Int) => Value::IntValue(i64::from(b)),
        (Value::IntValue(i), ValueKind::Bool) if i == 0 || i == 1 => Value::BoolValue(i == 1),
        (Value::IntValue(i), ValueKind::String) => Value::StringValue(i.to_string()),
        (Value::DoubleValue(d), ValueKind::String) => Value::StringValue(d.to_string()),
        (Value::BoolValue(b), ValueKind::String) => Value::StringValue(b.to_string()),
        (Value::StringValue(s), ValueKind::Bytes) => Value::BytesValue(s.into_bytes()),
        _ => return Converted::Mismatch,
    };
    Converted::Value(out)
}

/// The tag kind of a variable's DataType and ValueRank; `None` for arrays,
/// structures and types the gateway does not represent.
pub fn kind_of_data_type(data_type: &NodeId, value_rank: i32) -> Option<ValueKind> {
    // Scalar (-1), or scalar-or-array (-3 ScalarOrOneDimension, -2 Any): a
    // value that turns out to be an array is ignored when it arrives.
    if value_rank >= 0 {
        return None;
    }
    let id = data_type.as_data_type_id().ok()?;
    Some(match id {
        DataTypeId::Boolean => ValueKind::Bool,
        DataTypeId::SByte
        | DataTypeId::Byte
        | DataTypeId::Int16
        | DataTypeId::UInt16
        | DataTypeId::Int32
        | DataTypeId::UInt32
        | DataTypeId::Int64
        | DataTypeId::UInt64
        | DataTypeId::Integer
        | DataTypeId::UInteger
        | DataTypeId::Enumeration
        | DataTypeId::DateTime
        | DataTypeId::UtcTime => ValueKind::Int,
        DataTypeId::Float | DataTypeId::Double | DataTypeId::Number | DataTypeId::Duration => {
            ValueKind::Double
        }
        DataTypeId::String | DataTypeId::LocalizedText | DataTypeId::LocaleId => ValueKind::String,
        DataTypeId::ByteString => ValueKind::Bytes,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use opcua::types::{Array, LocalizedText, VariantScalarTypeId};

    use super::*;

    #[test]
    fn status_codes_map_to_quality() {
        assert_eq!(quality(StatusCode::Good), Quality::Good);
        assert_eq!(quality(StatusCode::GoodClamped), Quality::Good);
        assert_eq!(
            quality(StatusCode::UncertainLastUsableValue),
            Quality::Uncertain
        );
        assert_eq!(quality(StatusCode::BadNoCommunication), Quality::Bad);
        assert_eq!(quality(StatusCode::BadNotConnected), Quality::Bad);
    }

    #[test]
    fn timestamps_prefer_source_then_server_then_receive() {
        let t = DateTime::from(UNIX_EPOCH_TICKS + 17_800_000_000_000_000);
        let s = DateTime::from(UNIX_EPOCH_TICKS + 17_800_000_010_000_000);
        let both = DataValue {
            value: Some(Variant::Double(1.0)),
            source_timestamp: Some(t),
            server_timestamp: Some(s),
            ..Default::default()
        };
        assert_eq!(source_time(&both, 7), 1_780_000_000_000_000_000);
        let server_only = DataValue {
            source_timestamp: None,
            ..both.clone()
        };
        assert_eq!(source_time(&server_only, 7), 1_780_000_001_000_000_000);
        let neither = DataValue {
            source_timestamp: None,
            server_timestamp: None,
            ..both
        };
        assert_eq!(source_time(&neither, 7), 7);
    }

    #[test]
    fn variants_convert_to_the_tag_kind_or_say_why_not() {
        use Converted::*;
        assert_eq!(
            convert(Variant::Float(1.5), ValueKind::Double),
            Value(super::Value::DoubleValue(1.5))
        );
        assert_eq!(
            convert(Variant::UInt16(7), ValueKind::Double),
            Value(super::Value::DoubleValue(7.0))
        );
        assert_eq!(
            convert(Variant::Double(3.0), ValueKind::Int),
            Value(super::Value::IntValue(3))
        );
        assert_eq!(convert(Variant::Double(3.5), ValueKind::Int), Mismatch);
        assert_eq!(convert(Variant::from("x"), ValueKind::Double), Mismatch);
        assert_eq!(
            convert(
                Variant::LocalizedText(Box::new(LocalizedText::new("en", "hot"))),
                ValueKind::String
            ),
            Value(super::Value::StringValue("hot".into()))
        );
        assert_eq!(convert(Variant::Empty, ValueKind::Double), Empty);
        let array = Array::new(VariantScalarTypeId::Int32, vec![Variant::Int32(1)]).unwrap();
        assert_eq!(
            convert(Variant::Array(Box::new(array)), ValueKind::Int),
            Unsupported
        );
        assert_eq!(
            convert(Variant::UInt64(u64::MAX), ValueKind::Double),
            Value(super::Value::DoubleValue(u64::MAX as f64))
        );
    }

    #[test]
    fn data_types_give_kinds() {
        let k = |id: DataTypeId, rank| kind_of_data_type(&id.into(), rank);
        assert_eq!(k(DataTypeId::Double, -1), Some(ValueKind::Double));
        assert_eq!(k(DataTypeId::UInt32, -1), Some(ValueKind::Int));
        assert_eq!(k(DataTypeId::Boolean, -1), Some(ValueKind::Bool));
        assert_eq!(k(DataTypeId::String, -1), Some(ValueKind::String));
        assert_eq!(k(DataTypeId::Double, 1), None, "arrays are not tags");
        assert_eq!(k(DataTypeId::Structure, -1), None);
    }
}
