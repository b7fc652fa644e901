//! Running `fieldlink bench ...` end to end and reading the JSON it writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// What one bench run left behind.
pub struct BenchRun {
    /// Its standard output (the human summary).
    pub stdout: String,
    /// The JSON result file.
    pub path: PathBuf,
    /// The parsed JSON.
    pub json: Value,
}

/// Runs `fieldlink bench <args> --out <out>`; asserts it succeeded, wrote
/// exactly one JSON file and printed its path.
pub fn run_bench(args: &[&str], out: &Path) -> BenchRun {
    let output = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .env("FIELDLINK_LOG", "warn")
        .output()
        .expect("run fieldlink bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let files: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("the out dir exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one JSON result in {}: {files:?}",
        out.display()
    );
    let path = files.into_iter().next().expect("checked above");
    assert!(
        stdout.contains(&path.display().to_string()),
        "the JSON path is printed:\n{stdout}"
    );
    let text = std::fs::read_to_string(&path).expect("read the JSON");
    let json = serde_json::from_str(&text).expect("valid JSON");
    BenchRun { stdout, path, json }
}

/// The number at a JSON pointer.
pub fn number_at(json: &Value, pointer: &str) -> f64 {
    json.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {json:#}"))
}

/// The unsigned integer at a JSON pointer.
pub fn u64_at(json: &Value, pointer: &str) -> u64 {
    json.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not an unsigned integer in {json:#}"))
}

/// The file name of a result.
pub fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}
