//! The bench's results: the JSON written under `--out` and the summary
//! printed for people.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::Mode;
use super::layout::Layout;
use super::peer::PeerOut;
use super::scrape::PollLatency;
use crate::process::{LogSummary, Stopped};
use crate::registry::Counts;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    /// `"modbus"`.
    pub(crate) bench: &'static str,
    /// Start of the run, Unix seconds.
    pub(crate) started_unix: u64,
    /// The flags.
    pub(crate) args: ArgsOut,
    /// What every device is asked per poll.
    pub(crate) load: LoadOut,
    /// The simulated devices.
    pub(crate) fleet: FleetOut,
    /// The gateway's figures.
    pub(crate) gateway: GatewayOut,
    /// The registry's counts.
    pub(crate) registry: RegistryOut,
    /// The pymodbus peer's figures; `null` when it could not run.
    pub(crate) peer: Option<PeerOut>,
    /// Why there is no peer.
    pub(crate) peer_missing: Option<String>,
    /// Gateway ÷ pymodbus.
    pub(crate) ratios: Option<Ratios>,
    /// The machine.
    pub(crate) machine: MachineOut,
}

/// The flags of the run.
#[derive(Debug, Serialize)]
pub(crate) struct ArgsOut {
    /// `--devices`.
    pub(crate) devices: u32,
    /// `--tags`.
    pub(crate) tags: u32,
    /// `--mode`.
    pub(crate) mode: Mode,
    /// The poll interval used, ms (`--interval`; 0 when saturating).
    pub(crate) interval_ms: f64,
    /// `--duration`, s.
    pub(crate) duration_secs: f64,
    /// `--layout`.
    pub(crate) layout: Layout,
    /// `--port`.
    pub(crate) port: u16,
    /// `--out`.
    pub(crate) out: PathBuf,
}

/// The load per device and poll.
#[derive(Debug, Serialize)]
pub(crate) struct LoadOut {
    /// Tag layout.
    pub(crate) layout: Layout,
    /// u16 tags (points) per device.
    pub(crate) tags_per_device: u32,
    /// First input register of the block the tags lie on.
    pub(crate) block_start: u16,
    /// Registers in that block.
    pub(crate) block_registers: u16,
    /// Poll groups per device.
    pub(crate) poll_groups: usize,
    /// Requests per device and poll.
    pub(crate) requests_per_poll: u64,
    /// Registers on the wire per device and poll.
    pub(crate) registers_per_poll: u64,
    /// Mean registers per request.
    pub(crate) registers_per_request: f64,
    /// Points per device and poll.
    pub(crate) points_per_poll: u64,
    /// What the cadence asks for: devices × requests per poll ÷ interval
    /// (`null` when saturating).
    pub(crate) expected_transactions_per_sec: Option<f64>,
    /// devices × registers per poll ÷ interval (`null` when saturating).
    pub(crate) expected_registers_per_sec: Option<f64>,
    /// How the tags map onto the devices' registers.
    pub(crate) note: String,
}

/// The simulated fleet.
#[derive(Debug, Serialize)]
pub(crate) struct FleetOut {
    /// Devices served.
    pub(crate) devices: u32,
    /// Processes serving them (1: the bench process itself).
    pub(crate) processes: usize,
    /// CPU seconds they used in the gateway's window.
    pub(crate) cpu_seconds: Option<f64>,
}

/// One sample of the gateway during its window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Seconds into the window.
    pub(crate) at_secs: f64,
    /// Requests per second since the previous sample.
    pub(crate) transactions_per_sec: f64,
    /// Points per second since the previous sample.
    pub(crate) points_per_sec: f64,
    /// Gateway CPU seconds per second since the previous sample.
    pub(crate) cpu_utilization: Option<f64>,
    /// Sessions up.
    pub(crate) devices_online: i64,
    /// Gateway RSS, MB.
    pub(crate) rss_mb: Option<f64>,
    /// Age of the oldest unacknowledged batch.
    pub(crate) uplink_lag_seconds: f64,
    /// Batches waiting in the spool.
    pub(crate) spool_batches: u64,
    /// Points the registry accepted per second since the previous sample.
    pub(crate) delivered_points_per_sec: Option<f64>,
}

/// The gateway's figures.
#[derive(Debug, Serialize)]
pub(crate) struct GatewayOut {
    /// Seconds from start until every session was up.
    pub(crate) connect_secs: f64,
    /// Length of the measuring window.
    pub(crate) window_secs: f64,
    /// Requests in the window (`driver_requests_total`).
    pub(crate) transactions: u64,
    /// Per second.
    pub(crate) transactions_per_sec: f64,
    /// What the cadence asks for (`null` when saturating).
    pub(crate) expected_transactions_per_sec: Option<f64>,
    /// Registers read in the window (requests without an exception ×
    /// registers per request).
    pub(crate) registers: u64,
    /// Per second.
    pub(crate) registers_per_sec: f64,
    /// Points put into batches in the window (`points_total`).
    pub(crate) points: u64,
    /// Per second.
    pub(crate) points_per_sec: f64,
    /// Gateway process CPU seconds in the window.
    pub(crate) cpu_seconds: Option<f64>,
    /// CPU seconds per second (cores busy).
    pub(crate) cpu_utilization: Option<f64>,
    /// Registers per gateway CPU second ("per core").
    pub(crate) registers_per_cpu_second: Option<f64>,
    /// Requests per gateway CPU second.
    pub(crate) transactions_per_cpu_second: Option<f64>,
    /// Points per gateway CPU second.
    pub(crate) points_per_cpu_second: Option<f64>,
    /// Points the registry accepted in the window (what the uplink
    /// delivered; below `points` when it falls behind).
    pub(crate) points_delivered: Option<u64>,
    /// Per second.
    pub(crate) points_delivered_per_sec: Option<f64>,
    /// Delivered points per gateway CPU second.
    pub(crate) points_delivered_per_cpu_second: Option<f64>,
    /// Poll-group read latency in the window, from the gateway's histogram.
    pub(crate) poll_latency: PollLatency,
    /// RSS when every session was up.
    pub(crate) rss_bytes_online: Option<u64>,
    /// RSS at the end of the window.
    pub(crate) rss_bytes: Option<u64>,
    /// RSS at the end ÷ devices.
    pub(crate) rss_per_device_bytes: Option<f64>,
    /// Devices configured.
    pub(crate) devices: u32,
    /// Sessions up at the end of the window.
    pub(crate) devices_online: i64,
    /// Fewest sessions up in any sample of the window.
    pub(crate) devices_online_min: i64,
    /// Exception responses since start (to the end of the window).
    pub(crate) exceptions: u64,
    /// Failed polls since start.
    pub(crate) errors: u64,
    /// Failed connection attempts since start.
    pub(crate) connect_failures: u64,
    /// Exception responses in the window.
    pub(crate) window_exceptions: u64,
    /// Failed polls in the window.
    pub(crate) window_errors: u64,
    /// Batches acknowledged by the registry in the window.
    pub(crate) batches_acked: u64,
    /// Batches dropped from a full spool since start.
    pub(crate) batches_dropped: u64,
    /// Largest uplink lag seen in the window (age of the oldest batch not
    /// yet acknowledged by the registry).
    pub(crate) uplink_lag_seconds_max: f64,
    /// Uplink lag at the end of the window.
    pub(crate) uplink_lag_seconds_end: f64,
    /// Most batches waiting in the spool in any sample.
    pub(crate) spool_batches_max: u64,
    /// Batches waiting in the spool at the end of the window (a backlog
    /// that grows means the uplink does not keep up).
    pub(crate) spool_batches_end: u64,
    /// Samples whose request rate was below 80 % of the cadence's (0 when
    /// saturating).
    pub(crate) slow_samples: usize,
    /// One sample a second.
    pub(crate) timeline: Vec<Sample>,
    /// What it logged.
    pub(crate) log: LogSummary,
    /// How it stopped.
    pub(crate) stopped: Option<Stopped>,
}

/// The registry's counts after the window.
#[derive(Debug, Serialize)]
pub(crate) struct RegistryOut {
    /// Devices expected: the fleet.
    pub(crate) expected: u32,
    /// `reporting.total` (日运行数量) today.
    pub(crate) reporting: u64,
    /// `online.total`.
    pub(crate) online: u64,
    /// `registered.total`.
    pub(crate) registered: u64,
    /// Registry CPU seconds in the gateway's window.
    pub(crate) cpu_seconds: Option<f64>,
    /// Registry RSS at the end of the window.
    pub(crate) rss_bytes: Option<u64>,
    /// What it logged.
    pub(crate) log: LogSummary,
    /// How it stopped.
    pub(crate) stopped: Option<Stopped>,
}

impl RegistryOut {
    /// From counts and the process's figures.
    pub(crate) fn new(expected: u32, counts: Counts) -> RegistryOut {
        RegistryOut {
            expected,
            reporting: counts.reporting,
            online: counts.online,
            registered: counts.registered,
            cpu_seconds: None,
            rss_bytes: None,
            log: LogSummary::default(),
            stopped: None,
        }
    }
}

/// Gateway ÷ pymodbus.
#[derive(Debug, Serialize)]
pub(crate) struct Ratios {
    /// Points (decoded tag values) per CPU second.
    pub(crate) points_per_cpu_second: Option<f64>,
    /// Points per second.
    pub(crate) points_per_sec: Option<f64>,
    /// Registers per CPU second.
    pub(crate) registers_per_cpu_second: Option<f64>,
    /// Requests per CPU second.
    pub(crate) transactions_per_cpu_second: Option<f64>,
    /// Requests per second.
    pub(crate) transactions_per_sec: Option<f64>,
    /// Registers per second.
    pub(crate) registers_per_sec: Option<f64>,
}

impl Ratios {
    /// The ratios of `gateway` to `peer`.
    pub(crate) fn of(gateway: &GatewayOut, peer: &PeerOut) -> Ratios {
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        Ratios {
            points_per_cpu_second: div(gateway.points_per_cpu_second, peer.points_per_cpu_second),
            points_per_sec: div(Some(gateway.points_per_sec), Some(peer.points_per_sec)),
            registers_per_cpu_second: div(
                gateway.registers_per_cpu_second,
                peer.registers_per_cpu_second,
            ),
            transactions_per_cpu_second: div(
                gateway.transactions_per_cpu_second,
                peer.transactions_per_cpu_second,
            ),
            transactions_per_sec: div(
                Some(gateway.transactions_per_sec),
                Some(peer.transactions_per_sec),
            ),
            registers_per_sec: div(
                Some(gateway.registers_per_sec),
                Some(peer.registers_per_sec),
            ),
        }
    }
}

/// The machine during the gateway's window.
#[derive(Debug, Serialize)]
pub(crate) struct MachineOut {
    /// Cores.
    pub(crate) cores: usize,
    /// Share of the machine busy in the second before the bench started
    /// anything (other work on the box skews every figure).
    pub(crate) busy_before: Option<f64>,
    /// CPU seconds all processes spent busy in the gateway's window.
    pub(crate) busy_seconds: Option<f64>,
    /// Of those, seconds of processes other than the gateway, the registry
    /// and the fleet.
    pub(crate) others_seconds: Option<f64>,
}

pub(crate) use crate::common::per_sec;

/// `n / cpu`, `None` without CPU figures.
pub(crate) fn per_cpu(n: u64, cpu: Option<f64>) -> Option<f64> {
    cpu.filter(|c| *c > 0.0).map(|c| n as f64 / c)
}

impl Results {
    /// Writes `<out>/modbus-<devices>d-<tags>t-<unix>.json`.
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub(crate) fn write_json(&self, out: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let path = out.join(format!(
            "modbus-{}d-{}t-{}.json",
            self.args.devices, self.args.tags, self.started_unix
        ));
        let text =
            serde_json::to_string_pretty(self).context("cannot write the results as JSON")?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// The human summary.
    pub(crate) fn summary(&self) -> String {
        let mut s = String::new();
        let g = &self.gateway;
        let l = &self.load;
        let _ = writeln!(
            s,
            "\nmodbus bench ({}): {} devices × {} u16 tags ({}), {}, {:.1} s window",
            self.args.mode.name(),
            self.args.devices,
            l.tags_per_device,
            l.layout.name(),
            match self.args.mode {
                Mode::Cadence => format!("every {} ms", self.args.interval_ms),
                Mode::Saturate => "back to back".to_owned(),
            },
            g.window_secs
        );
        let _ = writeln!(
            s,
            "load per device and poll: {} request(s), {} registers on the wire, {} points\n  ({})",
            l.requests_per_poll, l.registers_per_poll, l.points_per_poll, l.note
        );
        let peer = self.peer.as_ref();
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        let r = self.ratios.as_ref();
        let _ = writeln!(
            s,
            "\n{:<32} {:>14} {:>14} {:>8}",
            "", "gateway", "pymodbus", "ratio"
        );
        let mut row = |name: &str, gw: String, py: String, ratio: String| {
            let _ = writeln!(s, "{name:<32} {gw:>14} {py:>14} {ratio:>8}");
        };
        row(
            "transactions/s",
            format!("{:.0}", g.transactions_per_sec),
            opt(peer.map(|p| p.transactions_per_sec), 0),
            ratio(r.and_then(|r| r.transactions_per_sec)),
        );
        if self.args.mode == Mode::Cadence {
            row(
                "  (the cadence asks for)",
                opt(l.expected_transactions_per_sec, 0),
                opt(peer.and_then(|p| p.expected_transactions_per_sec), 0),
                String::new(),
            );
        }
        row(
            "points/s",
            format!("{:.0}", g.points_per_sec),
            opt(peer.map(|p| p.points_per_sec), 0),
            ratio(r.and_then(|r| r.points_per_sec)),
        );
        row(
            "points per CPU-second",
            opt(g.points_per_cpu_second, 0),
            opt(peer.and_then(|p| p.points_per_cpu_second), 0),
            ratio(r.and_then(|r| r.points_per_cpu_second)),
        );
        row(
            "registers/s",
            format!("{:.0}", g.registers_per_sec),
            opt(peer.map(|p| p.registers_per_sec), 0),
            ratio(r.and_then(|r| r.registers_per_sec)),
        );
        row(
            "registers per CPU-second",
            opt(g.registers_per_cpu_second, 0),
            opt(peer.and_then(|p| p.registers_per_cpu_second), 0),
            ratio(r.and_then(|r| r.registers_per_cpu_second)),
        );
        row(
            "transactions per CPU-second",
            opt(g.transactions_per_cpu_second, 0),
            opt(peer.and_then(|p| p.transactions_per_cpu_second), 0),
            ratio(r.and_then(|r| r.transactions_per_cpu_second)),
        );
        row(
            "CPU (cores busy)",
            opt(g.cpu_utilization, 3),
            opt(peer.map(|p| p.cpu_utilization), 3),
            String::new(),
        );
        row(
            "poll latency p50 / p99 (ms)",
            format!(
                "{} / {}",
                opt(g.poll_latency.p50_ms, 2),
                opt(g.poll_latency.p99_ms, 2)
            ),
            format!(
                "{} / {}",
                opt(peer.and_then(|p| p.poll_latency_ms.p50), 2),
                opt(peer.and_then(|p| p.poll_latency_ms.p99), 2)
            ),
            String::new(),
        );
        row(
            "  p99 bucket / mean (ms)",
            format!(
                "≤{} / {}",
                opt(g.poll_latency.p99_le_ms, 1),
                opt(g.poll_latency.mean_ms, 2)
            ),
            format!(
                "max {} / {}",
                opt(peer.and_then(|p| p.poll_latency_ms.max), 1),
                opt(peer.and_then(|p| p.poll_latency_ms.mean), 2)
            ),
            String::new(),
        );
        row(
            "exceptions / errors",
            format!("{} / {}", g.exceptions, g.errors),
            peer.map_or_else(
                || "-".to_owned(),
                |p| format!("{} / {}", p.exceptions, p.errors),
            ),
            String::new(),
        );
        row(
            "devices connected",
            format!("{}/{}", g.devices_online, g.devices),
            peer.map_or_else(
                || "-".to_owned(),
                |p| format!("{}/{}", p.connected, p.devices),
            ),
            String::new(),
        );
        let _ = writeln!(
            s,
            "\ngateway: {:.0} points/s ({} points per CPU-second); the registry accepted {} points/s ({} per gateway CPU-second); RSS {} ({} per device), connect {:.1} s",
            g.points_per_sec,
            opt(g.points_per_cpu_second, 0),
            opt(g.points_delivered_per_sec, 0),
            opt(g.points_delivered_per_cpu_second, 0),
            mb(g.rss_bytes),
            g.rss_per_device_bytes
                .map_or_else(|| "-".to_owned(), |b| format!("{:.1} KB", b / 1e3)),
            g.connect_secs
        );
        let _ = writeln!(
            s,
            "         {} slow samples of {} (< 80 % of the cadence), uplink lag ≤ {:.2} s ({:.2} s at the end), spool ≤ {} batches ({} at the end), {} acked, log: {} warnings, {} errors",
            g.slow_samples,
            g.timeline.len(),
            g.uplink_lag_seconds_max,
            g.uplink_lag_seconds_end,
            g.spool_batches_max,
            g.spool_batches_end,
            g.batches_acked,
            g.log.warnings,
            g.log.errors
        );
        let _ = writeln!(
            s,
            "registry: reporting {}/{}, online {}, registered {}; CPU {} s in the window",
            self.registry.reporting,
            self.registry.expected,
            self.registry.online,
            self.registry.registered,
            opt(self.registry.cpu_seconds, 2)
        );
        let _ = writeln!(
            s,
            "fleet: {} process(es), CPU {} s in the window",
            self.fleet.processes,
            opt(self.fleet.cpu_seconds, 2),
        );
        let _ = writeln!(
            s,
            "machine: busy {} of {:.0} core-seconds in the window, {} of them other processes (busy {} % before the bench)",
            opt(self.machine.busy_seconds, 1),
            g.window_secs * self.machine.cores as f64,
            opt(self.machine.others_seconds, 1),
            opt(self.machine.busy_before.map(|b| b * 100.0), 0)
        );
        match (&self.peer, &self.peer_missing) {
            (Some(p), _) => {
                let _ = writeln!(
                    s,
                    "peer: pymodbus {} on Python {}, {} late ticks, connect {:.1} s",
                    p.pymodbus, p.python, p.late_ticks, p.connect_secs
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(s, "peer: MISSING — {why}");
            }
            (None, None) => {}
        }
        s
    }
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_guard_against_empty_windows() {
        assert_eq!(per_sec(10, 0.0), 0.0);
        assert_eq!(per_sec(10, 2.0), 5.0);
        assert_eq!(per_cpu(10, None), None);
        assert_eq!(per_cpu(10, Some(0.0)), None);
        assert_eq!(per_cpu(10, Some(0.5)), Some(20.0));
    }
}
