//! Child processes the bench starts (this binary as `fieldlink registry` and
//! `fieldlink gateway`): their output captured and summarized, their start
//! awaited by a line they print, their stop by SIGTERM (SIGKILL after a
//! timeout). `kill_on_drop` kills them if the bench itself fails badly.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// WARN and ERROR lines kept for the report.
const KEPT_PROBLEMS: usize = 10;
/// Last lines kept, shown when the process fails.
const KEPT_TAIL: usize = 20;
/// Longest a kept line may be.
const MAX_LINE: usize = 400;

/// What a process printed.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct LogSummary {
    /// Lines at WARN level.
    pub(crate) warnings: u64,
    /// Lines at ERROR level.
    pub(crate) errors: u64,
    /// The first WARN and ERROR lines.
    pub(crate) problems: Vec<String>,
    /// The last lines.
    #[serde(skip)]
    tail: VecDeque<String>,
}

impl LogSummary {
    fn add(&mut self, mut line: String) {
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let warning = line.contains(" WARN ");
        let error = line.contains(" ERROR ");
        self.warnings += u64::from(warning);
        self.errors += u64::from(error);
        if (warning || error) && self.problems.len() < KEPT_PROBLEMS {
            self.problems.push(line.clone());
        }
        if self.tail.len() == KEPT_TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The last lines, indented, for an error message.
    pub(crate) fn tail_text(&self) -> String {
        self.tail.iter().map(|l| format!("\n  | {l}")).collect()
    }
}

/// How a process stopped.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stopped {
    /// Exit status as text.
    pub(crate) status: String,
    /// Exited 0 after SIGTERM (not killed).
    pub(crate) clean: bool,
    /// Seconds from SIGTERM to exit.
    pub(crate) seconds: f64,
}

/// A running child process.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    name: &'static str,
    child: Child,
    pid: u32,
    log: Arc<Mutex<LogSummary>>,
    readers: Vec<JoinHandle<()>>,
}

impl ChildProcess {
    /// Starts this binary with `args` and waits up to `timeout` for a
    /// stdout line starting with `ready`; returns the process and that line.
    ///
    /// # Errors
    /// When the process cannot start, exits, or stays silent.
    pub(crate) async fn start<I, S>(
        name: &'static str,
        args: I,
        ready: &'static str,
        timeout: Duration,
    ) -> anyhow::Result<(ChildProcess, String)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let exe = std::env::current_exe().context("cannot find the fieldlink binary")?;
        let mut child = Command::new(&exe)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {} for the {name}", exe.display()))?;
        let pid = child
            .id()
            .with_context(|| format!("the {name} exited at once"))?;
        let log = Arc::new(Mutex::new(LogSummary::default()));
        let mut readers = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(collect(stderr, log.clone(), None)));
        }
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (line_tx, line_rx) = oneshot::channel();
        readers.push(tokio::spawn(collect(
            stdout,
            log.clone(),
            Some((ready, line_tx)),
        )));
        let mut process = ChildProcess {
            name,
            child,
            pid,
            log,
            readers,
        };
        match tokio::time::timeout(timeout, line_rx).await {
            Ok(Ok(line)) => Ok((process, line)),
            Ok(Err(_)) => {
                let status = process.child.wait().await.map(|s| s.to_string());
                for reader in process.readers.drain(..) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
                }
                bail!(
                    "the {name} exited ({}) before printing `{ready}`; its last lines:{}",
                    status.unwrap_or_else(|e| e.to_string()),
                    process.log().tail_text()
                );
            }
            Err(_) => {
                let tail = process.log().tail_text();
                let _ = process.stop(Duration::from_secs(5)).await;
                bail!(
                    "the {name} printed no `{ready}` line within {} s; its last lines:{tail}",
                    timeout.as_secs()
                );
            }
        }
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// What it printed so far.
    pub(crate) fn log(&self) -> LogSummary {
        lock(&self.log).clone()
    }

    /// Sends SIGTERM and waits for the exit, SIGKILL after `timeout`.
    ///
    /// # Errors
    /// When `kill` cannot be run.
    pub(crate) async fn stop(mut self, timeout: Duration) -> anyhow::Result<(Stopped, LogSummary)> {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if let Err(e) = &sent {
            // Still stop it: killed on the way out.
            let _ = self.child.kill().await;
            return Err(anyhow::anyhow!(
                "cannot run `kill` to stop the {}: {e}",
                self.name
            ));
        }
        let (status, clean) = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => (status.to_string(), status.success()),
            Ok(Err(e)) => (format!("cannot wait for it: {e}"), false),
            Err(_) => {
                let _ = self.child.kill().await;
                (
                    format!(
                        "still running {} s after SIGTERM; killed",
                        timeout.as_secs()
                    ),
                    false,
                )
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        let log = lock(&self.log).clone();
        Ok((
            Stopped {
                status,
                clean,
                seconds,
            },
            log,
        ))
    }
}

fn lock(log: &Mutex<LogSummary>) -> MutexGuard<'_, LogSummary> {
    // A panic while holding it only loses log lines.
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads lines into `log`; hands the first line starting with the given
/// prefix to its sender.
async fn collect(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<LogSummary>>,
    mut ready: Option<(&'static str, oneshot::Sender<String>)>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if ready
            .as_ref()
            .is_some_and(|(prefix, _)| line.starts_with(prefix))
            && let Some((_, tx)) = ready.take()
        {
            let _ = tx.send(line.clone());
        }
        lock(&log).add(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_errors_are_counted_and_kept() {
        let mut log = LogSummary::default();
        log.add("2026-01-01T00:00:00Z  INFO gateway: started".into());
        log.add("2026-01-01T00:00:01Z  WARN gateway: device offline".into());
        log.add("2026-01-01T00:00:02Z ERROR gateway: spool failed".into());
        log.add("x".repeat(1000));
        assert_eq!((log.warnings, log.errors), (1, 1));
        assert_eq!(log.problems.len(), 2);
        assert!(log.tail_text().contains("spool failed"));
        assert!(log.tail.back().is_some_and(|l| l.len() < 500));
    }
}
