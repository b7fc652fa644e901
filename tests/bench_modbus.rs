//! End to end: `fieldlink bench modbus` runs a small simulated fleet, its
//! own registry and gateway (and pymodbus when it is installed), and writes
//! its JSON. Asserts correctness only, never speed.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port free on 127.1.0.1, the address of the fleet's first device.
fn free_device_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::new(127, 1, 0, 1), 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// The single JSON file the bench wrote in `dir`.
fn results_file(dir: &std::path::Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the out dir exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one JSON result in {}: {files:?}",
        dir.display()
    );
    files.into_iter().next().expect("checked above")
}

fn number_at(json: &Value, pointer: &str) -> f64 {
    json.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {json:#}"))
}

#[test]
fn bench_modbus_polls_a_small_fleet() {
    let out = tempfile::tempdir().expect("temp dir");
    let port = free_device_port();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args([
            "bench",
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
            &port.to_string(),
            "--out",
        ])
        .arg(out.path())
        .env("FIELDLINK_LOG", "warn")
        .output()
        .expect("run fieldlink bench modbus");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );

    let path = results_file(out.path());
    assert!(
        stdout.contains(&path.display().to_string()),
        "the JSON path is printed:\n{stdout}"
    );
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(name.starts_with("modbus-20d-10t-"), "{name}");
    let text = std::fs::read_to_string(&path).expect("read the JSON");
    let json: Value = serde_json::from_str(&text).expect("valid JSON");

    assert_eq!(number_at(&json, "/args/devices"), 20.0);
    assert_eq!(number_at(&json, "/gateway/devices_online"), 20.0);
    assert_eq!(number_at(&json, "/registry/reporting"), 20.0);
    assert!(
        number_at(&json, "/gateway/registers_per_sec") > 0.0,
        "{json:#}"
    );
    assert!(
        number_at(&json, "/gateway/transactions_per_sec") > 0.0,
        "{json:#}"
    );
    assert_eq!(number_at(&json, "/gateway/errors"), 0.0, "{json:#}");
    assert_eq!(number_at(&json, "/gateway/exceptions"), 0.0, "{json:#}");
    // The peer either ran or says why not.
    match json.get("peer") {
        Some(Value::Object(_)) => {
            assert!(
                number_at(&json, "/peer/registers_per_sec") > 0.0,
                "{json:#}"
            );
            assert!(json.pointer("/ratios").is_some_and(Value::is_object));
        }
        _ => assert!(
            json.pointer("/peer_missing").is_some_and(Value::is_string),
            "{json:#}"
        ),
    }
}
