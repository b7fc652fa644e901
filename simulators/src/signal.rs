//! Signal models: what a simulated device reads at a given instant.
//!
//! Values are pure functions of (seed, device index, tag, time): no timer, no
//! task and no state per device. Each device has a run state per 5-minute
//! window ([`DeviceState`]); waves idle while the device is stopped and jump
//! while it is faulted; counters grow from 2024-01-01; alarm bits come up in
//! 10-minute windows; noise changes every second. [`SimDevice::words`] gives
//! the raw register words the server answers, so tests can check them.

use std::f64::consts::TAU;

use crate::catalog::{
    self, DataType, DeviceType, Duty, Ident, Order, SERIAL_BASE, Signal, TagDef, YEAR_BASE,
};

/// Counters start at 2024-01-01T00:00:00Z (Unix milliseconds).
pub const COUNTER_EPOCH_MS: i64 = 1_704_067_200_000;
/// Length of a run-state window.
pub const STATE_WINDOW_MS: i64 = 300_000;
/// Length of an alarm window.
pub const ALARM_WINDOW_MS: i64 = 600_000;
/// Noise changes once per this many milliseconds.
pub const NOISE_STEP_MS: i64 = 1000;
/// Most registers a tag spans (strings of the catalog are at most 16).
pub const MAX_TAG_REGISTERS: usize = 16;

/// What a device is doing in a state window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Powered, not producing: gated waves show their idle value.
    Stopped,
    /// Producing.
    Running,
    /// Faulted: alarm codes and fault alarms raised, waves shifted.
    Fault,
}

/// The raw registers of one tag, without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    len: u8,
    buf: [u16; MAX_TAG_REGISTERS],
}

impl Words {
    const EMPTY: Words = Words {
        len: 0,
        buf: [0; MAX_TAG_REGISTERS],
    };

    /// The registers, in wire order.
    pub fn as_slice(&self) -> &[u16] {
        &self.buf[..usize::from(self.len)]
    }

    fn from_slice(words: &[u16]) -> Words {
        let mut w = Words::EMPTY;
        let n = words.len().min(MAX_TAG_REGISTERS);
        w.buf[..n].copy_from_slice(&words[..n]);
        w.len = n as u8;
        w
    }
}

// Kinds of random draws, so no two uses of one tag share a stream.
const BASE: u64 = 1;
const AMP: u64 = 2;
const PHASE: u64 = 3;
const TREND: u64 = 4;
const NOISE: u64 = 5;
const START: u64 = 6;
const STEP: u64 = 7;
const ALARM: u64 = 8;
const CODE: u64 = 9;
const CENTRE: u64 = 10;
const STATE: u64 = 11;
/// Tag slot of device-level draws (state, orbit phase).
const DEVICE: u64 = u64::MAX;

/// splitmix64 finaliser.
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` from the parts.
fn unit(parts: [u64; 5]) -> f64 {
    let h = parts.iter().fold(0x5EED_u64, |acc, &p| mix(acc ^ p));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One simulated device: its seed, index and type. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimDevice {
    seed: u64,
    index: u32,
    type_index: u16,
}

impl SimDevice {
    /// The device `index` of type `type_index` (position in
    /// [`catalog::CATALOG`]); `None` when there is no such type.
    pub fn new(seed: u64, index: u32, type_index: usize) -> Option<SimDevice> {
        catalog::device_type(type_index)?;
        Some(SimDevice {
            seed,
            index,
            type_index: type_index as u16,
        })
    }

    /// Seed of the fleet.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Device index in the fleet.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Position of the type in [`catalog::CATALOG`].
    pub fn type_index(&self) -> usize {
        usize::from(self.type_index)
    }

    /// The device type.
    pub fn device_type(&self) -> &'static DeviceType {
        &catalog::CATALOG[usize::from(self.type_index)]
    }

    /// Serial number (holding registers 2..=3).
    pub fn serial(&self) -> u32 {
        SERIAL_BASE.wrapping_add(self.index)
    }

    fn rnd(&self, tag: u64, kind: u64, k: i64) -> f64 {
        unit([self.seed, u64::from(self.index), tag, kind, k as u64])
    }

    /// The run state at `unix_ms`.
    pub fn state(&self, unix_ms: i64) -> DeviceState {
        let r = self.rnd(DEVICE, STATE, unix_ms.div_euclid(STATE_WINDOW_MS));
        match self.device_type().duty {
            Duty::Shifts if r < 0.03 => DeviceState::Fault,
            Duty::Shifts if r < 0.15 => DeviceState::Stopped,
            Duty::Continuous if r < 0.015 => DeviceState::Fault,
            Duty::Shifts | Duty::Continuous => DeviceState::Running,
        }
    }

    /// Engineering value of tag `tag` (index into
    /// [`DeviceType::all_tags`]) at `unix_ms`, as a client decodes it from
    /// [`SimDevice::words`] (rounded to the tag's scale, saturated to its
    /// type); bits are 0 or 1. NaN for strings and unknown tags.
    pub fn value(&self, tag: usize, unix_ms: i64) -> f64 {
        match self.device_type().tag(tag) {
            Some(def) => decode(def, self.words(tag, unix_ms).as_slice()).unwrap_or(f64::NAN),
            None => f64::NAN,
        }
    }

    /// The raw register words of tag `tag` at `unix_ms`, as the server
    /// answers them (before any client write overrides them). Bits give one
    /// word, 0 or 1. Empty for unknown tags.
    pub fn words(&self, tag: usize, unix_ms: i64) -> Words {
        let Some(def) = self.device_type().tag(tag) else {
            return Words::EMPTY;
        };
        match def.signal {
            Signal::Text(s) => encode_text(s, def.length),
            Signal::Ident(Ident::Model) => encode_text(self.device_type().model, def.length),
            _ => encode(def, self.eval(tag as u64, def, unix_ms)),
        }
    }

    fn eval(&self, t: u64, def: &TagDef, unix_ms: i64) -> f64 {
        let ty = self.device_type();
        match def.signal {
            Signal::Ident(ident) => match ident {
                Ident::TypeCode => f64::from(ty.code),
                Ident::MapVersion => f64::from(catalog::MAP_VERSION),
                Ident::Serial => f64::from(self.serial()),
                Ident::Firmware => f64::from(ty.firmware) * 0.01,
                Ident::Class => ty.class().index() as f64,
                Ident::Category => ty.category.index() as f64,
                Ident::Year => f64::from(YEAR_BASE + (self.index % 9) as u16),
                Ident::Model => f64::NAN,
            },
            Signal::Fixed(v) => v,
            Signal::Wave(w) => {
                let state = self.state(unix_ms);
                if !w.idle.is_nan() && state != DeviceState::Running {
                    return w.idle;
                }
                let base = w.base * (1.0 + 0.04 * (2.0 * self.rnd(t, BASE, 0) - 1.0));
                let amp = w.amp * (0.8 + 0.4 * self.rnd(t, AMP, 0));
                let phase = TAU * self.rnd(t, PHASE, 0);
                let mut v = base + amp * (TAU * cycle(unix_ms, w.period_s) + phase).sin();
                if w.trend_per_day != 0.0 {
                    let days = unix_ms as f64 / 86_400_000.0 + 30.0 * self.rnd(t, TREND, 0);
                    v += w.trend_per_day * days.rem_euclid(30.0);
                }
                v += w.noise * (2.0 * self.rnd(t, NOISE, unix_ms.div_euclid(NOISE_STEP_MS)) - 1.0);
                if state == DeviceState::Fault {
                    v += w.fault_add;
                }
                v
            }
            Signal::Counter { rate, start_max } => {
                let secs = (unix_ms - COUNTER_EPOCH_MS).max(0) as f64 / 1000.0;
                (start_max * self.rnd(t, START, 0)).floor() + rate * secs
            }
            Signal::Ramp { from, to, period_s } => {
                let f = (cycle(unix_ms, period_s) + self.rnd(t, PHASE, 0)).fract();
                from + (to - from) * f
            }
            Signal::Orbit {
                centre,
                radius,
                period_s,
                cos,
            } => {
                let centre = centre + radius * 2.0 * (2.0 * self.rnd(t, CENTRE, 0) - 1.0);
                let angle = TAU * (cycle(unix_ms, period_s) + self.rnd(DEVICE, PHASE, 0));
                centre + radius * if cos { angle.cos() } else { angle.sin() }
            }
            Signal::Step { min, max, dwell_s } => {
                let window = unix_ms.div_euclid(i64::from(dwell_s.max(1)) * 1000);
                let n = f64::from(max.saturating_sub(min)) + 1.0;
                (f64::from(min) + (self.rnd(t, STEP, window) * n).floor()).min(f64::from(max))
            }
            Signal::RunState {
                stopped,
                running,
                fault,
            } => f64::from(match self.state(unix_ms) {
                DeviceState::Stopped => stopped,
                DeviceState::Running => running,
                DeviceState::Fault => fault,
            }),
            Signal::Running => f64::from(u8::from(self.state(unix_ms) == DeviceState::Running)),
            Signal::Alarm { per_day, on_fault } => {
                let p = (per_day / 144.0).clamp(0.0, 1.0);
                let window = unix_ms.div_euclid(ALARM_WINDOW_MS);
                let raised = (on_fault && self.state(unix_ms) == DeviceState::Fault)
                    || self.rnd(t, ALARM, window) < p;
                f64::from(u8::from(raised))
            }
            Signal::AlarmCode(codes) => {
                if self.state(unix_ms) != DeviceState::Fault || codes.is_empty() {
                    return 0.0;
                }
                let window = unix_ms.div_euclid(STATE_WINDOW_MS);
                let i = (self.rnd(DEVICE, CODE, window) * codes.len() as f64) as usize;
                f64::from(codes[i.min(codes.len() - 1)])
            }
            Signal::Text(_) => f64::NAN,
        }
    }
}

/// Position `[0, 1)` of `unix_ms` in a cycle of `period_s` seconds.
fn cycle(unix_ms: i64, period_s: f64) -> f64 {
    let period_ms = ((period_s * 1000.0) as i64).max(1);
    unix_ms.rem_euclid(period_ms) as f64 / period_ms as f64
}

/// Encodes an engineering value as the tag's raw registers (raw =
/// (value − offset) / scale, rounded and saturated for integers). Strings
/// encode as NULs; use [`SimDevice::words`] for their text.
pub fn encode(tag: &TagDef, value: f64) -> Words {
    let raw = (value - tag.offset) / tag.scale;
    let mut w = match tag.data_type {
        DataType::Bool => Words::from_slice(&[u16::from(value != 0.0 && !value.is_nan())]),
        DataType::U16 => Words::from_slice(&[raw.round() as u16]),
        DataType::I16 => Words::from_slice(&[raw.round() as i16 as u16]),
        DataType::U32 => split32(raw.round() as u32),
        DataType::I32 => split32(raw.round() as i32 as u32),
        DataType::F32 => split32((raw as f32).to_bits()),
        DataType::U64 => split64(raw.round() as u64),
        DataType::I64 => split64(raw.round() as i64 as u64),
        DataType::F64 => split64(raw.to_bits()),
        DataType::String => encode_text("", tag.length),
    };
    if tag.word_order == Order::Little && tag.data_type != DataType::String {
        let n = usize::from(w.len);
        w.buf[..n].reverse();
    }
    w
}

/// Decodes raw registers of a tag to its engineering value; `None` for
/// strings or a wrong number of words.
pub fn decode(tag: &TagDef, words: &[u16]) -> Option<f64> {
    if tag.data_type == DataType::String || words.len() != usize::from(tag.span()) {
        return None;
    }
    let mut buf = [0u16; 4];
    buf[..words.len()].copy_from_slice(words);
    if tag.word_order == Order::Little {
        buf[..words.len()].reverse();
    }
    let u32v = (u32::from(buf[0]) << 16) | u32::from(buf[1]);
    let u64v = (u64::from(buf[0]) << 48)
        | (u64::from(buf[1]) << 32)
        | (u64::from(buf[2]) << 16)
        | u64::from(buf[3]);
    let raw = match tag.data_type {
        DataType::Bool => return Some(f64::from(u8::from(buf[0] != 0))),
        DataType::U16 => f64::from(buf[0]),
        DataType::I16 => f64::from(buf[0] as i16),
        DataType::U32 => f64::from(u32v),
        DataType::I32 => f64::from(u32v as i32),
        DataType::F32 => f64::from(f32::from_bits(u32v)),
        DataType::U64 => u64v as f64,
        DataType::I64 => u64v as i64 as f64,
        DataType::F64 => f64::from_bits(u64v),
        DataType::String => return None,
    };
    Some(raw * tag.scale + tag.offset)
}

fn split32(v: u32) -> Words {
    Words::from_slice(&[(v >> 16) as u16, v as u16])
}

fn split64(v: u64) -> Words {
    Words::from_slice(&[
        (v >> 48) as u16,
        (v >> 32) as u16,
        (v >> 16) as u16,
        v as u16,
    ])
}

/// ASCII text in `length` registers, first character in the high byte,
/// NUL-padded; non-ASCII characters become `?`.
fn encode_text(text: &str, length: u16) -> Words {
    let n = usize::from(length).min(MAX_TAG_REGISTERS);
    let mut w = Words::EMPTY;
    w.len = n as u8;
    let bytes = text.bytes().map(|b| if b.is_ascii() { b } else { b'?' });
    for (i, b) in bytes.take(2 * n).enumerate() {
        let shift = if i % 2 == 0 { 8 } else { 0 };
        w.buf[i / 2] |= u16::from(b) << shift;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Area, CATALOG, IDENT_TAGS, Signal};

    const T0: i64 = 1_780_000_000_000;

    fn dev(key: &str, index: u32) -> SimDevice {
        let ty = CATALOG.iter().position(|t| t.key == key).unwrap();
        SimDevice::new(7, index, ty).unwrap()
    }

    #[test]
    fn identification_block_is_exact() {
        let d = dev("cnc", 17);
        let words: Vec<u16> = (0..IDENT_TAGS.len())
            .flat_map(|i| d.words(i, T0).as_slice().to_vec())
            .collect();
        let serial = SERIAL_BASE + 17;
        let mut expected = vec![
            801,
            1,
            (serial >> 16) as u16,
            serial as u16,
            742,
            1,
            7,
            2016 + 17 % 9,
        ];
        expected.extend([
            u16::from_be_bytes(*b"VM"),
            u16::from_be_bytes(*b"C-"),
            u16::from_be_bytes(*b"85"),
            u16::from_be_bytes([b'0', 0]),
            0,
            0,
            0,
            0,
        ]);
        assert_eq!(words, expected);
    }

    #[test]
    fn values_are_deterministic_and_depend_on_seed_and_device() {
        let a = dev("pump", 3);
        let flow = a.device_type().tag_index("flow").unwrap();
        assert_eq!(a.words(flow, T0), a.words(flow, T0));
        let b = SimDevice::new(8, 3, a.type_index()).unwrap();
        let c = dev("pump", 4);
        let series = |d: SimDevice| {
            (0..50)
                .map(|k| d.value(flow, T0 + k * 60_000))
                .collect::<Vec<_>>()
        };
        assert_ne!(series(a), series(b));
        assert_ne!(series(a), series(c));
    }

    /// Loose bounds of a signal's engineering value.
    fn bounds(signal: Signal) -> (f64, f64) {
        match signal {
            Signal::Wave(w) => {
                let spread =
                    w.base.abs() * 0.04 + w.amp * 1.2 + w.noise + w.trend_per_day.abs() * 30.0;
                let lo = w.base - spread + w.fault_add.min(0.0);
                let hi = w.base + spread + w.fault_add.max(0.0);
                if w.idle.is_nan() {
                    (lo, hi)
                } else {
                    (lo.min(w.idle), hi.max(w.idle))
                }
            }
            Signal::Counter { .. } => (0.0, 1e12),
            Signal::Ramp { from, to, .. } => (from.min(to), from.max(to)),
            Signal::Orbit { centre, radius, .. } => (centre - 3.0 * radius, centre + 3.0 * radius),
            Signal::Step { min, max, .. } => (f64::from(min), f64::from(max)),
            Signal::Fixed(v) => (v, v),
            Signal::RunState { .. } | Signal::AlarmCode(_) => (0.0, 65_535.0),
            Signal::Running | Signal::Alarm { .. } => (0.0, 1.0),
            Signal::Ident(_) => (0.0, 1e9),
            Signal::Text(_) => (f64::NAN, f64::NAN),
        }
    }

    #[test]
    fn values_stay_in_plausible_bounds_and_move() {
        for (ti, ty) in CATALOG.iter().enumerate() {
            for index in 0..5 {
                let d = SimDevice::new(1, index, ti).unwrap();
                for (i, tag) in ty.all_tags().enumerate() {
                    if tag.data_type == DataType::String {
                        assert!(d.value(i, T0).is_nan());
                        assert_eq!(d.words(i, T0).as_slice().len(), usize::from(tag.length));
                        continue;
                    }
                    let (lo, hi) = bounds(tag.signal);
                    let slack = tag.scale.abs() + 1e-3 * hi.abs().max(lo.abs());
                    let mut seen = Vec::new();
                    for k in 0..200 {
                        let t = T0 + k * 37_000;
                        let v = d.value(i, t);
                        assert!(v.is_finite(), "{}.{} = {v}", ty.key, tag.name);
                        // Unsigned types saturate at 0.
                        let lo = if lo < 0.0
                            && matches!(
                                tag.data_type,
                                DataType::U16 | DataType::U32 | DataType::U64
                            ) {
                            0.0
                        } else {
                            lo
                        };
                        assert!(
                            v >= lo - slack && v <= hi + slack,
                            "{}.{} = {v} outside {lo}..={hi}",
                            ty.key,
                            tag.name
                        );
                        assert_eq!(d.words(i, t).as_slice().len(), usize::from(tag.span()));
                        seen.push(v);
                    }
                    if let Signal::Wave(w) = tag.signal
                        && w.noise > 0.0
                        && w.idle.is_nan()
                    {
                        let min = seen.iter().copied().fold(f64::INFINITY, f64::min);
                        let max = seen.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        assert!(max > min, "{}.{} never moves", ty.key, tag.name);
                    }
                }
            }
        }
    }

    #[test]
    fn counters_never_go_back() {
        let d = dev("cnc", 2);
        let parts = d.device_type().tag_index("part_count").unwrap();
        let mut last = 0.0;
        for k in 0..1000 {
            let v = decode(
                d.device_type().tag(parts).unwrap(),
                d.words(parts, T0 + k * 10_000).as_slice(),
            )
            .unwrap();
            assert!(v >= last);
            last = v;
        }
    }

    #[test]
    fn states_mix_running_stopped_and_faults() {
        let d = dev("cnc", 9);
        let mut counts = [0usize; 3];
        for k in 0..20_000 {
            counts[match d.state(T0 + k * STATE_WINDOW_MS) {
                DeviceState::Stopped => 0,
                DeviceState::Running => 1,
                DeviceState::Fault => 2,
            }] += 1;
        }
        assert!((1600..3200).contains(&counts[0]), "{counts:?}");
        assert!(counts[1] > 15_000, "{counts:?}");
        assert!((300..900).contains(&counts[2]), "{counts:?}");
        // Gated spindle speed is 0 whenever the machine is not running.
        let spindle = d.device_type().tag_index("spindle_speed").unwrap();
        let alarm = d.device_type().tag_index("alarm_code").unwrap();
        for k in 0..2000 {
            let t = T0 + k * 150_000;
            match d.state(t) {
                DeviceState::Running => {
                    assert!(d.value(spindle, t) > 1000.0);
                    assert_eq!(d.value(alarm, t), 0.0);
                }
                DeviceState::Stopped => assert_eq!(d.value(spindle, t), 0.0),
                DeviceState::Fault => assert!(d.value(alarm, t) >= 1001.0),
            }
        }
    }

    #[test]
    fn little_word_order_swaps_registers() {
        let d = dev("transformer", 0);
        let i = d.device_type().tag_index("voltage_l1").unwrap();
        let tag = d.device_type().tag(i).unwrap();
        assert_eq!(tag.area, Area::InputRegister);
        let w = d.words(i, T0);
        let v = d.value(i, T0) as f32;
        let bits = v.to_bits();
        assert_eq!(w.as_slice(), [bits as u16, (bits >> 16) as u16]);
    }

    #[test]
    fn gps_stays_near_its_site() {
        let d = dev("excavator", 5);
        let lat = d.device_type().tag_index("latitude").unwrap();
        let lon = d.device_type().tag_index("longitude").unwrap();
        for k in 0..100 {
            let t = T0 + k * 61_000;
            let la = decode(
                d.device_type().tag(lat).unwrap(),
                d.words(lat, t).as_slice(),
            )
            .unwrap();
            let lo = decode(
                d.device_type().tag(lon).unwrap(),
                d.words(lon, t).as_slice(),
            )
            .unwrap();
            assert!((la - 30.5728).abs() < 0.01, "{la}");
            assert!((lo - 104.0668).abs() < 0.01, "{lo}");
        }
    }
}
