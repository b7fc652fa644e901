//! The registry the bench starts for itself: this same binary as
//! `fieldlink registry` in a temporary directory with two bench tenants,
//! its log captured, its memory and CPU read from `/proc`.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Token of the public-cloud bench tenant.
pub(crate) const PUBLIC_TOKEN: &str = "bench-public-token-0001";
/// Token of the private-cloud bench tenant.
pub(crate) const PRIVATE_TOKEN: &str = "bench-private-token-0001";

/// How long the registry may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the registry may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Warning and error lines of the registry's log kept for the report.
const KEPT_PROBLEMS: usize = 20;
/// Last log lines kept, shown when the registry fails.
const KEPT_TAIL: usize = 20;

/// What the registry logged.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct LogSummary {
    /// Lines at WARN level.
    pub(crate) warnings: u64,
    /// Lines at ERROR level.
    pub(crate) errors: u64,
    /// The first WARN and ERROR lines.
    pub(crate) problems: Vec<String>,
    /// The last lines.
    #[serde(skip)]
    pub(crate) tail: VecDeque<String>,
}

impl LogSummary {
    fn add(&mut self, line: String) {
        let line = strip_ansi(&line);
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

    /// The last lines, one per line, for an error message.
    pub(crate) fn tail_text(&self) -> String {
        self.tail.iter().map(|l| format!("\n  | {l}")).collect()
    }
}

/// How the registry stopped.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Stopped {
    /// Exit status as text.
    pub(crate) status: String,
    /// Whether it exited 0 after SIGTERM (not killed).
    pub(crate) clean: bool,
    /// Seconds from SIGTERM to exit.
    pub(crate) seconds: f64,
}

/// A running registry child process.
#[derive(Debug)]
pub(crate) struct RegistryProcess {
    /// Declared before `dir`: killed (on drop) before its data is removed.
    child: Child,
    pid: u32,
    grpc: String,
    http: String,
    log: Arc<Mutex<LogSummary>>,
    readers: Vec<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl RegistryProcess {
    /// Starts `fieldlink registry` in a fresh temporary directory and waits
    /// for its listening line.
    ///
    /// # Errors
    /// When the directory, config or process cannot be made, or the registry
    /// exits or stays silent instead of listening.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fieldlink-bench-ingest-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let config = dir.path().join("registry.toml");
        std::fs::write(&config, config_text(&dir.path().join("data")))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let exe = std::env::current_exe().context("cannot find the fieldlink binary")?;
        let mut child = Command::new(&exe)
            .arg("registry")
            .arg("--config")
            .arg(&config)
            .args(["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        let pid = child.id().context("the registry process exited at once")?;
        let log = Arc::new(Mutex::new(LogSummary::default()));
        let mut readers = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(collect(stderr, log.clone(), None)));
        }
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (line_tx, line_rx) = tokio::sync::oneshot::channel();
        readers.push(tokio::spawn(collect(stdout, log.clone(), Some(line_tx))));
        let listening = match tokio::time::timeout(START_TIMEOUT, line_rx).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => {
                let status = child.wait().await.map(|s| s.to_string());
                // Let the readers take in the last lines.
                for reader in readers.drain(..) {
                    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
                }
                let tail = lock(&log).tail_text();
                bail!(
                    "registry exited ({}) without listening; its last lines:{tail}",
                    status.unwrap_or_else(|e| e.to_string())
                );
            }
            Err(_) => {
                let tail = lock(&log).tail_text();
                bail!(
                    "no `registry listening:` line within {} s; its last lines:{tail}",
                    START_TIMEOUT.as_secs()
                );
            }
        };
        let (grpc, http) = parse_listening(&listening)
            .with_context(|| format!("cannot parse the registry's line `{listening}`"))?;
        Ok(RegistryProcess {
            child,
            pid,
            grpc,
            http,
            log,
            readers,
            dir,
        })
    }

    /// gRPC URL (`http://127.0.0.1:PORT`).
    pub(crate) fn grpc_url(&self) -> &str {
        &self.grpc
    }

    /// HTTP base URL (`http://127.0.0.1:PORT/`).
    pub(crate) fn http_url(&self) -> &str {
        &self.http
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// How it exited, if it has.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> LogSummary {
        lock(&self.log).clone()
    }

    /// Sends SIGTERM, waits for the exit (SIGKILL after a timeout) and
    /// removes the temporary directory.
    ///
    /// # Errors
    /// When the signal cannot be sent, or the directory cannot be removed.
    pub(crate) async fn stop(mut self) -> anyhow::Result<(Stopped, LogSummary)> {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .context("cannot run `kill` to stop the registry")?;
        if !sent.success() {
            bail!("`kill -TERM {}` failed: {sent}", self.pid);
        }
        let (status, clean) = match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => (status.to_string(), status.success()),
            Ok(Err(e)) => (format!("cannot wait for the registry: {e}"), false),
            Err(_) => {
                let _ = self.child.kill().await;
                (
                    format!(
                        "still running {} s after SIGTERM; killed",
                        STOP_TIMEOUT.as_secs()
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
        let path = self.dir.path().to_path_buf();
        self.dir
            .close()
            .with_context(|| format!("cannot remove {}", path.display()))?;
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

/// `line` without ANSI colour sequences (`ESC [ ... letter`), in case the
/// registry colours its log despite `NO_COLOR`.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip `[`, parameters, and the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn lock(log: &Mutex<LogSummary>) -> std::sync::MutexGuard<'_, LogSummary> {
    // A panic while holding it only loses log lines.
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads lines into `log`; hands the first `registry listening:` line to
/// `listening`.
async fn collect(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<LogSummary>>,
    mut listening: Option<tokio::sync::oneshot::Sender<String>>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with("registry listening:")
            && let Some(tx) = listening.take()
        {
            let _ = tx.send(line.clone());
        }
        lock(&log).add(line);
    }
}

fn config_text(data_dir: &Path) -> String {
    // TOML basic strings take JSON-style escapes.
    let data_dir = serde_json::to_string(&data_dir.to_string_lossy())
        .unwrap_or_else(|_| "\"data\"".to_owned());
    format!(
        "data_dir = {data_dir}\n\
         [ingest]\n\
         max_inflight_batches = 64\n\
         [[tenants]]\n\
         name = \"bench-public\"\n\
         cloud = \"public\"\n\
         token = \"{PUBLIC_TOKEN}\"\n\
         [[tenants]]\n\
         name = \"bench-private\"\n\
         cloud = \"private\"\n\
         token = \"{PRIVATE_TOKEN}\"\n"
    )
}

/// `registry listening: grpc=ADDR http=URL` → (`http://ADDR`, URL).
fn parse_listening(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("registry listening:")?;
    let mut grpc = None;
    let mut http = None;
    for word in rest.split_whitespace() {
        if let Some(addr) = word.strip_prefix("grpc=") {
            grpc = Some(format!("http://{addr}"));
        } else if let Some(url) = word.strip_prefix("http=") {
            http = Some(url.to_owned());
        }
    }
    Some((grpc?, http?))
}

/// Resident memory of process `pid` in bytes (`VmRSS`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds (user + system) process `pid` (or `self`) used so far.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    parse_stat(&stat).map(|(_, seconds)| seconds)
}

/// CPU seconds all processes of the machine used so far (busy, not idle or
/// waiting for I/O), from the first line of `/proc/stat`.
pub(crate) fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(stat.lines().next()?)
}

/// `cpu user nice system idle iowait irq softirq steal ...` → busy seconds.
fn parse_machine_busy(line: &str) -> Option<f64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    // USER_HZ is 100 on every Linux the bench runs on.
    Some((user + nice + system + irq + softirq + steal) as f64 / 100.0)
}

/// CPU seconds of each thread of process `pid`, by thread id, with its name.
pub(crate) fn thread_cpu(pid: u32) -> BTreeMap<u32, (String, f64)> {
    let mut threads = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((name, seconds)) = parse_stat(&stat) {
            threads.insert(tid, (name, seconds));
        }
    }
    threads
}

/// CPU seconds per thread name between two [`thread_cpu`] readings, with
/// the number of threads of that name, busiest first.
pub(crate) fn thread_cpu_diff(
    before: &BTreeMap<u32, (String, f64)>,
    after: &BTreeMap<u32, (String, f64)>,
) -> Vec<ThreadCpu> {
    let mut by_name: BTreeMap<&str, ThreadCpu> = BTreeMap::new();
    for (tid, (name, seconds)) in after {
        let earlier = before.get(tid).map_or(0.0, |b| b.1);
        let entry = by_name.entry(name).or_insert_with(|| ThreadCpu {
            name: name.clone(),
            threads: 0,
            seconds: 0.0,
        });
        entry.threads += 1;
        entry.seconds += seconds - earlier;
    }
    let mut threads: Vec<ThreadCpu> = by_name.into_values().collect();
    threads.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    threads
}

/// CPU used by the threads of one name.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ThreadCpu {
    /// Thread name (15 bytes at most, as the kernel keeps it).
    pub(crate) name: String,
    /// Threads of that name.
    pub(crate) threads: u32,
    /// CPU seconds.
    pub(crate) seconds: f64,
}

/// Name and CPU seconds (user + system) from a `/proc/.../stat` line.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    // The name sits in parentheses and may contain spaces and parentheses:
    // the fields follow the last `)`; state is field 3, utime 14, stime 15.
    let (head, after) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux the bench runs on.
    Some((name, (utime + stime) as f64 / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_both_urls() {
        let line = "registry listening: grpc=127.0.0.1:41000 http=http://127.0.0.1:41001/";
        assert_eq!(
            parse_listening(line),
            Some((
                "http://127.0.0.1:41000".to_owned(),
                "http://127.0.0.1:41001/".to_owned()
            ))
        );
        assert_eq!(parse_listening("registry listening: grpc=x"), None);
    }

    #[test]
    fn the_config_names_both_tenants() {
        let text = config_text(Path::new("/tmp/x y/data"));
        assert!(text.starts_with("data_dir = \"/tmp/x y/data\"\n"));
        assert!(text.contains("cloud = \"private\""));
        assert!(text.contains(PUBLIC_TOKEN));
    }

    #[test]
    fn this_process_has_rss_and_cpu() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
        assert!(cpu_seconds(None).is_some());
        let threads = thread_cpu(std::process::id());
        assert!(!threads.is_empty());
        let diff = thread_cpu_diff(&BTreeMap::new(), &threads);
        assert!(diff.iter().map(|t| t.threads).sum::<u32>() >= 1);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let line = "cpu  281015 5 28747 383366 1801 10 336 161 0 0";
        let busy = parse_machine_busy(line).expect("parses");
        assert!((busy - 3102.74).abs() < 1e-6, "{busy}");
        assert_eq!(parse_machine_busy("cpu0 1 2 3"), None);
        assert!(machine_busy_seconds().is_some());
    }

    #[test]
    fn log_levels_are_found_in_coloured_lines_too() {
        let mut log = LogSummary::default();
        log.add("2026-11-26T02:39:38Z  INFO registry: started".into());
        log.add("2026-11-26T02:39:38Z \u{1b}[33m WARN\u{1b}[0m registry: slow".into());
        log.add("2026-11-26T02:39:38Z ERROR registry: broken".into());
        assert_eq!((log.warnings, log.errors), (1, 1));
        assert_eq!(log.problems[0], "2026-11-26T02:39:38Z  WARN registry: slow");
        assert_eq!(log.tail.len(), 3);
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "42 (tokio (w) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat(line), Some(("tokio (w) 1".to_owned(), 3.0)));
    }
}
