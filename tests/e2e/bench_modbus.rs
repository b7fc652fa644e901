//! `fieldlink bench modbus` runs a small simulated fleet, its own registry
//! and gateway (and pymodbus when it is installed), and writes its JSON.
//! Asserts correctness only, never speed.

use std::net::{Ipv4Addr, TcpListener};

use serde_json::Value;

use crate::support::bench::{file_name, number_at, run_bench};

/// A port free on 127.1.0.1, the address of the fleet's first device.
fn free_device_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::new(127, 1, 0, 1), 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

#[test]
fn bench_modbus_polls_a_small_fleet() {
    let out = tempfile::tempdir().expect("temp dir");
    let port = free_device_port().to_string();
    let run = run_bench(
        &[
            "modbus",
            "--devices",
            "20",
            "--tags",
            "10",
            "--interval",
            "200ms",
            "--duration",
            "2s",
            "--port",
            &port,
        ],
        out.path(),
    );
    assert!(
        file_name(&run.path).starts_with("modbus-20d-10t-"),
        "{}",
        run.path.display()
    );
    let json = &run.json;
    assert_eq!(number_at(json, "/args/devices"), 20.0);
    assert_eq!(number_at(json, "/gateway/devices_online"), 20.0);
    assert_eq!(number_at(json, "/registry/reporting"), 20.0);
    assert!(
        number_at(json, "/gateway/registers_per_sec") > 0.0,
        "{json:#}"
    );
    assert!(
        number_at(json, "/gateway/transactions_per_sec") > 0.0,
        "{json:#}"
    );
    assert_eq!(number_at(json, "/gateway/errors"), 0.0, "{json:#}");
    assert_eq!(number_at(json, "/gateway/exceptions"), 0.0, "{json:#}");
    // The peer either ran or says why not.
    match json.get("peer") {
        Some(Value::Object(_)) => {
            assert!(number_at(json, "/peer/registers_per_sec") > 0.0, "{json:#}");
            assert!(json.pointer("/ratios").is_some_and(Value::is_object));
        }
        _ => assert!(
            json.pointer("/peer_missing").is_some_and(Value::is_string),
            "{json:#}"
        ),
    }
}
