//! Child processes the benches start (this binary as `fieldlink registry`
//! or `fieldlink gateway`) and what Linux `/proc` tells about processes.
//!
//! A child's output is captured and summarized ([`LogSummary`]: WARN and
//! ERROR lines counted, the first kept, the last lines kept for error
//! messages); its start is awaited by a line it prints, its stop by SIGTERM
//! (SIGKILL after a timeout). `kill_on_drop` kills it if the bench itself
//! fails badly. [`RegistryChild`] starts a registry from a config file and
//! reads its `registry listening: grpc=... http=...` line.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Last lines kept, shown when the process fails.
const KEPT_TAIL: usize = 20;
/// How long a registry whose listening line cannot be parsed may take to
/// stop.
const UNPARSED_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of a child's log a [`LogSummary`] keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogLimits {
    /// WARN and ERROR lines kept for the report.
    pub(crate) problems: usize,
    /// Longest a kept line may be (in bytes; longer ones are cut and end
    /// in `…`); `None` keeps lines whole.
    pub(crate) max_line: Option<usize>,
    /// Lines containing this text are also kept, whole (the figures a
    /// bench reads from a child's log).
    pub(crate) keep: Option<&'static str>,
}

/// What a process printed.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct LogSummary {
    /// Lines at WARN level.
    pub(crate) warnings: u64,
    /// Lines at ERROR level.
    pub(crate) errors: u64,
    /// The first WARN and ERROR lines.
    pub(crate) problems: Vec<String>,
    /// Lines containing [`LogLimits::keep`].
    #[serde(skip)]
    pub(crate) kept: Vec<String>,
    /// The last lines.
    #[serde(skip)]
    tail: VecDeque<String>,
}

impl LogSummary {
    fn add(&mut self, line: &str, limits: LogLimits) {
        let mut line = strip_ansi(line);
        if let Some(keep) = limits.keep
            && line.contains(keep)
        {
            self.kept.push(line.clone());
        }
        if let Some(max) = limits.max_line
            && line.len() > max
        {
            let mut cut = max;
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
        if (warning || error) && self.problems.len() < limits.problems {
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
    /// Its log is summarized within `limits`.
    ///
    /// # Errors
    /// When the process cannot start, exits, or stays silent.
    pub(crate) async fn start<I, S>(
        name: &'static str,
        args: I,
        ready: &'static str,
        timeout: Duration,
        limits: LogLimits,
    ) -> anyhow::Result<(ChildProcess, String)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let exe = std::env::current_exe().context("cannot find the fieldlink binary")?;
        let (line_tx, line_rx) = oneshot::channel();
        let mut process = ChildProcess::spawn(name, &exe, args, limits, Some((ready, line_tx)))?;
        match tokio::time::timeout(timeout, line_rx).await {
            Ok(Ok(line)) => Ok((process, line)),
            Ok(Err(_)) => {
                let status = process.child.wait().await.map(|s| s.to_string());
                // Let the readers take in the last lines.
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

    /// Starts `program` (another program than this binary) with `args`
    /// and returns at once: the caller tells when it is ready (a port that
    /// answers). Its log is summarized within `limits`.
    ///
    /// # Errors
    /// When the program cannot start.
    pub(crate) fn spawn_program<I, S>(
        name: &'static str,
        program: &Path,
        args: I,
        limits: LogLimits,
    ) -> anyhow::Result<ChildProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ChildProcess::spawn(name, program, args, limits, None)
    }

    /// Spawns `program`, its output collected; the first stdout line
    /// starting with `ready`'s prefix goes to its sender.
    fn spawn<I, S>(
        name: &'static str,
        program: &Path,
        args: I,
        limits: LogLimits,
        ready: Option<(&'static str, oneshot::Sender<String>)>,
    ) -> anyhow::Result<ChildProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(program)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {} for the {name}", program.display()))?;
        let pid = child
            .id()
            .with_context(|| format!("the {name} exited at once"))?;
        let log = Arc::new(Mutex::new(LogSummary::default()));
        let mut readers = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(collect(stderr, log.clone(), limits, None)));
        }
        let stdout = child.stdout.take().context("no stdout pipe")?;
        readers.push(tokio::spawn(collect(stdout, log.clone(), limits, ready)));
        Ok(ChildProcess {
            name,
            child,
            pid,
            log,
            readers,
        })
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

    /// What it printed so far.
    pub(crate) fn log(&self) -> LogSummary {
        lock(&self.log).clone()
    }

    /// Sends SIGTERM and waits for the exit, SIGKILL after `timeout`.
    ///
    /// # Errors
    /// When `kill` cannot be run or fails (the process is then killed).
    pub(crate) async fn stop(mut self, timeout: Duration) -> anyhow::Result<(Stopped, LogSummary)> {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        match sent {
            Err(e) => {
                // Still stop it: killed on the way out.
                let _ = self.child.kill().await;
                bail!("cannot run `kill` to stop the {}: {e}", self.name);
            }
            Ok(sent) if !sent.success() => {
                let _ = self.child.kill().await;
                bail!("`kill -TERM {}` failed: {sent}", self.pid);
            }
            Ok(_) => {}
        }
        let (status, clean) = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => (status.to_string(), status.success()),
            Ok(Err(e)) => (format!("cannot wait for the {}: {e}", self.name), false),
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

/// A running `fieldlink registry` child on free loopback ports.
#[derive(Debug)]
pub(crate) struct RegistryChild {
    process: ChildProcess,
    grpc: String,
    http: String,
}

impl RegistryChild {
    /// Starts the registry on `config` with `--grpc` and `--http` on free
    /// ports, waits up to `timeout` for its `registry listening:` line and
    /// reads both addresses from it.
    ///
    /// # Errors
    /// When the registry does not start, does not listen, or prints a line
    /// that cannot be parsed.
    pub(crate) async fn start(
        config: &Path,
        timeout: Duration,
        limits: LogLimits,
    ) -> anyhow::Result<RegistryChild> {
        let args: Vec<OsString> = vec![
            "registry".into(),
            "--config".into(),
            config.as_os_str().to_owned(),
            "--grpc".into(),
            "127.0.0.1:0".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
        ];
        let (process, line) =
            ChildProcess::start("registry", args, "registry listening:", timeout, limits).await?;
        let Some((grpc, http)) = parse_listening(&line) else {
            let _ = process.stop(UNPARSED_STOP_TIMEOUT).await;
            bail!("cannot parse the registry's line `{line}`");
        };
        Ok(RegistryChild {
            process,
            grpc,
            http,
        })
    }

    /// gRPC URL (`http://127.0.0.1:PORT`).
    pub(crate) fn grpc_url(&self) -> &str {
        &self.grpc
    }

    /// HTTP base URL (`http://127.0.0.1:PORT/`, always ending in `/`).
    pub(crate) fn http_url(&self) -> &str {
        &self.http
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// How it exited, if it has.
    pub(crate) fn exited(&mut self) -> Option<String> {
        self.process.exited()
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> LogSummary {
        self.process.log()
    }

    /// Sends SIGTERM and waits for the exit, SIGKILL after `timeout`.
    ///
    /// # Errors
    /// When it cannot be signalled.
    pub(crate) async fn stop(self, timeout: Duration) -> anyhow::Result<(Stopped, LogSummary)> {
        self.process.stop(timeout).await
    }
}

/// A tenant of a registry config written by [`registry_config`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tenant {
    /// Tenant name.
    pub(crate) name: &'static str,
    /// `public` or `private`.
    pub(crate) cloud: &'static str,
    /// Its bearer token.
    pub(crate) token: &'static str,
}

/// A registry config: `data_dir`, then `sections` as they are (TOML tables,
/// each line ending in `\n`), then one `[[tenants]]` table per tenant.
pub(crate) fn registry_config(data_dir: &Path, sections: &str, tenants: &[Tenant]) -> String {
    // TOML basic strings take JSON-style escapes.
    let data_dir = serde_json::to_string(&data_dir.to_string_lossy())
        .unwrap_or_else(|_| "\"data\"".to_owned());
    let mut text = format!("data_dir = {data_dir}\n{sections}");
    for tenant in tenants {
        text.push_str(&format!(
            "[[tenants]]\n\
             name = \"{}\"\n\
             cloud = \"{}\"\n\
             token = \"{}\"\n",
            tenant.name, tenant.cloud, tenant.token
        ));
    }
    text
}

/// `line` without ANSI colour sequences (`ESC [ ... letter`), in case a
/// child colours its log despite `NO_COLOR`.
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

fn lock(log: &Mutex<LogSummary>) -> MutexGuard<'_, LogSummary> {
    // A panic while holding it only loses log lines.
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads lines into `log`; hands the first line starting with the given
/// prefix to its sender.
async fn collect(
    pipe: impl AsyncRead + Unpin,
    log: Arc<Mutex<LogSummary>>,
    limits: LogLimits,
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
        lock(&log).add(&line, limits);
    }
}

/// `registry listening: grpc=ADDR http=URL` → (`http://ADDR`, URL ending
/// in `/`).
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
    let http = http?;
    let http = if http.ends_with('/') {
        http
    } else {
        format!("{http}/")
    };
    Some((grpc?, http))
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Completes on Ctrl-C or SIGTERM, naming it.
pub(crate) async fn interrupted() -> &'static str {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
                "SIGTERM"
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&'static str>();
    tokio::select! {
        name = ctrl_c => name,
        name = terminate => name,
    }
}

/// Share of the machine's cores busy over `span`.
pub(crate) async fn machine_busy_share(span: Duration) -> Option<f64> {
    let before = machine_busy_seconds()?;
    tokio::time::sleep(span).await;
    let after = machine_busy_seconds()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Some((after - before) / span.as_secs_f64() / cores)
}

/// The soft limit of open files of this process (`Max open files` of
/// `/proc/self/limits`; children inherit it); `None` when unknown or
/// unlimited.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU seconds (user + system) process `pid` used so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) this process used so far.
pub(crate) fn own_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds("/proc/self/stat")
}

/// CPU seconds of several processes together; `None` when any is gone.
pub(crate) fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    parse_stat(&stat).map(|(_, seconds)| seconds)
}

/// CPU seconds every process of the machine spent busy (not idle, not
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
    // USER_HZ is 100 on every Linux the benches run on.
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
#[derive(Debug, Clone, Serialize)]
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
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux the benches run on.
    Some((name, (utime + stime) as f64 / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LogLimits = LogLimits {
        problems: 10,
        max_line: Some(400),
        keep: None,
    };

    #[test]
    fn warnings_and_errors_are_counted_and_kept() {
        let mut log = LogSummary::default();
        log.add("2026-01-01T00:00:00Z  INFO gateway: started", LIMITS);
        log.add("2026-01-01T00:00:01Z  WARN gateway: device offline", LIMITS);
        log.add("2026-01-01T00:00:02Z ERROR gateway: spool failed", LIMITS);
        log.add(&"x".repeat(1000), LIMITS);
        assert_eq!((log.warnings, log.errors), (1, 1));
        assert_eq!(log.problems.len(), 2);
        assert!(log.tail_text().contains("spool failed"));
        assert!(log.tail.back().is_some_and(|l| l.len() < 500));
    }

    #[test]
    fn lines_are_kept_whole_without_a_limit() {
        let mut log = LogSummary::default();
        let limits = LogLimits {
            problems: 1,
            max_line: None,
            keep: None,
        };
        log.add(&format!("t  WARN {}", "x".repeat(1000)), limits);
        log.add("t  WARN second", limits);
        assert_eq!(log.warnings, 2);
        assert_eq!(log.problems.len(), 1);
        assert!(log.problems[0].len() > 1000);
    }

    #[test]
    fn log_levels_are_found_in_coloured_lines_too() {
        let mut log = LogSummary::default();
        log.add("2026-11-26T02:39:38Z  INFO registry: started", LIMITS);
        log.add(
            "2026-11-26T02:39:38Z \u{1b}[33m WARN\u{1b}[0m registry: slow",
            LIMITS,
        );
        log.add("2026-11-26T02:39:38Z ERROR registry: broken", LIMITS);
        assert_eq!((log.warnings, log.errors), (1, 1));
        assert_eq!(log.problems[0], "2026-11-26T02:39:38Z  WARN registry: slow");
        assert_eq!(log.tail.len(), 3);
    }

    #[test]
    fn the_registry_config_escapes_its_directory() {
        let tenant = Tenant {
            name: "t",
            cloud: "public",
            token: "tok",
        };
        let text = registry_config(Path::new("/tmp/a \"b\"/data"), "[x]\ny = 1\n", &[tenant]);
        assert_eq!(
            text,
            "data_dir = \"/tmp/a \\\"b\\\"/data\"\n[x]\ny = 1\n\
             [[tenants]]\nname = \"t\"\ncloud = \"public\"\ntoken = \"tok\"\n"
        );
        assert!(text.parse::<toml::Table>().is_ok());
    }

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
        assert_eq!(
            parse_listening("registry listening: grpc=a:1 http=http://b:2").map(|u| u.1),
            Some("http://b:2/".to_owned())
        );
        assert_eq!(parse_listening("registry listening: grpc=x"), None);
    }

    #[test]
    fn this_process_has_rss_and_cpu() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(cpu_seconds(me).is_some());
        assert!(own_cpu_seconds().is_some());
        assert!(cpu_seconds_of(&[me, me]).is_some());
        let threads = thread_cpu(me);
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
    fn the_open_files_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            20000                40000                files     \n";
        assert_eq!(parse_open_files(limits), Some(20000));
        assert_eq!(
            parse_open_files(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "42 (tokio (w) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat(line), Some(("tokio (w) 1".to_owned(), 3.0)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
