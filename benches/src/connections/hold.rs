//! The ramp and the hold of a lean fleet, watched the same way whatever
//! the broker: the fleet's own counts (its shards' `stats` lines), the
//! broker's count of connections, and the processes' memory and CPU.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use fieldlink_sim::mqtt::lean::{FLEET_CONNECTING, FleetLogin, LeanOptions};
use fieldlink_sim::mqtt::lean_run::{LEAN_SHARD_SIZE, LeanRun, LeanRunOptions};
use fieldlink_sim::{FleetPlan, ShardCommand};
use serde::Serialize;

use crate::process;

/// How often the ramp reads the fleet's counts.
const RAMP_EVERY: Duration = Duration::from_millis(100);
/// How often the hold reads every count.
const HOLD_EVERY: Duration = Duration::from_secs(5);

/// Starts the lean fleet of `plan` against `brokers` (device `i` to
/// `brokers[i % len]`) in shard processes of this binary, its logins in
/// `dir/mqtt-credentials.csv`, and says so.
///
/// # Errors
/// When a shard cannot start.
pub(crate) async fn start_fleet(
    plan: &FleetPlan,
    brokers: Vec<SocketAddr>,
    logins: HashMap<String, FleetLogin>,
    dir: &Path,
) -> anyhow::Result<LeanRun> {
    let options = LeanRunOptions {
        lean: LeanOptions {
            brokers,
            logins,
            interval: plan.spec().interval,
            connecting: FLEET_CONNECTING,
        },
        credentials_file: dir.join("mqtt-credentials.csv"),
        shard_size: LEAN_SHARD_SIZE,
        shard_command: Some(ShardCommand::current_exe(["sim", "mqtt-shard"])?),
    };
    let fleet = LeanRun::start(plan, options).await?;
    println!(
        "ramping {} devices from {} fleet process(es) ..",
        plan.len(),
        fleet.processes()
    );
    Ok(fleet)
}

/// How the fleet came up.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RampOut {
    /// From the start of the fleet to every device connected, s.
    pub(crate) seconds: f64,
    /// Devices over `seconds`.
    pub(crate) connects_per_sec: f64,
    /// The most connections made in one second of the ramp.
    pub(crate) peak_connects_per_sec: f64,
    /// Connection attempts that failed on the way (refused, reset, timed
    /// out; each device retries with backoff).
    pub(crate) failed_attempts: u64,
    /// `(seconds since start, connected)` once a second.
    pub(crate) timeline: Vec<(f64, i64)>,
}

/// Waits until all `devices` of `fleet` are connected, at most `timeout`.
///
/// # Errors
/// When a fleet shard exits, or the devices are not all connected in time.
pub(crate) async fn ramp(
    fleet: &mut LeanRun,
    devices: u32,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<RampOut> {
    let mut out = RampOut::default();
    let mut tick = tokio::time::interval(RAMP_EVERY);
    let mut last_second = (0.0, 0i64);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            e = fleet.failed() => bail!("a fleet shard failed during the ramp: {e}"),
        }
        let stats = fleet.stats();
        let at = started.elapsed().as_secs_f64();
        if at - last_second.0 >= 1.0 {
            let rate = (stats.connected - last_second.1) as f64 / (at - last_second.0);
            out.peak_connects_per_sec = out.peak_connects_per_sec.max(rate);
            last_second = (at, stats.connected);
            out.timeline.push((at, stats.connected));
        }
        out.failed_attempts = stats.failed_attempts;
        if stats.connected >= i64::from(devices) {
            out.seconds = at;
            out.connects_per_sec = f64::from(devices) / at.max(1e-9);
            // A ramp shorter than a second peaks at its mean.
            out.peak_connects_per_sec = out.peak_connects_per_sec.max(out.connects_per_sec);
            out.timeline.push((at, stats.connected));
            return Ok(out);
        }
        if started.elapsed() >= timeout {
            bail!(
                "{} of {devices} devices connected after {:.0} s ({} failed attempts)",
                stats.connected,
                at,
                stats.failed_attempts
            );
        }
    }
}

/// One reading of the hold.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct HoldSample {
    /// Seconds into the hold.
    pub(crate) at: f64,
    /// Connected as the fleet counts them.
    pub(crate) fleet_connected: i64,
    /// Connected as the broker counts them.
    pub(crate) broker_connected: Option<u64>,
    /// Telemetry messages published so far.
    pub(crate) published: u64,
}

/// How the fleet held.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct HoldOut {
    /// Length, s.
    pub(crate) seconds: f64,
    /// Fewest connected (fleet's count) at any reading.
    pub(crate) fleet_connected_min: i64,
    /// Fewest connected (broker's count) at any reading.
    pub(crate) broker_connected_min: Option<u64>,
    /// Sessions lost and made again during the hold (0: nothing dropped).
    pub(crate) reconnects: u64,
    /// Connection attempts that failed during the hold.
    pub(crate) failed_attempts: u64,
    /// Telemetry messages published during the hold.
    pub(crate) published: u64,
    /// Messages a second over the hold.
    pub(crate) published_per_sec: f64,
    /// Every reading.
    pub(crate) samples: Vec<HoldSample>,
}

impl HoldOut {
    /// Whether every device stayed connected the whole hold, as the fleet
    /// and the broker count them.
    pub(crate) fn held(&self, devices: u32) -> bool {
        self.reconnects == 0
            && self.fleet_connected_min >= i64::from(devices)
            && self
                .broker_connected_min
                .is_none_or(|b| b >= u64::from(devices))
    }
}

/// Holds `fleet` connected for `duration`, reading the fleet's counts and
/// `broker_connected()` every [`HOLD_EVERY`] and at the end.
///
/// # Errors
/// When a fleet shard exits.
pub(crate) async fn hold<F, Fut>(
    fleet: &mut LeanRun,
    duration: Duration,
    mut broker_connected: F,
) -> anyhow::Result<HoldOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<u64>>,
{
    let started = Instant::now();
    let first = fleet.stats();
    let mut out = HoldOut {
        fleet_connected_min: first.connected,
        ..HoldOut::default()
    };
    let mut tick = tokio::time::interval(HOLD_EVERY);
    loop {
        let left = duration.saturating_sub(started.elapsed());
        let last = left.is_zero();
        if !last {
            tokio::select! {
                _ = tick.tick() => {}
                () = tokio::time::sleep(left) => {}
                e = fleet.failed() => bail!("a fleet shard failed during the hold: {e}"),
            }
        }
        let broker = broker_connected().await;
        let stats = fleet.stats();
        out.fleet_connected_min = out.fleet_connected_min.min(stats.connected);
        out.broker_connected_min = match (out.broker_connected_min, broker) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        out.samples.push(HoldSample {
            at: started.elapsed().as_secs_f64(),
            fleet_connected: stats.connected,
            broker_connected: broker,
            published: stats.published,
        });
        if last {
            out.seconds = started.elapsed().as_secs_f64();
            out.reconnects = stats.sessions.saturating_sub(first.sessions);
            out.failed_attempts = stats.failed_attempts.saturating_sub(first.failed_attempts);
            out.published = stats.published.saturating_sub(first.published);
            out.published_per_sec = crate::common::per_sec(out.published, out.seconds);
            return Ok(out);
        }
    }
}

/// Memory and CPU of a group of processes.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct GroupOut {
    /// Processes in the group.
    pub(crate) processes: usize,
    /// RSS of them all before any device connected, bytes.
    pub(crate) rss_before_bytes: Option<u64>,
    /// RSS of them all with every device connected, bytes.
    pub(crate) rss_held_bytes: Option<u64>,
    /// (held − before) / devices.
    pub(crate) rss_per_connection_bytes: Option<f64>,
    /// CPU seconds they used over the ramp.
    pub(crate) cpu_ramp_seconds: Option<f64>,
    /// CPU seconds they used over the hold.
    pub(crate) cpu_hold_seconds: Option<f64>,
    /// Cores they kept busy over the hold (CPU seconds / hold seconds).
    pub(crate) cores_hold: Option<f64>,
}

impl GroupOut {
    /// Works out the per-connection RSS and the cores of the hold: RSS
    /// held less RSS before over `devices` (the whole RSS when there was
    /// no before: processes started with the devices).
    pub(crate) fn finish(&mut self, devices: u32, hold_seconds: f64) {
        let devices = f64::from(devices.max(1));
        self.rss_per_connection_bytes = self
            .rss_held_bytes
            .map(|held| held.saturating_sub(self.rss_before_bytes.unwrap_or(0)) as f64 / devices);
        self.cores_hold = self
            .cpu_hold_seconds
            .filter(|_| hold_seconds > 0.0)
            .map(|cpu| cpu / hold_seconds);
    }
}

/// Sum of the RSS of `pids`; `None` when one is gone.
pub(crate) fn rss_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| process::rss_bytes(p)).sum()
}

/// Children of `pid` (every thread's `children`).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut kids: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    kids.sort_unstable();
    kids.dedup();
    kids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_with_a_reconnect_or_a_gap_did_not_hold() {
        let held = HoldOut {
            fleet_connected_min: 10,
            broker_connected_min: Some(10),
            ..HoldOut::default()
        };
        assert!(held.held(10));
        assert!(
            !HoldOut {
                reconnects: 1,
                ..held.clone()
            }
            .held(10)
        );
        assert!(
            !HoldOut {
                broker_connected_min: Some(9),
                ..held.clone()
            }
            .held(10)
        );
        assert!(
            !HoldOut {
                fleet_connected_min: 9,
                ..held.clone()
            }
            .held(10)
        );
    }

    #[test]
    fn rss_is_summed_and_a_missing_process_is_none() {
        let me = std::process::id();
        assert!(rss_of(&[me]).is_some_and(|r| r > 0));
        assert_eq!(rss_of(&[me, u32::MAX]), None);
        assert!(children(u32::MAX).is_empty());
    }

    #[test]
    fn a_group_without_a_before_counts_its_whole_rss() {
        let mut g = GroupOut {
            rss_before_bytes: Some(1_000),
            rss_held_bytes: Some(11_000),
            cpu_hold_seconds: Some(5.0),
            ..GroupOut::default()
        };
        g.finish(10, 10.0);
        assert_eq!(g.rss_per_connection_bytes, Some(1_000.0));
        assert_eq!(g.cores_hold, Some(0.5));
        g.rss_before_bytes = None;
        g.finish(10, 0.0);
        assert_eq!(g.rss_per_connection_bytes, Some(1_100.0));
        assert_eq!(g.cores_hold, None);
    }
}
