//! Restart safety of the real process: kill -9 after acks, restart, nothing
//! lost; a batch whose ack never came is replayed and counted once.

use std::time::Duration;

use crate::support::*;

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("registry.toml");
    std::fs::write(&path, config_text(&dir.join("data"), "")).unwrap();
    path
}

#[tokio::test]
async fn counts_survive_kill_9_and_unacked_batches_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let t = now();

    let registry = RegistryProcess::spawn(&config);
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s1")
        .await
        .unwrap();
    let mut batch = announce_batch(vec![
        announce("cnc-1", "processing", "machine-tools", "modbus-tcp"),
        announce("boiler-1", "operating", "motive-power", "modbus-tcp"),
    ]);
    batch.statuses = vec![online("cnc-1", t)];
    gw.send(batch).await.unwrap();
    let ack = gw
        .send(telemetry_batch(vec![points("cnc-1", &[t, t - 1, t - 2])]))
        .await
        .unwrap();
    assert_eq!(ack.sequence, 2);
    let mut private = Gateway::connect(&registry.grpc, PRIVATE_TOKEN, "gw-2", "s1")
        .await
        .unwrap();
    private
        .send(announce_batch(vec![announce(
            "agv-9",
            "mobile",
            "logistics",
            "opc-ua",
        )]))
        .await
        .unwrap();
    let (_, before) = registry.get("/api/v1/summary").await;
    let (_, list_before) = registry.get("/api/v1/devices").await;

    // Batch 3 is sent, and the registry dies before the gateway sees an ack.
    let unacked = telemetry_batch(vec![
        points("cnc-1", &[t - 3, t - 4]),
        points("boiler-1", &[t - 5]),
    ]);
    let mut sent = unacked.clone();
    sent.sequence = 3;
    gw.push(sent.clone()).await;
    registry.kill9();
    drop(gw);
    drop(private);

    let registry = RegistryProcess::spawn(&config);
    let (_, after) = registry.get("/api/v1/summary").await;
    let (_, list_after) = registry.get("/api/v1/devices").await;
    assert_eq!(after["registered"], before["registered"]);
    assert_eq!(list_after["count"], list_before["count"]);
    for (a, b) in list_after["devices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(list_before["devices"].as_array().unwrap())
    {
        for field in [
            "device_id",
            "class",
            "category",
            "type",
            "name",
            "protocol",
            "tenant",
            "cloud",
            "first_seen",
        ] {
            assert_eq!(a[field], b[field], "{field}");
        }
    }
    // Online survives a registry restart while the gateway reconnects within grace.
    assert_eq!(after["online"]["total"], 1);

    // The gateway replays batch 3: counted exactly once whether or not it
    // reached the disk before the kill.
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s1")
        .await
        .unwrap();
    assert!(gw.hello_ack.acked_sequence >= 2);
    if gw.hello_ack.acked_sequence < 3 {
        let ack = gw.send(sent.clone()).await.unwrap();
        assert!(!ack.duplicate);
    }
    // A gateway that replays it once more, after another reconnect.
    drop(gw);
    let mut gw = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-1", "s1")
        .await
        .unwrap();
    assert_eq!(gw.hello_ack.acked_sequence, 3);
    let ack = gw.send(sent).await.unwrap();
    assert!(ack.duplicate, "a second replay is a duplicate");
    let (_, days) = registry.get("/api/v1/devices/cnc-1/days").await;
    assert_eq!(days["days"][0]["points"], 5, "3 + 2, exactly once");
    let (_, days) = registry.get("/api/v1/devices/boiler-1/days").await;
    assert_eq!(days["days"][0]["points"], 1);
    let (_, summary) = registry.get("/api/v1/summary").await;
    assert_eq!(summary["reporting"]["total"], 2);
    assert_eq!(summary["reporting"]["by_cloud"]["public"], 2);

    // And a clean stop (SIGTERM) keeps it all too.
    drop(gw);
    // Wait off the runtime, so this process keeps answering its connections.
    let status = tokio::task::spawn_blocking(move || registry.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let registry = RegistryProcess::spawn(&config);
    let (_, again) = registry.get("/api/v1/summary").await;
    assert_eq!(again["reporting"], summary["reporting"]);
    assert_eq!(again["registered"], summary["registered"]);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
