//! The fieldlink part: a registry, `fieldlink broker` with its lean
//! ingress in shard processes (each running the fleet's gateway configs
//! on its in-process links), and the lean fleet connecting to the ingress;
//! ramped, counted by the registry, held, probed for latency, and
//! reconciled with `bench verify`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fieldlink_sim::mqtt::lean::FleetLogin;
use fieldlink_sim::mqtt::{BrokerAddr, Credentials};
use fieldlink_sim::{FleetPlan, MqttFiles};

use super::hold::{self, GroupOut};
use super::kernel::KernelMemory;
use super::report::{Counted, PartOut};
use crate::common::{free_local_addr, quote};
use crate::mqtt::probe;
use crate::process::{self, ChildProcess};
use crate::prometheus::Endpoint;
use crate::registry::RegistryProcess;
use crate::verify::{self, VerifyArgs};

/// How long `fieldlink broker` may take to listen.
const BROKER_START: Duration = Duration::from_secs(60);
/// How long its shards may take to serve their metrics.
const SHARDS_START: Duration = Duration::from_secs(120);
/// How long a process may take to stop.
const STOP: Duration = Duration::from_secs(60);
/// The shards' gauge of connections held.
const CONNECTIONS: &str = "fieldlink_broker_connections";

/// What the part is given.
#[derive(Debug)]
pub(crate) struct Setup<'a> {
    /// The fleet.
    pub(crate) plan: &'a FleetPlan,
    /// How long to hold.
    pub(crate) hold: Duration,
    /// Devices the audit of `bench verify` asks through MQTT.
    pub(crate) audit: usize,
    /// The part's directory.
    pub(crate) dir: &'a Path,
}

/// Runs the part; every process it started is stopped at the end.
///
/// # Errors
/// When a part cannot start, the devices do not all connect, or they are
/// not all counted.
pub(crate) async fn run(setup: &Setup<'_>) -> anyhow::Result<PartOut> {
    let plan = setup.plan;
    let dir = setup.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("\n== fieldlink: lean ingress ==");
    let registry_config = format!(
        "data_dir = {}\n{}",
        quote(&dir.join("registry-data").to_string_lossy()),
        plan.tenants_toml()?
    );
    let registry = RegistryProcess::start_with(dir, &registry_config, super::LOG_LIMITS)
        .await
        .context("the registry did not start")?;
    let credentials = Credentials::generate_lean(plan)?;
    let ingress = free_local_addr()?;
    let files = plan.write_files_with(
        dir,
        registry.process().grpc_url(),
        &[&MqttFiles {
            broker: format!("mqtt://{ingress}").parse::<BrokerAddr>()?,
            credentials: credentials.clone(),
            gateway_login: None,
            gateway_embedded: true,
        }],
    )?;
    let mut config = crate::fleet_broker::lean_broker_config(
        plan,
        &credentials,
        free_local_addr()?,
        ingress,
        files.gateways.clone(),
    )?;
    let shards = config.ingress.as_ref().map_or(1, |i| i.shards);
    let metrics = free_port_run(shards)?;
    if let Some(i) = config.ingress.as_mut() {
        i.metrics = Some(metrics);
    }
    let config_path = dir.join("broker.toml");
    std::fs::write(&config_path, toml::to_string(&config)?)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let (broker, line) = ChildProcess::start(
        "broker",
        [
            "broker".into(),
            "--config".into(),
            config_path.into_os_string(),
        ],
        "broker listening:",
        BROKER_START,
        super::LOG_LIMITS,
    )
    .await?;
    println!("{line}");
    let apis: Vec<String> = (0..shards)
        .map(|k| format!("http://{}/", shard_addr(metrics, k)))
        .collect();
    let logins = credentials.fleet_logins();
    let outcome = with_broker(
        setup,
        &registry,
        &broker,
        &apis,
        &files.manifest,
        (ingress, logins),
    )
    .await;
    if let Err(e) = broker.stop(STOP).await {
        eprintln!("warning: {e:#}");
    }
    if let Err(e) = registry.stop().await {
        eprintln!("warning: {e:#}");
    }
    outcome
}

/// Shard `k`'s metrics address.
fn shard_addr(base: SocketAddr, k: usize) -> SocketAddr {
    SocketAddr::new(base.ip(), base.port() + k as u16)
}

/// Lowest port a run of shard metrics ports may start at.
const LOWEST_RUN_PORT: usize = 10_000;

/// A loopback port with the `n − 1` ports above it free right now, below
/// the kernel's ephemeral range: outgoing connections (the shards' own
/// uplinks among them) take their source ports from that range, and one
/// taken from the run would keep a shard from serving its metrics.
fn free_port_run(n: usize) -> anyhow::Result<SocketAddr> {
    let ephemeral = ephemeral_ports_start();
    let Some(span) = ephemeral
        .checked_sub(LOWEST_RUN_PORT + n)
        .filter(|span| *span > 0)
    else {
        bail!(
            "no room for {n} shard metrics ports between {LOWEST_RUN_PORT} and the ephemeral range starting at {ephemeral} (net.ipv4.ip_local_port_range)"
        );
    };
    // A different first guess each run, so that runs side by side differ.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    for attempt in 0..100 {
        let base = LOWEST_RUN_PORT + (seed + attempt * (n + 97)) % span;
        let free = (base..base + n)
            .all(|port| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port as u16)).is_ok());
        if free {
            return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), base as u16));
        }
    }
    bail!("cannot find {n} free loopback ports in a row for the shards' metrics")
}

/// The first port of the kernel's ephemeral range (32 768 when unknown).
fn ephemeral_ports_start() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The shards' processes, once every one serves its metrics.
async fn wait_shards(broker: &ChildProcess, apis: &[String]) -> anyhow::Result<Vec<u32>> {
    let deadline = Instant::now() + SHARDS_START;
    let endpoints = apis
        .iter()
        .map(|a| Endpoint::new(format!("{a}metrics")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for endpoint in &endpoints {
        while endpoint.scrape().await.is_err() {
            if Instant::now() >= deadline {
                bail!(
                    "an ingress shard does not serve its metrics after {} s; the broker's log:{}",
                    SHARDS_START.as_secs(),
                    broker.log().tail_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let pids = hold::children(broker.pid());
    if pids.len() != apis.len() {
        bail!(
            "the broker has {} child processes, {} shards were asked for",
            pids.len(),
            apis.len()
        );
    }
    Ok(pids)
}

/// Connections the shards hold now; `None` when one does not answer.
async fn shard_connections(endpoints: &[Endpoint]) -> Option<u64> {
    let mut sum = 0;
    for e in endpoints {
        sum += e.scrape().await.ok()?.count(CONNECTIONS);
    }
    Some(sum)
}

async fn with_broker(
    setup: &Setup<'_>,
    registry: &RegistryProcess,
    broker: &ChildProcess,
    apis: &[String],
    manifest: &Path,
    (ingress, logins): (SocketAddr, HashMap<String, FleetLogin>),
) -> anyhow::Result<PartOut> {
    let plan = setup.plan;
    let devices = plan.len();
    let shard_pids = wait_shards(broker, apis).await?;
    println!(
        "{} ingress shard process(es) serve their metrics on {} ..",
        shard_pids.len(),
        apis.first().map_or("", String::as_str)
    );
    let endpoints = apis
        .iter()
        .map(|a| Endpoint::new(format!("{a}metrics")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kernel_before = KernelMemory::now();
    let mut ingress_group = GroupOut {
        processes: shard_pids.len(),
        rss_before_bytes: hold::rss_of(&shard_pids),
        ..GroupOut::default()
    };
    let registry_pid = registry.process().pid();
    let mut registry_group = GroupOut {
        processes: 1,
        rss_before_bytes: process::rss_bytes(registry_pid),
        ..GroupOut::default()
    };
    let cpu = |pids: &[u32]| process::cpu_seconds_of(pids);
    let started = Instant::now();
    let cpu_start = (cpu(&shard_pids), cpu(&[registry_pid]));
    let mut fleet = hold::start_fleet(plan, vec![ingress], logins, setup.dir).await?;
    let fleet_pids = fleet.pids();
    let fleet_cpu_start = cpu(&fleet_pids);
    let measured = async {
        let ramp = hold::ramp(&mut fleet, devices, started, super::ramp_timeout(devices)).await?;
        println!(
            "{devices} connected in {:.1} s ({:.0}/s, peak {:.0}/s); waiting for the registry to count them ..",
            ramp.seconds, ramp.connects_per_sec, ramp.peak_connects_per_sec
        );
        let cpu_ramp_end = (cpu(&shard_pids), cpu(&[registry_pid]), cpu(&fleet_pids));
        let counted = wait_counted(registry, devices, started, plan.spec().interval).await?;
        println!(
            "registry: {} registered, {} online, {} reporting after {:.1} s; holding for {:.0} s ..",
            counted.counts.registered,
            counted.counts.online,
            counted.counts.reporting,
            counted.seconds,
            setup.hold.as_secs_f64()
        );
        let kernel_held = KernelMemory::now();
        let held_rss = (
            hold::rss_of(&shard_pids),
            process::rss_bytes(registry_pid),
            hold::rss_of(&fleet_pids),
        );
        let cpu_hold_start = (cpu(&shard_pids), cpu(&[registry_pid]), cpu(&fleet_pids));
        let end = Instant::now() + setup.hold;
        let (held, latency, online_min) = tokio::join!(
            hold::hold(&mut fleet, setup.hold, || shard_connections(&endpoints)),
            probe::run(registry, end),
            online_min(registry, end),
        );
        let held = held?;
        let cpu_hold_end = (cpu(&shard_pids), cpu(&[registry_pid]), cpu(&fleet_pids));
        let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        ingress_group.cpu_ramp_seconds = diff(cpu_start.0, cpu_ramp_end.0);
        ingress_group.cpu_hold_seconds = diff(cpu_hold_start.0, cpu_hold_end.0);
        ingress_group.rss_held_bytes = held_rss.0;
        registry_group.cpu_ramp_seconds = diff(cpu_start.1, cpu_ramp_end.1);
        registry_group.cpu_hold_seconds = diff(cpu_hold_start.1, cpu_hold_end.1);
        registry_group.rss_held_bytes = held_rss.1;
        let mut fleet_group = GroupOut {
            processes: fleet_pids.len(),
            rss_held_bytes: held_rss.2,
            cpu_ramp_seconds: diff(fleet_cpu_start, cpu_ramp_end.2),
            cpu_hold_seconds: diff(cpu_hold_start.2, cpu_hold_end.2),
            ..GroupOut::default()
        };
        for group in [&mut ingress_group, &mut registry_group, &mut fleet_group] {
            group.finish(devices, held.seconds);
        }
        println!("reconciling with bench verify ..");
        let verified = verify::run(VerifyArgs {
            manifest: manifest.to_owned(),
            registry: registry.process().http_url().to_owned(),
            wait: Duration::from_secs(30),
            audit: setup.audit,
            probe_timeout: Duration::from_secs(5),
            mqtt_user: None,
            mqtt_password: None,
            mqtt_credentials: None,
            mqtt_api: apis.to_vec(),
            opcua_user: None,
            opcua_password: None,
        })
        .await
        .map_err(|e| format!("{e:#}"));
        anyhow::Ok(PartOut {
            broker: "fieldlink lean ingress".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            broker_processes: shard_pids.len(),
            fleet_processes: fleet_pids.len(),
            ramp,
            counted: Some(counted),
            hold: held,
            broker_group: ingress_group.clone(),
            fleet: fleet_group,
            registry: Some(registry_group.clone()),
            kernel_before,
            kernel_held,
            kernel_per_connection_bytes: kernel_held.per_connection(&kernel_before, devices.into()),
            latency: Some(latency),
            registry_online_min: online_min,
            verified: Some(verified),
            consumed_per_sec: None,
        })
    };
    let out = tokio::select! {
        out = measured => out,
        e = broker_exit(broker) => Err(e),
    };
    fleet.stop().await;
    out
}

/// Never completes while the broker runs; says how it ended otherwise.
async fn broker_exit(broker: &ChildProcess) -> anyhow::Error {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Gone, or exited and not yet reaped (a zombie).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", broker.pid()));
        if stat.is_err() || stat.is_ok_and(|s| s.contains(") Z ")) {
            return anyhow::anyhow!(
                "the broker exited during the run; its log:{}",
                broker.log().tail_text()
            );
        }
    }
}

/// Waits until the registry counts every device registered, online and
/// reporting (reporting needs one telemetry interval after the ramp).
async fn wait_counted(
    registry: &RegistryProcess,
    devices: u32,
    started: Instant,
    interval: Duration,
) -> anyhow::Result<Counted> {
    let n = u64::from(devices);
    let timeout = interval + super::ramp_timeout(devices);
    let deadline = Instant::now() + timeout;
    // A registry busy catching up may miss a poll; only the deadline fails.
    loop {
        let last = match registry.counts().await {
            Ok(counts) if counts.registered == n && counts.online == n && counts.reporting == n => {
                return Ok(Counted {
                    seconds: started.elapsed().as_secs_f64(),
                    counts,
                });
            }
            Ok(counts) => format!(
                "{} registered, {} online, {} reporting",
                counts.registered, counts.online, counts.reporting
            ),
            Err(e) => format!("no answer to the last poll ({e:#})"),
        };
        if Instant::now() >= deadline {
            bail!(
                "after {:.0} s the registry counts {last} of {n} devices",
                started.elapsed().as_secs_f64(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The fewest devices the registry counted online until `end`, read every
/// 5 s.
async fn online_min(registry: &RegistryProcess, end: Instant) -> Option<u64> {
    let mut min: Option<u64> = None;
    while Instant::now() < end {
        if let Ok(c) = registry.counts().await {
            min = Some(min.map_or(c.online, |m| m.min(c.online)));
        }
        tokio::time::sleep(
            Duration::from_secs(5).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_free_ports_is_found() {
        let base = free_port_run(4).unwrap();
        assert!(usize::from(base.port()) >= LOWEST_RUN_PORT);
        assert!(
            usize::from(base.port()) + 4 <= ephemeral_ports_start(),
            "below the ephemeral range: {base}"
        );
        assert_eq!(shard_addr(base, 3).port(), base.port() + 3);
    }
}
