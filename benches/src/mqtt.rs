//! `fieldlink bench mqtt`: MQTT JSON devices publishing through a broker
//! into the gateway's MQTT driver and on into the registry, once with
//! `fieldlink broker` and once with mosquitto, the same clients, gateway
//! and registry around both.
//!
//! A part, all on loopback, for each broker in turn:
//!
//! 1. a registry (this binary as `fieldlink registry`, one public bench
//!    tenant) and the broker under test, each a child process so that
//!    `/proc` gives its own memory and CPU ([`broker`]);
//! 2. the gateway (this binary as `fieldlink gateway`, the `[mqtt]` section
//!    `fieldlink sim mqtt` writes, pointed at the broker with its service
//!    user) connects; the broker's RSS is read;
//! 3. `--devices` simulated MQTT JSON devices, one client connection each,
//!    in this process ([`clients`]): they connect, register (retained meta
//!    and status) and stay silent until every one is connected and online
//!    at the gateway; the broker's RSS is read again (the RSS per
//!    connection is the difference over the devices);
//! 4. the devices publish every `1 / --rate` s; after a warm-up, a window
//!    of `--duration`: every process's counters and CPU read at its start,
//!    every second and at its end ([`window`]), and the publish-to-counted
//!    latency probed from outside ([`probe`]);
//! 5. the registry's counts read back; clients, gateway, broker and
//!    registry stopped.
//!
//! A summary (fieldlink | mosquitto | ratio) is printed and JSON written to
//! `<out>/mqtt-<devices>d-<rate>-<unix_secs>.json`. Whatever fails, every
//! process the bench started is stopped.

mod broker;
mod clients;
mod gateway;
pub(crate) mod mosquitto;
pub(crate) mod probe;
mod report;
pub(crate) mod sys;
mod window;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use fieldlink_model::{Cloud, Protocol};
use fieldlink_sim::mqtt::Credentials;
use fieldlink_sim::{FleetPlan, FleetSpec, ProtocolMix, TenantSpec};

use broker::{BrokerKind, BrokerProcess};
use clients::Clients;
use gateway::GatewayProcess;
use mosquitto::Programs;
use report::{
    ArgsOut, CpuOut, LoadOut, MachineOut, PartOut, ProcessOut, ProcessesOut, Ratios, Results,
    SetupOut, per_1000, per_sec,
};
use window::{Watched, Window};

use crate::common::free_local_addr;
use crate::process::{self, LogLimits, LogSummary, Stopped, Tenant};
use crate::prometheus::Endpoint;
use crate::registry::RegistryProcess;

/// Flags of `fieldlink bench mqtt`.
#[derive(Debug, Clone, clap::Args)]
pub struct MqttArgs {
    /// Simulated MQTT JSON devices, each its own client connection.
    #[arg(long, default_value_t = 1000)]
    pub devices: u32,
    /// Telemetry messages per second per device (0.5: one every 2 s).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Length of the measuring window, for each broker.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Directory the JSON result is written to.
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
    /// Skip the mosquitto peer.
    #[arg(long)]
    pub no_peer: bool,
    /// The mosquitto program (default: `mosquitto` on PATH, else
    /// /usr/sbin/mosquitto).
    #[arg(long, value_name = "PATH")]
    pub mosquitto: Option<PathBuf>,
}

/// The registry's one tenant, also the plan's.
const TENANT: Tenant = Tenant {
    name: "bench-mqtt",
    cloud: "public",
    token: "bench-mqtt-token-0001",
};
/// How much of each child's log is kept: its first 10 warning and error
/// lines, each cut at 400 bytes.
pub(crate) const LOG_LIMITS: LogLimits = LogLimits {
    problems: 10,
    max_line: Some(400),
    keep: None,
};
/// File descriptors the bench process keeps beside its client sockets
/// (runtime, registry and metrics clients, the `$SYS` observer, ...).
const SPARE_FILES: u64 = 256;
/// Fastest telemetry interval a device may be asked for.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// How long the gateway may take to reach the broker.
const GATEWAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the registry may take to count every device as reporting.
const REPORTING_TIMEOUT: Duration = Duration::from_secs(30);
/// How the two brokers are set up alike.
const AUTH: &str = "both brokers: one user per device with its own random password (fieldlink: salted SHA-256 `$sha256$`; mosquitto: `mosquitto_passwd -H sha512`, salted SHA-512 `$6$`), no anonymous access; ACLs: a device reads and writes only {tenant}/{its id}/#, the gateway's service user the whole tenant; no persistence; QoS 0 telemetry, QoS 1 retained meta and status";
/// How the figures are measured.
const FIGURES: &str = "published: the clients' own count; broker in/out: fieldlink's /metrics, mosquitto's $SYS (1 s updates, rates over their arrival times); driver messages: the gateway's fieldlink_gateway_driver_messages_total{protocol=\"mqtt-json\"}; registry points: fieldlink_registry_points_accepted_total; CPU and RSS from /proc of each child process; RSS per connection: broker RSS with every device connected and registered (idle) minus before any connected, over the devices";
/// Where the clients run.
const LOAD_NOTE: &str = "rumqttc clients in the bench process (one task and one TCP connection each, from 127.0.0.1), all started at once (a reconnect storm: the connect rate is the broker and the clients together), each publishing its catalog telemetry as JSON (about 500 bytes on the wire) every interval, QoS 0";

/// Runs the bench.
///
/// # Errors
/// When a part cannot be started, not every device comes online at the
/// gateway or reports at the registry, or mosquitto fails (a missing
/// mosquitto is reported, not an error, unless `CI=true`).
pub async fn run(args: MqttArgs) -> anyhow::Result<()> {
    let interval = check_args(&args)?;
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
        .prefix("fieldlink-bench-mqtt-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let plan = plan(&args, interval)?;
    let credentials = Credentials::generate(&plan, 1).context("cannot make the devices' users")?;
    // On Ctrl-C or SIGTERM the run is dropped: that kills every child
    // process (`kill_on_drop`) and the clients' tasks.
    let outcome = tokio::select! {
        outcome = drive(&args, interval, &plan, &credentials, dir.path(), started_unix) => outcome,
        signal = process::interrupted() => Err(anyhow::anyhow!("interrupted by {signal}; stopped everything")),
    };
    let (mut results, peer_error) = outcome?;
    results.machine.busy_before = busy_before;
    print!("{}", results.summary());
    let path = results.write_json(&args.out)?;
    println!("results: {}", path.display());
    if let Err(e) = dir.close() {
        eprintln!("warning: cannot remove the temporary directory: {e}");
    }
    for part in std::iter::once(&results.fieldlink).chain(&results.peer) {
        let n = u64::from(args.devices);
        if part.counts.reporting < n || part.devices_online_min < i64::from(args.devices) {
            bail!(
                "with {}, not every device made it: fewest online at the gateway {} of {n}, {} of {n} reporting at the registry (see {})",
                part.broker.name(),
                part.devices_online_min,
                part.counts.reporting,
                path.display()
            );
        }
    }
    if let Some(e) = peer_error {
        bail!("the mosquitto peer failed: {e}");
    }
    Ok(())
}

/// Checks the flags; returns the telemetry interval.
fn check_args(args: &MqttArgs) -> anyhow::Result<Duration> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a number above 0 (messages per second per device)");
    }
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    if interval < MIN_INTERVAL {
        bail!(
            "--rate {} asks for a message every {:?} per device; at most {} per second",
            args.rate,
            interval,
            1000 / MIN_INTERVAL.as_millis()
        );
    }
    if args.duration < Duration::from_secs(1) {
        bail!("--duration must be at least 1s");
    }
    if let Some(limit) = process::open_files_limit()
        && u64::from(args.devices) + SPARE_FILES > limit
    {
        bail!(
            "--devices {} needs {} open files in this process (one socket per client) and the limit is {limit} (ulimit -n); use at most {} devices",
            args.devices,
            u64::from(args.devices) + SPARE_FILES,
            limit.saturating_sub(SPARE_FILES)
        );
    }
    Ok(interval)
}

/// One public tenant, MQTT JSON devices only.
fn plan(args: &MqttArgs, interval: Duration) -> anyhow::Result<FleetPlan> {
    FleetPlan::new(FleetSpec {
        devices: args.devices,
        tenants: vec![TenantSpec {
            token: Some(TENANT.token.to_owned()),
            ..TenantSpec::new(TENANT.name, Cloud::Public)
        }],
        protocols: ProtocolMix::only(Protocol::MqttJson),
        interval,
        ..FleetSpec::default()
    })
    .context("cannot plan the fleet")
}

/// The fieldlink part, then mosquitto's: (results, why the peer failed).
async fn drive(
    args: &MqttArgs,
    interval: Duration,
    plan: &FleetPlan,
    credentials: &Credentials,
    dir: &Path,
    started_unix: u64,
) -> anyhow::Result<(Results, Option<String>)> {
    let setup = Setup {
        args,
        interval,
        plan,
        credentials,
    };
    // Find the peer first: a missing one is said before minutes of work.
    let programs = if args.no_peer {
        Err("skipped (--no-peer)".to_owned())
    } else {
        mosquitto::find(args.mosquitto.as_deref()).await
    };
    if let Err(why) = &programs
        && !args.no_peer
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("the mosquitto peer is missing and CI=true: {why}");
        }
        println!("peer missing: {why}");
    }
    let fieldlink = part(&setup, BrokerKind::Fieldlink, None, &dir.join("fieldlink")).await?;
    let (peer, peer_missing, peer_error) = match &programs {
        Ok(programs) => {
            match part(
                &setup,
                BrokerKind::Mosquitto,
                Some(programs),
                &dir.join("mosquitto"),
            )
            .await
            {
                Ok(p) => (Some(p), None, None),
                Err(e) => {
                    let why = format!("{e:#}");
                    eprintln!("the mosquitto part failed: {why}");
                    (None, Some(format!("the peer failed: {why}")), Some(why))
                }
            }
        }
        Err(why) => (None, Some(why.clone()), None),
    };
    let ratios = peer.as_ref().map(|p| Ratios::of(&fieldlink, p));
    let results = Results {
        bench: "mqtt",
        started_unix,
        args: ArgsOut {
            devices: args.devices,
            rate: args.rate,
            duration_secs: args.duration.as_secs_f64(),
            out: args.out.clone(),
            no_peer: args.no_peer,
        },
        load: LoadOut {
            devices: args.devices,
            interval_ms: interval.as_secs_f64() * 1e3,
            offered_per_sec: f64::from(args.devices) * args.rate,
            warmup_secs: warmup(interval).as_secs_f64(),
            note: LOAD_NOTE,
        },
        setup: SetupOut {
            auth: AUTH,
            figures: FIGURES,
        },
        fieldlink,
        peer,
        peer_missing,
        ratios,
        machine: MachineOut {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            busy_before: None,
            open_files_limit: process::open_files_limit(),
        },
    };
    Ok((results, peer_error))
}

/// What every part shares.
#[derive(Debug, Clone, Copy)]
struct Setup<'a> {
    args: &'a MqttArgs,
    interval: Duration,
    plan: &'a FleetPlan,
    credentials: &'a Credentials,
}

/// Warm-up once the telemetry starts: two intervals, at least 2 s.
fn warmup(interval: Duration) -> Duration {
    (interval * 2).max(Duration::from_secs(2))
}

/// How long `devices` clients may take to connect and register.
fn connect_timeout(devices: u32) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(u64::from(devices) * 10)
}

/// One broker's part: registry, broker, gateway, clients, the window,
/// everything stopped.
async fn part(
    setup: &Setup<'_>,
    kind: BrokerKind,
    programs: Option<&Programs>,
    dir: &Path,
) -> anyhow::Result<PartOut> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("\n== {} ==", kind.name());
    let registry = RegistryProcess::start(dir, TENANT, LOG_LIMITS)
        .await
        .context("the registry did not start")?;
    let broker = match programs {
        None => BrokerProcess::start_fieldlink(dir, setup.plan, setup.credentials).await,
        Some(programs) => {
            BrokerProcess::start_mosquitto(programs, dir, setup.plan, setup.credentials).await
        }
    }
    .with_context(|| format!("the {} broker did not start", kind.name()))?;
    println!("{} listening on {}", broker.version(), broker.url());
    let metrics = free_local_addr()?;
    let config = gateway::config_text(
        setup.plan,
        setup.credentials,
        &broker.url(),
        registry.process().grpc_url(),
        &dir.join("gateway-data"),
        metrics,
    )?;
    let gateway = GatewayProcess::start(&dir.join("gateway.toml"), &config, metrics)
        .await
        .context("the gateway did not start")?;
    broker
        .wait_connections(1 + broker.own_connections(), GATEWAY_CONNECT_TIMEOUT)
        .await
        .context("the gateway did not connect to the broker")?;
    let measured = with_gateway(setup, &registry, &broker, &gateway).await;
    // Stop in the order the data flows: the gateway flushes what it has,
    // then the broker, then the registry.
    let gateway_stop = gateway.stop().await;
    let broker_stop = broker.stop().await;
    let registry_stop = registry.stop().await;
    let mut out = measured?;
    out.processes = ProcessesOut {
        broker: process_out(broker_stop),
        gateway: process_out(gateway_stop),
        registry: process_out(registry_stop),
    };
    Ok(out)
}

fn process_out(stopped: anyhow::Result<(Stopped, LogSummary)>) -> ProcessOut {
    match stopped {
        Ok((stopped, log)) => ProcessOut {
            log,
            stopped: Some(stopped),
        },
        Err(e) => {
            eprintln!("warning: {e:#}");
            ProcessOut::default()
        }
    }
}

/// Clients connected, released and measured; the clients stopped.
async fn with_gateway(
    setup: &Setup<'_>,
    registry: &RegistryProcess,
    broker: &BrokerProcess,
    gateway: &GatewayProcess,
) -> anyhow::Result<PartOut> {
    let devices = setup.args.devices;
    let rss_before = process::rss_bytes(broker.pid());
    println!("connecting {devices} device clients ...");
    let clients = Clients::start(setup.plan, setup.credentials, broker.url(), setup.interval);
    let measured = with_clients(setup, registry, broker, gateway, &clients, rss_before).await;
    clients.stop().await;
    measured
}

/// What the part measured before the window's figures are worked out.
async fn with_clients(
    setup: &Setup<'_>,
    registry: &RegistryProcess,
    broker: &BrokerProcess,
    gateway: &GatewayProcess,
    clients: &Clients,
    rss_before: Option<u64>,
) -> anyhow::Result<PartOut> {
    let devices = setup.args.devices;
    let timeout = connect_timeout(devices);
    let connect = clients.wait_connected(timeout).await?;
    let connect_secs = connect.as_secs_f64();
    println!(
        "{devices} connected in {connect_secs:.2} s ({:.0}/s); waiting for the gateway to see them online ...",
        per_sec(u64::from(devices), connect_secs)
    );
    gateway.wait_online(devices, timeout).await?;
    // Let the last registrations settle before the idle reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = process::rss_bytes(broker.pid());
    clients.release();
    let warm = warmup(setup.interval);
    println!(
        "publishing {} msg/s in all; {:.0} s warm-up, then a {:.0} s window ...",
        f64::from(devices) * setup.args.rate,
        warm.as_secs_f64(),
        setup.args.duration.as_secs_f64()
    );
    tokio::time::sleep(warm).await;
    let registry_metrics = Endpoint::new(format!("{}metrics", registry.process().http_url()))?;
    let watched = Watched {
        clients,
        broker,
        gateway,
        registry: &registry_metrics,
        registry_pid: registry.process().pid(),
    };
    let end = Instant::now() + setup.args.duration;
    let (window, latency) = tokio::join!(
        window::measure(&watched, setup.args.duration),
        probe::run(registry, end)
    );
    let window = window?;
    let counts = registry
        .wait_reporting(u64::from(devices), REPORTING_TIMEOUT)
        .await?;
    let mut out = figures(&window, devices, connect_secs, rss_before, rss_connected);
    out.broker = broker.kind();
    out.version = broker.version();
    out.sessions = window.last.clients.sessions;
    out.latency = latency;
    out.counts = counts;
    Ok(out)
}

/// The window's differences and rates.
fn figures(
    window: &Window,
    devices: u32,
    connect_secs: f64,
    rss_before: Option<u64>,
    rss_connected: Option<u64>,
) -> PartOut {
    let (a, b) = (&window.first, &window.last);
    let devices = f64::from(devices.max(1));
    let seconds = window.seconds();
    let published = b.clients.published.saturating_sub(a.clients.published);
    let (broker_in, broker_secs) = window.broker_in();
    let broker_rate = |n: u64| (broker_secs >= 0.5).then(|| per_sec(n, broker_secs));
    let driver_messages = b.gateway.messages.saturating_sub(a.gateway.messages);
    let gateway_points = b.gateway.points.saturating_sub(a.gateway.points);
    let registry_points = b.registry_points.saturating_sub(a.registry_points);
    let cpu = CpuOut {
        broker: a.cpu_diff(b, |c| c.broker),
        gateway: a.cpu_diff(b, |c| c.gateway),
        registry: a.cpu_diff(b, |c| c.registry),
        clients: a.cpu_diff(b, |c| c.clients),
        machine_busy: a.cpu_diff(b, |c| c.busy),
        others: None,
    };
    let ours = [cpu.broker, cpu.gateway, cpu.registry, cpu.clients];
    let others = cpu.machine_busy.and_then(|busy| {
        ours.iter()
            .try_fold(busy, |left, c| Some(left - (*c)?))
            .map(|left| left.max(0.0))
    });
    PartOut {
        broker: BrokerKind::Fieldlink,
        version: String::new(),
        connect_secs,
        connect_per_sec: devices / connect_secs.max(1e-9),
        sessions: 0,
        rss_before_bytes: rss_before,
        rss_connected_bytes: rss_connected,
        rss_per_connection_bytes: rss_before
            .zip(rss_connected)
            .map(|(before, after)| after.saturating_sub(before) as f64 / devices),
        rss_end_bytes: b.broker_rss,
        window_secs: seconds,
        published,
        published_per_sec: per_sec(published, seconds),
        dropped: b.clients.dropped,
        broker_in,
        broker_in_per_sec: broker_rate(broker_in),
        broker_out_per_sec: broker_rate(
            b.broker.messages_out.saturating_sub(a.broker.messages_out),
        ),
        bytes_per_message: (broker_in > 0)
            .then(|| b.broker.bytes_in.saturating_sub(a.broker.bytes_in) as f64 / broker_in as f64),
        driver_messages,
        driver_messages_per_sec: per_sec(driver_messages, seconds),
        gateway_points,
        gateway_points_per_sec: per_sec(gateway_points, seconds),
        registry_points,
        registry_points_per_sec: per_sec(registry_points, seconds),
        delivered_share: (published > 0).then(|| driver_messages as f64 / published as f64),
        broker_cpu_per_1000: per_1000(cpu.broker, published),
        gateway_cpu_per_1000: per_1000(cpu.gateway, published),
        cpu: CpuOut { others, ..cpu },
        latency: Default::default(),
        clients_connected_min: window.clients_connected_min,
        devices_online_min: window.devices_online_min,
        uplink_lag_seconds_max: window.uplink_lag_max,
        malformed: b.gateway.malformed,
        ignored: b.gateway.ignored,
        driver_errors: b.gateway.errors,
        batches_dropped: b.gateway.batches_dropped,
        registry_rejected: b.registry_rejected,
        counts: Default::default(),
        timeline: window.timeline.clone(),
        processes: ProcessesOut::default(),
    }
}
