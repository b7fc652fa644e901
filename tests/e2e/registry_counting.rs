//! The counting definitions of DESIGN.md, exercised over the real stream.

use fieldlink_model::{Day, UtcOffset};

use crate::support::*;

fn today() -> Day {
    Day::today(UtcOffset::CHINA)
}

#[tokio::test]
async fn a_device_reporting_many_points_counts_once_a_day() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s1")
        .await
        .unwrap();
    let ack = gw
        .send(announce_batch(vec![
            announce("cnc-1", "processing", "machine-tools", "modbus-tcp"),
            announce("cnc-2", "processing", "machine-tools", "modbus-tcp"),
        ]))
        .await
        .unwrap();
    assert!(ack.rejections.is_empty(), "{ack:?}");
    let t = now();
    for round in 0..5 {
        let ack = gw
            .send(telemetry_batch(vec![points(
                "cnc-1",
                &[t - round, t - 100 - round, t - 200],
            )]))
            .await
            .unwrap();
        assert_eq!(ack.accepted_points, 3);
    }
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "reporting", "total", ""), 1);
    assert_eq!(figure(&s, "reporting", "by_class", "processing"), 1);
    assert_eq!(figure(&s, "registered", "total", ""), 2);
    let (_, days) = registry.get("/api/v1/devices/cnc-1/days").await;
    assert_eq!(days["days"][0]["points"], 15);
    assert_eq!(days["days"][0]["day"], today().to_string());
    registry.stop().await;
}

#[tokio::test]
async fn a_device_reporting_on_two_days_counts_on_both() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s1")
        .await
        .unwrap();
    gw.send(announce_batch(vec![announce(
        "pump-1",
        "operating",
        "motive-power",
        "modbus-tcp",
    )]))
    .await
    .unwrap();
    let t = now();
    let ack = gw
        .send(telemetry_batch(vec![points(
            "pump-1",
            &[t, t - 86_400 * NANOS],
        )]))
        .await
        .unwrap();
    assert_eq!(ack.accepted_points, 2);
    let yesterday = today().plus(-1).to_string();
    for day in [today().to_string(), yesterday.clone()] {
        let s = registry.summary(Some(&day)).await;
        assert_eq!(figure(&s, "reporting", "total", ""), 1, "{day}");
        assert_eq!(figure(&s, "reporting", "by_class", "operating"), 1, "{day}");
    }
    let s = registry.summary(Some(&today().plus(-2).to_string())).await;
    assert_eq!(figure(&s, "reporting", "total", ""), 0);
    registry.stop().await;
}

#[tokio::test]
async fn day_boundaries_follow_the_configured_offset() {
    // A zone far from UTC, so that local midnight is not UTC midnight.
    let registry = TestRegistry::start("[time]\nutc_offset = \"-05:00\"\n").await;
    let offset: UtcOffset = "-05:00".parse().unwrap();
    let today = Day::today(offset);
    let midnight = today.start_unix_nanos(offset);
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s1")
        .await
        .unwrap();
    gw.send(announce_batch(vec![
        announce("late", "mobile", "logistics", "opc-ua"),
        announce("early", "mobile", "logistics", "opc-ua"),
    ]))
    .await
    .unwrap();
    // 23:59:59 yesterday and 00:00:00 today, local time.
    let ack = gw
        .send(telemetry_batch(vec![
            points("late", &[midnight - NANOS]),
            points("early", &[midnight]),
        ]))
        .await
        .unwrap();
    assert_eq!(ack.accepted_points, 2);
    let s = registry.summary(Some(&today.to_string())).await;
    assert_eq!(s["timezone"], "-05:00");
    assert_eq!(figure(&s, "reporting", "total", ""), 1);
    let s = registry.summary(Some(&today.plus(-1).to_string())).await;
    assert_eq!(figure(&s, "reporting", "total", ""), 1);
    let (_, late) = registry.get("/api/v1/devices/late/days").await;
    assert_eq!(late["days"][0]["day"], today.plus(-1).to_string());
    assert!(
        late["days"][0]["last_point"]
            .as_str()
            .unwrap()
            .ends_with("T23:59:59.000-05:00")
    );
    let (_, early) = registry.get("/api/v1/devices/early/days").await;
    assert_eq!(early["days"][0]["day"], today.to_string());
    registry.stop().await;
}

#[tokio::test]
async fn replayed_batches_never_change_a_count() {
    let registry = TestRegistry::start("").await;
    let t = now();
    let announce_it = announce_batch(vec![announce(
        "robot-1",
        "processing",
        "robots",
        "modbus-tcp",
    )]);
    let data = telemetry_batch(vec![points("robot-1", &[t, t - 1, t - 2, t - 3])]);
    {
        let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s1")
            .await
            .unwrap();
        assert_eq!(gw.hello_ack.acked_sequence, 0);
        gw.send(announce_it.clone()).await.unwrap();
        let ack = gw.send(data.clone()).await.unwrap();
        assert_eq!(
            (ack.sequence, ack.accepted_points, ack.duplicate),
            (2, 4, false)
        );
    }
    // The gateway reconnects (same stream id) and replays everything it sent.
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s1")
        .await
        .unwrap();
    assert_eq!(
        gw.hello_ack.acked_sequence, 2,
        "the registry says what is durable"
    );
    let mut replay = announce_it.clone();
    replay.sequence = 1;
    let ack = gw.send(replay).await.unwrap();
    assert!(ack.duplicate);
    let mut replay = data.clone();
    replay.sequence = 2;
    let ack = gw.send(replay).await.unwrap();
    assert!(ack.duplicate);
    assert_eq!(ack.accepted_points, 0);
    // New data after the replay counts.
    let ack = gw
        .send(telemetry_batch(vec![points("robot-1", &[t - 10])]))
        .await
        .unwrap();
    assert_eq!((ack.sequence, ack.accepted_points), (3, 1));
    let (_, days) = registry.get("/api/v1/devices/robot-1/days").await;
    assert_eq!(
        days["days"][0]["points"], 5,
        "4 + 1, the replay not counted"
    );
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "reporting", "total", ""), 1);
    assert_eq!(figure(&s, "registered", "total", ""), 1);
    let (_, metrics) = get_text(&format!("{}/metrics", registry.http)).await;
    assert!(
        metrics.contains("fieldlink_registry_batches_duplicate_total 2"),
        "{metrics}"
    );
    registry.stop().await;
}

#[tokio::test]
async fn a_new_stream_id_starts_a_new_sequence_space() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "spool-A")
        .await
        .unwrap();
    gw.send(announce_batch(vec![announce(
        "agv-1",
        "mobile",
        "logistics",
        "modbus-tcp",
    )]))
    .await
    .unwrap();
    drop(gw);
    // The gateway's spool was recreated: new stream id, sequences from 1.
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "spool-B")
        .await
        .unwrap();
    assert_eq!(gw.hello_ack.acked_sequence, 0);
    let ack = gw
        .send(telemetry_batch(vec![points("agv-1", &[now()])]))
        .await
        .unwrap();
    assert_eq!(
        (ack.sequence, ack.accepted_points, ack.duplicate),
        (1, 1, false)
    );
    registry.stop().await;
}

#[tokio::test]
async fn private_cloud_devices_never_appear_in_public_figures() {
    let registry = TestRegistry::start("").await;
    let t = now();
    let mut public = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-pub", "s")
        .await
        .unwrap();
    let mut private = Gateway::connect(&registry.grpc, PRIVATE_TOKEN, "gw-priv", "s")
        .await
        .unwrap();
    public
        .send(announce_batch(vec![announce(
            "pub-1",
            "other",
            "safety",
            "mqtt-json",
        )]))
        .await
        .unwrap();
    private
        .send(announce_batch(vec![
            announce("priv-1", "other", "safety", "mqtt-json"),
            announce("priv-2", "other", "pollution-control", "modbus-tcp"),
        ]))
        .await
        .unwrap();
    private
        .send(telemetry_batch(vec![
            points("priv-1", &[t]),
            points("priv-2", &[t]),
        ]))
        .await
        .unwrap();
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "registered", "by_cloud", "public"), 1);
    assert_eq!(figure(&s, "registered", "by_cloud", "private"), 2);
    assert_eq!(figure(&s, "reporting", "by_cloud", "public"), 0);
    assert_eq!(figure(&s, "reporting", "by_cloud", "private"), 2);
    // A public tenant cannot claim (or report for) a private tenant's device.
    let ack = public
        .send(announce_batch(vec![announce(
            "priv-1",
            "other",
            "safety",
            "mqtt-json",
        )]))
        .await
        .unwrap();
    assert_eq!(
        ack.rejections[0].reason(),
        fieldlink_model::proto::RejectReason::OtherTenant
    );
    let ack = public
        .send(telemetry_batch(vec![points("priv-1", &[t])]))
        .await
        .unwrap();
    assert_eq!((ack.accepted_points, ack.rejected_points), (0, 1));
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "reporting", "by_cloud", "public"), 0);
    let (_, list) = registry.get("/api/v1/devices?cloud=public").await;
    let ids: Vec<_> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].clone())
        .collect();
    assert_eq!(ids, ["pub-1"]);
    registry.stop().await;
}

#[tokio::test]
async fn online_follows_status_and_the_gateway_session_with_grace() {
    let registry = TestRegistry::start("[ingest]\noffline_grace = \"300ms\"\n").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s")
        .await
        .unwrap();
    let t = now();
    let mut batch = announce_batch(vec![
        announce("m-1", "operating", "mining", "modbus-tcp"),
        announce("m-2", "operating", "mining", "modbus-tcp"),
    ]);
    batch.statuses = vec![online("m-1", t)];
    gw.send(batch).await.unwrap();
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "online", "total", ""), 1);
    assert_eq!(figure(&s, "online", "by_class", "operating"), 1);
    let (_, list) = registry.get("/api/v1/devices?online=true").await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["devices"][0]["device_id"], "m-1");
    // The gateway's stream drops: its devices stay online for the grace period only.
    drop(gw);
    eventually("devices offline after the grace period", || async {
        figure(&registry.summary(None).await, "online", "total", "") == 0
    })
    .await;
    // It comes back: online again without a new status.
    let _gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s")
        .await
        .unwrap();
    assert_eq!(
        figure(&registry.summary(None).await, "online", "total", ""),
        1
    );
    registry.stop().await;
}

#[tokio::test]
async fn retired_devices_are_not_registered_but_their_past_reports_stay() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s")
        .await
        .unwrap();
    gw.send(announce_batch(vec![announce(
        "old-1",
        "mobile",
        "transport",
        "modbus-tcp",
    )]))
    .await
    .unwrap();
    gw.send(telemetry_batch(vec![points("old-1", &[now()])]))
        .await
        .unwrap();
    let mut batch = fieldlink_model::proto::Batch::default();
    batch.retires.push(fieldlink_model::proto::DeviceRetire {
        device_id: "old-1".into(),
        reason: "scrapped".into(),
    });
    gw.send(batch).await.unwrap();
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "registered", "total", ""), 0);
    assert_eq!(
        figure(&s, "reporting", "total", ""),
        1,
        "it did report today"
    );
    let ack = gw
        .send(telemetry_batch(vec![points("old-1", &[now()])]))
        .await
        .unwrap();
    assert_eq!((ack.accepted_points, ack.rejected_points), (0, 1));
    registry.stop().await;
}

#[tokio::test]
async fn bad_quality_points_are_acknowledged_but_do_not_make_a_device_reporting() {
    let registry = TestRegistry::start("").await;
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s")
        .await
        .unwrap();
    gw.send(announce_batch(vec![announce(
        "silent",
        "operating",
        "chemical",
        "modbus-tcp",
    )]))
    .await
    .unwrap();
    let mut failed = points("silent", &[now(), now()]);
    for p in &mut failed.points {
        p.quality = fieldlink_model::proto::Quality::Bad as i32;
        p.value = None;
    }
    let ack = gw.send(telemetry_batch(vec![failed])).await.unwrap();
    assert_eq!(
        (
            ack.accepted_points,
            ack.rejected_points,
            ack.bad_quality_points
        ),
        (0, 0, 2)
    );
    assert_eq!(
        figure(&registry.summary(None).await, "reporting", "total", ""),
        0
    );
    let (_, metrics) = get_text(&format!("{}/metrics", registry.http)).await;
    assert!(
        metrics.contains("fieldlink_registry_points_bad_quality_total 2"),
        "{metrics}"
    );
    registry.stop().await;
}
