//! The peer: asyncua (FreeOpcUa's Python stack) subscribing to the same
//! items of the same server (`benches/peers/asyncua_load.py`, embedded in
//! the binary and written to the bench's temporary directory).
//!
//! Python is `$FIELDLINK_PYTHON`, else the virtual environment `scripts/test`
//! makes (`target/peers/venv/bin/python`). A missing Python or asyncua is
//! reported, not an error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The script, as committed.
const SCRIPT: &str = include_str!("../../peers/asyncua_load.py");
/// The venv interpreter, relative to the `target/` directory.
const VENV_PYTHON: &str = "peers/venv/bin/python";

/// What the peer printed.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct PeerOut {
    /// asyncua version.
    pub(crate) asyncua: String,
    /// Python version.
    pub(crate) python: String,
    /// Items asked for.
    pub(crate) items: u64,
    /// Items created.
    pub(crate) created: u64,
    /// Seconds from the session up to the last item created.
    pub(crate) create_secs: f64,
    /// Items created per second.
    pub(crate) items_per_sec: Option<f64>,
    /// Length of the counting window.
    pub(crate) window_secs: f64,
    /// Data changes received in the window.
    pub(crate) changes: u64,
    /// Data changes per second.
    pub(crate) changes_per_sec: Option<f64>,
    /// The peer's resident memory at the end.
    pub(crate) rss_bytes: u64,
}

/// The interpreter with asyncua, or why there is none.
pub(crate) async fn find_python() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("FIELDLINK_PYTHON") {
        Some(p) => vec![PathBuf::from(p)],
        None => {
            let mut c = Vec::new();
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
        let ok = Command::new(&python)
            .args(["-c", "import asyncua"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(python);
        }
        tried.push(python.display().to_string());
    }
    Err(format!(
        "no Python with asyncua (tried {}; scripts/test installs it)",
        tried.join(", ")
    ))
}

/// Runs the peer against `url` for `nodes`.
///
/// # Errors
/// When the script cannot run, fails, or prints something else.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    python: &Path,
    dir: &Path,
    url: &str,
    nodes: Vec<String>,
    interval: Duration,
    per_call: usize,
    per_subscription: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<PeerOut> {
    let script = dir.join("asyncua_load.py");
    std::fs::write(&script, SCRIPT)
        .with_context(|| format!("cannot write {}", script.display()))?;
    let spec = serde_json::json!({
        "url": url,
        "nodes": nodes,
        "interval_ms": interval.as_secs_f64() * 1e3,
        "per_call": per_call,
        "per_subscription": per_subscription,
        "warmup_s": warmup.as_secs_f64(),
        "window_s": window.as_secs_f64(),
    });
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(spec.to_string().as_bytes())
            .await
            .context("cannot hand the peer its items")?;
    }
    let limit = window + warmup + Duration::from_secs(600);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .context("the peer did not finish")?
        .context("the peer failed to run")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        bail!(
            "the peer exited with {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("the peer printed `{line}`"))
}
