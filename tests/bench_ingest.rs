//! End to end: `fieldlink bench ingest` starts its own registry, streams a
//! small fleet into it, reconciles the counts and writes its JSON. Asserts
//! correctness only, never speed.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

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

fn u64_at(json: &Value, pointer: &str) -> u64 {
    json.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {json:#}"))
}

#[test]
fn bench_ingest_reconciles_a_small_fleet() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args([
            "bench",
            "ingest",
            "--devices",
            "2000",
            "--streams",
            "2",
            "--batch",
            "500",
            "--duration",
            "2s",
            "--out",
        ])
        .arg(out.path())
        .env("FIELDLINK_LOG", "warn")
        .output()
        .expect("run fieldlink bench ingest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("reconciliation    OK"), "{stdout}");

    let path = results_file(out.path());
    assert!(
        stdout.contains(&path.display().to_string()),
        "the JSON path is printed:\n{stdout}"
    );
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(name.starts_with("ingest-2000d-2s-"), "{name}");
    let text = std::fs::read_to_string(&path).expect("read the JSON");
    let json: Value = serde_json::from_str(&text).expect("valid JSON");

    assert_eq!(u64_at(&json, "/args/devices"), 2000);
    assert_eq!(u64_at(&json, "/reconciliation/registered"), 2000);
    assert_eq!(u64_at(&json, "/reconciliation/expected_registered"), 2000);
    let reporting = u64_at(&json, "/reconciliation/reporting");
    let expected = u64_at(&json, "/telemetry/devices_reporting");
    assert_eq!(reporting, expected);
    assert_eq!(
        u64_at(&json, "/reconciliation/expected_reporting"),
        expected
    );
    assert!(
        (1..=2000).contains(&expected),
        "{expected} devices reporting"
    );
    assert_eq!(u64_at(&json, "/reconciliation/registered_public"), 1000);
    assert_eq!(u64_at(&json, "/reconciliation/registered_private"), 1000);
    assert_eq!(json.pointer("/reconciliation/ok"), Some(&Value::Bool(true)));
    assert_eq!(u64_at(&json, "/telemetry/points_rejected"), 0);
    assert_eq!(u64_at(&json, "/announce/rejected"), 0);
    let points_per_sec = json
        .pointer("/telemetry/points_per_sec")
        .and_then(Value::as_f64)
        .expect("points_per_sec");
    assert!(points_per_sec > 0.0, "{points_per_sec}");
    assert_eq!(
        u64_at(&json, "/telemetry/points_accepted"),
        u64_at(&json, "/telemetry/points_sent")
    );
    assert_eq!(
        json.pointer("/registry/stopped/clean"),
        Some(&Value::Bool(true)),
        "the registry stops cleanly on SIGTERM"
    );
}
