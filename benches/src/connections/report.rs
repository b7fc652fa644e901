//! What `bench connections` found: per part (fieldlink's lean ingress,
//! mosquitto shards) the ramp, the hold, memory and CPU per group of
//! processes, the kernel's memory; the ratios; a summary for the console
//! and the JSON file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::hold::{GroupOut, HoldOut, RampOut};
use super::kernel::{KernelMemory, Sysctl};
use crate::mqtt::probe::LatencyOut;
use crate::registry::Counts;

/// When the registry counted every device, and how.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Counted {
    /// Seconds from the start of the ramp.
    pub(crate) seconds: f64,
    /// The counts then.
    pub(crate) counts: Counts,
}

/// One broker's part.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartOut {
    /// Which.
    pub(crate) broker: String,
    /// Its version.
    pub(crate) version: String,
    /// Broker (ingress shard or mosquitto) processes.
    pub(crate) broker_processes: usize,
    /// Fleet processes.
    pub(crate) fleet_processes: usize,
    /// How the fleet came up.
    pub(crate) ramp: RampOut,
    /// When the registry counted every device (fieldlink only).
    pub(crate) counted: Option<Counted>,
    /// How the fleet held.
    pub(crate) hold: HoldOut,
    /// The brokers: ingress shards (with their in-process gateways) or
    /// mosquittos.
    pub(crate) broker_group: GroupOut,
    /// The fleet's processes.
    pub(crate) fleet: GroupOut,
    /// The registry (fieldlink only).
    pub(crate) registry: Option<GroupOut>,
    /// Kernel memory before the ramp.
    pub(crate) kernel_before: KernelMemory,
    /// Kernel memory with every device connected.
    pub(crate) kernel_held: KernelMemory,
    /// Slab and TCP buffers grown over the devices (both ends here).
    pub(crate) kernel_per_connection_bytes: Option<f64>,
    /// Publish to counted (fieldlink only).
    pub(crate) latency: Option<LatencyOut>,
    /// Fewest devices the registry counted online during the hold.
    pub(crate) registry_online_min: Option<u64>,
    /// `bench verify`'s verdict: `Ok` or what differed.
    pub(crate) verified: Option<Result<(), String>>,
    /// Telemetry messages a second the bench's subscriber took from the
    /// brokers in the hold (mosquitto only; on the fieldlink side the
    /// gateways take every message, and the registry counts them).
    pub(crate) consumed_per_sec: Option<f64>,
}

/// fieldlink over mosquitto, for figures where less is better, and the
/// other way round for rates.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Ratios {
    /// Connects a second, fieldlink / mosquitto.
    pub(crate) connects_per_sec: Option<f64>,
    /// Broker RSS per connection, mosquitto / fieldlink (fieldlink's with
    /// its gateways).
    pub(crate) broker_rss_per_connection: Option<f64>,
    /// Kernel memory per connection, mosquitto / fieldlink.
    pub(crate) kernel_per_connection: Option<f64>,
    /// Broker CPU over the hold, mosquitto / fieldlink.
    pub(crate) broker_cpu_hold: Option<f64>,
}

impl Ratios {
    /// The ratios of two parts.
    pub(crate) fn of(fieldlink: &PartOut, peer: &PartOut) -> Ratios {
        let over = |a: Option<f64>, b: Option<f64>| {
            let (a, b) = (a?, b?);
            (b > 0.0).then(|| a / b)
        };
        Ratios {
            connects_per_sec: over(
                Some(fieldlink.ramp.connects_per_sec),
                Some(peer.ramp.connects_per_sec),
            ),
            broker_rss_per_connection: over(
                peer.broker_group.rss_per_connection_bytes,
                fieldlink.broker_group.rss_per_connection_bytes,
            ),
            kernel_per_connection: over(
                peer.kernel_per_connection_bytes,
                fieldlink.kernel_per_connection_bytes,
            ),
            broker_cpu_hold: over(
                peer.broker_group.cpu_hold_seconds,
                fieldlink.broker_group.cpu_hold_seconds,
            ),
        }
    }
}

/// The flags as run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ArgsOut {
    /// Devices.
    pub(crate) devices: u32,
    /// Hold, s.
    pub(crate) hold_secs: f64,
    /// Telemetry interval, s.
    pub(crate) interval_secs: f64,
    /// Hold of the peer, s.
    pub(crate) peer_hold_secs: f64,
}

/// Everything the bench found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Results {
    /// `connections`.
    pub(crate) bench: &'static str,
    /// When it started (Unix s).
    pub(crate) started_unix: u64,
    /// The flags.
    pub(crate) args: ArgsOut,
    /// How the figures are taken.
    pub(crate) method: &'static str,
    /// The sysctls the bench needed, raised or not.
    pub(crate) sysctls: Vec<Sysctl>,
    /// Cores of the machine.
    pub(crate) cores: usize,
    /// fieldlink's part.
    pub(crate) fieldlink: PartOut,
    /// mosquitto's part.
    pub(crate) peer: Option<PartOut>,
    /// Why there is none.
    pub(crate) peer_missing: Option<String>,
    /// The ratios.
    pub(crate) ratios: Option<Ratios>,
}

/// How the figures are taken.
pub(crate) const METHOD: &str = "the same lean fleet (one task and one TCP connection per device, each from its own 127.x.y.z address, MQTT 3.1.1, one login per tenant, shards of 18 000 devices per process) against each broker in turn; connects/s: devices over the time from the fleet's start to every device connected (the fleet's count, read every 100 ms); RSS: VmRSS of /proc/PID/status summed over a group's processes, per connection = (with every device connected − before the ramp) / devices — fieldlink's ingress shards hold their gateways in-process, mosquitto has no subscriber; fleet RSS is its processes' whole RSS over the devices; kernel: (Slab of /proc/meminfo + TCP mem of /proc/net/sockstat) grown over the devices, both ends of each connection being on this machine; CPU: utime+stime from /proc/PID/stat over the hold; held: every reading of the fleet's and the broker's count (ingress shards' fieldlink_broker_connections, mosquitto's $SYS clients/connected) at least the devices, and no session made again; latency: device's ts to its last_seen in the registry's device list";

impl Results {
    /// The console summary.
    pub(crate) fn summary(&self) -> String {
        let mut s = String::new();
        let f = &self.fieldlink;
        let p = self.peer.as_ref();
        let _ = writeln!(
            s,
            "\n== bench connections: {} devices, hold {:.0} s, a message every {:.0} s each ==",
            self.args.devices, self.args.hold_secs, self.args.interval_secs
        );
        for sysctl in self
            .sysctls
            .iter()
            .filter(|s| s.raised() || s.error.is_some())
        {
            let _ = writeln!(
                s,
                "sysctl {}: {} -> {}{}",
                sysctl.name,
                show(sysctl.before.map(|v| v as f64), ""),
                show(sysctl.after.map(|v| v as f64), ""),
                sysctl
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" ({e})"))
            );
        }
        let _ = writeln!(
            s,
            "{:<36} {:>18} {:>18} {:>8}",
            "", "fieldlink", "mosquitto", "ratio"
        );
        let r = self.ratios.clone().unwrap_or_default();
        let mut row =
            |name: &str, a: Option<f64>, b: Option<f64>, ratio: Option<f64>, unit: &str| {
                let _ = writeln!(
                    s,
                    "{name:<36} {:>18} {:>18} {:>8}",
                    show(a, unit),
                    show(b, unit),
                    ratio.map_or("-".to_owned(), |r| format!("x{r:.2}"))
                );
            };
        row(
            "broker processes",
            Some(f.broker_processes as f64),
            p.map(|p| p.broker_processes as f64),
            None,
            "",
        );
        row(
            "fleet processes",
            Some(f.fleet_processes as f64),
            p.map(|p| p.fleet_processes as f64),
            None,
            "",
        );
        row(
            "connects/s",
            Some(f.ramp.connects_per_sec),
            p.map(|p| p.ramp.connects_per_sec),
            r.connects_per_sec,
            "",
        );
        row(
            "peak connects in 1 s",
            Some(f.ramp.peak_connects_per_sec),
            p.map(|p| p.ramp.peak_connects_per_sec),
            None,
            "",
        );
        row(
            "broker RSS per connection",
            f.broker_group.rss_per_connection_bytes,
            p.and_then(|p| p.broker_group.rss_per_connection_bytes),
            r.broker_rss_per_connection,
            "B",
        );
        row(
            "fleet RSS per connection",
            f.fleet.rss_per_connection_bytes,
            p.and_then(|p| p.fleet.rss_per_connection_bytes),
            None,
            "B",
        );
        row(
            "kernel per connection (both ends)",
            f.kernel_per_connection_bytes,
            p.and_then(|p| p.kernel_per_connection_bytes),
            r.kernel_per_connection,
            "B",
        );
        row(
            "broker CPU over the hold",
            f.broker_group.cpu_hold_seconds,
            p.and_then(|p| p.broker_group.cpu_hold_seconds),
            r.broker_cpu_hold,
            "s",
        );
        row(
            "fleet CPU over the hold",
            f.fleet.cpu_hold_seconds,
            p.and_then(|p| p.fleet.cpu_hold_seconds),
            None,
            "s",
        );
        row(
            "held (fewest connected, broker)",
            f.hold.broker_connected_min.map(|v| v as f64),
            p.and_then(|p| p.hold.broker_connected_min.map(|v| v as f64)),
            None,
            "",
        );
        row(
            "sessions made again in the hold",
            Some(f.hold.reconnects as f64),
            p.map(|p| p.hold.reconnects as f64),
            None,
            "",
        );
        row(
            "messages/s published in the hold",
            Some(f.hold.published_per_sec),
            p.map(|p| p.hold.published_per_sec),
            None,
            "",
        );
        if let Some(reg) = &f.registry {
            let _ = writeln!(
                s,
                "registry: RSS {} held, CPU {} over the hold; fewest online {}",
                show(reg.rss_held_bytes.map(|v| v as f64), "B"),
                show(reg.cpu_hold_seconds, "s"),
                show(f.registry_online_min.map(|v| v as f64), "")
            );
        }
        if let Some(c) = &f.counted {
            let _ = writeln!(
                s,
                "registry counted {} registered, {} online, {} reporting {:.1} s after the ramp began",
                c.counts.registered, c.counts.online, c.counts.reporting, c.seconds
            );
        }
        if let Some(l) = &f.latency {
            let _ = writeln!(
                s,
                "publish to counted: p50 {}..{} ms, p99 {}..{} ms ({} samples)",
                show(l.lower.p50_ms, ""),
                show(l.upper.p50_ms, ""),
                show(l.lower.p99_ms, ""),
                show(l.upper.p99_ms, ""),
                l.samples
            );
        }
        match &f.verified {
            Some(Ok(())) => {
                let _ = writeln!(s, "bench verify: the registry equals the manifest");
            }
            Some(Err(e)) => {
                let _ = writeln!(s, "bench verify FAILED: {e}");
            }
            None => {}
        }
        if let Some(c) = p.and_then(|p| p.consumed_per_sec) {
            let _ = writeln!(
                s,
                "mosquitto: the bench's subscriber on each shard took {c:.1} telemetry messages/s in the hold \
                 (its broker CPU includes delivering them, as the ingress's includes its gateways)"
            );
        }
        if let Some(why) = &self.peer_missing {
            let _ = writeln!(s, "mosquitto: {why}");
        }
        s
    }

    /// Writes `<out>/connections-<devices>d-<unix>.json`; returns its path.
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub(crate) fn write_json(&self, out: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let path = out.join(format!(
            "connections-{}d-{}.json",
            self.args.devices, self.started_unix
        ));
        let text = serde_json::to_string_pretty(self).context("cannot encode the results")?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// A figure for the console: bytes and large counts shortened.
fn show(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else {
        return "-".to_owned();
    };
    match unit {
        "B" if v >= 1024.0 * 1024.0 * 1024.0 => {
            format!("{:.2} GiB", v / (1024.0 * 1024.0 * 1024.0))
        }
        "B" if v >= 1024.0 * 1024.0 => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
        "B" if v >= 1024.0 => format!("{:.2} KiB", v / 1024.0),
        "B" => format!("{v:.0} B"),
        "s" => format!("{v:.1} s"),
        _ if v.fract() == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_shown_in_their_units() {
        assert_eq!(show(None, "B"), "-");
        assert_eq!(show(Some(900.0), "B"), "900 B");
        assert_eq!(show(Some(2048.0), "B"), "2.00 KiB");
        assert_eq!(show(Some(3.0 * 1024.0 * 1024.0), "B"), "3.0 MiB");
        assert_eq!(show(Some(12.34), "s"), "12.3 s");
        assert_eq!(show(Some(1_000_000.0), ""), "1000000");
        assert_eq!(show(Some(20_512.4), ""), "20512.4");
    }
}
