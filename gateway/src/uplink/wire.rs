//! The uplink's gRPC codec: batches go out as the bytes the spool holds.
//!
//! A spooled batch is already an encoded `Batch` (without its sequence, see
//! [`crate::normalize`]). Decoding it into a `proto::Batch` only to have
//! prost encode it again costs a `String` per point and two passes over
//! every byte; instead [`Outgoing::Batch`] writes the `GatewayMessage`
//! envelope (field 2), the `Batch.sequence` field (1) and then the spooled
//! bytes as they are. Protobuf lets fields come in any order, so the
//! registry decodes exactly the `Batch` prost would have sent. Replies
//! (`RegistryMessage`) are decoded by prost.

use bytes::BufMut;
use fieldlink_model::proto::{GatewayMessage, Hello, RegistryMessage, gateway_message};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// `GatewayMessage.batch`, field 2, length-delimited.
const KEY_GATEWAY_BATCH: u8 = (2 << 3) | 2;
/// `Batch.sequence`, field 1, varint.
const KEY_SEQUENCE: u8 = 1 << 3;

/// One message of the gateway's side of the stream.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// The stream's Hello.
    Hello(Hello),
    /// A spooled batch: its sequence and its encoding as spooled.
    Batch {
        /// Sequence in its stream.
        sequence: u64,
        /// An encoded `Batch` without a sequence.
        payload: Vec<u8>,
    },
}

impl Outgoing {
    /// Writes the message as an encoded `GatewayMessage`.
    fn encode(&self, out: &mut impl BufMut) {
        match self {
            Outgoing::Hello(hello) => {
                let message = GatewayMessage {
                    body: Some(gateway_message::Body::Hello(hello.clone())),
                };
                // EncodeBuf grows: encoding cannot run out of room.
                let _ = message.encode(out);
            }
            Outgoing::Batch { sequence, payload } => {
                let sequence_len = if *sequence == 0 {
                    0
                } else {
                    1 + encoded_len_varint(*sequence)
                };
                let inner = sequence_len + payload.len();
                out.put_u8(KEY_GATEWAY_BATCH);
                encode_varint(inner as u64, out);
                if *sequence != 0 {
                    out.put_u8(KEY_SEQUENCE);
                    encode_varint(*sequence, out);
                }
                out.put_slice(payload);
            }
        }
    }
}

/// Encodes [`Outgoing`], decodes `RegistryMessage`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UplinkCodec;

impl Codec for UplinkCodec {
    type Encode = Outgoing;
    type Decode = RegistryMessage;
    type Encoder = OutgoingEncoder;
    type Decoder = ReplyDecoder;

    fn encoder(&mut self) -> OutgoingEncoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> ReplyDecoder {
        ReplyDecoder
    }
}

/// The encoding half of [`UplinkCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

/// The decoding half of [`UplinkCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplyDecoder;

impl Decoder for ReplyDecoder {
    type Item = RegistryMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RegistryMessage>, Status> {
        RegistryMessage::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use fieldlink_model::proto::{self, Point, point::Value};

    use super::*;

    fn encoded(message: &Outgoing) -> Vec<u8> {
        let mut out = Vec::new();
        message.encode(&mut out);
        out
    }

    #[test]
    fn a_spooled_batch_goes_out_as_prost_would_send_it() {
        let batch = proto::Batch {
            sequence: 0,
            statuses: vec![proto::DeviceStatus {
                device_id: "d".into(),
                state: 1,
                reason: "up".into(),
                time_unix_nano: 7,
            }],
            telemetry: vec![proto::DeviceTelemetry {
                device_id: "d".into(),
                points: vec![Point {
                    tag: String::new(),
                    tag_id: 4,
                    time_unix_nano: 9,
                    quality: 0,
                    value: Some(Value::IntValue(-3)),
                }],
            }],
            ..Default::default()
        };
        let payload = batch.encode_to_vec();
        for sequence in [0, 1, 300, u64::MAX] {
            let bytes = encoded(&Outgoing::Batch {
                sequence,
                payload: payload.clone(),
            });
            let decoded = GatewayMessage::decode(bytes.as_slice()).unwrap();
            let expected = GatewayMessage {
                body: Some(gateway_message::Body::Batch(proto::Batch {
                    sequence,
                    ..batch.clone()
                })),
            };
            assert_eq!(decoded, expected, "sequence {sequence}");
        }
        // An empty batch too (a sealed batch is never empty, but still).
        let bytes = encoded(&Outgoing::Batch {
            sequence: 5,
            payload: Vec::new(),
        });
        let decoded = GatewayMessage::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            decoded.body,
            Some(gateway_message::Body::Batch(proto::Batch {
                sequence: 5,
                ..Default::default()
            }))
        );
    }

    #[test]
    fn the_hello_is_prost_encoded() {
        let hello = Hello {
            gateway_id: "gw".into(),
            stream_id: "s".into(),
            software_version: "1".into(),
            protocols: vec!["modbus-tcp".into()],
        };
        let bytes = encoded(&Outgoing::Hello(hello.clone()));
        let expected = GatewayMessage {
            body: Some(gateway_message::Body::Hello(hello)),
        }
        .encode_to_vec();
        assert_eq!(bytes, expected);
    }
}
