//! The peer: pymodbus' asyncio client reading the same load from the same
//! fleet (`benches/peers/pymodbus_load.py`, embedded in the binary and
//! written to the bench's temporary directory).
//!
//! Python is `$FIELDLINK_PYTHON`, else the virtual environment `scripts/test`
//! makes (`target/peers/venv/bin/python`, found next to this binary's
//! `target/` directory or under the working directory). A missing Python or
//! pymodbus is reported, not an error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::layout::Load;

/// The script, as committed.
const SCRIPT: &str = include_str!("../../peers/pymodbus_load.py");
/// Environment variable naming the Python interpreter.
pub(crate) const PYTHON_ENV: &str = "FIELDLINK_PYTHON";
/// The venv interpreter, relative to the `target/` directory.
const VENV_PYTHON: &str = "peers/venv/bin/python";
/// Connections the peer opens at once.
const CONNECT_CONCURRENCY: u32 = 256;

/// Latency figures of the peer, milliseconds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct PeerLatency {
    /// Samples.
    pub(crate) count: u64,
    /// Mean.
    pub(crate) mean: Option<f64>,
    /// Median.
    pub(crate) p50: Option<f64>,
    /// 99th percentile.
    pub(crate) p99: Option<f64>,
    /// Largest.
    pub(crate) max: Option<f64>,
}

/// What the peer printed (see the script's docs).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct PeerOut {
    /// pymodbus version.
    pub(crate) pymodbus: String,
    /// Python version.
    pub(crate) python: String,
    /// Devices asked for.
    pub(crate) devices: u64,
    /// Devices connected.
    pub(crate) connected: u64,
    /// Devices that did not connect.
    pub(crate) connect_failures: u64,
    /// Seconds until every device was connected (or gave up).
    pub(crate) connect_secs: f64,
    /// Length of the measuring window.
    pub(crate) seconds: f64,
    /// Requests completed in the window.
    pub(crate) transactions: u64,
    /// Per second.
    pub(crate) transactions_per_sec: f64,
    /// What the cadence asks for (`null` when saturating).
    pub(crate) expected_transactions_per_sec: Option<f64>,
    /// Registers received.
    pub(crate) registers: u64,
    /// Per second.
    pub(crate) registers_per_sec: f64,
    /// Points decoded (one per tag of an answered read).
    pub(crate) points: u64,
    /// Per second.
    pub(crate) points_per_sec: f64,
    /// Exception responses.
    pub(crate) exceptions: u64,
    /// Timeouts and broken connections.
    pub(crate) errors: u64,
    /// The first errors' messages.
    #[serde(default)]
    pub(crate) error_samples: Vec<String>,
    /// Ticks skipped because a poll ran late.
    pub(crate) late_ticks: u64,
    /// Process CPU seconds in the window.
    pub(crate) cpu_seconds: f64,
    /// CPU seconds per second (at most 1: one Python thread).
    pub(crate) cpu_utilization: f64,
    /// Registers per CPU second.
    pub(crate) registers_per_cpu_second: Option<f64>,
    /// Requests per CPU second.
    pub(crate) transactions_per_cpu_second: Option<f64>,
    /// Points per CPU second.
    pub(crate) points_per_cpu_second: Option<f64>,
    /// Per request.
    pub(crate) request_latency_ms: PeerLatency,
    /// Per poll group (its reads one after the other).
    pub(crate) poll_latency_ms: PeerLatency,
}

/// One read of the load file: (start, count, [(tag name, offset)]).
type ReadSpec = (u16, u16, Vec<(String, u16)>);

/// The load file the script reads.
#[derive(Debug, Serialize)]
struct LoadFile {
    devices: Vec<(String, u16)>,
    /// Per poll group, its reads: (start, count, [(tag name, offset)]).
    groups: Vec<Vec<ReadSpec>>,
    unit_id: u8,
    interval_s: f64,
    warmup_s: f64,
    duration_s: f64,
    timeout_s: f64,
    connect_concurrency: u32,
}

/// A Python that imports pymodbus, or why there is none.
#[derive(Debug, Clone)]
pub(crate) enum Python {
    /// Interpreter path and pymodbus version.
    Found(PathBuf, String),
    /// Why the peer cannot run.
    Missing(String),
}

/// Finds Python with pymodbus.
pub(crate) async fn find_python() -> Python {
    let candidates: Vec<PathBuf> = match std::env::var_os(PYTHON_ENV) {
        Some(p) => vec![PathBuf::from(p)],
        None => {
            let mut c = Vec::new();
            // target/{debug,release}/fieldlink → target/
            if let Some(target) = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
            {
                c.push(target.join(VENV_PYTHON));
            }
            c.push(Path::new("target").join(VENV_PYTHON));
            c
        }
    };
    let mut tried = Vec::new();
    for python in candidates {
        if !python.exists() {
            tried.push(format!("{} does not exist", python.display()));
            continue;
        }
        let out = Command::new(&python)
            .args(["-c", "import pymodbus; print(pymodbus.__version__)"])
            .stdin(Stdio::null())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {
                let version = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                return Python::Found(python, version);
            }
            Ok(o) => tried.push(format!(
                "{} cannot import pymodbus: {}",
                python.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => tried.push(format!("{} does not run: {e}", python.display())),
        }
    }
    Python::Missing(format!(
        "no Python with pymodbus ({}; set {PYTHON_ENV} or run scripts/test once to make the venv)",
        tried.join("; ")
    ))
}

/// Runs the peer against `endpoints` and returns what it measured.
///
/// # Errors
/// When the script cannot be written or run, fails, overruns its time, or
/// prints no result.
pub(crate) async fn run(
    python: &Path,
    dir: &Path,
    endpoints: Vec<(String, u16)>,
    load: &Load,
    warmup: Duration,
    duration: Duration,
    timeout: Duration,
) -> anyhow::Result<PeerOut> {
    let script = dir.join("pymodbus_load.py");
    std::fs::write(&script, SCRIPT)
        .with_context(|| format!("cannot write {}", script.display()))?;
    let devices = endpoints.len();
    let file = LoadFile {
        devices: endpoints,
        groups: load
            .reads
            .iter()
            .map(|g| {
                g.iter()
                    .map(|r| (r.start, r.count, r.tags.clone()))
                    .collect()
            })
            .collect(),
        unit_id: 1,
        interval_s: load.interval.as_secs_f64(),
        warmup_s: warmup.as_secs_f64(),
        duration_s: duration.as_secs_f64(),
        timeout_s: timeout.as_secs_f64(),
        connect_concurrency: CONNECT_CONCURRENCY,
    };
    let load_path = dir.join("pymodbus_load.json");
    let text = serde_json::to_string(&file).context("cannot write the peer's load as JSON")?;
    std::fs::write(&load_path, text)
        .with_context(|| format!("cannot write {}", load_path.display()))?;
    let child = Command::new(python)
        .arg(&script)
        .arg(&load_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    // Connecting, warm-up, window, stragglers, start-up and shut-down.
    let limit = Duration::from_secs(120 + devices as u64 / 50) + warmup + duration;
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.context("cannot wait for the peer")?,
        // Dropping the future dropped the child: killed.
        Err(_) => bail!(
            "the peer did not finish within {} s; killed",
            limit.as_secs()
        ),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .lines()
        .rev()
        .take(10)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|l| format!("\n  | {l}"))
        .collect();
    if !out.status.success() {
        bail!("the peer failed ({}); its last lines:{tail}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("the peer printed no JSON; its last lines:{tail}"))?;
    serde_json::from_str(line).with_context(|| format!("the peer's JSON does not parse: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_embedded() {
        assert!(SCRIPT.contains("AsyncModbusTcpClient"));
        assert!(SCRIPT.contains("\"transactions_per_sec\""));
        assert!(SCRIPT.contains("\"points_per_cpu_second\""));
    }

    #[test]
    fn the_peer_output_parses() {
        let line = r#"{"pymodbus": "3.16.1", "python": "3.11.7", "devices": 2, "connected": 2,
            "connect_failures": 0, "connect_secs": 0.1, "seconds": 2.0, "transactions": 20,
            "transactions_per_sec": 10.0, "expected_transactions_per_sec": 10.0,
            "registers": 200, "registers_per_sec": 100.0, "points": 200, "points_per_sec": 100.0,
            "exceptions": 0, "errors": 0,
            "error_samples": [], "late_ticks": 0, "cpu_seconds": 0.05, "cpu_utilization": 0.025,
            "registers_per_cpu_second": 4000.0, "transactions_per_cpu_second": 400.0,
            "points_per_cpu_second": 4000.0,
            "request_latency_ms": {"count": 20, "mean": 0.5, "p50": 0.4, "p99": 1.0, "max": 1.1},
            "poll_latency_ms": {"count": 0, "mean": null, "p50": null, "p99": null, "max": null}}"#;
        let out: PeerOut = serde_json::from_str(line).unwrap();
        assert_eq!(out.transactions, 20);
        assert_eq!(out.points, 200);
        assert_eq!(out.request_latency_ms.p99, Some(1.0));
        assert_eq!(out.poll_latency_ms.p50, None);
    }
}
