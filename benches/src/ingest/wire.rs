//! The bench's side of the wire: telemetry batches pre-encoded once as
//! [`Template`]s, and a [`BenchCodec`] that writes them into tonic's buffer
//! with the sequence number spliced in front and the current time patched
//! over every point's timestamp.
//!
//! A telemetry `GatewayMessage` is written as
//! `0x12 len | 0x08 sequence | template body` where the body is the
//! concatenated `Batch.telemetry` fields (`0x22 len DeviceTelemetry`):
//! protobuf merges the fields of one message however they are split, so the
//! registry decodes one `Batch { sequence, telemetry }`. Timestamps are
//! `fixed64`, so patching them never changes a length.

use std::ops::Range;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use fieldlink_model::proto::RegistryMessage;
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Most points a device reports per telemetry batch (one per tag).
pub(crate) const MAX_POINTS_PER_DEVICE: usize = 10;

/// The tag table every bench device announces: a point of tag `i` carries
/// id `i` on the wire.
pub(crate) const TAGS: [&str; MAX_POINTS_PER_DEVICE] = [
    "temp", "pres", "flow", "rpm0", "amps", "volt", "kwat", "vibr", "levl", "stat",
];

/// Key of `GatewayMessage.batch` (field 2, length-delimited).
const KEY_GATEWAY_BATCH: u8 = 0x12;
/// Key of `Batch.sequence` (field 1, varint).
const KEY_BATCH_SEQUENCE: u8 = 0x08;
/// Key of `Batch.telemetry` (field 4, length-delimited).
const KEY_BATCH_TELEMETRY: u8 = 0x22;
/// Key of `DeviceTelemetry.device_id` (field 1, length-delimited).
const KEY_TELEMETRY_DEVICE_ID: u8 = 0x0a;
/// Key of `DeviceTelemetry.points` (field 2, length-delimited).
const KEY_TELEMETRY_POINTS: u8 = 0x12;
/// Key of `Point.tag_id` (field 9, varint).
const KEY_POINT_TAG_ID: u8 = 0x48;
/// Key of `Point.time_unix_nano` (field 2, fixed64).
const KEY_POINT_TIME: u8 = 0x11;
/// Key of `Point.double_value` (field 4, fixed64).
const KEY_POINT_DOUBLE: u8 = 0x21;

/// The telemetry of a run of consecutive devices, encoded once.
#[derive(Debug)]
pub(crate) struct Template {
    /// Concatenated `Batch.telemetry` fields.
    body: Bytes,
    /// Where each point's 8 timestamp bytes start in `body`, ascending.
    stamps: Box<[u32]>,
    /// The stream-local indexes of the devices covered.
    pub(crate) devices: Range<u32>,
}

impl Template {
    /// Encodes `points_per_device` points (1 to [`MAX_POINTS_PER_DEVICE`],
    /// clamped) for each device of `devices`, whose ids `device_id` gives.
    ///
    /// # Panics
    /// Never in practice: a body over 4 GiB (far above any gRPC limit) would.
    pub(crate) fn build(
        devices: Range<u32>,
        points_per_device: usize,
        device_id: impl Fn(u32) -> String,
    ) -> Self {
        let tags = 0..points_per_device.clamp(1, MAX_POINTS_PER_DEVICE) as u32;
        let count = devices.len();
        let mut body = Vec::with_capacity(count * (30 + 22 * tags.len()));
        let mut stamps = Vec::with_capacity(count * tags.len());
        for local in devices.clone() {
            let id = device_id(local);
            let points_len: usize = tags.clone().map(|tag| 1 + 1 + point_len(tag)).sum();
            let telemetry_len = 1 + encoded_len_varint(id.len() as u64) + id.len() + points_len;
            body.push(KEY_BATCH_TELEMETRY);
            encode_varint(telemetry_len as u64, &mut body);
            body.push(KEY_TELEMETRY_DEVICE_ID);
            encode_varint(id.len() as u64, &mut body);
            body.extend_from_slice(id.as_bytes());
            for tag in tags.clone() {
                body.push(KEY_TELEMETRY_POINTS);
                encode_varint(point_len(tag) as u64, &mut body);
                // proto3 leaves a zero id out, as prost does.
                if tag != 0 {
                    body.push(KEY_POINT_TAG_ID);
                    encode_varint(u64::from(tag), &mut body);
                }
                body.push(KEY_POINT_TIME);
                // A body this large is refused long before by gRPC limits.
                stamps.push(u32::try_from(body.len()).expect("template under 4 GiB"));
                body.put_u64_le(0);
                body.push(KEY_POINT_DOUBLE);
                let value = f64::from(local % 1000) + f64::from(tag) / 10.0;
                body.put_f64_le(value);
            }
        }
        Template {
            body: Bytes::from(body),
            stamps: stamps.into_boxed_slice(),
            devices,
        }
    }

    /// Points in the template.
    pub(crate) fn points(&self) -> u64 {
        self.stamps.len() as u64
    }

    /// Bytes of the encoded `GatewayMessage` for `sequence`.
    pub(crate) fn message_len(&self, sequence: u64) -> usize {
        let inner = self.inner_len(sequence);
        1 + encoded_len_varint(inner as u64) + inner
    }

    fn inner_len(&self, sequence: u64) -> usize {
        1 + encoded_len_varint(sequence) + self.body.len()
    }

    /// Writes the `GatewayMessage` of `sequence` with every point stamped
    /// `time_unix_nano`.
    fn write(&self, sequence: u64, time_unix_nano: u64, dst: &mut impl BufMut) {
        dst.put_u8(KEY_GATEWAY_BATCH);
        encode_varint(self.inner_len(sequence) as u64, dst);
        dst.put_u8(KEY_BATCH_SEQUENCE);
        encode_varint(sequence, dst);
        let stamp = time_unix_nano.to_le_bytes();
        let mut at = 0usize;
        for &offset in self.stamps.iter() {
            let offset = offset as usize;
            dst.put_slice(&self.body[at..offset]);
            dst.put_slice(&stamp);
            at = offset + stamp.len();
        }
        dst.put_slice(&self.body[at..]);
    }
}

/// Encoded length of a point of tag id `tag`: id, time and a double value.
fn point_len(tag: u32) -> usize {
    let id = if tag == 0 {
        0
    } else {
        1 + encoded_len_varint(u64::from(tag))
    };
    id + 9 + 9
}

/// A message for the registry.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A complete, encoded `GatewayMessage` (hello, announce batches).
    Encoded(Bytes),
    /// A telemetry batch from a template.
    Telemetry {
        /// Batch sequence number.
        sequence: u64,
        /// The points.
        template: Arc<Template>,
        /// Timestamp written on every point.
        time_unix_nano: u64,
    },
}

impl Outgoing {
    /// Encodes `message` once.
    pub(crate) fn encode(message: &impl Message) -> Self {
        Outgoing::Encoded(Bytes::from(message.encode_to_vec()))
    }

    fn len(&self) -> usize {
        match self {
            Outgoing::Encoded(bytes) => bytes.len(),
            Outgoing::Telemetry {
                sequence, template, ..
            } => template.message_len(*sequence),
        }
    }
}

/// gRPC codec: writes [`Outgoing`] as is, decodes `RegistryMessage` with prost.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BenchCodec;

/// Encoder half of [`BenchCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BenchEncoder;

/// Decoder half of [`BenchCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BenchDecoder;

impl Codec for BenchCodec {
    type Encode = Outgoing;
    type Decode = RegistryMessage;
    type Encoder = BenchEncoder;
    type Decoder = BenchDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BenchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        BenchDecoder
    }
}

impl Encoder for BenchEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        match item {
            Outgoing::Encoded(bytes) => dst.put_slice(&bytes),
            Outgoing::Telemetry {
                sequence,
                template,
                time_unix_nano,
            } => template.write(sequence, time_unix_nano, dst),
        }
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        // Batches are tens of KiB: start big, hand hyper ~256 KiB at a time.
        BufferSettings::new(512 * 1024, 256 * 1024)
    }
}

impl Decoder for BenchDecoder {
    type Item = RegistryMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RegistryMessage>, Status> {
        RegistryMessage::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable registry message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlink_model::proto::{GatewayMessage, gateway_message, point};

    #[test]
    fn a_template_decodes_as_one_batch_with_the_sequence_and_time() {
        let template = Template::build(3..6, MAX_POINTS_PER_DEVICE, |i| format!("dev-{i}"));
        assert_eq!(template.points(), 30);
        for sequence in [1u64, 127, 128, 1 << 40] {
            let mut buf = Vec::new();
            template.write(sequence, 1_795_656_600_000_000_000, &mut buf);
            assert_eq!(buf.len(), template.message_len(sequence));
            let message = GatewayMessage::decode(buf.as_slice()).expect("decodes");
            let Some(gateway_message::Body::Batch(batch)) = message.body else {
                panic!("not a batch: {message:?}");
            };
            assert_eq!(batch.sequence, sequence);
            let ids: Vec<_> = batch
                .telemetry
                .iter()
                .map(|t| t.device_id.as_str())
                .collect();
            assert_eq!(ids, ["dev-3", "dev-4", "dev-5"]);
            for t in &batch.telemetry {
                assert_eq!(t.points.len(), MAX_POINTS_PER_DEVICE);
                for (p, tag) in t.points.iter().zip(0u32..) {
                    assert_eq!(p.tag_id, tag);
                    assert!(p.tag.is_empty());
                    assert_eq!(p.time_unix_nano, 1_795_656_600_000_000_000);
                    assert!(matches!(p.value, Some(point::Value::DoubleValue(_))));
                }
            }
        }
    }

    #[test]
    fn one_point_per_device_makes_every_point_another_device() {
        let template = Template::build(0..4, 1, |i| format!("dev-{i}"));
        assert_eq!(template.points(), 4);
        let mut buf = Vec::new();
        template.write(7, 1_795_656_600_000_000_000, &mut buf);
        let message = GatewayMessage::decode(buf.as_slice()).expect("decodes");
        let Some(gateway_message::Body::Batch(batch)) = message.body else {
            panic!("not a batch: {message:?}");
        };
        assert_eq!(batch.telemetry.len(), 4);
        assert!(batch.telemetry.iter().all(|t| t.points.len() == 1));
    }
}
