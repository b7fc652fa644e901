//! Running a fleet: in this process when it is small, else in shard
//! processes.
//!
//! Every device costs a listening socket and, while a gateway polls it, a
//! connection: two file descriptors. With 20 000 open files per process a
//! shard serves at most [`DEFAULT_SHARD_SIZE`] (8 000) devices, leaving room
//! for one connection per device and slack. A fleet larger than that runs in
//! `ceil(N / shard size)` child processes started from a [`ShardCommand`]
//! (the `fieldlink` binary itself, hidden subcommand `sim modbus-shard`);
//! each rebuilds the plan from (devices, seed, mix), binds its range, prints
//! `ready FROM TO` on stdout and serves until its stdin closes (the parent
//! stopped or died) or it gets Ctrl-C/SIGTERM.

use std::ffi::OsString;
use std::future::Future;
use std::io::Read;
use std::ops::Range;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::SimError;
use crate::plan::{FleetPlan, FleetSpec, Mix, ProtocolMix, TenantSpec};
use crate::server::{BoundFleet, ServeOptions};

/// Most devices one process serves.
pub const DEFAULT_SHARD_SIZE: u32 = 8000;
/// How long a shard may take to bind its devices and report ready.
pub const SHARD_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a shard may take to exit after its stdin closes.
pub const SHARD_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of the hidden shard subcommand (`fieldlink sim modbus-shard`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ShardArgs {
    /// Devices in the whole fleet.
    #[arg(long)]
    pub devices: u32,
    /// Seed of the fleet.
    #[arg(long)]
    pub seed: u64,
    /// Class shares of the fleet.
    #[arg(long)]
    pub mix: Mix,
    /// Protocol shares of the fleet (only its Modbus devices are served).
    #[arg(long, default_value = "modbus-tcp=1")]
    pub protocols: ProtocolMix,
    /// Port of every device.
    #[arg(long)]
    pub port: u16,
    /// First device index of this shard.
    #[arg(long)]
    pub from: u32,
    /// One past the last device index of this shard.
    #[arg(long)]
    pub to: u32,
    /// Stop when stdin closes (set by the parent).
    #[arg(long)]
    pub watch_stdin: bool,
}

impl ShardArgs {
    /// The flags, as the shard subcommand parses them.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--devices".to_owned(),
            self.devices.to_string(),
            "--seed".to_owned(),
            self.seed.to_string(),
            "--mix".to_owned(),
            self.mix.to_string(),
            "--protocols".to_owned(),
            self.protocols.to_string(),
            "--port".to_owned(),
            self.port.to_string(),
            "--from".to_owned(),
            self.from.to_string(),
            "--to".to_owned(),
            self.to.to_string(),
        ];
        if self.watch_stdin {
            args.push("--watch-stdin".to_owned());
        }
        args
    }
}

/// Runs one shard: plans, binds `from..to`, prints `ready FROM TO`, serves
/// until `shutdown` completes (or stdin closes with `--watch-stdin`).
///
/// # Errors
/// [`SimError::Spec`] for a bad range or spec; [`SimError::Bind`].
pub async fn run_shard(
    args: &ShardArgs,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    if args.from >= args.to || args.to > args.devices {
        return Err(SimError::spec(
            "--from/--to",
            format!(
                "{}..{} is not a range of 0..{}",
                args.from, args.to, args.devices
            ),
        ));
    }
    let plan = FleetPlan::new(FleetSpec {
        devices: args.devices,
        seed: args.seed,
        mix: args.mix,
        protocols: args.protocols.clone(),
        port: args.port,
        // Tenants do not change types or endpoints; fixed tokens avoid
        // needless random draws.
        tenants: vec![TenantSpec {
            token: Some("shard-token-unused".to_owned()),
            ..TenantSpec::new("shard", fieldlink_model::Cloud::Public)
        }],
        ..FleetSpec::default()
    })?;
    let bound = BoundFleet::bind(&plan, args.from..args.to, ServeOptions::default()).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {} {}", args.from, args.to)
            .and_then(|()| out.flush())
            .map_err(|e| SimError::io("stdout", e))?;
    }
    let stdin_closed = stdin_closed(args.watch_stdin);
    bound
        .serve_until(async {
            tokio::select! {
                () = shutdown => {}
                _ = stdin_closed => {}
            }
        })
        .await;
    Ok(())
}

/// Completes when stdin reaches end of file (never when `watch` is false).
/// A plain thread: a blocking read in the runtime's pool would hold up its
/// shutdown.
pub fn stdin_closed(watch: bool) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    if watch {
        let spawned = std::thread::Builder::new()
            .name("stdin-watch".into())
            .spawn(move || {
                let mut buf = [0u8; 256];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send(());
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot watch stdin: {e}");
        }
    } else {
        std::mem::forget(tx);
    }
    rx
}

/// The program and leading arguments that start a shard; [`ShardArgs`]
/// flags are appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCommand {
    /// Program to run.
    pub program: PathBuf,
    /// Arguments before the shard flags (e.g. `sim modbus-shard`).
    pub args: Vec<OsString>,
}

impl ShardCommand {
    /// This executable with `args` first.
    ///
    /// # Errors
    /// [`SimError::Io`] when the executable's path is unknown.
    pub fn current_exe<I, S>(args: I) -> Result<ShardCommand, SimError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let program = std::env::current_exe().map_err(|e| SimError::io("current_exe", e))?;
        Ok(ShardCommand {
            program,
            args: args.into_iter().map(Into::into).collect(),
        })
    }
}

/// How to run a fleet.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most devices per process.
    pub shard_size: u32,
    /// How to start shard processes; `None` serves everything in this
    /// process whatever the size.
    pub shard_command: Option<ShardCommand>,
    /// Options of the Modbus face (in-process only; shards use the system
    /// clock).
    pub serve: ServeOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            shard_size: DEFAULT_SHARD_SIZE,
            shard_command: None,
            serve: ServeOptions::default(),
        }
    }
}

/// A shard process of a fleet (Modbus or lean MQTT).
pub(crate) struct Shard {
    pub(crate) range: Range<u32>,
    pub(crate) pid: Option<u32>,
    stdin: Option<ChildStdin>,
    /// Kept open after `ready` so a late write does not fail the shard.
    pub(crate) stdout: Option<ChildStdout>,
    kill: Option<oneshot::Sender<()>>,
    done: JoinHandle<std::io::Result<ExitStatus>>,
}

enum Mode {
    InProcess {
        stop: oneshot::Sender<()>,
        /// `None` once it ended (seen by `failed`).
        task: Option<JoinHandle<()>>,
    },
    Shards {
        shards: Vec<Shard>,
        exits: mpsc::UnboundedReceiver<(usize, String)>,
    },
}

/// A fleet being served, in this process or in shard processes.
pub struct RunningFleet {
    mode: Mode,
    devices: u32,
}

impl std::fmt::Debug for RunningFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningFleet")
            .field("devices", &self.devices)
            .field("processes", &self.processes())
            .field("shard_pids", &self.shard_pids())
            .finish()
    }
}

impl RunningFleet {
    /// Starts serving the Modbus TCP devices of `plan`: in this process
    /// when there are at most `shard_size` or no shard command is given,
    /// else in `ceil(N / shard_size)` shard processes. Returns once every
    /// device listens.
    ///
    /// # Errors
    /// [`SimError::Bind`] (in-process) or [`SimError::Shard`] when a shard
    /// cannot start or does not report ready; shards already started are
    /// stopped.
    pub async fn start(plan: &FleetPlan, options: RunOptions) -> Result<RunningFleet, SimError> {
        let shard_size = options.shard_size.max(1);
        let range = plan.range_of(fieldlink_model::Protocol::ModbusTcp);
        let devices = range.end - range.start;
        let command = match options.shard_command {
            Some(c) if devices > shard_size => c,
            _ => {
                let bound = BoundFleet::bind(plan, range, options.serve).await?;
                let (stop, stopped) = oneshot::channel::<()>();
                let task = tokio::spawn(bound.serve_until(async {
                    let _ = stopped.await;
                }));
                return Ok(RunningFleet {
                    mode: Mode::InProcess {
                        stop,
                        task: Some(task),
                    },
                    devices,
                });
            }
        };
        let spec = plan.spec();
        let (exit_tx, exits) = mpsc::unbounded_channel();
        let mut argv = Vec::new();
        let mut from = range.start;
        while from < range.end {
            let to = from.saturating_add(shard_size).min(range.end);
            let args = ShardArgs {
                devices: plan.len(),
                seed: spec.seed,
                mix: spec.mix,
                protocols: spec.protocols.clone(),
                port: spec.port,
                from,
                to,
                watch_stdin: true,
            };
            argv.push((from..to, args.to_args()));
            from = to;
        }
        let shards = start_shards(&command, argv, exit_tx)
            .await?
            .into_iter()
            .map(|(mut shard, stdout)| {
                shard.stdout = Some(stdout);
                shard
            })
            .collect();
        Ok(RunningFleet {
            mode: Mode::Shards { shards, exits },
            devices,
        })
    }

    /// Processes serving devices: 1 in-process, else the shard count.
    pub fn processes(&self) -> usize {
        match &self.mode {
            Mode::InProcess { .. } => 1,
            Mode::Shards { shards, .. } => shards.len(),
        }
    }

    /// Process ids of the shards (empty in-process).
    pub fn shard_pids(&self) -> Vec<u32> {
        match &self.mode {
            Mode::InProcess { .. } => Vec::new(),
            Mode::Shards { shards, .. } => shards.iter().filter_map(|s| s.pid).collect(),
        }
    }

    /// Device ranges of the shards (`0..N` in-process).
    pub fn shard_ranges(&self) -> Vec<Range<u32>> {
        match &self.mode {
            Mode::InProcess { .. } => std::iter::once(0..self.devices).collect(),
            Mode::Shards { shards, .. } => shards.iter().map(|s| s.range.clone()).collect(),
        }
    }

    /// Completes when part of the fleet stops on its own (a shard exited or
    /// the serving task ended), with what happened. Cancel-safe.
    pub async fn failed(&mut self) -> SimError {
        match &mut self.mode {
            Mode::InProcess { task, .. } => {
                let Some(handle) = task.as_mut() else {
                    return std::future::pending().await;
                };
                let message = match handle.await {
                    Ok(()) => "serving task ended".to_owned(),
                    Err(e) => format!("serving task failed: {e}"),
                };
                *task = None;
                SimError::Shard {
                    from: 0,
                    to: self.devices,
                    message,
                }
            }
            Mode::Shards { shards, exits } => match exits.recv().await {
                Some((i, message)) => SimError::Shard {
                    from: shards[i].range.start,
                    to: shards[i].range.end,
                    message,
                },
                None => std::future::pending().await,
            },
        }
    }

    /// Stops serving: in-process listeners close; shard processes get their
    /// stdin closed and are killed if they have not exited after
    /// [`SHARD_STOP_TIMEOUT`].
    pub async fn stop(self) {
        match self.mode {
            Mode::InProcess { stop, task } => {
                let _ = stop.send(());
                if let Some(task) = task {
                    let _ = task.await;
                }
            }
            Mode::Shards { shards, .. } => stop_shards(shards).await,
        }
    }
}

/// Starts `command` with `argv` for the devices `range`; its exit is sent
/// on `exit_tx` with `slot`. The shard's stdout is returned apart, for
/// [`wait_ready`].
/// Spawns one shard of `command` per `(range, argv)`, then waits until
/// each says it is ready; returns them with their stdout past the ready
/// line. On any failure the shards already started are stopped.
pub(crate) async fn start_shards(
    command: &ShardCommand,
    argv: Vec<(Range<u32>, Vec<String>)>,
    exit_tx: mpsc::UnboundedSender<(usize, String)>,
) -> Result<Vec<(Shard, ChildStdout)>, SimError> {
    let mut shards = Vec::with_capacity(argv.len());
    let mut pending = Vec::with_capacity(argv.len());
    for (range, args) in argv {
        match spawn_shard(command, args, range, shards.len(), exit_tx.clone()) {
            Ok((shard, stdout)) => {
                shards.push(shard);
                pending.push(stdout);
            }
            Err(e) => {
                stop_shards(shards).await;
                return Err(e);
            }
        }
    }
    let mut ready = Vec::with_capacity(pending.len());
    for (shard, stdout) in shards.iter().zip(pending) {
        match wait_ready(stdout, &shard.range).await {
            Ok(stdout) => ready.push(stdout),
            Err(e) => {
                stop_shards(shards).await;
                return Err(e);
            }
        }
    }
    Ok(shards.into_iter().zip(ready).collect())
}

fn spawn_shard(
    command: &ShardCommand,
    argv: Vec<String>,
    range: Range<u32>,
    slot: usize,
    exit_tx: mpsc::UnboundedSender<(usize, String)>,
) -> Result<(Shard, ChildStdout), SimError> {
    let shard_err = |message: String| SimError::Shard {
        from: range.start,
        to: range.end,
        message,
    };
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // Its own process group: a terminal's Ctrl-C reaches only the parent,
    // which then stops the shards in order.
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child: Child = cmd
        .spawn()
        .map_err(|e| shard_err(format!("cannot start {}: {e}", command.program.display())))?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| shard_err("no stdout pipe".to_owned()))?;
    let (kill, killed) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let status = tokio::select! {
            status = child.wait() => status,
            _ = killed => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        let message = match &status {
            Ok(s) => format!("exited ({s})"),
            Err(e) => format!("lost ({e})"),
        };
        let _ = exit_tx.send((slot, message));
        status
    });
    Ok((
        Shard {
            range,
            pid,
            stdin,
            stdout: None,
            kill: Some(kill),
            done,
        },
        stdout,
    ))
}

/// Waits for the shard's `ready FROM TO` line; its stdout after it.
async fn wait_ready(stdout: ChildStdout, range: &Range<u32>) -> Result<ChildStdout, SimError> {
    let err = |message: String| SimError::Shard {
        from: range.start,
        to: range.end,
        message,
    };
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    let expected = format!("ready {} {}", range.start, range.end);
    let read = tokio::time::timeout(SHARD_READY_TIMEOUT, async {
        loop {
            line.clear();
            let n = lines.read_line(&mut line).await?;
            if n == 0 || line.trim_end() == expected {
                return std::io::Result::Ok(n);
            }
        }
    })
    .await;
    match read {
        Ok(Ok(n)) if n > 0 => Ok(lines.into_inner()),
        Ok(Ok(_)) => Err(err("exited before it was ready".to_owned())),
        Ok(Err(e)) => Err(err(format!("cannot read its stdout: {e}"))),
        Err(_) => Err(err(format!(
            "not ready after {}",
            humantime::format_duration(SHARD_READY_TIMEOUT)
        ))),
    }
}

/// Closes every shard's stdin, waits [`SHARD_STOP_TIMEOUT`] for them all
/// together, then kills every one still running at once (one at a time, a
/// fleet of 56 shards took minutes to tear down) and waits for those.
pub(crate) async fn stop_shards(mut shards: Vec<Shard>) {
    for s in &mut shards {
        s.stdin = None;
    }
    let deadline = tokio::time::Instant::now() + SHARD_STOP_TIMEOUT;
    let total = shards.len();
    let mut killed = Vec::new();
    for mut s in shards {
        if tokio::time::timeout_at(deadline, &mut s.done).await.is_ok() {
            continue;
        }
        if let Some(kill) = s.kill.take() {
            let _ = kill.send(());
        }
        killed.push(s);
    }
    if !killed.is_empty() {
        let ranges: Vec<String> = killed
            .iter()
            .map(|s| format!("{}..{}", s.range.start, s.range.end))
            .collect();
        tracing::warn!(
            "{} of {total} shard(s) did not stop within {}; killed them: {}",
            killed.len(),
            humantime::format_duration(SHARD_STOP_TIMEOUT),
            ranges.join(", ")
        );
    }
    for s in killed {
        let _ = s.done.await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        shard: ShardArgs,
    }

    #[test]
    fn shard_args_round_trip_through_the_parser() {
        let args = ShardArgs {
            devices: 20_000,
            seed: 77,
            mix: "operating=1,other=3".parse().unwrap(),
            protocols: "modbus-tcp=3,opc-ua=1".parse().unwrap(),
            port: 5020,
            from: 8000,
            to: 16_000,
            watch_stdin: true,
        };
        let argv = std::iter::once("shard".to_owned()).chain(args.to_args());
        assert_eq!(Cli::try_parse_from(argv).unwrap().shard, args);
    }

    #[tokio::test]
    async fn a_bad_shard_range_is_refused() {
        let args = ShardArgs {
            devices: 10,
            seed: 1,
            mix: Mix::default(),
            protocols: ProtocolMix::default(),
            port: 0,
            from: 5,
            to: 11,
            watch_stdin: false,
        };
        let err = run_shard(&args, async {}).await.unwrap_err();
        assert!(err.to_string().starts_with("--from/--to"), "{err}");
    }

    #[tokio::test]
    async fn a_small_fleet_runs_in_process_and_stops() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 5,
            port: 0,
            ..FleetSpec::default()
        })
        .unwrap();
        let options = RunOptions {
            shard_command: Some(ShardCommand {
                program: "/nonexistent".into(),
                args: Vec::new(),
            }),
            ..RunOptions::default()
        };
        let fleet = RunningFleet::start(&plan, options).await.unwrap();
        assert_eq!(fleet.processes(), 1);
        assert!(fleet.shard_pids().is_empty());
        fleet.stop().await;
    }

    #[tokio::test]
    async fn a_shard_that_cannot_start_is_reported() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 5,
            port: 0,
            ..FleetSpec::default()
        })
        .unwrap();
        let options = RunOptions {
            shard_size: 2,
            shard_command: Some(ShardCommand {
                program: "/nonexistent/fieldlink".into(),
                args: Vec::new(),
            }),
            ..RunOptions::default()
        };
        let err = RunningFleet::start(&plan, options).await.unwrap_err();
        assert!(err.to_string().contains("cannot start"), "{err}");
    }

    /// A stand-in shard: `sh` parses the shard flags, reports ready, then
    /// runs `tail` (e.g. `cat >/dev/null` waits for stdin to close).
    #[cfg(unix)]
    fn fake_shard(tail: &str) -> ShardCommand {
        let script = format!(
            "while [ $# -gt 0 ]; do case $1 in --from) f=$2;; --to) t=$2;; esac; shift; done; \
             echo \"ready $f $t\"; {tail}"
        );
        ShardCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into(), "shard".into()],
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn shards_start_report_ready_and_stop_when_stdin_closes() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 25,
            port: 0,
            ..FleetSpec::default()
        })
        .unwrap();
        let options = RunOptions {
            shard_size: 10,
            shard_command: Some(fake_shard("cat >/dev/null")),
            ..RunOptions::default()
        };
        let fleet = RunningFleet::start(&plan, options).await.unwrap();
        assert_eq!(fleet.processes(), 3);
        assert_eq!(fleet.shard_ranges(), vec![0..10, 10..20, 20..25]);
        assert_eq!(fleet.shard_pids().len(), 3);
        let started = std::time::Instant::now();
        fleet.stop().await;
        assert!(
            started.elapsed() < SHARD_STOP_TIMEOUT,
            "shards were killed, not stopped"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_shard_that_exits_is_reported() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 4,
            port: 0,
            ..FleetSpec::default()
        })
        .unwrap();
        let options = RunOptions {
            shard_size: 2,
            shard_command: Some(fake_shard("sleep 0.2; exit 3")),
            ..RunOptions::default()
        };
        let mut fleet = RunningFleet::start(&plan, options).await.unwrap();
        let err = fleet.failed().await.to_string();
        assert!(err.contains("exit status: 3"), "{err}");
        fleet.stop().await;

        let options = RunOptions {
            shard_size: 2,
            shard_command: Some(ShardCommand {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), "exit 1".into()],
            }),
            ..RunOptions::default()
        };
        let err = RunningFleet::start(&plan, options).await.unwrap_err();
        assert!(
            err.to_string().contains("exited before it was ready"),
            "{err}"
        );
    }
}
