//! `fieldlink bench mqtt` runs MQTT JSON device clients through its own
//! `fieldlink broker` and then through mosquitto, each into a gateway and
//! a registry of its own, and writes its JSON. Asserts correctness only,
//! never speed: every device connected, counted and delivered, with both
//! brokers. mosquitto is a peer the test command installs; with `CI=true`
//! the bench itself fails when it is missing.

use serde_json::Value;

use crate::support::bench::{file_name, number_at, run_bench, u64_at};

const DEVICES: u64 = 20;

/// What every broker's part must show.
fn assert_part(json: &Value, part: &str) {
    let at = |field: &str| format!("/{part}/{field}");
    assert_eq!(u64_at(json, &at("counts/registered")), DEVICES, "{json:#}");
    assert_eq!(u64_at(json, &at("counts/reporting")), DEVICES, "{json:#}");
    assert_eq!(
        number_at(json, &at("clients_connected_min")),
        DEVICES as f64
    );
    assert_eq!(number_at(json, &at("devices_online_min")), DEVICES as f64);
    assert!(u64_at(json, &at("sessions")) >= DEVICES, "{json:#}");
    assert!(u64_at(json, &at("published")) > 0, "{json:#}");
    assert!(u64_at(json, &at("driver_messages")) > 0, "{json:#}");
    assert!(u64_at(json, &at("registry_points")) > 0, "{json:#}");
    // QoS 0 on loopback loses nothing; the window's edges may cut a
    // message in flight either way.
    let delivered = number_at(json, &at("delivered_share"));
    assert!((0.8..=1.2).contains(&delivered), "{part}: {delivered}");
    for counter in [
        "malformed",
        "ignored",
        "driver_errors",
        "batches_dropped",
        "registry_rejected",
    ] {
        assert_eq!(u64_at(json, &at(counter)), 0, "{part}.{counter}: {json:#}");
    }
    assert!(number_at(json, &at("rss_connected_bytes")) > 0.0);
    assert!(
        json.pointer(&at("processes/broker/stopped/clean")) == Some(&Value::Bool(true)),
        "{part}: the broker stopped cleanly: {json:#}"
    );
}

#[test]
fn bench_mqtt_delivers_every_device_through_both_brokers() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = run_bench(
        &[
            "mqtt",
            "--devices",
            &DEVICES.to_string(),
            "--rate",
            "5",
            "--duration",
            "2s",
        ],
        out.path(),
    );
    assert!(
        file_name(&run.path).starts_with("mqtt-20d-5-"),
        "{}",
        run.path.display()
    );
    let json = &run.json;
    assert_eq!(number_at(json, "/args/devices"), DEVICES as f64);
    assert_eq!(number_at(json, "/load/offered_per_sec"), 100.0);
    assert_part(json, "fieldlink");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match json.get("peer") {
        Some(Value::Object(_)) => {
            assert_part(json, "peer");
            assert!(json.pointer("/ratios").is_some_and(Value::is_object));
            assert!(run.stdout.contains("mosquitto version"), "{}", run.stdout);
        }
        _ => {
            assert!(!ci, "mosquitto is missing with CI=true: {json:#}");
            assert!(
                json.pointer("/peer_missing").is_some_and(Value::is_string),
                "{json:#}"
            );
        }
    }
}
