//! Bad input: each gets a clear error, and nothing already accepted is lost.

use bytes::{Buf, BufMut};
use fieldlink_model::proto::{
    self, GatewayMessage, RegistryMessage, RejectReason, gateway_message, registry_message::Body,
};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use crate::support::*;

/// A codec that sends raw bytes as messages, so tests can send malformed ones.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = RegistryMessage;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = RegistryMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RegistryMessage>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        RegistryMessage::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

fn encoded(body: gateway_message::Body) -> Vec<u8> {
    GatewayMessage { body: Some(body) }.encode_to_vec()
}

/// Opens a raw stream; returns the sender of raw messages and the responses.
async fn raw_stream(
    url: &str,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tonic::Streaming<RegistryMessage>,
) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {PUBLIC_TOKEN}").parse().unwrap(),
    );
    let path = http::uri::PathAndQuery::from_static("/fieldlink.v1.Ingest/Stream");
    let response = grpc.streaming(request, path, RawCodec).await.unwrap();
    (tx, response.into_inner())
}

fn hello() -> Vec<u8> {
    encoded(gateway_message::Body::Hello(proto::Hello {
        gateway_id: "raw-gw".into(),
        stream_id: "s".into(),
        software_version: "raw".into(),
        protocols: vec![],
    }))
}

#[tokio::test]
async fn unknown_or_missing_token_is_refused_and_nothing_is_stored() {
    let registry = TestRegistry::start("").await;
    let err = Gateway::connect(&registry.grpc, "not-a-tenant-token-at-all", "gw", "s")
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("unknown tenant token"), "{err}");
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "registered", "total", ""), 0);
    let (_, metrics) = get_text(&format!("{}/metrics", registry.http)).await;
    assert!(metrics.contains("fieldlink_registry_streams_unauthenticated_total 1"));
    registry.stop().await;
}

#[tokio::test]
async fn malformed_protobuf_ends_the_stream_and_keeps_what_was_acked() {
    let registry = TestRegistry::start("").await;
    let (tx, mut rx) = raw_stream(&registry.grpc).await;
    tx.send(hello()).await.unwrap();
    assert!(matches!(
        rx.message().await.unwrap().unwrap().body,
        Some(Body::HelloAck(_))
    ));
    tx.send(encoded(gateway_message::Body::Batch(proto::Batch {
        sequence: 1,
        announces: vec![announce("kept-1", "operating", "power", "modbus-tcp")],
        ..Default::default()
    })))
    .await
    .unwrap();
    assert!(matches!(
        rx.message().await.unwrap().unwrap().body,
        Some(Body::Ack(_))
    ));
    // Field 2 (batch) claims 100 bytes but only 3 follow.
    tx.send(vec![0x12, 100, 1, 2, 3]).await.unwrap();
    let err = rx.message().await.expect_err("stream fails");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message()
            .contains("`GatewayMessage.batch` is truncated"),
        "{err}"
    );
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "registered", "total", ""), 1);
    let (_, metrics) = get_text(&format!("{}/metrics", registry.http)).await;
    assert!(
        metrics.contains("fieldlink_registry_stream_errors_total 1"),
        "{metrics}"
    );
    registry.stop().await;
}

#[tokio::test]
async fn a_malformed_point_names_its_field_and_the_acked_points_stay_counted() {
    let registry = TestRegistry::start("").await;
    let (tx, mut rx) = raw_stream(&registry.grpc).await;
    tx.send(hello()).await.unwrap();
    assert!(matches!(
        rx.message().await.unwrap().unwrap().body,
        Some(Body::HelloAck(_))
    ));
    tx.send(encoded(gateway_message::Body::Batch(proto::Batch {
        sequence: 1,
        announces: vec![announce("kept-1", "operating", "power", "modbus-tcp")],
        telemetry: vec![points("kept-1", &[now()])],
        ..Default::default()
    })))
    .await
    .unwrap();
    let Some(Body::Ack(ack)) = rx.message().await.unwrap().unwrap().body else {
        panic!("no ack");
    };
    assert_eq!(ack.accepted_points, 1);
    // Batch 2: device `kept-1`, one point whose time is a varint, not fixed64.
    let point = [0x10, 1];
    let mut telemetry = vec![0x0a, 6];
    telemetry.extend_from_slice(b"kept-1");
    telemetry.extend_from_slice(&[0x12, point.len() as u8]);
    telemetry.extend_from_slice(&point);
    let mut batch = vec![0x08, 2, 0x22, telemetry.len() as u8];
    batch.extend_from_slice(&telemetry);
    let mut message = vec![0x12, batch.len() as u8];
    message.extend_from_slice(&batch);
    tx.send(message).await.unwrap();
    let err = rx.message().await.expect_err("stream fails");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("`Point.time_unix_nano`"), "{err}");
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "reporting", "total", ""), 1);
    registry.stop().await;
}

#[tokio::test]
async fn points_with_tag_ids_outside_the_announced_table_are_rejected_by_name() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw", "s")
        .await
        .unwrap();
    let mut two_tags = announce("two-tags", "operating", "power", "modbus-tcp");
    two_tags.tags.push(proto::TagDescriptor {
        name: "second".into(),
        r#type: "int".into(),
        unit: "rpm".into(),
    });
    gw.send(announce_batch(vec![
        two_tags,
        announce("one-tag", "operating", "power", "modbus-tcp"),
    ]))
    .await
    .unwrap();
    let t = now();
    let mut bad = points("one-tag", &[t, t]);
    bad.points[1].tag_id = 1;
    let mut good = points("two-tags", &[t, t]);
    good.points[1].tag_id = 1;
    // A point that names its tag (as spooled before the lean wire) is
    // counted without an id check.
    let mut legacy = points("one-tag", &[t]);
    legacy.points[0].tag = "value".into();
    legacy.points[0].tag_id = 0;
    let ack = gw.send(telemetry_batch(vec![bad, good])).await.unwrap();
    assert_eq!((ack.accepted_points, ack.rejected_points), (2, 2));
    assert_eq!(ack.rejections.len(), 1);
    let r = &ack.rejections[0];
    assert_eq!(
        (r.device_id.as_str(), r.reason(), r.count),
        ("one-tag", RejectReason::UnknownTag, 2)
    );
    assert!(
        r.detail
            .contains("tag id 1 is not in its announced table of 1 tag(s)"),
        "{}",
        r.detail
    );
    let ack = gw.send(telemetry_batch(vec![legacy])).await.unwrap();
    assert_eq!((ack.accepted_points, ack.rejected_points), (1, 0));
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "reporting", "total", ""), 2);
    let (_, metrics) = get_text(&format!("{}/metrics", registry.http)).await;
    assert!(
        metrics.contains("fieldlink_registry_rejected_total{reason=\"unknown_tag\"} 2"),
        "{metrics}"
    );
    registry.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_with_the_limit_named() {
    let registry = TestRegistry::start("[ingest]\nmax_message_bytes = 4096\n").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw", "s")
        .await
        .unwrap();
    assert_eq!(gw.hello_ack.max_message_bytes, 4096);
    gw.send(announce_batch(vec![announce(
        "kept-1",
        "operating",
        "power",
        "modbus-tcp",
    )]))
    .await
    .unwrap();
    let t = now();
    let many: Vec<i64> = (0..1000).map(|i| t - i).collect();
    gw.push(proto::Batch {
        sequence: 2,
        telemetry: vec![points("kept-1", &many)],
        ..Default::default()
    })
    .await;
    let err = gw.ack().await.expect_err("refused");
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    assert!(err.message().contains("4096"), "{err}");
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "registered", "total", ""), 1);
    assert_eq!(figure(&s, "reporting", "total", ""), 0);
    registry.stop().await;
}

#[tokio::test]
async fn points_of_unannounced_devices_and_outside_the_window_are_rejected_with_reasons() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw", "s")
        .await
        .unwrap();
    gw.send(announce_batch(vec![announce(
        "known",
        "operating",
        "smelting",
        "opc-ua",
    )]))
    .await
    .unwrap();
    let t = now();
    let ack = gw
        .send(telemetry_batch(vec![
            points("ghost", &[t, t]),
            points("known", &[t, t - 8 * 86_400 * NANOS, t + 600 * NANOS]),
        ]))
        .await
        .unwrap();
    assert_eq!((ack.accepted_points, ack.rejected_points), (1, 4));
    let mut reasons: Vec<_> = ack
        .rejections
        .iter()
        .map(|r| (r.device_id.clone(), r.reason(), r.count))
        .collect();
    reasons.sort_by_key(|r| r.1 as i32);
    assert_eq!(
        reasons,
        [
            ("ghost".to_owned(), RejectReason::UnknownDevice, 2),
            ("known".to_owned(), RejectReason::TooOld, 1),
            ("known".to_owned(), RejectReason::InFuture, 1),
        ]
    );
    let ghost = ack
        .rejections
        .iter()
        .find(|r| r.device_id == "ghost")
        .unwrap();
    assert!(ghost.detail.contains("never announced"), "{}", ghost.detail);
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "reporting", "total", ""), 1);
    assert_eq!(
        figure(&s, "registered", "total", ""),
        1,
        "a point never registers a device"
    );
    let (_, metrics) = get_text(&format!("{}/metrics", registry.http)).await;
    for line in [
        "fieldlink_registry_rejected_total{reason=\"unknown_device\"} 2",
        "fieldlink_registry_rejected_total{reason=\"too_old\"} 1",
        "fieldlink_registry_rejected_total{reason=\"in_future\"} 1",
        "fieldlink_registry_points_accepted_total 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    registry.stop().await;
}

#[tokio::test]
async fn announces_with_unknown_codes_are_rejected_and_the_rest_applies() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw", "s")
        .await
        .unwrap();
    let ack = gw
        .send(announce_batch(vec![
            announce("good", "processing", "electronic", "modbus-tcp"),
            announce("bad-class", "factory", "electronic", "modbus-tcp"),
            announce("bad-category", "processing", "lasers", "modbus-tcp"),
            announce("wrong-class", "mobile", "robots", "modbus-tcp"),
            announce("bad-protocol", "processing", "robots", "profinet"),
            announce("", "processing", "robots", "modbus-tcp"),
        ]))
        .await
        .unwrap();
    let got: Vec<_> = ack
        .rejections
        .iter()
        .map(|r| (r.device_id.as_str(), r.reason()))
        .collect();
    assert_eq!(
        got,
        [
            ("bad-class", RejectReason::InvalidClass),
            ("bad-category", RejectReason::InvalidCategory),
            ("wrong-class", RejectReason::InvalidCategory),
            ("bad-protocol", RejectReason::InvalidProtocol),
            ("", RejectReason::InvalidDeviceId),
        ]
    );
    assert!(ack.rejections[0].detail.contains("unknown class `factory`"));
    assert!(
        ack.rejections[2]
            .detail
            .contains("belongs to class `processing`")
    );
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "registered", "total", ""), 1);
    registry.stop().await;
}

#[tokio::test]
async fn protocol_violations_end_the_stream_with_a_typed_error() {
    let registry = TestRegistry::start("").await;
    // A batch before the hello.
    let (tx, mut rx) = raw_stream(&registry.grpc).await;
    tx.send(encoded(gateway_message::Body::Batch(
        proto::Batch::default(),
    )))
    .await
    .unwrap();
    match rx.message().await.unwrap().unwrap().body {
        Some(Body::Error(e)) => {
            assert_eq!(e.code(), proto::error::Code::Protocol);
            assert!(e.message.contains("first message must be a Hello"));
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(
        rx.message().await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // A sequence that goes backwards on one stream.
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw", "s")
        .await
        .unwrap();
    gw.send(announce_batch(vec![announce(
        "a",
        "other",
        "safety",
        "modbus-tcp",
    )]))
    .await
    .unwrap();
    gw.push(proto::Batch {
        sequence: 1,
        ..Default::default()
    })
    .await;
    let err = gw.ack().await.unwrap_err();
    assert!(err.message().contains("Sequence"), "{err}");
    assert!(
        err.message().contains("not above the previous one (1)"),
        "{err}"
    );
    assert_eq!(
        figure(&registry.summary(None).await, "registered", "total", ""),
        1
    );
    registry.stop().await;
}
