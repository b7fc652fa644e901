//! A bad config stops the process at start, naming the key.

use std::process::Command;

fn run_registry(config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["registry", "--config"])
        .arg(&path)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_key_is_named_and_the_registry_does_not_start() {
    let (code, stderr) = run_registry("[ingest]\nmax_inflight = 5\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("registry.toml"), "{stderr}");
    assert!(stderr.contains("unknown field `max_inflight`"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn bad_values_are_named_by_key() {
    let (code, stderr) = run_registry(
        "[time]\nretention_days = 0\n[[tenants]]\nname = \"t\"\ncloud = \"public\"\ntoken = \"short\"\n",
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("time.retention_days: must be 1..=3660, got 0"),
        "{stderr}"
    );
    assert!(stderr.contains("tenants[0].token"), "{stderr}");
    let (code, stderr) = run_registry("[listen]\ngrpc = \"localhost\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("grpc"), "{stderr}");
}

#[test]
fn the_shipped_example_config_starts() {
    // Parse and validate only: `--help`-like dry check through the library.
    let text = include_str!("../../deploy/registry.example.toml");
    let config = fieldlink_registry::RegistryConfig::from_toml(text).unwrap();
    assert!(config.validate().is_ok());
}
