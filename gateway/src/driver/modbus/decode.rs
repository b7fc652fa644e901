//! Register words → typed tag values, honouring byte order, word order,
//! scale and offset.

use fieldlink_model::proto::point::Value;

use super::config::{DataType, Order, TagConfig};

/// Decodes `tag` from its registers (exactly `tag.data_type.registers()` words).
///
/// Integers without scaling stay integers; scaled values become doubles.
pub fn decode_registers(tag: &TagConfig, words: &[u16]) -> Option<Value> {
    let n = usize::from(tag.data_type.registers(tag.length));
    let words = words.get(..n)?;
    let fix_byte = |w: u16| match tag.byte_order {
        Order::Big => w,
        Order::Little => w.swap_bytes(),
    };
    // Assemble most-significant word first.
    let mut ordered = [0u16; 4];
    for (i, w) in words.iter().take(4).enumerate() {
        let at = match tag.word_order {
            Order::Big => i,
            Order::Little => n.min(4) - 1 - i,
        };
        ordered[at] = fix_byte(*w);
    }
    let raw: u64 = ordered[..n.min(4)]
        .iter()
        .fold(0u64, |acc, w| (acc << 16) | u64::from(*w));
    let value = match tag.data_type {
        DataType::Bool => {
            let bit = tag.bit.unwrap_or(0);
            return Some(Value::BoolValue((fix_byte(words[0]) >> bit) & 1 == 1));
        }
        // At most 32 bits: fits i64.
        DataType::U16 | DataType::U32 => Numeric::Int(raw as i64),
        DataType::U64 => match i64::try_from(raw) {
            Ok(i) => Numeric::Int(i),
            Err(_) => Numeric::Float(raw as f64),
        },
        DataType::I16 => Numeric::Int(i64::from(raw as u16 as i16)),
        DataType::I32 => Numeric::Int(i64::from(raw as u32 as i32)),
        DataType::I64 => Numeric::Int(raw as i64),
        DataType::F32 => Numeric::Float(f64::from(f32::from_bits(raw as u32))),
        DataType::F64 => Numeric::Float(f64::from_bits(raw)),
        DataType::String => {
            let bytes: Vec<u8> = words
                .iter()
                .flat_map(|w| fix_byte(*w).to_be_bytes())
                .take_while(|b| *b != 0)
                .collect();
            return Some(Value::StringValue(
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    };
    Some(scaled(tag, value))
}

/// A raw number: an integer that fits i64, or a float (floats, and u64
/// values above i64::MAX, which stay doubles).
enum Numeric {
    Int(i64),
    Float(f64),
}

fn scaled(tag: &TagConfig, value: Numeric) -> Value {
    let unscaled = tag.scale == 1.0 && tag.offset == 0.0;
    match value {
        Numeric::Int(i) if unscaled => Value::IntValue(i),
        Numeric::Int(i) => Value::DoubleValue(i as f64 * tag.scale + tag.offset),
        Numeric::Float(f) => Value::DoubleValue(f * tag.scale + tag.offset),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::Area;
    use super::*;

    fn tag(data_type: DataType, byte_order: Order, word_order: Order) -> TagConfig {
        TagConfig {
            name: "t".into(),
            area: Area::HoldingRegister,
            address: 0,
            data_type,
            length: 3,
            bit: None,
            byte_order,
            word_order,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
        }
    }

    #[test]
    fn types_and_orders() {
        use Order::*;
        let f = 123.5f32.to_bits();
        let (hi, lo) = ((f >> 16) as u16, f as u16);
        assert_eq!(
            decode_registers(&tag(DataType::F32, Big, Big), &[hi, lo]),
            Some(Value::DoubleValue(123.5))
        );
        assert_eq!(
            decode_registers(&tag(DataType::F32, Big, Little), &[lo, hi]),
            Some(Value::DoubleValue(123.5))
        );
        assert_eq!(
            decode_registers(
                &tag(DataType::F32, Little, Little),
                &[lo.swap_bytes(), hi.swap_bytes()]
            ),
            Some(Value::DoubleValue(123.5))
        );
        assert_eq!(
            decode_registers(&tag(DataType::I16, Big, Big), &[0xFFFE]),
            Some(Value::IntValue(-2))
        );
        assert_eq!(
            decode_registers(&tag(DataType::U32, Big, Big), &[1, 2]),
            Some(Value::IntValue(65_538))
        );
        assert_eq!(
            decode_registers(&tag(DataType::I32, Big, Big), &[0xFFFF, 0xFFFF]),
            Some(Value::IntValue(-1))
        );
        let d = 6.02e23f64.to_bits();
        let words = [
            (d >> 48) as u16,
            (d >> 32) as u16,
            (d >> 16) as u16,
            d as u16,
        ];
        assert_eq!(
            decode_registers(&tag(DataType::F64, Big, Big), &words),
            Some(Value::DoubleValue(6.02e23))
        );
        assert_eq!(
            decode_registers(&tag(DataType::U64, Big, Big), &[0xFFFF; 4]),
            Some(Value::DoubleValue(u64::MAX as f64))
        );
        assert_eq!(
            decode_registers(
                &tag(DataType::U64, Big, Big),
                &[0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]
            ),
            Some(Value::IntValue(i64::MAX))
        );
        assert_eq!(
            decode_registers(&tag(DataType::I64, Big, Big), &[0xFFFF; 4]),
            Some(Value::IntValue(-1))
        );
        let mut scaled = tag(DataType::U64, Big, Big);
        scaled.scale = 0.5;
        assert_eq!(
            decode_registers(&scaled, &[0x8000, 0, 0, 0]),
            Some(Value::DoubleValue(9_223_372_036_854_775_808.0 * 0.5))
        );
        assert_eq!(
            decode_registers(&tag(DataType::String, Big, Big), &[0x4142, 0x4300, 0]),
            Some(Value::StringValue("ABC".into()))
        );
        let mut bit = tag(DataType::Bool, Big, Big);
        bit.bit = Some(3);
        assert_eq!(
            decode_registers(&bit, &[0b1000]),
            Some(Value::BoolValue(true))
        );
        assert_eq!(
            decode_registers(&tag(DataType::U32, Big, Big), &[1]),
            None,
            "too few words"
        );
    }

    #[test]
    fn scale_and_offset_make_doubles() {
        let mut t = tag(DataType::U16, Order::Big, Order::Big);
        t.scale = 0.1;
        t.offset = -40.0;
        assert_eq!(
            decode_registers(&t, &[650]),
            Some(Value::DoubleValue(650.0 * 0.1 - 40.0))
        );
    }
}
