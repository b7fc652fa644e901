//! The device catalog: simulated device types covering every category of
//! the four classes, each with a realistic Modbus register map.
//!
//! # Register map conventions (all types)
//!
//! Addresses are zero-based protocol addresses (what goes on the wire and in
//! the gateway's `address`), big-endian bytes, big-endian word order unless a
//! tag says `word_order = "little"`.
//!
//! **Static identification block, holding registers 0..=15 (read-only):**
//!
//! | address | type | value |
//! | --- | --- | --- |
//! | 0 | u16 | type code ([`DeviceType::code`], e.g. 801 for the CNC machining centre) |
//! | 1 | u16 | register map version, always [`MAP_VERSION`] (1) |
//! | 2..=3 | u32 | serial number = [`SERIAL_BASE`] (10 000 000) + device index (high word first) |
//! | 4 | u16 | firmware version, major × 100 + minor ([`DeviceType::firmware`]) |
//! | 5 | u16 | class index: 0 operating, 1 processing, 2 mobile, 3 other |
//! | 6 | u16 | category index 0..=17, the order of [`Category::ALL`] |
//! | 7 | u16 | year of manufacture = 2016 + device index mod 9 |
//! | 8..=15 | string (8 registers) | model name ([`DeviceType::model`]), ASCII, NUL-padded, first character in the high byte |
//!
//! Writes to this block answer `IllegalDataAddress`.
//!
//! **Process data:** input registers from 0 (one contiguous block of live
//! measurements) plus scattered registers at 1000 and 3000 (totalizers,
//! diagnostics); holding registers from 200 (writable setpoints); coils
//! from 0 (writable commands); discrete inputs from 0 (status and alarm
//! bits). Blocks of one area are either contiguous or at least 125
//! addresses apart, so no single legal read can span a gap. Any read that
//! touches an address outside a tag answers `IllegalDataAddress`.
//!
//! **Scan block:** besides this map, the Modbus face serves input registers
//! [`crate::scan::SCAN_BASE`] (5000) .. 5124 on every device, 125 live
//! channels for whole-block reads (see [`crate::scan`]); no catalog tag
//! comes within 125 addresses of it.

mod mobile;
mod operating;
mod other;
mod processing;

use std::sync::OnceLock;

pub use fieldlink_model::register::{Area, DataType, Order};
use fieldlink_model::{Category, DeviceClass};

/// Version of the register map layout, in holding register 1.
pub const MAP_VERSION: u16 = 1;
/// Serial numbers are this plus the device index (holding registers 2..=3).
pub const SERIAL_BASE: u32 = 10_000_000;
/// First year of manufacture (holding register 7 is this plus index mod 9).
pub const YEAR_BASE: u16 = 2016;
/// First holding register of the setpoint block.
pub const SETPOINT_BASE: u16 = 200;
/// Registers of the model string (holding registers 8..=15).
pub const MODEL_REGISTERS: u16 = 8;

/// How a device spends its time (drives [`crate::signal::DeviceState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Production equipment: running about 85 % of 5-minute windows,
    /// stopped about 12 %, faulted about 3 %.
    Shifts,
    /// Monitors and meters: always running, faulted (alarm event) about 1.5 %.
    Continuous,
}

/// Which static identification value a tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ident {
    /// [`DeviceType::code`].
    TypeCode,
    /// [`MAP_VERSION`].
    MapVersion,
    /// [`SERIAL_BASE`] + device index.
    Serial,
    /// [`DeviceType::firmware`].
    Firmware,
    /// Class index.
    Class,
    /// Category index.
    Category,
    /// [`YEAR_BASE`] + device index mod 9.
    Year,
    /// [`DeviceType::model`] as a string.
    Model,
}

/// A sine wave around a base with noise, a slow trend and idle/fault behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wave {
    /// Centre value (varied ±4 % per device).
    pub base: f64,
    /// Amplitude of the cycle (varied 80..120 % per device).
    pub amp: f64,
    /// Period of the cycle, seconds.
    pub period_s: f64,
    /// Amplitude of uniform noise, changing every second.
    pub noise: f64,
    /// Drift per day, reset every 30 days (wear, then maintenance).
    pub trend_per_day: f64,
    /// Value while the device is not running; NaN: not gated.
    pub idle: f64,
    /// Added while the device is faulted (gas leak, overheating, ...).
    pub fault_add: f64,
}

/// How a tag's value moves with time. Evaluated by [`crate::signal`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// Static identification value.
    Ident(Ident),
    /// A fixed value (setpoints, commands).
    Fixed(f64),
    /// See [`Wave`].
    Wave(Wave),
    /// Monotonic counter: a per-device start (0..`start_max`) plus
    /// `rate` units per second since 2024-01-01.
    Counter {
        /// Units per second.
        rate: f64,
        /// Largest start value.
        start_max: f64,
    },
    /// Sawtooth from `from` to `to` over `period_s` (battery, fuel, wear).
    Ramp {
        /// Value at the start of a period.
        from: f64,
        /// Value at the end of a period.
        to: f64,
        /// Period, seconds.
        period_s: f64,
    },
    /// A point on a loop around a per-device centre (GPS, AGV position);
    /// the tags of one device share the phase, so `sin` and `cos` tags draw a
    /// circle.
    Orbit {
        /// Centre (moved by up to ±2 radii per device).
        centre: f64,
        /// Radius.
        radius: f64,
        /// Time for one loop, seconds.
        period_s: f64,
        /// `true`: cosine component, `false`: sine component.
        cos: bool,
    },
    /// A whole number in `min..=max`, redrawn every `dwell_s` seconds.
    Step {
        /// Smallest value.
        min: u32,
        /// Largest value.
        max: u32,
        /// Seconds between changes.
        dwell_s: u32,
    },
    /// The device's run state as a number.
    RunState {
        /// Value while stopped.
        stopped: u16,
        /// Value while running.
        running: u16,
        /// Value while faulted.
        fault: u16,
    },
    /// 1 while the device is running.
    Running,
    /// An alarm bit: raised in about `per_day` 10-minute windows a day, and
    /// also during faults when `on_fault`.
    Alarm {
        /// Expected raised windows per day.
        per_day: f64,
        /// Raised whenever the device is faulted.
        on_fault: bool,
    },
    /// 0, or one of the codes while the device is faulted.
    AlarmCode(&'static [u16]),
    /// Fixed text.
    Text(&'static str),
}

impl Signal {
    /// Adds a daily drift (reset every 30 days) to a wave.
    pub const fn trend(self, per_day: f64) -> Signal {
        match self {
            Signal::Wave(mut w) => {
                w.trend_per_day = per_day;
                Signal::Wave(w)
            }
            other => other,
        }
    }

    /// Adds an offset to a wave while the device is faulted.
    pub const fn on_fault(self, add: f64) -> Signal {
        match self {
            Signal::Wave(mut w) => {
                w.fault_add = add;
                Signal::Wave(w)
            }
            other => other,
        }
    }
}

/// One value of a device: where it lives, how it is encoded, how it moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TagDef {
    /// Tag name, unique within the type.
    pub name: &'static str,
    /// Register area.
    pub area: Area,
    /// Zero-based address.
    pub address: u16,
    /// Data type.
    pub data_type: DataType,
    /// Registers of a string.
    pub length: u16,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// Engineering unit.
    pub unit: &'static str,
    /// Register order of multi-register values.
    pub word_order: Order,
    /// How the value moves.
    pub signal: Signal,
}

impl TagDef {
    /// Registers (or bits) the tag spans.
    pub const fn span(&self) -> u16 {
        self.data_type.registers(self.length)
    }

    /// True when a client may write the tag (coils, and holding registers
    /// outside the identification block).
    pub const fn writable(&self) -> bool {
        match self.area {
            Area::Coil => true,
            Area::HoldingRegister => !matches!(self.signal, Signal::Ident(_)),
            Area::DiscreteInput | Area::InputRegister => false,
        }
    }

    /// Least-significant register first.
    pub const fn little(mut self) -> Self {
        self.word_order = Order::Little;
        self
    }

    /// Sets the offset.
    pub const fn offset(mut self, offset: f64) -> Self {
        self.offset = offset;
        self
    }
}

/// A simulated device model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceType {
    /// Short key: template name in gateway configs and device id prefix
    /// (`sim-<key>-000017`).
    pub key: &'static str,
    /// Model name (the `type` of the device), at most 16 ASCII characters.
    pub model: &'static str,
    /// What it is, for people (`CNC machining centre`).
    pub label: &'static str,
    /// Vendor attribute.
    pub vendor: &'static str,
    /// Category (the class follows).
    pub category: Category,
    /// Type code (holding register 0): (category index + 1) × 100 + variant.
    pub code: u16,
    /// Firmware version (holding register 4): major × 100 + minor.
    pub firmware: u16,
    /// Run pattern.
    pub duty: Duty,
    /// Process tags (the identification block comes first, see [`IDENT_TAGS`]).
    pub tags: &'static [TagDef],
}

impl DeviceType {
    /// The class.
    pub const fn class(&self) -> DeviceClass {
        self.category.class()
    }

    /// Number of tags, identification block included.
    pub const fn tag_count(&self) -> usize {
        IDENT_TAGS.len() + self.tags.len()
    }

    /// Tag `i` of the full list (identification block first).
    pub fn tag(&self, i: usize) -> Option<&TagDef> {
        match i.checked_sub(IDENT_TAGS.len()) {
            None => IDENT_TAGS.get(i),
            Some(j) => self.tags.get(j),
        }
    }

    /// Every tag, identification block first.
    pub fn all_tags(&self) -> impl Iterator<Item = &TagDef> {
        IDENT_TAGS.iter().chain(self.tags.iter())
    }

    /// Index of the tag named `name` in [`DeviceType::all_tags`].
    pub fn tag_index(&self, name: &str) -> Option<usize> {
        self.all_tags().position(|t| t.name == name)
    }

    /// Firmware as `major.minor`.
    pub fn firmware_text(&self) -> String {
        format!("{}.{:02}", self.firmware / 100, self.firmware % 100)
    }
}

/// Builds a register or bit tag (scale 1 for bits).
pub(crate) const fn tag(
    name: &'static str,
    area: Area,
    address: u16,
    data_type: DataType,
    scale: f64,
    unit: &'static str,
    signal: Signal,
) -> TagDef {
    TagDef {
        name,
        area,
        address,
        data_type,
        length: 0,
        scale,
        offset: 0.0,
        unit,
        word_order: Order::Big,
        signal,
    }
}

/// An input register tag.
pub(crate) const fn ir(
    name: &'static str,
    address: u16,
    data_type: DataType,
    scale: f64,
    unit: &'static str,
    signal: Signal,
) -> TagDef {
    tag(
        name,
        Area::InputRegister,
        address,
        data_type,
        scale,
        unit,
        signal,
    )
}

/// A holding register tag.
pub(crate) const fn hr(
    name: &'static str,
    address: u16,
    data_type: DataType,
    scale: f64,
    unit: &'static str,
    signal: Signal,
) -> TagDef {
    tag(
        name,
        Area::HoldingRegister,
        address,
        data_type,
        scale,
        unit,
        signal,
    )
}

/// A string tag of `length` registers.
pub(crate) const fn text(
    name: &'static str,
    area: Area,
    address: u16,
    length: u16,
    signal: Signal,
) -> TagDef {
    let mut t = tag(name, area, address, DataType::String, 1.0, "", signal);
    t.length = length;
    t
}

/// A coil.
pub(crate) const fn coil(name: &'static str, address: u16, signal: Signal) -> TagDef {
    tag(name, Area::Coil, address, DataType::Bool, 1.0, "", signal)
}

/// A discrete input.
pub(crate) const fn di(name: &'static str, address: u16, signal: Signal) -> TagDef {
    tag(
        name,
        Area::DiscreteInput,
        address,
        DataType::Bool,
        1.0,
        "",
        signal,
    )
}

/// A wave that runs whatever the device state.
pub(crate) const fn wave(base: f64, amp: f64, period_s: f64, noise: f64) -> Signal {
    Signal::Wave(Wave {
        base,
        amp,
        period_s,
        noise,
        trend_per_day: 0.0,
        idle: f64::NAN,
        fault_add: 0.0,
    })
}

/// A wave that shows `idle` while the device is not running.
pub(crate) const fn gated(base: f64, amp: f64, period_s: f64, noise: f64, idle: f64) -> Signal {
    Signal::Wave(Wave {
        base,
        amp,
        period_s,
        noise,
        trend_per_day: 0.0,
        idle,
        fault_add: 0.0,
    })
}

/// A counter of `rate` units per second.
pub(crate) const fn counter(rate: f64, start_max: f64) -> Signal {
    Signal::Counter { rate, start_max }
}

/// A sawtooth.
pub(crate) const fn ramp(from: f64, to: f64, period_s: f64) -> Signal {
    Signal::Ramp { from, to, period_s }
}

/// A loop component.
pub(crate) const fn orbit(centre: f64, radius: f64, period_s: f64, cos: bool) -> Signal {
    Signal::Orbit {
        centre,
        radius,
        period_s,
        cos,
    }
}

/// A whole number redrawn every `dwell_s`.
pub(crate) const fn step(min: u32, max: u32, dwell_s: u32) -> Signal {
    Signal::Step { min, max, dwell_s }
}

/// Fixed value.
pub(crate) const fn fixed(v: f64) -> Signal {
    Signal::Fixed(v)
}

/// Run state 0 stopped, 1 running, 2 fault.
pub(crate) const RUN_STATE: Signal = Signal::RunState {
    stopped: 0,
    running: 1,
    fault: 2,
};

/// An alarm raised `per_day` windows a day, independent of faults.
pub(crate) const fn alarm(per_day: f64) -> Signal {
    Signal::Alarm {
        per_day,
        on_fault: false,
    }
}

/// An alarm raised during faults and `per_day` more windows a day.
pub(crate) const fn fault_alarm(per_day: f64) -> Signal {
    Signal::Alarm {
        per_day,
        on_fault: true,
    }
}

/// The static identification block, holding registers 0..=15 (see the module docs).
pub static IDENT_TAGS: [TagDef; 8] = [
    hr(
        "type_code",
        0,
        DataType::U16,
        1.0,
        "",
        Signal::Ident(Ident::TypeCode),
    ),
    hr(
        "map_version",
        1,
        DataType::U16,
        1.0,
        "",
        Signal::Ident(Ident::MapVersion),
    ),
    hr(
        "serial_number",
        2,
        DataType::U32,
        1.0,
        "",
        Signal::Ident(Ident::Serial),
    ),
    hr(
        "firmware_version",
        4,
        DataType::U16,
        0.01,
        "",
        Signal::Ident(Ident::Firmware),
    ),
    hr(
        "class_index",
        5,
        DataType::U16,
        1.0,
        "",
        Signal::Ident(Ident::Class),
    ),
    hr(
        "category_index",
        6,
        DataType::U16,
        1.0,
        "",
        Signal::Ident(Ident::Category),
    ),
    hr(
        "year_of_manufacture",
        7,
        DataType::U16,
        1.0,
        "",
        Signal::Ident(Ident::Year),
    ),
    text(
        "model",
        Area::HoldingRegister,
        8,
        MODEL_REGISTERS,
        Signal::Ident(Ident::Model),
    ),
];

/// Every device type. The position is the type index of a plan.
pub static CATALOG: [DeviceType; 21] = [
    operating::BELT_CONVEYOR,
    operating::REACTOR,
    operating::INDUCTION_FURNACE,
    operating::TRANSFORMER,
    operating::ROTARY_KILN,
    operating::PUMP,
    operating::COMPRESSOR,
    operating::FLOWMETER,
    processing::CNC,
    processing::ROBOT,
    processing::VFD,
    processing::REFLOW_OVEN,
    processing::INJECTION_MOLDING,
    mobile::EXCAVATOR,
    mobile::TRACTOR,
    mobile::AGV,
    mobile::FORKLIFT,
    mobile::BUS,
    other::GAS_DETECTOR,
    other::DUST_MONITOR,
    other::EFFLUENT_MONITOR,
];

/// The type at `index` of [`CATALOG`].
pub fn device_type(index: usize) -> Option<&'static DeviceType> {
    CATALOG.get(index)
}

/// Indexes into [`CATALOG`] of the types of a class, in catalog order.
pub fn types_of_class(class: DeviceClass) -> Vec<usize> {
    CATALOG
        .iter()
        .enumerate()
        .filter(|(_, t)| t.class() == class)
        .map(|(i, _)| i)
        .collect()
}

/// A run of consecutive addresses covered by one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// First address.
    pub(crate) start: u16,
    /// One past the last address (u32: a tag may end at 65536).
    pub(crate) end: u32,
    /// Index of the tag in [`DeviceType::all_tags`].
    pub(crate) tag: u16,
}

/// Sorted spans per area of one type: the address lookup of the server.
#[derive(Debug)]
pub(crate) struct TypeMap {
    /// Spans per [`Area::index`], sorted by start, not overlapping.
    pub(crate) areas: [Vec<Span>; 4],
}

impl TypeMap {
    fn build(ty: &DeviceType) -> TypeMap {
        let mut areas: [Vec<Span>; 4] = Default::default();
        for (i, t) in ty.all_tags().enumerate() {
            areas[t.area.index()].push(Span {
                start: t.address,
                end: u32::from(t.address) + u32::from(t.span()),
                tag: i as u16,
            });
        }
        for spans in &mut areas {
            spans.sort_by_key(|s| s.start);
        }
        TypeMap { areas }
    }

    /// The spans covering `start..start + count` of `area` in order, or
    /// `None` when any address of the range is not covered by a tag.
    pub(crate) fn cover(&self, area: Area, start: u16, count: u16) -> Option<&[Span]> {
        let spans = &self.areas[area.index()];
        let first = spans.partition_point(|s| s.end <= u32::from(start));
        let end = u32::from(start) + u32::from(count);
        let mut next = u32::from(start);
        let mut last = first;
        while next < end {
            let span = spans.get(last)?;
            if u32::from(span.start) > next {
                return None;
            }
            next = span.end;
            last += 1;
        }
        Some(&spans[first..last])
    }
}

/// Address maps of [`CATALOG`], by type index, built once.
pub(crate) fn maps() -> &'static [TypeMap] {
    static MAPS: OnceLock<Vec<TypeMap>> = OnceLock::new();
    MAPS.get_or_init(|| CATALOG.iter().map(TypeMap::build).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_category_has_a_type() {
        for c in Category::ALL {
            assert!(
                CATALOG.iter().any(|t| t.category == *c),
                "no type for category {c}"
            );
        }
    }

    #[test]
    fn keys_codes_and_models_are_unique_and_well_formed() {
        let mut keys = HashSet::new();
        let mut codes = HashSet::new();
        let mut models = HashSet::new();
        for t in &CATALOG {
            assert!(keys.insert(t.key), "key {}", t.key);
            assert!(codes.insert(t.code), "code {}", t.code);
            assert!(models.insert(t.model), "model {}", t.model);
            assert!(t.model.is_ascii() && t.model.len() <= 16, "{}", t.model);
            assert!(
                t.key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                t.key
            );
            assert_eq!(t.code / 100, t.category.index() as u16 + 1, "{}", t.key);
            assert!(!t.label.contains(','), "{}", t.label);
        }
    }

    #[test]
    fn tags_are_sound() {
        for t in &CATALOG {
            let mut names = HashSet::new();
            for tag in t.all_tags() {
                assert!(names.insert(tag.name), "{}: tag {} twice", t.key, tag.name);
                assert_eq!(
                    tag.area.is_bits(),
                    tag.data_type == DataType::Bool,
                    "{}.{}",
                    t.key,
                    tag.name
                );
                assert!(tag.scale.is_finite() && tag.scale != 0.0);
                if tag.data_type == DataType::String {
                    assert!((1..=16).contains(&tag.length), "{}.{}", t.key, tag.name);
                }
                if tag.area == Area::HoldingRegister && !matches!(tag.signal, Signal::Ident(_)) {
                    assert!(tag.address >= SETPOINT_BASE, "{}.{}", t.key, tag.name);
                }
            }
            // Every area used, multi-register types present.
            for area in Area::ALL {
                assert!(
                    t.all_tags().any(|tag| tag.area == area),
                    "{}: no {:?}",
                    t.key,
                    area
                );
            }
            assert!(t.tags.iter().any(|tag| tag.span() >= 2), "{}", t.key);
        }
    }

    #[test]
    fn spans_do_not_overlap_and_gaps_are_wide() {
        for (ty, map) in CATALOG.iter().zip(maps()) {
            for spans in &map.areas {
                for pair in spans.windows(2) {
                    let gap = u32::from(pair[1].start).saturating_sub(pair[0].end);
                    assert!(
                        u32::from(pair[1].start) >= pair[0].end,
                        "{}: overlap at {}",
                        ty.key,
                        pair[1].start
                    );
                    assert!(
                        gap == 0 || gap >= 125,
                        "{}: gap of {gap} before {}",
                        ty.key,
                        pair[1].start
                    );
                }
            }
        }
    }

    #[test]
    fn no_input_register_comes_near_the_scan_block() {
        use crate::scan::{SCAN_BASE, SCAN_REGISTERS};
        let low = u32::from(SCAN_BASE) - 125;
        let high = u32::from(SCAN_BASE) + u32::from(SCAN_REGISTERS) + 125;
        for ty in &CATALOG {
            for tag in ty.all_tags().filter(|t| t.area == Area::InputRegister) {
                let (start, end) = (
                    u32::from(tag.address),
                    u32::from(tag.address) + u32::from(tag.span()),
                );
                assert!(end <= low || start >= high, "{}.{}", ty.key, tag.name);
            }
        }
    }

    #[test]
    fn cover_finds_spans_and_refuses_holes() {
        let cnc = CATALOG.iter().position(|t| t.key == "cnc").unwrap();
        let map = &maps()[cnc];
        let spans = map.cover(Area::HoldingRegister, 0, 16).unwrap();
        assert_eq!(spans.len(), IDENT_TAGS.len());
        // Middle of the serial number.
        assert_eq!(map.cover(Area::HoldingRegister, 3, 1).unwrap().len(), 1);
        assert!(map.cover(Area::HoldingRegister, 15, 2).is_none());
        assert!(map.cover(Area::HoldingRegister, 100, 1).is_none());
        assert!(map.cover(Area::InputRegister, 60_000, 10).is_none());
    }
}
