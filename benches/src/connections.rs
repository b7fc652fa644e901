//! `fieldlink bench connections`: a lean fleet of `--devices` MQTT JSON
//! devices ramped up, held for `--hold` and publishing every `--interval`,
//! first through fieldlink's lean ingress into a registry, then held by
//! mosquitto shards (one process per 15 000 connections); the same fleet
//! processes against both.
//!
//! 1. The sysctls a million loopback connections need are raised where
//!    they are lower, and named ([`kernel`]).
//! 2. fieldlink ([`ingress`]): a registry, `fieldlink broker` with its
//!    ingress in `ceil(N / 15 000)` shard processes running the fleet's
//!    gateway configs; the fleet ramps ([`hold::ramp`]), the registry
//!    counts every device registered, online and reporting, the fleet holds
//!    ([`hold::hold`]) while the publish-to-counted latency is probed; then
//!    `bench verify` reconciles the registry with the manifest, id by id,
//!    and asks an audit sample through the shards.
//! 3. mosquitto ([`mosquitto_shards`]): the same ramp and hold.
//!
//! A summary (fieldlink | mosquitto | ratio) is printed and JSON written to
//! `<out>/connections-<devices>d-<unix>.json`. It fails when a part did not
//! hold every device or `bench verify` found a difference. Every process
//! it started is stopped, also on Ctrl-C.

mod hold;
mod ingress;
mod kernel;
mod mosquitto_shards;
mod report;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use fieldlink_model::Protocol;
use fieldlink_sim::{FleetPlan, FleetSpec, ProtocolMix};

use report::{ArgsOut, Ratios, Results};

use crate::process::{self, LogLimits};

/// Flags of `fieldlink bench connections`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionsArgs {
    /// MQTT JSON devices, each its own connection.
    #[arg(long, default_value_t = 100_000)]
    pub devices: u32,
    /// How long every device is held connected once all are counted.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// How long mosquitto holds them (default: --hold).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub peer_hold: Option<Duration>,
    /// Telemetry interval of each device (the first publish is spread over
    /// it, so reporting reaches every device one interval after the ramp).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Devices `bench verify` asks through the ingress at the end.
    #[arg(long, default_value_t = 50)]
    pub audit: usize,
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

/// How much of each child's log is kept.
const LOG_LIMITS: LogLimits = crate::mqtt::LOG_LIMITS;

/// How long `devices` may take to connect.
fn ramp_timeout(devices: u32) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(u64::from(devices) / 2)
}

/// Runs the bench.
///
/// # Errors
/// Bad flags, a kernel limit that is too low and cannot be raised, a part
/// that cannot start or does not hold every device, a registry that
/// differs from the manifest, a mosquitto that fails (a missing one is
/// said, not an error, unless `CI=true`).
pub async fn run(args: ConnectionsArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sysctls = kernel::raise_for(u64::from(args.devices));
    for s in &sysctls {
        if s.raised() {
            println!(
                "raised {} from {} to {} ({})",
                s.name,
                s.before.unwrap_or(0),
                s.after.unwrap_or(0),
                s.why
            );
        }
    }
    if let Some(s) = sysctls.iter().find(|s| s.name == "fs.file-max" && !s.met()) {
        bail!(
            "{} is {} and {} connections need {} ({}); run as root or raise it: sysctl -w {}={}",
            s.name,
            s.after.unwrap_or(0),
            args.devices,
            s.wanted,
            s.error.as_deref().unwrap_or("not raised"),
            s.name,
            s.wanted
        );
    }
    for s in sysctls.iter().filter(|s| !s.met()) {
        println!(
            "note: {} is {} (wanted {}: {}); the ramp may be slower",
            s.name,
            s.after.unwrap_or(0),
            s.wanted,
            s.error.as_deref().unwrap_or("not raised")
        );
    }
    if let Some(note) =
        kernel::low_memory_note(&kernel::KernelMemory::now(), u64::from(args.devices))
    {
        println!("{note}");
    }
    let plan = FleetPlan::new(FleetSpec {
        devices: args.devices,
        protocols: ProtocolMix::only(Protocol::MqttJson),
        interval: args.interval,
        ..FleetSpec::default()
    })
    .context("cannot plan the fleet")?;
    let programs = if args.no_peer {
        Err("skipped (--no-peer)".to_owned())
    } else {
        crate::mqtt::mosquitto::find(args.mosquitto.as_deref()).await
    };
    if let Err(why) = &programs
        && !args.no_peer
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("the mosquitto peer is missing and CI=true: {why}");
        }
        println!("peer missing: {why}");
    }
    let dir = tempfile::Builder::new()
        .prefix("fieldlink-bench-connections-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let peer_hold = args.peer_hold.unwrap_or(args.hold);
    let drive = async {
        let fieldlink = ingress::run(&ingress::Setup {
            plan: &plan,
            hold: args.hold,
            audit: args.audit,
            dir: &dir.path().join("fieldlink"),
        })
        .await?;
        let (peer, peer_missing) = match &programs {
            Ok(programs) => {
                match mosquitto_shards::run(
                    programs,
                    &plan,
                    peer_hold,
                    &dir.path().join("mosquitto"),
                )
                .await
                {
                    Ok(p) => (Some(p), None),
                    Err(e) => (None, Some(format!("the peer failed: {e:#}"))),
                }
            }
            Err(why) => (None, Some(why.clone())),
        };
        anyhow::Ok((fieldlink, peer, peer_missing))
    };
    let (fieldlink, peer, peer_missing) = tokio::select! {
        out = drive => out?,
        signal = process::interrupted() => bail!("interrupted by {signal}; stopped everything"),
    };
    let results = Results {
        bench: "connections",
        started_unix,
        args: ArgsOut {
            devices: args.devices,
            hold_secs: args.hold.as_secs_f64(),
            interval_secs: args.interval.as_secs_f64(),
            peer_hold_secs: peer_hold.as_secs_f64(),
        },
        method: report::METHOD,
        sysctls,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ratios: peer.as_ref().map(|p| Ratios::of(&fieldlink, p)),
        fieldlink,
        peer,
        peer_missing,
    };
    print!("{}", results.summary());
    let path = results.write_json(&args.out)?;
    println!("results: {}", path.display());
    if let Err(e) = dir.close() {
        eprintln!("warning: cannot remove the temporary directory: {e}");
    }
    verdict(&results, args.devices)
}

/// Fails when a part did not hold every device, verify found a
/// difference, or the peer failed.
fn verdict(results: &Results, devices: u32) -> anyhow::Result<()> {
    for part in std::iter::once(&results.fieldlink).chain(&results.peer) {
        if !part.hold.held(devices) {
            bail!(
                "{} did not hold every device: fewest connected {} (fleet) / {} (broker) of {devices}, {} sessions made again",
                part.broker,
                part.hold.fleet_connected_min,
                part.hold
                    .broker_connected_min
                    .map_or("?".to_owned(), |n| n.to_string()),
                part.hold.reconnects
            );
        }
    }
    if let Some(Err(e)) = &results.fieldlink.verified {
        bail!("bench verify: {e}");
    }
    if let Some(why) = results
        .peer_missing
        .as_ref()
        .filter(|w| w.starts_with("the peer failed"))
    {
        bail!("{why}");
    }
    Ok(())
}

fn check_args(args: &ConnectionsArgs) -> anyhow::Result<()> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    if args.hold < Duration::from_secs(1) {
        bail!("--hold must be at least 1s");
    }
    if args.interval < Duration::from_secs(1) {
        bail!("--interval must be at least 1s (every device publishes once per interval)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ConnectionsArgs {
        ConnectionsArgs {
            devices: 10,
            hold: Duration::from_secs(10),
            peer_hold: None,
            interval: Duration::from_secs(5),
            audit: 5,
            out: PathBuf::from("x"),
            no_peer: true,
            mosquitto: None,
        }
    }

    #[test]
    fn bad_flags_are_named() {
        check_args(&args()).unwrap();
        for (bad, flag) in [
            (
                ConnectionsArgs {
                    devices: 0,
                    ..args()
                },
                "--devices",
            ),
            (
                ConnectionsArgs {
                    hold: Duration::ZERO,
                    ..args()
                },
                "--hold",
            ),
            (
                ConnectionsArgs {
                    interval: Duration::from_millis(10),
                    ..args()
                },
                "--interval",
            ),
        ] {
            let e = check_args(&bad).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn the_ramp_may_take_longer_for_more_devices() {
        assert!(ramp_timeout(1_000_000) > ramp_timeout(1_000));
        assert_eq!(ramp_timeout(1_000_000), Duration::from_secs(560));
    }
}
