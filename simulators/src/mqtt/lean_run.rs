//! Running a lean MQTT fleet ([`super::lean`]) at any size: in this process
//! when it fits, else in shard processes of at most [`LEAN_SHARD_SIZE`]
//! devices (one socket each, and a process may open 20 000 files).
//!
//! A shard is this binary's hidden `sim mqtt-shard` ([`LeanShardArgs`]): it
//! rebuilds the plan from the fleet's spec (devices, seed, mix, protocols,
//! tenants), reads the fleet logins from `mqtt-credentials.csv`, starts its
//! devices, prints `ready FROM TO`, then `stats CONNECTED SESSIONS
//! PUBLISHED FAILED` every [`STATS_EVERY`], which the parent sums
//! ([`LeanRun::stats`]); it stops (devices say `offline` and DISCONNECT)
//! when its stdin closes or on Ctrl-C/SIGTERM.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fieldlink_model::Protocol;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::broker::Credentials;
use super::lean::{FLEET_CONNECTING, LeanFleet, LeanOptions};
use crate::error::SimError;
use crate::fleet::{Shard, ShardCommand, start_shards, stdin_closed, stop_shards};
use crate::plan::{FleetPlan, FleetSpec, Mix, ProtocolMix, TenantSpec};

/// Most lean devices one process runs (a socket each; the rest of the
/// 20 000 files is slack).
pub const LEAN_SHARD_SIZE: u32 = 18_000;
/// How often a shard prints its `stats` line.
pub const STATS_EVERY: Duration = Duration::from_millis(500);

/// Flags of the hidden `sim mqtt-shard` (started by [`LeanRun`]).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LeanShardArgs {
    /// Devices in the whole fleet.
    #[arg(long)]
    pub devices: u32,
    /// Seed of the fleet.
    #[arg(long)]
    pub seed: u64,
    /// Class shares of the fleet.
    #[arg(long)]
    pub mix: Mix,
    /// Protocol shares of the fleet (only its MQTT JSON devices run).
    #[arg(long)]
    pub protocols: ProtocolMix,
    /// Tenants of the fleet, `name:cloud:weight`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tenants: Vec<TenantSpec>,
    /// Broker addresses (device `i` connects to `brokers[i % len]`).
    #[arg(long, value_delimiter = ',')]
    pub brokers: Vec<SocketAddr>,
    /// The fleet's `mqtt-credentials.csv` (its `fleet` logins are used).
    #[arg(long)]
    pub credentials: PathBuf,
    /// Telemetry interval, milliseconds.
    #[arg(long)]
    pub interval_ms: u64,
    /// First device index of this shard.
    #[arg(long)]
    pub from: u32,
    /// One past the last device index of this shard.
    #[arg(long)]
    pub to: u32,
    /// Devices of this shard in the CONNECT phase at once (its share of
    /// the fleet's [`FLEET_CONNECTING`]).
    #[arg(long, default_value_t = FLEET_CONNECTING)]
    pub connecting: usize,
    /// Stop when stdin closes (set by the parent).
    #[arg(long)]
    pub watch_stdin: bool,
}

impl LeanShardArgs {
    /// The flags, as the shard subcommand parses them.
    pub fn to_args(&self) -> Vec<String> {
        let join = |items: Vec<String>| items.join(",");
        let mut args = vec![
            "--devices".to_owned(),
            self.devices.to_string(),
            "--seed".to_owned(),
            self.seed.to_string(),
            "--mix".to_owned(),
            self.mix.to_string(),
            "--protocols".to_owned(),
            self.protocols.to_string(),
            "--tenants".to_owned(),
            join(self.tenants.iter().map(ToString::to_string).collect()),
            "--brokers".to_owned(),
            join(self.brokers.iter().map(ToString::to_string).collect()),
            "--credentials".to_owned(),
            self.credentials.display().to_string(),
            "--interval-ms".to_owned(),
            self.interval_ms.to_string(),
            "--from".to_owned(),
            self.from.to_string(),
            "--to".to_owned(),
            self.to.to_string(),
            "--connecting".to_owned(),
            self.connecting.to_string(),
        ];
        if self.watch_stdin {
            args.push("--watch-stdin".to_owned());
        }
        args
    }

    fn plan(&self) -> Result<FleetPlan, SimError> {
        // Tokens do not change the plan; fixed ones avoid random draws.
        let tenants = self
            .tenants
            .iter()
            .map(|t| TenantSpec {
                token: Some("shard-token-unused".to_owned()),
                ..t.clone()
            })
            .collect();
        FleetPlan::new(FleetSpec {
            devices: self.devices,
            seed: self.seed,
            mix: self.mix,
            protocols: self.protocols.clone(),
            tenants,
            interval: Duration::from_millis(self.interval_ms),
            ..FleetSpec::default()
        })
    }
}

/// Runs one lean shard until `shutdown` completes (or stdin closes with
/// `--watch-stdin`): prints `ready FROM TO`, then `stats` lines.
///
/// # Errors
/// [`SimError::Spec`] for a bad range, spec or credentials file.
pub async fn run_lean_shard(
    args: &LeanShardArgs,
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
    let plan = args.plan()?;
    let logins = Credentials::read(&args.credentials)?.fleet_logins();
    let options = LeanOptions {
        brokers: args.brokers.clone(),
        logins,
        interval: plan.spec().interval,
        connecting: args.connecting,
    };
    let fleet = LeanFleet::start(&plan, args.from..args.to, options)?;
    let stats = fleet.stats();
    say(&format!("ready {} {}", args.from, args.to))?;
    let stdin_closed = stdin_closed(args.watch_stdin);
    let report = async {
        let mut every = tokio::time::interval(STATS_EVERY);
        loop {
            every.tick().await;
            let m = &stats.mqtt;
            let line = format!(
                "stats {} {} {} {}",
                m.connected.load(Relaxed),
                m.sessions.load(Relaxed),
                m.published.load(Relaxed),
                stats.failed_attempts.load(Relaxed)
            );
            if say(&line).is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = shutdown => {}
        _ = stdin_closed => {}
        () = report => {}
    }
    fleet.stop().await;
    Ok(())
}

fn say(line: &str) -> Result<(), SimError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| SimError::io("stdout", e))
}

/// How a lean fleet runs.
#[derive(Debug, Clone)]
pub struct LeanRunOptions {
    /// Brokers, logins and interval.
    pub lean: LeanOptions,
    /// The fleet's `mqtt-credentials.csv`, which shards read their logins
    /// from (it must hold `lean.logins`).
    pub credentials_file: PathBuf,
    /// Most devices per process.
    pub shard_size: u32,
    /// How to start shard processes; `None` runs everything here.
    pub shard_command: Option<ShardCommand>,
}

/// Totals of a lean fleet's devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeanTotals {
    /// Sessions up now.
    pub connected: i64,
    /// Sessions established since the start.
    pub sessions: u64,
    /// Telemetry messages published.
    pub published: u64,
    /// Connection attempts that failed.
    pub failed_attempts: u64,
}

/// The latest `stats` line of a shard.
#[derive(Debug, Default)]
struct ShardStats {
    connected: AtomicI64,
    sessions: AtomicU64,
    published: AtomicU64,
    failed: AtomicU64,
}

enum Mode {
    InProcess(LeanFleet),
    Shards {
        shards: Vec<Shard>,
        stats: Vec<Arc<ShardStats>>,
        readers: Vec<JoinHandle<()>>,
        exits: mpsc::UnboundedReceiver<(usize, String)>,
    },
}

/// A lean fleet running, here or in shards.
pub struct LeanRun {
    mode: Mode,
    devices: u32,
}

impl std::fmt::Debug for LeanRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanRun")
            .field("devices", &self.devices)
            .field("pids", &self.pids())
            .finish()
    }
}

impl LeanRun {
    /// Starts the MQTT JSON devices of `plan`: in `ceil(N / shard_size)`
    /// shard processes when a shard command is given, else here. Returns
    /// once every shard started its devices (they connect in the
    /// background).
    ///
    /// # Errors
    /// [`SimError::Spec`] (no broker, a tenant without a login) or
    /// [`SimError::Shard`] when a shard cannot start; shards already
    /// started are stopped.
    pub async fn start(plan: &FleetPlan, options: LeanRunOptions) -> Result<LeanRun, SimError> {
        let range = plan.range_of(Protocol::MqttJson);
        let devices = range.end - range.start;
        let shard_size = options.shard_size.max(1);
        let command = match options.shard_command {
            Some(c) => c,
            _ => {
                let fleet = LeanFleet::start(plan, range, options.lean)?;
                return Ok(LeanRun {
                    mode: Mode::InProcess(fleet),
                    devices,
                });
            }
        };
        let spec = plan.spec();
        let tenants = plan
            .tenants()
            .iter()
            .zip(&spec.tenants)
            .map(|(t, s)| TenantSpec {
                name: t.name.clone(),
                cloud: t.cloud,
                weight: s.weight,
                token: None,
            })
            .collect::<Vec<_>>();
        let (exit_tx, exits) = mpsc::unbounded_channel();
        let connecting = shard_connecting(options.lean.connecting, devices, shard_size);
        let mut argv = Vec::new();
        let mut from = range.start;
        while from < range.end {
            let to = from.saturating_add(shard_size).min(range.end);
            let args = LeanShardArgs {
                devices: plan.len(),
                seed: spec.seed,
                mix: spec.mix,
                protocols: spec.protocols.clone(),
                tenants: tenants.clone(),
                brokers: options.lean.brokers.clone(),
                credentials: options.credentials_file.clone(),
                interval_ms: u64::try_from(options.lean.interval.as_millis()).unwrap_or(u64::MAX),
                from,
                to,
                connecting,
                watch_stdin: true,
            };
            argv.push((from..to, args.to_args()));
            from = to;
        }
        let mut shards = Vec::new();
        let mut stats = Vec::new();
        let mut readers = Vec::new();
        for (shard, stdout) in start_shards(&command, argv, exit_tx).await? {
            let figures = Arc::new(ShardStats::default());
            stats.push(figures.clone());
            readers.push(tokio::spawn(read_stats(stdout, figures)));
            shards.push(shard);
        }
        Ok(LeanRun {
            mode: Mode::Shards {
                shards,
                stats,
                readers,
                exits,
            },
            devices,
        })
    }

    /// Devices of the fleet.
    pub fn devices(&self) -> u32 {
        self.devices
    }

    /// Process ids of the shards (empty when the fleet runs here).
    pub fn pids(&self) -> Vec<u32> {
        match &self.mode {
            Mode::InProcess(_) => Vec::new(),
            Mode::Shards { shards, .. } => shards.iter().filter_map(|s| s.pid).collect(),
        }
    }

    /// Processes the devices run in (1 here).
    pub fn processes(&self) -> usize {
        match &self.mode {
            Mode::InProcess(_) => 1,
            Mode::Shards { shards, .. } => shards.len(),
        }
    }

    /// What the devices did so far (shards: as of their latest `stats`
    /// line, at most [`STATS_EVERY`] old).
    pub fn stats(&self) -> LeanTotals {
        match &self.mode {
            Mode::InProcess(fleet) => {
                let s = fleet.stats();
                LeanTotals {
                    connected: s.mqtt.connected.load(Relaxed),
                    sessions: s.mqtt.sessions.load(Relaxed),
                    published: s.mqtt.published.load(Relaxed),
                    failed_attempts: s.failed_attempts.load(Relaxed),
                }
            }
            Mode::Shards { stats, .. } => {
                let mut t = LeanTotals::default();
                for s in stats {
                    t.connected += s.connected.load(Relaxed);
                    t.sessions += s.sessions.load(Relaxed);
                    t.published += s.published.load(Relaxed);
                    t.failed_attempts += s.failed.load(Relaxed);
                }
                t
            }
        }
    }

    /// Completes when a shard exits on its own, with what happened
    /// (never for a fleet run here). Cancel-safe.
    pub async fn failed(&mut self) -> SimError {
        match &mut self.mode {
            Mode::InProcess(_) => std::future::pending().await,
            Mode::Shards { shards, exits, .. } => match exits.recv().await {
                Some((i, message)) => SimError::Shard {
                    from: shards[i].range.start,
                    to: shards[i].range.end,
                    message,
                },
                None => std::future::pending().await,
            },
        }
    }

    /// Stops every device (`offline`, DISCONNECT) and waits.
    pub async fn stop(self) {
        match self.mode {
            Mode::InProcess(fleet) => fleet.stop().await,
            Mode::Shards {
                shards, readers, ..
            } => {
                stop_shards(shards).await;
                for r in readers {
                    r.abort();
                }
            }
        }
    }
}

/// Each shard's part of the fleet's CONNECT budget `fleet` when `devices`
/// run `shard_size` to a process (a shard still gets
/// [`super::lean::MIN_CONNECTING`]).
fn shard_connecting(fleet: usize, devices: u32, shard_size: u32) -> usize {
    let shards = devices.div_ceil(shard_size.max(1)).max(1);
    (fleet / shards as usize).max(super::lean::MIN_CONNECTING)
}

/// Keeps a shard's latest `stats` line.
async fn read_stats(stdout: tokio::process::ChildStdout, into: Arc<ShardStats>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(figures) = parse_stats(&line) {
            into.connected.store(figures.connected, Relaxed);
            into.sessions.store(figures.sessions, Relaxed);
            into.published.store(figures.published, Relaxed);
            into.failed.store(figures.failed_attempts, Relaxed);
        }
    }
}

/// A `stats CONNECTED SESSIONS PUBLISHED FAILED` line.
fn parse_stats(line: &str) -> Option<LeanTotals> {
    let mut words = line.strip_prefix("stats ")?.split(' ');
    let mut next = || words.next()?.parse::<u64>().ok();
    let connected = i64::try_from(next()?).ok()?;
    Some(LeanTotals {
        connected,
        sessions: next()?,
        published: next()?,
        failed_attempts: next()?,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        shard: LeanShardArgs,
    }

    #[test]
    fn shard_args_round_trip_through_the_parser() {
        let args = LeanShardArgs {
            devices: 40_000,
            seed: 9,
            mix: "operating=1,other=3".parse().unwrap(),
            protocols: "mqtt-json=1".parse().unwrap(),
            tenants: vec![
                "acme:public:2".parse().unwrap(),
                "plant:private:1".parse().unwrap(),
            ],
            brokers: vec![
                "127.0.0.1:1884".parse().unwrap(),
                "127.0.0.1:1885".parse().unwrap(),
            ],
            credentials: "/tmp/f/mqtt-credentials.csv".into(),
            interval_ms: 60_000,
            from: 18_000,
            to: 36_000,
            connecting: 73,
            watch_stdin: true,
        };
        let argv = std::iter::once("shard".to_owned()).chain(args.to_args());
        assert_eq!(Cli::try_parse_from(argv).unwrap().shard, args);
    }

    #[test]
    fn a_shard_plans_the_same_tenants_as_its_parent() {
        let spec = FleetSpec {
            devices: 50,
            protocols: ProtocolMix::only(Protocol::MqttJson),
            tenants: vec![
                "acme:public:3".parse().unwrap(),
                "plant:private:1".parse().unwrap(),
            ],
            ..FleetSpec::default()
        };
        let parent = FleetPlan::new(spec.clone()).unwrap();
        let args = LeanShardArgs {
            devices: 50,
            seed: spec.seed,
            mix: spec.mix,
            protocols: spec.protocols.clone(),
            tenants: spec.tenants.clone(),
            brokers: vec!["127.0.0.1:1".parse().unwrap()],
            credentials: "unused".into(),
            interval_ms: 1000,
            from: 0,
            to: 50,
            connecting: FLEET_CONNECTING,
            watch_stdin: false,
        };
        let shard = args.plan().unwrap();
        let ids = |p: &FleetPlan| {
            p.devices()
                .map(|d| (d.id(), p.tenants()[d.tenant].name.clone(), d.endpoint))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&shard), ids(&parent));
    }

    #[test]
    fn the_fleets_connect_budget_is_split_among_its_shards() {
        // 1 000 000 devices, 18 000 a shard: 56 shards share 4 096.
        assert_eq!(shard_connecting(FLEET_CONNECTING, 1_000_000, 18_000), 73);
        assert_eq!(shard_connecting(FLEET_CONNECTING, 100_000, 18_000), 682);
        assert_eq!(
            shard_connecting(FLEET_CONNECTING, 10, 18_000),
            FLEET_CONNECTING
        );
        // However many shards, each keeps a few.
        assert_eq!(shard_connecting(64, 1_000_000, 1_000), 16);
    }

    #[test]
    fn stats_lines_parse_and_others_do_not() {
        assert_eq!(
            parse_stats("stats 5 7 100 2"),
            Some(LeanTotals {
                connected: 5,
                sessions: 7,
                published: 100,
                failed_attempts: 2
            })
        );
        for bad in [
            "ready 0 5",
            "stats 1 2 3",
            "stats a b c d",
            "stats -1 0 0 0",
        ] {
            assert_eq!(parse_stats(bad), None, "{bad}");
        }
    }
}
