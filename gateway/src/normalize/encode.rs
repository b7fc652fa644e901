//! Batches encoded as they are built: each reading is written straight into
//! its device's protobuf buffer (no `Point` message; the tag goes as its
//! small integer id in the device's announced table, `Point.tag_id`, never
//! as its name), and sealing lays the buffers out as one `Batch`. Buffers are
//! kept between batches, so a steady stream allocates nothing per point; a
//! device's buffer is found once per run of its readings ([`DeviceSlot`]),
//! through a table indexed by the device's dense index, not per point.
//!
//! The bytes are exactly what prost would produce for the same `Batch`
//! (field order within a message aside, which protobuf allows): announces
//! and statuses are encoded by prost, then each device's `DeviceTelemetry`
//! (field 4) is written by hand.

use fieldlink_model::proto::{self, Quality, point::Value};
use fieldlink_model::{Day, UtcOffset};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::driver::Reading;

/// `Batch.telemetry`, field 4, length-delimited.
const KEY_BATCH_TELEMETRY: u8 = (4 << 3) | 2;
/// `DeviceTelemetry.device_id`, field 1, length-delimited.
const KEY_DEVICE_ID: u8 = (1 << 3) | 2;
/// `DeviceTelemetry.points`, field 2, length-delimited.
const KEY_POINTS: u8 = (2 << 3) | 2;
/// `Point.tag_id`, field 9, varint.
const KEY_TAG_ID: u8 = 9 << 3;
/// `Point.time_unix_nano`, field 2, fixed64.
const KEY_TIME: u8 = (2 << 3) | 1;
/// `Point.quality`, field 3, varint.
const KEY_QUALITY: u8 = 3 << 3;
/// `Point.double_value`, field 4, fixed64.
const KEY_DOUBLE: u8 = (4 << 3) | 1;
/// `Point.int_value`, field 5, varint (zig-zag).
const KEY_INT: u8 = 5 << 3;
/// `Point.bool_value`, field 6, varint.
const KEY_BOOL: u8 = 6 << 3;
/// `Point.string_value`, field 7, length-delimited.
const KEY_STRING: u8 = (7 << 3) | 2;
/// `Point.bytes_value`, field 8, length-delimited.
const KEY_BYTES: u8 = (8 << 3) | 2;

/// One device's points in the batch under construction.
#[derive(Debug, Default)]
struct DeviceBuf {
    device: u32,
    id_len: usize,
    points: Vec<u8>,
    /// Points that count for the ledger (not BAD), per day.
    days: Vec<(Day, u64)>,
}

/// A batch under construction.
#[derive(Debug)]
pub(crate) struct BatchBuilder {
    head: proto::Batch,
    /// By dense device index: 1 + the device's slot in `devices` while it
    /// has points in this batch, else 0.
    slots: Vec<u32>,
    devices: Vec<DeviceBuf>,
    active: usize,
    points: usize,
    bytes: usize,
    ledger_offset: Option<UtcOffset>,
}

impl BatchBuilder {
    /// An empty builder; with `ledger_offset`, points are also counted per
    /// device and day (cut at that offset) for the ledger.
    pub(crate) fn new(ledger_offset: Option<UtcOffset>) -> BatchBuilder {
        BatchBuilder {
            head: proto::Batch::default(),
            slots: Vec::new(),
            devices: Vec::new(),
            active: 0,
            points: 0,
            bytes: 0,
            ledger_offset,
        }
    }

    /// Points in the batch.
    pub(crate) fn points(&self) -> usize {
        self.points
    }

    /// Encoded size so far, roughly (announces and statuses counted when
    /// added).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when nothing was added since the last seal.
    pub(crate) fn is_empty(&self) -> bool {
        self.active == 0 && self.head.announces.is_empty() && self.head.statuses.is_empty()
    }

    /// Adds an announce.
    pub(crate) fn announce(&mut self, announce: proto::DeviceAnnounce) {
        self.bytes += announce.encoded_len() + 4;
        self.head.announces.push(announce);
    }

    /// Adds a status change.
    pub(crate) fn status(&mut self, status: proto::DeviceStatus) {
        self.bytes += status.encoded_len() + 2;
        self.head.statuses.push(status);
    }

    /// Adds one point of `device` (dense index, id `device_id`).
    #[cfg(test)]
    pub(crate) fn point(&mut self, device: u32, device_id: &str, r: &Reading) {
        self.device(device, device_id).point(r);
    }

    /// The buffer of `device` (dense index, id `device_id`), to add a run of
    /// its points to.
    pub(crate) fn device(&mut self, device: u32, device_id: &str) -> DeviceSlot<'_> {
        let index = device as usize;
        if self.slots.len() <= index {
            self.slots.resize(index + 1, 0);
        }
        let slot = match self.slots[index] {
            0 => {
                if self.active == self.devices.len() {
                    self.devices.push(DeviceBuf::default());
                }
                let slot = self.active;
                self.active += 1;
                let buf = &mut self.devices[slot];
                buf.device = device;
                buf.id_len = device_id.len();
                buf.points.clear();
                buf.days.clear();
                // At most one slot per device: below u32::MAX.
                self.slots[index] = slot as u32 + 1;
                self.bytes += device_id.len() + 8;
                slot
            }
            n => n as usize - 1,
        };
        DeviceSlot {
            buf: &mut self.devices[slot],
            points: &mut self.points,
            bytes: &mut self.bytes,
            ledger_offset: self.ledger_offset,
        }
    }

    /// Encodes the batch and starts a new one. `device_id` gives each
    /// device's id by dense index (the same ids `point` was given); `ledger`
    /// receives `(device index, day, points)` for every device and day.
    pub(crate) fn seal<'a>(
        &mut self,
        device_id: impl Fn(u32) -> Option<&'a str>,
        mut ledger: impl FnMut(&str, Day, u64),
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes + 64);
        let head = std::mem::take(&mut self.head);
        // A prost encode into a Vec cannot fail: the Vec grows.
        let _ = head.encode(&mut out);
        for buf in &self.devices[..self.active] {
            let Some(id) = device_id(buf.device) else {
                continue;
            };
            debug_assert_eq!(id.len(), buf.id_len);
            let inner = 1 + encoded_len_varint(id.len() as u64) + id.len() + buf.points.len();
            out.push(KEY_BATCH_TELEMETRY);
            encode_varint(inner as u64, &mut out);
            out.push(KEY_DEVICE_ID);
            encode_varint(id.len() as u64, &mut out);
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&buf.points);
            for (day, n) in &buf.days {
                ledger(id, *day, *n);
            }
        }
        for buf in &self.devices[..self.active] {
            if let Some(slot) = self.slots.get_mut(buf.device as usize) {
                *slot = 0;
            }
        }
        self.active = 0;
        self.points = 0;
        self.bytes = 0;
        out
    }
}

/// One device's buffer in the batch under construction.
#[derive(Debug)]
pub(crate) struct DeviceSlot<'a> {
    buf: &'a mut DeviceBuf,
    points: &'a mut usize,
    bytes: &'a mut usize,
    ledger_offset: Option<UtcOffset>,
}

impl DeviceSlot<'_> {
    /// Adds one point; its tag is `r.tag`, an id in the device's announced
    /// table (the caller checked it is in the table).
    pub(crate) fn point(&mut self, r: &Reading) {
        let buf = &mut *self.buf;
        let before = buf.points.len();
        write_point(&mut buf.points, r);
        *self.bytes += buf.points.len() - before;
        *self.points += 1;
        if let Some(offset) = self.ledger_offset
            && r.quality != Quality::Bad
        {
            let day = Day::of(r.time, offset);
            match buf.days.iter_mut().find(|(d, _)| *d == day) {
                Some((_, n)) => *n += 1,
                None => buf.days.push((day, 1)),
            }
        }
    }
}

/// Writes one `DeviceTelemetry.points` entry: key, length, `Point`.
fn write_point(out: &mut Vec<u8>, r: &Reading) {
    let time = u64::try_from(r.time).unwrap_or(0);
    let quality = r.quality as i32 as u64;
    let tag = u64::from(r.tag);
    // proto3 leaves zero-valued scalars out, as prost does.
    let mut len = 0;
    if tag != 0 {
        len += 1 + encoded_len_varint(tag);
    }
    if time != 0 {
        len += 9;
    }
    if quality != 0 {
        len += 1 + encoded_len_varint(quality);
    }
    len += match &r.value {
        None => 0,
        Some(Value::DoubleValue(_)) => 9,
        Some(Value::IntValue(i)) => 1 + encoded_len_varint(zigzag(*i)),
        Some(Value::BoolValue(_)) => 2,
        Some(Value::StringValue(s)) => 1 + encoded_len_varint(s.len() as u64) + s.len(),
        Some(Value::BytesValue(b)) => 1 + encoded_len_varint(b.len() as u64) + b.len(),
    };
    out.push(KEY_POINTS);
    encode_varint(len as u64, out);
    if tag != 0 {
        out.push(KEY_TAG_ID);
        encode_varint(tag, out);
    }
    if time != 0 {
        out.push(KEY_TIME);
        out.extend_from_slice(&time.to_le_bytes());
    }
    if quality != 0 {
        out.push(KEY_QUALITY);
        encode_varint(quality, out);
    }
    match &r.value {
        None => {}
        Some(Value::DoubleValue(d)) => {
            out.push(KEY_DOUBLE);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Some(Value::IntValue(i)) => {
            out.push(KEY_INT);
            encode_varint(zigzag(*i), out);
        }
        Some(Value::BoolValue(b)) => {
            out.push(KEY_BOOL);
            out.push(u8::from(*b));
        }
        Some(Value::StringValue(s)) => {
            out.push(KEY_STRING);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Some(Value::BytesValue(b)) => {
            out.push(KEY_BYTES);
            encode_varint(b.len() as u64, out);
            out.extend_from_slice(b);
        }
    }
}

fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceHandle;

    fn reading(tag: u32, time: i64, quality: Quality, value: Option<Value>) -> Reading {
        Reading {
            device: DeviceHandle(0),
            tag,
            time,
            quality,
            value,
        }
    }

    #[test]
    fn hand_encoded_batches_decode_to_what_prost_would_build() {
        let values = [
            Some(Value::DoubleValue(-1.5)),
            Some(Value::DoubleValue(0.0)),
            Some(Value::IntValue(i64::MIN)),
            Some(Value::IntValue(0)),
            Some(Value::IntValue(300)),
            Some(Value::BoolValue(false)),
            Some(Value::StringValue("温度 ok".into())),
            Some(Value::StringValue(String::new())),
            Some(Value::BytesValue(vec![0, 255, 7])),
            None,
        ];
        let mut builder = BatchBuilder::new(Some(UtcOffset::default()));
        let mut expected = proto::Batch::default();
        let status = proto::DeviceStatus {
            device_id: "b".into(),
            state: proto::device_status::State::Online as i32,
            reason: "up".into(),
            time_unix_nano: 5,
        };
        builder.status(status.clone());
        expected.statuses.push(status);
        let mut telemetry = vec![
            proto::DeviceTelemetry {
                device_id: "dev-a".into(),
                points: vec![],
            },
            proto::DeviceTelemetry {
                device_id: "b".into(),
                points: vec![],
            },
        ];
        for (i, value) in values.iter().enumerate() {
            let device = (i % 2) as u32;
            let id = &telemetry[device as usize].device_id.clone();
            let quality = if value.is_none() {
                Quality::Bad
            } else if i == 4 {
                Quality::Uncertain
            } else {
                Quality::Good
            };
            let time = if i == 3 {
                0
            } else {
                1_700_000_000_000_000_000 + i as i64
            };
            // Ids 0 (left out on the wire), 1-byte and 2-byte varints.
            let tag = [0, 1, 127, 128, 300][i % 5];
            builder.point(device, id, &reading(tag, time, quality, value.clone()));
            telemetry[device as usize].points.push(proto::Point {
                tag: String::new(),
                tag_id: tag,
                time_unix_nano: time as u64,
                quality: quality as i32,
                value: value.clone(),
            });
        }
        expected.telemetry = telemetry;
        assert_eq!(builder.points(), values.len());
        let mut ledger = Vec::new();
        let ids = ["dev-a", "b"];
        let bytes = builder.seal(
            |d| ids.get(d as usize).copied(),
            |id, day, n| ledger.push((id.to_owned(), day, n)),
        );
        let decoded = proto::Batch::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, expected);
        let good: u64 = ledger.iter().map(|(_, _, n)| n).sum();
        assert_eq!(
            good,
            values.len() as u64 - 1,
            "the BAD point is not in the ledger"
        );
        assert!(builder.is_empty());

        // The builder is reused: the next batch holds only its own points.
        builder.point(
            1,
            "b",
            &reading(2, 9, Quality::Good, Some(Value::BoolValue(true))),
        );
        let bytes = builder.seal(|d| ids.get(d as usize).copied(), |_, _, _| {});
        let decoded = proto::Batch::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.telemetry.len(), 1);
        assert_eq!(decoded.telemetry[0].points.len(), 1);
        assert!(decoded.statuses.is_empty());
    }
}
