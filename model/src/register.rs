//! The Modbus register vocabulary, shared by the gateway's Modbus driver and
//! the simulators: register areas, data types and byte or word order, with
//! the codes used in configs (`holding-register`, `f32`, `little`).

use serde::{Deserialize, Serialize};

/// Modbus register areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Area {
    /// Read/write bits (functions 1, 5, 15).
    Coil,
    /// Read-only bits (function 2).
    DiscreteInput,
    /// Read-only registers (function 4).
    InputRegister,
    /// Read/write registers (functions 3, 6, 16).
    HoldingRegister,
}

impl Area {
    /// Every area, in the order of [`Area::index`].
    pub const ALL: [Area; 4] = [
        Area::Coil,
        Area::DiscreteInput,
        Area::InputRegister,
        Area::HoldingRegister,
    ];

    /// Dense index 0..=3.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// True for coils and discrete inputs.
    pub const fn is_bits(self) -> bool {
        matches!(self, Area::Coil | Area::DiscreteInput)
    }

    /// The code used in configs (`holding-register`, ...).
    pub const fn code(self) -> &'static str {
        match self {
            Area::Coil => "coil",
            Area::DiscreteInput => "discrete-input",
            Area::InputRegister => "input-register",
            Area::HoldingRegister => "holding-register",
        }
    }
}

/// Data types of register tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// A coil or discrete input, or one bit of a register.
    Bool,
    /// One register, unsigned.
    U16,
    /// One register, signed.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, signed.
    I32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, signed.
    I64,
    /// Two registers, IEEE 754.
    F32,
    /// Four registers, IEEE 754.
    F64,
    /// `length` registers of ASCII, two characters each, NULs trimmed.
    String,
}

impl DataType {
    /// Registers (or bits) the type spans; `length` for strings.
    pub const fn registers(self, length: u16) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length,
        }
    }

    /// The code used in configs.
    pub const fn code(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }
}

/// Byte order within a register, or register order of multi-register values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Most significant first (the Modbus convention).
    #[default]
    Big,
    /// Least significant first (word order "CDAB", byte order "BADC").
    Little,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_serde_names() {
        for area in Area::ALL {
            let json = serde_json::to_string(&area).unwrap();
            assert_eq!(json, format!("\"{}\"", area.code()));
            assert_eq!(Area::ALL[area.index()], area);
        }
        for t in [DataType::Bool, DataType::F32, DataType::String] {
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.code())
            );
        }
        assert_eq!(DataType::F64.registers(0), 4);
        assert_eq!(DataType::String.registers(8), 8);
        assert!(serde_json::from_str::<Order>("\"middle\"").is_err());
    }
}
