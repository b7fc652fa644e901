//! `fieldlink bench connections` ramps a lean fleet through the lean
//! ingress into a registry, holds it, reconciles with `bench verify`, then
//! holds the same fleet on mosquitto, and writes its JSON. Asserts
//! correctness only, never speed: every device connected, held, counted
//! and verified. mosquitto is a peer the test command installs; with
//! `CI=true` the bench itself fails when it is missing.

use serde_json::Value;

use crate::support::bench::{file_name, number_at, run_bench, u64_at};

const DEVICES: u64 = 300;

/// What both parts must show: every device connected and held.
fn assert_held(json: &Value, part: &str) {
    let at = |field: &str| format!("/{part}/{field}");
    assert!(
        number_at(json, &at("ramp/connects_per_sec")) > 0.0,
        "{json:#}"
    );
    assert_eq!(
        u64_at(json, &at("hold/fleet_connected_min")),
        DEVICES,
        "{json:#}"
    );
    assert_eq!(
        u64_at(json, &at("hold/broker_connected_min")),
        DEVICES,
        "{json:#}"
    );
    assert_eq!(u64_at(json, &at("hold/reconnects")), 0, "{json:#}");
    assert!(u64_at(json, &at("hold/published")) > 0, "{json:#}");
    assert!(
        number_at(json, &at("broker_group/rss_per_connection_bytes")) > 0.0,
        "{json:#}"
    );
    assert!(u64_at(json, &at("fleet_processes")) >= 1, "{json:#}");
    assert!(
        number_at(json, &at("fleet/rss_per_connection_bytes")) > 0.0,
        "{json:#}"
    );
}

#[test]
fn bench_connections_holds_counts_and_verifies_every_device() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = run_bench(
        &[
            "connections",
            "--devices",
            &DEVICES.to_string(),
            "--hold",
            "3s",
            "--interval",
            "2s",
            "--audit",
            "10",
        ],
        out.path(),
    );
    assert!(
        file_name(&run.path).starts_with("connections-300d-"),
        "{}",
        run.path.display()
    );
    let json = &run.json;
    assert_held(json, "fieldlink");
    for figure in ["registered", "online", "reporting"] {
        assert_eq!(
            u64_at(json, &format!("/fieldlink/counted/counts/{figure}")),
            DEVICES,
            "{json:#}"
        );
    }
    assert_eq!(u64_at(json, "/fieldlink/registry_online_min"), DEVICES);
    assert_eq!(
        json.pointer("/fieldlink/verified"),
        Some(&serde_json::json!({"Ok": null})),
        "{json:#}"
    );
    assert!(
        run.stdout
            .contains("bench verify: the registry equals the manifest")
    );
    assert!(u64_at(json, "/fieldlink/latency/samples") > 0, "{json:#}");
    // Small fleets need no raised queues; the sysctls are still named.
    assert!(
        json["sysctls"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "fs.file-max")),
        "{json:#}"
    );
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match json.get("peer") {
        Some(Value::Object(_)) => {
            assert_held(json, "peer");
            // mosquitto delivered the telemetry to the bench's subscriber,
            // as the ingress hands it to its gateways.
            let published = number_at(json, "/peer/hold/published_per_sec");
            let consumed = number_at(json, "/peer/consumed_per_sec");
            assert!(consumed >= published * 0.5, "{json:#}");
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
