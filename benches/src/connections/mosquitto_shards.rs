//! The peer part: the same lean fleet held by mosquitto (Debian's), one
//! process per [`DEVICES_PER_SHARD`] connections on ports of their own
//! (device `i` connects to shard `i % shards`), each with the fleet logins
//! in a password file and an ACL per tenant. Each shard's `$SYS` count of
//! clients says what it holds. The bench's observer of each shard also
//! subscribes to the devices' telemetry, as the consumer: mosquitto
//! delivers every message, as the ingress hands every message to its
//! gateway, instead of dropping what nobody subscribed to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fieldlink_sim::FleetPlan;
use fieldlink_sim::mqtt::Credentials;
use fieldlink_sim::mqtt::lean::FleetLogin;

use super::hold::{self, GroupOut};
use super::kernel::KernelMemory;
use super::report::PartOut;
use crate::common::free_local_addr;
use crate::mqtt::mosquitto::{self, Access, Programs, User};
use crate::mqtt::sys::{CLIENTS_CONNECTED, SysObserver};
use crate::process::{self, ChildProcess};

/// Connections one mosquitto process is given (as the issue asks: one per
/// 15 000).
pub(crate) const DEVICES_PER_SHARD: u32 = 15_000;
/// The user the bench reads `$SYS` and the telemetry as.
const OBSERVER: &str = "bench-observer";
/// What the consumer subscribes to: every device's telemetry.
const TELEMETRY: &str = "+/+/telemetry";
/// How long a mosquitto may take to listen.
const START: Duration = Duration::from_secs(30);
/// How long one may take to stop.
const STOP: Duration = Duration::from_secs(30);

/// A running mosquitto shard.
struct Shard {
    process: ChildProcess,
    observer: SysObserver,
}

/// Runs the part; every mosquitto it started is stopped at the end.
///
/// # Errors
/// When a mosquitto cannot start or the devices do not all connect.
pub(crate) async fn run(
    programs: &Programs,
    plan: &FleetPlan,
    hold_for: Duration,
    dir: &Path,
) -> anyhow::Result<PartOut> {
    let devices = plan.len();
    let count = devices.div_ceil(DEVICES_PER_SHARD).max(1) as usize;
    println!("\n== {}: {count} process(es) ==", programs.version);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let credentials = Credentials::generate_lean(plan)?;
    credentials.write(dir)?;
    let logins = credentials.fleet_logins();
    let observer_password = format!("observer-{:016x}", rand_u64());
    let users = users(&logins, &observer_password);
    let first_tenant = plan.tenants().first().map_or("", |t| t.name.as_str());
    let mut shards = Vec::with_capacity(count);
    let mut addrs = Vec::with_capacity(count);
    for k in 0..count {
        let listen = free_local_addr()?;
        let shard_dir = dir.join(format!("mosquitto-{k}"));
        let config =
            mosquitto::write_files(programs, &shard_dir, listen, first_tenant, &users).await?;
        let process = ChildProcess::spawn_program(
            "mosquitto",
            &programs.mosquitto,
            [std::ffi::OsString::from("-c"), config.into_os_string()],
            super::LOG_LIMITS,
        )?;
        wait_listening(listen).await.with_context(|| {
            format!(
                "mosquitto {k} does not listen on {listen}{}",
                process.log().tail_text()
            )
        })?;
        let observer =
            SysObserver::start_consuming(listen, OBSERVER, &observer_password, Some(TELEMETRY));
        shards.push(Shard { process, observer });
        addrs.push(listen);
    }
    let outcome = with_shards(plan, hold_for, dir, &shards, addrs, logins).await;
    for shard in shards {
        drop(shard.observer);
        if let Err(e) = shard.process.stop(STOP).await {
            eprintln!("warning: {e:#}");
        }
    }
    outcome
}

/// The fleet logins, each allowed its tenant, and the `$SYS` observer.
fn users(logins: &HashMap<String, FleetLogin>, observer_password: &str) -> Vec<User> {
    let mut users: Vec<User> = logins
        .iter()
        .map(|(tenant, login)| User {
            username: login.username.clone(),
            password: login.password.clone(),
            access: Access::Fleet(tenant.clone()),
        })
        .collect();
    users.sort_by(|a, b| a.username.cmp(&b.username));
    users.push(User {
        username: OBSERVER.to_owned(),
        password: observer_password.to_owned(),
        access: Access::Consumer,
    });
    users
}

/// A password nobody guesses within a bench run.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + START;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens after {} s", START.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Devices connected to the shards as their `$SYS` says (less the
/// observers); `None` while one has not said yet.
fn sys_connected(shards: &[Shard]) -> Option<u64> {
    shards
        .iter()
        .map(|s| Some(s.observer.get(CLIENTS_CONNECTED)?.value.saturating_sub(1)))
        .sum()
}

async fn with_shards(
    plan: &FleetPlan,
    hold_for: Duration,
    dir: &Path,
    shards: &[Shard],
    brokers: Vec<SocketAddr>,
    logins: HashMap<String, FleetLogin>,
) -> anyhow::Result<PartOut> {
    let devices = plan.len();
    let pids: Vec<u32> = shards.iter().map(|s| s.process.pid()).collect();
    // The observers' own sessions are in before the baseline.
    for s in shards {
        s.observer
            .wait_for(CLIENTS_CONNECTED, START, |n| n >= 1)
            .await
            .map_err(|_| anyhow::anyhow!("a mosquitto's $SYS says no client is connected"))?;
    }
    let version = shards
        .first()
        .and_then(|s| s.observer.version())
        .unwrap_or_default();
    let kernel_before = KernelMemory::now();
    let mut broker_group = GroupOut {
        processes: pids.len(),
        rss_before_bytes: hold::rss_of(&pids),
        ..GroupOut::default()
    };
    let started = Instant::now();
    let cpu_start = process::cpu_seconds_of(&pids);
    let mut fleet = hold::start_fleet(plan, brokers, logins, dir).await?;
    let fleet_pids = fleet.pids();
    let fleet_cpu_start = process::cpu_seconds_of(&fleet_pids);
    let measured = async {
        let ramp = hold::ramp(&mut fleet, devices, started, super::ramp_timeout(devices)).await?;
        println!(
            "{devices} connected in {:.1} s ({:.0}/s, peak {:.0}/s); holding for {:.0} s ..",
            ramp.seconds,
            ramp.connects_per_sec,
            ramp.peak_connects_per_sec,
            hold_for.as_secs_f64()
        );
        let cpu_ramp_end = cpu_now(&pids, &fleet_pids);
        // $SYS values come once a second.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let kernel_held = KernelMemory::now();
        let held_rss = (hold::rss_of(&pids), hold::rss_of(&fleet_pids));
        let cpu_hold_start = cpu_now(&pids, &fleet_pids);
        let consumed_before = consumed(shards);
        let held = hold::hold(&mut fleet, hold_for, || async { sys_connected(shards) }).await?;
        let cpu_hold_end = cpu_now(&pids, &fleet_pids);
        let consumed_per_sec = (consumed(shards) - consumed_before) as f64 / held.seconds.max(1e-9);
        let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        broker_group.rss_held_bytes = held_rss.0;
        broker_group.cpu_ramp_seconds = diff(cpu_start, cpu_ramp_end.0);
        broker_group.cpu_hold_seconds = diff(cpu_hold_start.0, cpu_hold_end.0);
        let mut fleet_group = GroupOut {
            processes: fleet_pids.len(),
            rss_held_bytes: held_rss.1,
            cpu_ramp_seconds: diff(fleet_cpu_start, cpu_ramp_end.1),
            cpu_hold_seconds: diff(cpu_hold_start.1, cpu_hold_end.1),
            ..GroupOut::default()
        };
        broker_group.finish(devices, held.seconds);
        fleet_group.finish(devices, held.seconds);
        anyhow::Ok(PartOut {
            broker: "mosquitto".to_owned(),
            version: version.clone(),
            broker_processes: pids.len(),
            fleet_processes: fleet_pids.len(),
            ramp,
            counted: None,
            hold: held,
            broker_group: broker_group.clone(),
            fleet: fleet_group,
            registry: None,
            kernel_before,
            kernel_held,
            kernel_per_connection_bytes: kernel_held.per_connection(&kernel_before, devices.into()),
            latency: None,
            registry_online_min: None,
            verified: None,
            consumed_per_sec: Some(consumed_per_sec),
        })
    };
    let out = measured.await;
    fleet.stop().await;
    out
}

/// Telemetry messages the shards delivered to the consumer so far.
fn consumed(shards: &[Shard]) -> u64 {
    shards.iter().map(|s| s.observer.consumed()).sum()
}

/// CPU seconds of the brokers and of the fleet now.
fn cpu_now(pids: &[u32], fleet: &[u32]) -> (Option<f64>, Option<f64>) {
    (
        process::cpu_seconds_of(pids),
        process::cpu_seconds_of(fleet),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fleet_login_may_use_its_own_tenant_and_the_observer_sys() {
        let logins = HashMap::from([
            (
                "acme".to_owned(),
                FleetLogin {
                    username: "sim-fleet-acme".into(),
                    password: "a".into(),
                },
            ),
            (
                "beta".to_owned(),
                FleetLogin {
                    username: "sim-fleet-beta".into(),
                    password: "b".into(),
                },
            ),
        ]);
        let users = users(&logins, "o");
        assert_eq!(users.len(), 3);
        assert_eq!(users[0].access, Access::Fleet("acme".into()));
        assert_eq!(users[1].access, Access::Fleet("beta".into()));
        assert_eq!(users[2].username, OBSERVER);
        assert_eq!(users[2].access, Access::Consumer);
    }
}
