//! The device taxonomy of the platform form: classes, categories, protocols
//! and clouds, each with a stable lower-case code used on the wire and in the
//! API.

use std::fmt;
use std::str::FromStr;

use crate::error::UnknownCode;

/// Declares a fieldless enum with a stable code per variant, `ALL`, `code()`,
/// `FromStr`, `Display` and serde as the code string.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in code order of the form.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable lower-case code.
            pub const fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code),+
                }
            }

            /// Dense index of the value (its position in `ALL`).
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The value at a dense index, if any.
            pub fn from_index(index: usize) -> Option<Self> {
                Self::ALL.get(index).copied()
            }
        }

        impl FromStr for $name {
            type Err = UnknownCode;

            fn from_str(code: &str) -> Result<Self, Self::Err> {
                match code {
                    $($code => Ok($name::$variant),)+
                    other => Err(UnknownCode {
                        kind: $kind,
                        code: other.to_owned(),
                        expected: &[$($code),+],
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.code())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.code())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                code.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

code_enum! {
    /// The four device classes of the form (设备类别).
    DeviceClass, "class" {
        /// 运行设备: mining, chemical, smelting, power, building-material,
        /// power-plant equipment, instruments.
        Operating = "operating",
        /// 加工设备: machine tools, robots, electrical, electronic, light industry.
        Processing = "processing",
        /// 行走设备: construction and agricultural machinery, logistics, transport.
        Mobile = "mobile",
        /// 其他设备: safety-production and pollution-control equipment.
        Other = "other",
    }
}

impl DeviceClass {
    /// The name the form uses.
    pub const fn zh_name(self) -> &'static str {
        match self {
            DeviceClass::Operating => "运行设备",
            DeviceClass::Processing => "加工设备",
            DeviceClass::Mobile => "行走设备",
            DeviceClass::Other => "其他设备",
        }
    }

    /// The categories of this class.
    pub fn categories(self) -> impl Iterator<Item = Category> {
        Category::ALL
            .iter()
            .copied()
            .filter(move |c| c.class() == self)
    }
}

code_enum! {
    /// Sub-categories of the classes (细分类别).
    Category, "category" {
        /// 采矿设备
        Mining = "mining",
        /// 化工设备
        Chemical = "chemical",
        /// 冶炼设备
        Smelting = "smelting",
        /// 电力设备
        Power = "power",
        /// 建材设备
        BuildingMaterials = "building-materials",
        /// 动力设备 (pumps, compressors, boilers)
        MotivePower = "motive-power",
        /// 仪器仪表
        Instruments = "instruments",
        /// 机床
        MachineTools = "machine-tools",
        /// 机器人
        Robots = "robots",
        /// 电工设备
        Electrical = "electrical",
        /// 电子设备
        Electronic = "electronic",
        /// 轻工设备
        LightIndustry = "light-industry",
        /// 工程机械
        Construction = "construction",
        /// 农林机械
        AgriForestry = "agri-forestry",
        /// 物流设备 (AGV, forklift)
        Logistics = "logistics",
        /// 交通设备
        Transport = "transport",
        /// 安全生产设备
        Safety = "safety",
        /// 污染防治设备
        PollutionControl = "pollution-control",
    }
}

impl Category {
    /// The class this category belongs to.
    pub const fn class(self) -> DeviceClass {
        use Category::*;
        match self {
            Mining | Chemical | Smelting | Power | BuildingMaterials | MotivePower
            | Instruments => DeviceClass::Operating,
            MachineTools | Robots | Electrical | Electronic | LightIndustry => {
                DeviceClass::Processing
            }
            Construction | AgriForestry | Logistics | Transport => DeviceClass::Mobile,
            Safety | PollutionControl => DeviceClass::Other,
        }
    }

    /// The name the form uses.
    pub const fn zh_name(self) -> &'static str {
        use Category::*;
        match self {
            Mining => "采矿设备",
            Chemical => "化工设备",
            Smelting => "冶炼设备",
            Power => "电力设备",
            BuildingMaterials => "建材设备",
            MotivePower => "动力设备",
            Instruments => "仪器仪表",
            MachineTools => "机床",
            Robots => "机器人",
            Electrical => "电工设备",
            Electronic => "电子设备",
            LightIndustry => "轻工设备",
            Construction => "工程机械",
            AgriForestry => "农林机械",
            Logistics => "物流设备",
            Transport => "交通设备",
            Safety => "安全生产设备",
            PollutionControl => "污染防治设备",
        }
    }
}

code_enum! {
    /// Industrial protocols a gateway adapts (工业协议).
    Protocol, "protocol" {
        /// Modbus over TCP.
        ModbusTcp = "modbus-tcp",
        /// Modbus RTU over a serial line.
        ModbusRtu = "modbus-rtu",
        /// Modbus RTU frames carried over TCP.
        ModbusRtuOverTcp = "modbus-rtu-over-tcp",
        /// OPC Unified Architecture.
        OpcUa = "opc-ua",
        /// MQTT with JSON payloads.
        MqttJson = "mqtt-json",
        /// MQTT with Sparkplug B payloads.
        SparkplugB = "sparkplug-b",
    }
}

impl Protocol {
    /// Human name for reports.
    pub const fn display_name(self) -> &'static str {
        match self {
            Protocol::ModbusTcp => "Modbus TCP",
            Protocol::ModbusRtu => "Modbus RTU",
            Protocol::ModbusRtuOverTcp => "Modbus RTU over TCP",
            Protocol::OpcUa => "OPC UA",
            Protocol::MqttJson => "MQTT (JSON)",
            Protocol::SparkplugB => "MQTT Sparkplug B",
        }
    }
}

code_enum! {
    /// Where a tenant's devices connect: the public cloud or a private one.
    Cloud, "cloud" {
        /// 公有云
        Public = "public",
        /// 私有云
        Private = "private",
    }
}

impl Cloud {
    /// The name the form uses.
    pub const fn zh_name(self) -> &'static str {
        match self {
            Cloud::Public => "公有云",
            Cloud::Private => "私有云",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in DeviceClass::ALL {
            assert_eq!(c.code().parse::<DeviceClass>().unwrap(), *c);
        }
        for c in Category::ALL {
            assert_eq!(c.code().parse::<Category>().unwrap(), *c);
            assert_eq!(Category::from_index(c.index()), Some(*c));
        }
        for p in Protocol::ALL {
            assert_eq!(p.to_string().parse::<Protocol>().unwrap(), *p);
        }
        for c in Cloud::ALL {
            assert_eq!(c.code().parse::<Cloud>().unwrap(), *c);
        }
    }

    #[test]
    fn every_class_has_the_categories_of_the_design() {
        let codes = |class: DeviceClass| class.categories().map(|c| c.code()).collect::<Vec<_>>();
        assert_eq!(
            codes(DeviceClass::Operating),
            [
                "mining",
                "chemical",
                "smelting",
                "power",
                "building-materials",
                "motive-power",
                "instruments"
            ]
        );
        assert_eq!(
            codes(DeviceClass::Processing),
            [
                "machine-tools",
                "robots",
                "electrical",
                "electronic",
                "light-industry"
            ]
        );
        assert_eq!(
            codes(DeviceClass::Mobile),
            ["construction", "agri-forestry", "logistics", "transport"]
        );
        assert_eq!(codes(DeviceClass::Other), ["safety", "pollution-control"]);
    }

    #[test]
    fn unknown_code_names_kind_value_and_choices() {
        let err = "Operating".parse::<DeviceClass>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("class"), "{text}");
        assert!(text.contains("`Operating`"), "{text}");
        assert!(
            text.contains("operating, processing, mobile, other"),
            "{text}"
        );
    }

    #[test]
    fn serde_uses_codes() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            cloud: Cloud,
            category: Category,
        }
        let t = T {
            cloud: Cloud::Private,
            category: Category::AgriForestry,
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"cloud":"private","category":"agri-forestry"}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        assert!(serde_json::from_str::<T>(r#"{"cloud":"hybrid","category":"robots"}"#).is_err());
    }
}
