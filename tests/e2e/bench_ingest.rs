//! `fieldlink bench ingest` starts its own registry, streams a small fleet
//! into it, reconciles the counts and writes its JSON. Asserts correctness
//! only, never speed.

use serde_json::Value;

use crate::support::bench::{file_name, number_at, run_bench, u64_at};

#[test]
fn bench_ingest_reconciles_a_small_fleet() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = run_bench(
        &[
            "ingest",
            "--devices",
            "2000",
            "--streams",
            "2",
            "--batch",
            "500",
            "--duration",
            "2s",
        ],
        out.path(),
    );
    assert!(
        run.stdout.contains("reconciliation    OK"),
        "{}",
        run.stdout
    );
    assert!(
        file_name(&run.path).starts_with("ingest-2000d-2s-"),
        "{}",
        run.path.display()
    );
    let json = &run.json;
    assert_eq!(u64_at(json, "/args/devices"), 2000);
    assert_eq!(u64_at(json, "/reconciliation/registered"), 2000);
    assert_eq!(u64_at(json, "/reconciliation/expected_registered"), 2000);
    let reporting = u64_at(json, "/reconciliation/reporting");
    let expected = u64_at(json, "/telemetry/devices_reporting");
    assert_eq!(reporting, expected);
    assert_eq!(u64_at(json, "/reconciliation/expected_reporting"), expected);
    assert!(
        (1..=2000).contains(&expected),
        "{expected} devices reporting"
    );
    assert_eq!(u64_at(json, "/reconciliation/registered_public"), 1000);
    assert_eq!(u64_at(json, "/reconciliation/registered_private"), 1000);
    assert_eq!(json.pointer("/reconciliation/ok"), Some(&Value::Bool(true)));
    assert_eq!(u64_at(json, "/telemetry/points_rejected"), 0);
    assert_eq!(u64_at(json, "/announce/rejected"), 0);
    assert!(
        number_at(json, "/telemetry/points_per_sec") > 0.0,
        "{json:#}"
    );
    assert_eq!(
        u64_at(json, "/telemetry/points_accepted"),
        u64_at(json, "/telemetry/points_sent")
    );
    assert_eq!(
        json.pointer("/registry/stopped/clean"),
        Some(&Value::Bool(true)),
        "the registry stops cleanly on SIGTERM"
    );
}
