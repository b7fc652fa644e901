//! `fieldlink bench modbus`: one gateway polling a simulated Modbus TCP
//! fleet, and pymodbus reading the same load from the same fleet.
//!
//! A run, all on loopback:
//!
//! 1. the fleet: `--devices` simulated devices ([`fieldlink_sim`]), each on
//!    its own `127.x.y.z:--port`, in this process (or in shard processes
//!    of this binary beyond 8 000 devices);
//! 2. a registry (this binary as `fieldlink registry`, one public bench
//!    tenant) and the gateway (this binary as `fieldlink gateway`, a config
//!    written for the run), each a child process so that `/proc` gives
//!    their own memory and CPU;
//! 3. once every session is up and a short warm-up has passed, a window of
//!    `--duration`: the gateway's Prometheus metrics, the processes' CPU and
//!    the gateway's RSS, read at the start, every second and at the end;
//! 4. the registry's `reporting` count (日运行数量) read back, then the
//!    gateway and the registry stopped;
//! 5. the peer: pymodbus' asyncio client (`benches/peers/pymodbus_load.py`)
//!    issuing exactly the gateway's requests to the same devices at the
//!    same interval, with the same warm-up and window; the ratios
//!    gateway ÷ pymodbus;
//! 6. the fleet stopped; a summary printed and JSON written to
//!    `<out>/modbus-<devices>d-<tags>t-<unix_secs>.json`.
//!
//! Whatever fails, every process the bench started is stopped.
//!
//! The load per device is `--tags` u16 tags over the 125-register scan
//! block every simulated device serves (input registers 5000..=5124) — see
//! [`layout`](self::Layout) for how the two layouts place them.
//!
//! Two modes ([`Mode`]): **cadence** polls every group at `--interval`;
//! **saturate** polls back to back (poll interval 0: each device's next read
//! goes out as soon as its last one is answered), gateway and peer alike, so
//! the figures are what one gateway process does at full load: points and
//! registers per second and per gateway CPU-second (from
//! `/proc/<pid>/stat`), beside pymodbus doing the same reads and decodes.

mod gateway;
mod layout;
mod peer;
mod report;
mod scrape;
mod window;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use fieldlink_sim::{FleetPlan, FleetSpec, RunOptions, RunningFleet, ShardCommand};

pub use layout::Layout;

use gateway::GatewayProcess;
use layout::{Block, Load};
use peer::{PeerOut, Python};
use report::{
    ArgsOut, FleetOut, GatewayOut, LoadOut, MachineOut, Ratios, RegistryOut, Results, per_cpu,
    per_sec,
};
use window::{Watched, Window};

use crate::process::{self, LogLimits, Tenant};
use crate::registry::RegistryProcess;

/// How fast the devices are polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every poll group at `--interval`.
    Cadence,
    /// Back to back (poll interval 0): as fast as the devices answer.
    Saturate,
}

impl Mode {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Cadence => "cadence",
            Mode::Saturate => "saturate",
        }
    }
}

/// Flags of `fieldlink bench modbus`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModbusArgs {
    /// Simulated devices, all polled by the one gateway.
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// u16 tags (points) per device.
    #[arg(long, default_value_t = 125)]
    pub tags: u32,
    /// Poll interval of every tag (e.g. 1000ms, 1s); ignored by
    /// `--mode saturate`.
    #[arg(long, default_value = "1000ms", value_parser = fieldlink_sim::parse_interval)]
    pub interval: Duration,
    /// `cadence` (every group at `--interval`) or `saturate` (back to back,
    /// as fast as the devices answer).
    #[arg(long, value_enum, default_value_t = Mode::Cadence)]
    pub mode: Mode,
    /// Length of the measuring window (gateway, then the same for pymodbus).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Tag layout: `contiguous` (merged into reads of up to 125 registers)
    /// or `scattered` (every tag its own request).
    #[arg(long, value_enum, default_value_t = Layout::Contiguous)]
    pub layout: Layout,
    /// TCP port of every simulated device (each has its own 127.x.y.z address).
    #[arg(long, default_value_t = 15020)]
    pub port: u16,
    /// Directory the JSON result is written to.
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
    /// Skip the pymodbus peer.
    #[arg(long)]
    pub no_peer: bool,
}

/// Request timeout of the peer: the gateway's default `modbus.timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the registry may take to count every device as reporting.
const REPORTING_TIMEOUT: Duration = Duration::from_secs(20);
/// The registry's one tenant.
const TENANT: Tenant = Tenant {
    name: "bench-modbus",
    cloud: "public",
    token: "bench-modbus-token-0001",
};
/// How much of each child's log is kept: its first 10 warning and error
/// lines, each cut at 400 bytes.
const LOG_LIMITS: LogLimits = LogLimits {
    problems: 10,
    max_line: Some(400),
    keep: None,
};

/// Runs the bench.
///
/// # Errors
/// When a part cannot be started, the gateway does not bring every device
/// online, the registry does not count every device as reporting, or the
/// peer fails (a missing peer is reported, not an error).
pub async fn run(args: ModbusArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let busy_before = process::machine_busy_share(Duration::from_secs(1)).await;
    if let Some(busy) = busy_before.filter(|b| *b > 0.2) {
        println!(
            "note: the machine is already {:.0} % busy: other work skews the figures",
            busy * 100.0
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("fieldlink-bench-modbus-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let plan = FleetPlan::new(FleetSpec {
        devices: args.devices,
        port: args.port,
        interval: args.interval,
        ..FleetSpec::default()
    })
    .context("cannot plan the fleet")?;
    let load = Load::new(args.layout, args.tags, Block::SCAN, poll_interval(&args))?;
    println!(
        "load per device and poll: {} request(s), {} registers, {} points ({})",
        load.requests_per_poll(),
        load.registers_per_poll(),
        load.tags,
        note(&load)
    );
    println!(
        "starting {} simulated devices on 127.x.y.z:{} ...",
        args.devices, args.port
    );
    let options = RunOptions {
        shard_command: Some(
            ShardCommand::current_exe(["sim", "modbus-shard"])
                .context("cannot find the fieldlink binary for fleet shards")?,
        ),
        ..RunOptions::default()
    };
    let fleet = RunningFleet::start(&plan, options)
        .await
        .context("the simulated fleet did not start")?;
    println!("fleet up in {} process(es)", fleet.processes());
    // On Ctrl-C or SIGTERM the run is dropped: that kills the registry,
    // gateway and peer processes (`kill_on_drop`); the fleet stops below.
    let outcome = tokio::select! {
        outcome = drive(&args, &plan, &load, dir.path(), &fleet, started_unix) => outcome,
        signal = process::interrupted() => Err(anyhow::anyhow!("interrupted by {signal}; stopped everything")),
    };
    let outcome = outcome.map(|(mut results, peer_error)| {
        results.machine.busy_before = busy_before;
        (results, peer_error)
    });
    fleet.stop().await;
    let (results, peer_error) = outcome?;
    print!("{}", results.summary());
    let path = results.write_json(&args.out)?;
    println!("results: {}", path.display());
    if let Err(e) = dir.close() {
        eprintln!("warning: cannot remove the temporary directory: {e}");
    }
    let n = u64::from(args.devices);
    if results.gateway.devices_online < i64::from(args.devices) || results.registry.reporting < n {
        bail!(
            "not every device made it: {} of {n} online at the gateway, {} of {n} reporting at the registry (see {})",
            results.gateway.devices_online,
            results.registry.reporting,
            path.display()
        );
    }
    if let Some(e) = peer_error {
        bail!("the pymodbus peer failed: {e}");
    }
    Ok(())
}

fn check_args(args: &ModbusArgs) -> anyhow::Result<()> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if args.tags == 0 {
        bail!("--tags must be at least 1");
    }
    if args.duration < Duration::from_secs(1) {
        bail!("--duration must be at least 1s");
    }
    if args.port == 0 {
        bail!("--port must be above 0 (every device listens on it)");
    }
    if args.mode == Mode::Cadence && args.interval < Duration::from_millis(10) {
        bail!(
            "--interval must be at least 10ms (the gateway's least); --mode saturate polls back to back"
        );
    }
    Ok(())
}

/// The poll interval of every group: `--interval`, or 0 (back to back)
/// when saturating.
fn poll_interval(args: &ModbusArgs) -> Duration {
    match args.mode {
        Mode::Cadence => args.interval,
        Mode::Saturate => Duration::ZERO,
    }
}

/// How the tags sit on the registers, for people.
fn note(load: &Load) -> String {
    let (first, w) = (load.block.start, load.block.len);
    let last = u32::from(first) + u32::from(w.saturating_sub(1));
    match load.layout {
        Layout::Contiguous => format!(
            "every simulated device serves input registers {first}..={last} ({w} registers, the scan block): tag j of each group of up to 125 tags reads address {first} + j mod {w}, so a group is one read of min(tags, {w}) registers"
        ),
        Layout::Scattered => format!(
            "tags at every other input register of {first}..={last}, {} per poll group: each tag is its own 1-register request",
            w.div_ceil(2)
        ),
    }
}

/// Warm-up after every session is up: two polls, at least a second (three
/// when saturating, so that every device is past its first polls).
fn warmup(interval: Duration) -> Duration {
    if interval.is_zero() {
        return Duration::from_secs(3);
    }
    (interval * 2).max(Duration::from_secs(1))
}

/// The gateway part, then the peer.
async fn drive(
    args: &ModbusArgs,
    plan: &FleetPlan,
    load: &Load,
    dir: &Path,
    fleet: &RunningFleet,
    started_unix: u64,
) -> anyhow::Result<(Results, Option<String>)> {
    let measured = measure_gateway(args, plan, load, dir, fleet).await?;
    let (peer, peer_missing, peer_error) = if args.no_peer {
        (None, Some("skipped (--no-peer)".to_owned()), None)
    } else {
        run_peer(args, plan, load, dir).await
    };
    let ratios = peer.as_ref().map(|p| Ratios::of(&measured.gateway, p));
    let results = Results {
        bench: "modbus",
        started_unix,
        args: ArgsOut {
            devices: args.devices,
            tags: args.tags,
            mode: args.mode,
            interval_ms: poll_interval(args).as_secs_f64() * 1e3,
            duration_secs: args.duration.as_secs_f64(),
            layout: args.layout,
            port: args.port,
            out: args.out.clone(),
        },
        load: load_out(args, load),
        fleet: FleetOut {
            devices: args.devices,
            processes: fleet.processes(),
            cpu_seconds: measured.fleet_cpu,
        },
        gateway: measured.gateway,
        registry: measured.registry,
        peer,
        peer_missing,
        ratios,
        machine: MachineOut {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            busy_before: None,
            busy_seconds: measured.busy,
            others_seconds: measured.others,
        },
    };
    Ok((results, peer_error))
}

fn load_out(args: &ModbusArgs, load: &Load) -> LoadOut {
    let polls_per_sec = cadence_polls_per_sec(args, load);
    LoadOut {
        layout: load.layout,
        tags_per_device: load.tags,
        block_start: load.block.start,
        block_registers: load.block.len,
        poll_groups: load.groups.len(),
        requests_per_poll: load.requests_per_poll(),
        registers_per_poll: load.registers_per_poll(),
        registers_per_request: load.registers_per_request(),
        points_per_poll: u64::from(load.tags),
        expected_transactions_per_sec: polls_per_sec.map(|p| p * load.requests_per_poll() as f64),
        expected_registers_per_sec: polls_per_sec.map(|p| p * load.registers_per_poll() as f64),
        note: note(load),
    }
}

/// Polls per second the cadence asks for; `None` when saturating (as many
/// as the devices answer).
fn cadence_polls_per_sec(args: &ModbusArgs, load: &Load) -> Option<f64> {
    (!load.interval.is_zero())
        .then(|| f64::from(args.devices) / load.interval.as_secs_f64())
        .filter(|_| args.mode == Mode::Cadence)
}

/// Runs pymodbus: (figures, why missing, why failed).
async fn run_peer(
    args: &ModbusArgs,
    plan: &FleetPlan,
    load: &Load,
    dir: &Path,
) -> (Option<PeerOut>, Option<String>, Option<String>) {
    let python = match peer::find_python().await {
        Python::Found(path, version) => {
            println!(
                "running the peer: pymodbus {version} ({}) ...",
                path.display()
            );
            path
        }
        Python::Missing(why) => {
            println!("peer missing: {why}");
            return (None, Some(why), None);
        }
    };
    let endpoints = plan
        .devices()
        .map(|d| (d.endpoint.ip().to_string(), d.endpoint.port()))
        .collect();
    match peer::run(
        &python,
        dir,
        endpoints,
        load,
        warmup(poll_interval(args)),
        args.duration,
        REQUEST_TIMEOUT,
    )
    .await
    {
        Ok(out) => (Some(out), None, None),
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("the peer failed: {why}");
            (None, Some(format!("the peer failed: {why}")), Some(why))
        }
    }
}

/// What the gateway part measured.
#[derive(Debug)]
struct GatewayPart {
    gateway: GatewayOut,
    registry: RegistryOut,
    fleet_cpu: Option<f64>,
    busy: Option<f64>,
    others: Option<f64>,
}

/// Starts the registry, runs the gateway part, stops the registry.
async fn measure_gateway(
    args: &ModbusArgs,
    plan: &FleetPlan,
    load: &Load,
    dir: &Path,
    fleet: &RunningFleet,
) -> anyhow::Result<GatewayPart> {
    println!("starting a registry ...");
    let registry = RegistryProcess::start(dir, TENANT, LOG_LIMITS)
        .await
        .context("the registry did not start")?;
    println!(
        "registry listening: grpc={} http={}",
        registry.process().grpc_url(),
        registry.process().http_url()
    );
    let measured = with_registry(args, plan, load, dir, fleet, &registry).await;
    if measured.is_err() {
        eprintln!(
            "the registry's last lines:{}",
            registry.process().log().tail_text()
        );
    }
    let stopped = registry.stop().await;
    let mut part = measured?;
    match stopped {
        Ok((stopped, log)) => {
            part.registry.stopped = Some(stopped);
            part.registry.log = log;
        }
        Err(e) => eprintln!("warning: {e:#}"),
    }
    Ok(part)
}

/// Starts the gateway, measures it, stops it.
async fn with_registry(
    args: &ModbusArgs,
    plan: &FleetPlan,
    load: &Load,
    dir: &Path,
    fleet: &RunningFleet,
    registry: &RegistryProcess,
) -> anyhow::Result<GatewayPart> {
    let metrics = crate::common::free_local_addr()?;
    let config = gateway::config_text(
        plan,
        load,
        registry.process().grpc_url(),
        TENANT.token,
        &dir.join("gateway-data"),
        metrics,
    )?;
    println!("starting the gateway ({} devices) ...", args.devices);
    let started = Instant::now();
    let gateway = GatewayProcess::start(&dir.join("gateway.toml"), &config, metrics)
        .await
        .context("the gateway did not start")?;
    let measured = with_gateway(args, load, fleet, registry, &gateway, started).await;
    if measured.is_err() {
        eprintln!("the gateway's last lines:{}", gateway.log().tail_text());
    }
    let stopped = gateway.stop().await;
    let mut part = measured?;
    match stopped {
        Ok((stopped, log)) => {
            part.gateway.stopped = Some(stopped);
            part.gateway.log = log;
        }
        Err(e) => eprintln!("warning: {e:#}"),
    }
    Ok(part)
}

/// Waits for every session, warms up, measures, reads the registry's counts.
async fn with_gateway(
    args: &ModbusArgs,
    load: &Load,
    fleet: &RunningFleet,
    registry: &RegistryProcess,
    gateway: &GatewayProcess,
    started: Instant,
) -> anyhow::Result<GatewayPart> {
    let connect_timeout =
        Duration::from_secs(60) + Duration::from_millis(u64::from(args.devices) * 5);
    gateway
        .wait_online(args.devices, connect_timeout)
        .await
        .context("the gateway did not bring every device online")?;
    let connect_secs = started.elapsed().as_secs_f64();
    let rss_online = process::rss_bytes(gateway.pid());
    let warm = warmup(poll_interval(args));
    println!(
        "{} sessions up after {connect_secs:.1} s; warming up {} ms, measuring for {} ...",
        args.devices,
        warm.as_millis(),
        humantime::format_duration(args.duration)
    );
    tokio::time::sleep(warm).await;
    let fleet_pids = match fleet.shard_pids() {
        pids if pids.is_empty() => vec![std::process::id()],
        pids => pids,
    };
    let watched = Watched {
        gateway: gateway.pid(),
        registry: registry.process().pid(),
        fleet: fleet_pids,
        registry_metrics: crate::prometheus::Endpoint::new(format!(
            "{}metrics",
            registry.process().http_url()
        ))?,
    };
    let window = window::measure(gateway, &watched, args.duration).await?;
    let rss = process::rss_bytes(gateway.pid());
    let registry_rss = process::rss_bytes(registry.process().pid());
    let counts = registry
        .wait_reporting(u64::from(args.devices), REPORTING_TIMEOUT)
        .await
        .context("cannot read the registry's counts")?;
    let mut registry_out = RegistryOut::new(args.devices, counts);
    registry_out.cpu_seconds = window.first.cpu_diff(&window.last, |r| r.registry_cpu);
    registry_out.rss_bytes = registry_rss;
    let gateway = gateway_out(args, load, &window, connect_secs, rss_online, rss);
    let fleet_cpu = window.first.cpu_diff(&window.last, |r| r.fleet_cpu);
    let busy = window.first.cpu_diff(&window.last, |r| r.busy);
    let others = others_seconds(
        busy,
        &[gateway.cpu_seconds, registry_out.cpu_seconds, fleet_cpu],
    );
    Ok(GatewayPart {
        gateway,
        registry: registry_out,
        fleet_cpu,
        busy,
        others,
    })
}

/// Machine busy seconds not spent by the bench's own processes.
fn others_seconds(busy: Option<f64>, ours: &[Option<f64>]) -> Option<f64> {
    ours.iter()
        .try_fold(busy?, |left, part| Some(left - (*part)?))
}

fn gateway_out(
    args: &ModbusArgs,
    load: &Load,
    window: &Window,
    connect_secs: f64,
    rss_online: Option<u64>,
    rss: Option<u64>,
) -> GatewayOut {
    let (a, b) = (&window.first.metrics, &window.last.metrics);
    let seconds = window.seconds();
    let transactions = b.requests.saturating_sub(a.requests);
    let window_exceptions = b.exceptions.saturating_sub(a.exceptions);
    let registers = (transactions.saturating_sub(window_exceptions) as f64
        * load.registers_per_request())
    .round() as u64;
    let points = b.points.saturating_sub(a.points);
    let cpu = window.first.cpu_diff(&window.last, |r| r.gateway_cpu);
    let delivered = window
        .last
        .registry_points
        .zip(window.first.registry_points)
        .map(|(b, a)| b.saturating_sub(a));
    let expected = cadence_polls_per_sec(args, load).map(|p| p * load.requests_per_poll() as f64);
    let slow_samples = expected.map_or(0, |expected| {
        window
            .timeline
            .iter()
            .filter(|s| s.transactions_per_sec < 0.8 * expected)
            .count()
    });
    GatewayOut {
        connect_secs,
        window_secs: seconds,
        transactions,
        transactions_per_sec: per_sec(transactions, seconds),
        expected_transactions_per_sec: expected,
        registers,
        registers_per_sec: per_sec(registers, seconds),
        points,
        points_per_sec: per_sec(points, seconds),
        cpu_seconds: cpu,
        cpu_utilization: cpu.map(|c| if seconds > 0.0 { c / seconds } else { 0.0 }),
        registers_per_cpu_second: per_cpu(registers, cpu),
        transactions_per_cpu_second: per_cpu(transactions, cpu),
        points_per_cpu_second: per_cpu(points, cpu),
        points_delivered: delivered,
        points_delivered_per_sec: delivered.map(|d| per_sec(d, seconds)),
        points_delivered_per_cpu_second: delivered.and_then(|d| per_cpu(d, cpu)),
        poll_latency: a.poll_latency(b),
        rss_bytes_online: rss_online,
        rss_bytes: rss,
        rss_per_device_bytes: rss.map(|r| r as f64 / f64::from(args.devices)),
        devices: args.devices,
        devices_online: b.devices_online,
        devices_online_min: window.devices_online_min,
        exceptions: b.exceptions,
        errors: b.errors,
        connect_failures: b.connect_failures,
        window_exceptions,
        window_errors: b.errors.saturating_sub(a.errors),
        batches_acked: b.batches_acked.saturating_sub(a.batches_acked),
        batches_dropped: b.batches_dropped,
        uplink_lag_seconds_max: window.uplink_lag_max,
        uplink_lag_seconds_end: b.uplink_lag_seconds,
        spool_batches_max: window.spool_batches_max,
        spool_batches_end: b.spool_batches,
        slow_samples,
        timeline: window.timeline.clone(),
        log: Default::default(),
        stopped: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ModbusArgs {
        ModbusArgs {
            devices: 10,
            tags: 125,
            interval: Duration::from_secs(1),
            mode: Mode::Cadence,
            duration: Duration::from_secs(2),
            layout: Layout::Contiguous,
            port: 15020,
            out: PathBuf::from("out"),
            no_peer: false,
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(check_args(&args()).is_ok());
        let saturate = ModbusArgs {
            mode: Mode::Saturate,
            interval: Duration::ZERO,
            ..args()
        };
        assert!(check_args(&saturate).is_ok());
        assert_eq!(poll_interval(&saturate), Duration::ZERO);
        for bad in [
            ModbusArgs {
                devices: 0,
                ..args()
            },
            ModbusArgs { tags: 0, ..args() },
            ModbusArgs { port: 0, ..args() },
            ModbusArgs {
                duration: Duration::from_millis(500),
                ..args()
            },
            ModbusArgs {
                interval: Duration::from_millis(5),
                ..args()
            },
        ] {
            assert!(check_args(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn others_are_what_the_bench_did_not_use() {
        assert_eq!(
            others_seconds(Some(10.0), &[Some(2.0), Some(3.0)]),
            Some(5.0)
        );
        assert_eq!(others_seconds(Some(10.0), &[Some(2.0), None]), None);
        assert_eq!(others_seconds(None, &[]), None);
    }

    #[test]
    fn the_expected_rates_follow_the_load() {
        let load = Load::new(Layout::Contiguous, 125, Block::SCAN, Duration::from_secs(1)).unwrap();
        let out = load_out(&args(), &load);
        assert_eq!(out.expected_transactions_per_sec, Some(10.0));
        assert_eq!(out.expected_registers_per_sec, Some(1250.0));
        assert!(
            out.note.contains("5000..=5124 (125 registers"),
            "{}",
            out.note
        );
        assert_eq!(warmup(Duration::from_millis(200)), Duration::from_secs(1));
        assert_eq!(warmup(Duration::from_secs(2)), Duration::from_secs(4));
        let saturate = ModbusArgs {
            mode: Mode::Saturate,
            ..args()
        };
        let load = Load::new(
            Layout::Contiguous,
            125,
            Block::SCAN,
            poll_interval(&saturate),
        )
        .unwrap();
        let out = load_out(&saturate, &load);
        assert_eq!(out.expected_transactions_per_sec, None);
        assert_eq!(warmup(Duration::ZERO), Duration::from_secs(3));
    }
}
