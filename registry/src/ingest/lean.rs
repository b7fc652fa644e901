//! The registry's lean view of a `GatewayMessage`: what counting needs and
//! nothing more.
//!
//! Announces, statuses and retires are rare and decoded whole by prost.
//! Telemetry is the bulk of every batch; of each point the registry needs
//! only its time, its quality and its tag id (checked against the device's
//! announced table), so values are skipped unread and no `Point`, no
//! `DeviceTelemetry` and no `String` per point or per device is made. One
//! batch's telemetry is three flat vectors ([`Telemetry`]): the device ids
//! end to end, a run per device, and the points.
//!
//! The decoder follows protobuf's rules where they matter here: fields in
//! any order, unknown fields skipped, a repeated message field's
//! occurrences appended, a later scalar winning, two occurrences of the
//! same embedded message merged. A known field with the wrong wire type, a
//! length past the end, a device id that is not UTF-8 or a truncated
//! varint is a [`WireError`] naming the field.

use fieldlink_model::proto;
use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::error::WireError;

/// A decoded `GatewayMessage`.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// `GatewayMessage.hello`.
    Hello(proto::Hello),
    /// `GatewayMessage.batch`, lean.
    Batch(LeanBatch),
    /// A message with no body.
    Empty,
}

/// A `Batch` as the registry reads it.
#[derive(Debug, Default)]
pub(crate) struct LeanBatch {
    pub(crate) sequence: u64,
    pub(crate) announces: Vec<proto::DeviceAnnounce>,
    pub(crate) statuses: Vec<proto::DeviceStatus>,
    pub(crate) retires: Vec<proto::DeviceRetire>,
    pub(crate) telemetry: Telemetry,
}

/// The points of one batch, per device, times and qualities only.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    /// Every device id, end to end.
    ids: String,
    /// Per `DeviceTelemetry`, in wire order.
    runs: Vec<Run>,
    /// Every point, device after device.
    points: Vec<LeanPoint>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    id_start: usize,
    id_end: usize,
    points_start: usize,
    points_end: usize,
}

/// What the registry reads of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeanPoint {
    /// `Point.time_unix_nano`.
    pub(crate) time: u64,
    /// `Point.tag_id`.
    pub(crate) tag: u32,
    /// `Point.quality` (an unknown value is kept as sent).
    pub(crate) quality: i32,
    /// The point named its tag (`Point.tag`, the deprecated field batches
    /// spooled before the lean wire carry): its tag id is not checked.
    pub(crate) named: bool,
}

impl Telemetry {
    /// Each device's id and points, in wire order.
    pub(crate) fn devices(&self) -> impl Iterator<Item = (&str, &[LeanPoint])> {
        self.runs.iter().map(|r| {
            (
                // Runs index whole ids pushed as `str`: always in bounds and
                // on character boundaries.
                self.ids.get(r.id_start..r.id_end).unwrap_or(""),
                self.points.get(r.points_start..r.points_end).unwrap_or(&[]),
            )
        })
    }

    /// Devices in the batch (a device may come more than once).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }
}

/// Decodes one `GatewayMessage`.
///
/// # Errors
/// [`WireError`] naming the field that is malformed.
pub(crate) fn decode(mut buf: &[u8]) -> Result<Inbound, WireError> {
    let mut out = Inbound::Empty;
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf, "GatewayMessage")?;
        match field {
            1 => {
                let body = length_delimited(&mut buf, wire, "GatewayMessage.hello")?;
                let mut hello = match out {
                    Inbound::Hello(hello) => hello,
                    _ => proto::Hello::default(),
                };
                hello
                    .merge(body)
                    .map_err(|e| WireError::message("GatewayMessage.hello", e))?;
                out = Inbound::Hello(hello);
            }
            2 => {
                let body = length_delimited(&mut buf, wire, "GatewayMessage.batch")?;
                let mut batch = match out {
                    Inbound::Batch(batch) => batch,
                    _ => LeanBatch::default(),
                };
                decode_batch(body, &mut batch)?;
                out = Inbound::Batch(batch);
            }
            _ => skip(&mut buf, wire, field, "GatewayMessage")?,
        }
    }
    Ok(out)
}

fn decode_batch(mut buf: &[u8], batch: &mut LeanBatch) -> Result<(), WireError> {
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf, "Batch")?;
        match field {
            1 => batch.sequence = varint(&mut buf, wire, "Batch.sequence")?,
            2 => batch
                .announces
                .push(message(&mut buf, wire, "Batch.announces")?),
            3 => batch
                .statuses
                .push(message(&mut buf, wire, "Batch.statuses")?),
            4 => {
                let body = length_delimited(&mut buf, wire, "Batch.telemetry")?;
                decode_telemetry(body, &mut batch.telemetry)?;
            }
            5 => batch
                .retires
                .push(message(&mut buf, wire, "Batch.retires")?),
            _ => skip(&mut buf, wire, field, "Batch")?,
        }
    }
    Ok(())
}

fn decode_telemetry(mut buf: &[u8], out: &mut Telemetry) -> Result<(), WireError> {
    let points_start = out.points.len();
    let mut id: &[u8] = &[];
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf, "DeviceTelemetry")?;
        match field {
            1 => id = length_delimited(&mut buf, wire, "DeviceTelemetry.device_id")?,
            2 => {
                let body = length_delimited(&mut buf, wire, "DeviceTelemetry.points")?;
                out.points.push(decode_point(body)?);
            }
            _ => skip(&mut buf, wire, field, "DeviceTelemetry")?,
        }
    }
    let id = std::str::from_utf8(id).map_err(|_| WireError::Utf8 {
        field: "DeviceTelemetry.device_id",
    })?;
    let id_start = out.ids.len();
    out.ids.push_str(id);
    out.runs.push(Run {
        id_start,
        id_end: out.ids.len(),
        points_start,
        points_end: out.points.len(),
    });
    Ok(())
}

fn decode_point(mut buf: &[u8]) -> Result<LeanPoint, WireError> {
    let mut point = LeanPoint {
        time: 0,
        tag: 0,
        quality: 0,
        named: false,
    };
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf, "Point")?;
        match field {
            1 => {
                length_delimited(&mut buf, wire, "Point.tag")?;
                point.named = true;
            }
            2 => {
                expect(wire, WireType::SixtyFourBit, "Point.time_unix_nano")?;
                if buf.remaining() < 8 {
                    return Err(WireError::Truncated {
                        field: "Point.time_unix_nano",
                    });
                }
                point.time = buf.get_u64_le();
            }
            // An enum is an int32 on the wire: truncation is protobuf's rule.
            3 => point.quality = varint(&mut buf, wire, "Point.quality")? as i32,
            // Ids past u32 are in no table: rejected as unknown tags.
            9 => {
                let id = varint(&mut buf, wire, "Point.tag_id")?;
                point.tag = u32::try_from(id).unwrap_or(u32::MAX);
            }
            // The value (fields 4 to 8) and anything newer: not needed.
            _ => skip(&mut buf, wire, field, "Point")?,
        }
    }
    Ok(point)
}

fn key(buf: &mut &[u8], message: &'static str) -> Result<(u32, WireType), WireError> {
    decode_key(buf).map_err(|e| WireError::message(message, e))
}

fn expect(wire: WireType, want: WireType, field: &'static str) -> Result<(), WireError> {
    if wire == want {
        Ok(())
    } else {
        Err(WireError::WireType {
            field,
            got: wire as u8,
        })
    }
}

fn varint(buf: &mut &[u8], wire: WireType, field: &'static str) -> Result<u64, WireError> {
    expect(wire, WireType::Varint, field)?;
    decode_varint(buf).map_err(|_| WireError::Truncated { field })
}

/// The body of a length-delimited field, advancing `buf` past it.
fn length_delimited<'a>(
    buf: &mut &'a [u8],
    wire: WireType,
    field: &'static str,
) -> Result<&'a [u8], WireError> {
    expect(wire, WireType::LengthDelimited, field)?;
    let len = decode_varint(buf).map_err(|_| WireError::Truncated { field })?;
    let len = usize::try_from(len).map_err(|_| WireError::Truncated { field })?;
    if buf.len() < len {
        return Err(WireError::Truncated { field });
    }
    let (body, rest) = buf.split_at(len);
    *buf = rest;
    Ok(body)
}

fn message<M: Message + Default>(
    buf: &mut &[u8],
    wire: WireType,
    field: &'static str,
) -> Result<M, WireError> {
    let body = length_delimited(buf, wire, field)?;
    M::decode(body).map_err(|e| WireError::message(field, e))
}

fn skip(
    buf: &mut &[u8],
    wire: WireType,
    field: u32,
    message: &'static str,
) -> Result<(), WireError> {
    skip_field(wire, field, buf, DecodeContext::default())
        .map_err(|e| WireError::message(message, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlink_model::proto::{GatewayMessage, gateway_message, point::Value};
    use proptest::prelude::*;

    fn point(tag_id: u32, time: u64, quality: i32, value: Option<Value>) -> proto::Point {
        proto::Point {
            tag: String::new(),
            tag_id,
            time_unix_nano: time,
            quality,
            value,
        }
    }

    fn batch_message(batch: proto::Batch) -> Vec<u8> {
        GatewayMessage {
            body: Some(gateway_message::Body::Batch(batch)),
        }
        .encode_to_vec()
    }

    fn lean(bytes: &[u8]) -> LeanBatch {
        match decode(bytes).expect("decodes") {
            Inbound::Batch(batch) => batch,
            other => panic!("not a batch: {other:?}"),
        }
    }

    #[test]
    fn a_batch_reads_as_prost_wrote_it_without_the_values() {
        let announce = proto::DeviceAnnounce {
            device_id: "d1".into(),
            tags: vec![proto::TagDescriptor {
                name: "t".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let batch = proto::Batch {
            sequence: 300,
            announces: vec![announce.clone()],
            statuses: vec![proto::DeviceStatus {
                device_id: "d1".into(),
                state: 1,
                ..Default::default()
            }],
            telemetry: vec![
                proto::DeviceTelemetry {
                    device_id: "d1".into(),
                    points: vec![
                        point(0, 5, 0, Some(Value::DoubleValue(1.0))),
                        point(200, 6, 2, None),
                        point(3, 7, 1, Some(Value::StringValue("x".repeat(300)))),
                    ],
                },
                proto::DeviceTelemetry {
                    device_id: "温度-2".into(),
                    points: vec![proto::Point {
                        tag: "legacy".into(),
                        ..point(0, 9, 0, Some(Value::IntValue(-4)))
                    }],
                },
            ],
            retires: vec![proto::DeviceRetire {
                device_id: "old".into(),
                reason: "gone".into(),
            }],
        };
        let got = lean(&batch_message(batch));
        assert_eq!(got.sequence, 300);
        assert_eq!(got.announces, [announce]);
        assert_eq!(got.statuses.len(), 1);
        assert_eq!(got.retires[0].device_id, "old");
        let devices: Vec<_> = got.telemetry.devices().collect();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].0, "d1");
        let p = |tag, time, quality, named| LeanPoint {
            time,
            tag,
            quality,
            named,
        };
        assert_eq!(
            devices[0].1,
            [p(0, 5, 0, false), p(200, 6, 2, false), p(3, 7, 1, false)]
        );
        assert_eq!(devices[1].0, "温度-2");
        assert_eq!(devices[1].1, [p(0, 9, 0, true)]);
    }

    #[test]
    fn split_and_reordered_fields_merge_as_protobuf_says() {
        // Two `batch` fields (the uplink writes the sequence apart from the
        // spooled body), the device id after its points.
        let mut bytes = batch_message(proto::Batch {
            sequence: 7,
            ..Default::default()
        });
        let mut telemetry = Vec::new();
        let p = point(1, 11, 0, Some(Value::BoolValue(true))).encode_to_vec();
        telemetry.push(0x12);
        prost::encoding::encode_varint(p.len() as u64, &mut telemetry);
        telemetry.extend_from_slice(&p);
        telemetry.extend_from_slice(&[0x0a, 1, b'z']);
        let mut body = vec![0x22];
        prost::encoding::encode_varint(telemetry.len() as u64, &mut body);
        body.extend_from_slice(&telemetry);
        bytes.push(0x12);
        prost::encoding::encode_varint(body.len() as u64, &mut bytes);
        bytes.extend_from_slice(&body);
        let got = lean(&bytes);
        assert_eq!(got.sequence, 7);
        let devices: Vec<_> = got.telemetry.devices().collect();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].0, "z");
        assert_eq!(devices[0].1[0].tag, 1);
        assert_eq!(devices[0].1[0].time, 11);
    }

    #[test]
    fn malformed_messages_name_the_field() {
        let good = batch_message(proto::Batch {
            sequence: 1,
            telemetry: vec![proto::DeviceTelemetry {
                device_id: "d".into(),
                points: vec![point(1, 5, 0, Some(Value::DoubleValue(1.0)))],
            }],
            ..Default::default()
        });
        // Cut anywhere inside: an error, never a panic, never a batch that
        // silently lost its tail.
        for cut in 1..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A time that is not fixed64.
        let bad_time = [0x12, 8, 0x22, 6, 0x12, 4, 0x10, 1, 0x48, 1];
        let e = decode(&bad_time).unwrap_err();
        assert!(e.to_string().contains("Point.time_unix_nano"), "{e}");
        // A device id that is not UTF-8.
        let bad_id = [0x12, 5, 0x22, 3, 0x0a, 1, 0xff];
        let e = decode(&bad_id).unwrap_err();
        assert!(e.to_string().contains("DeviceTelemetry.device_id"), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn times_qualities_and_ids_survive(
            devices in proptest::collection::vec(
                ("[a-z0-9-]{1,12}", proptest::collection::vec((any::<u32>(), any::<u64>(), 0..3i32), 0..8)),
                0..6,
            ),
            sequence in any::<u64>(),
        ) {
            let batch = proto::Batch {
                sequence,
                telemetry: devices
                    .iter()
                    .map(|(id, points)| proto::DeviceTelemetry {
                        device_id: id.clone(),
                        points: points
                            .iter()
                            .map(|&(tag, time, q)| point(tag, time, q, Some(Value::DoubleValue(0.5))))
                            .collect(),
                    })
                    .collect(),
                ..Default::default()
            };
            let got = lean(&batch_message(batch));
            prop_assert_eq!(got.sequence, sequence);
            prop_assert_eq!(got.telemetry.len(), devices.len());
            for ((id, points), (got_id, got_points)) in devices.iter().zip(got.telemetry.devices()) {
                prop_assert_eq!(id.as_str(), got_id);
                let want: Vec<_> = points
                    .iter()
                    .map(|&(tag, time, quality)| LeanPoint { time, tag, quality, named: false })
                    .collect();
                prop_assert_eq!(want.as_slice(), got_points);
            }
        }
    }
}
