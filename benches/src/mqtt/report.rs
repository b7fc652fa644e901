//! The bench's results: the JSON written under `--out` and the summary
//! printed for people (fieldlink | mosquitto | ratio).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::broker::BrokerKind;
use super::probe::LatencyOut;
use super::window::Sample;
use crate::process::{LogSummary, Stopped};
use crate::registry::Counts;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    /// `"mqtt"`.
    pub(crate) bench: &'static str,
    /// Start of the run, Unix seconds.
    pub(crate) started_unix: u64,
    /// The flags.
    pub(crate) args: ArgsOut,
    /// The load every part gets.
    pub(crate) load: LoadOut,
    /// How the two brokers are set up to be comparable.
    pub(crate) setup: SetupOut,
    /// `fieldlink broker`.
    pub(crate) fieldlink: PartOut,
    /// mosquitto; `null` when it could not run.
    pub(crate) peer: Option<PartOut>,
    /// Why there is no peer.
    pub(crate) peer_missing: Option<String>,
    /// fieldlink ÷ mosquitto.
    pub(crate) ratios: Option<Ratios>,
    /// The machine.
    pub(crate) machine: MachineOut,
}

/// The flags of the run.
#[derive(Debug, Serialize)]
pub(crate) struct ArgsOut {
    /// `--devices`.
    pub(crate) devices: u32,
    /// `--rate`, messages per second per device.
    pub(crate) rate: f64,
    /// `--duration`, s.
    pub(crate) duration_secs: f64,
    /// `--out`.
    pub(crate) out: PathBuf,
    /// `--no-peer`.
    pub(crate) no_peer: bool,
}

/// The load.
#[derive(Debug, Serialize)]
pub(crate) struct LoadOut {
    /// Device clients, one connection each.
    pub(crate) devices: u32,
    /// Telemetry interval of every device, ms (1 000 ÷ `--rate`).
    pub(crate) interval_ms: f64,
    /// What the clients are asked to publish in all, messages per second.
    pub(crate) offered_per_sec: f64,
    /// Warm-up after the telemetry starts, s.
    pub(crate) warmup_secs: f64,
    /// Where the clients run and how they tick.
    pub(crate) note: &'static str,
}

/// How the parts are made comparable.
#[derive(Debug, Serialize)]
pub(crate) struct SetupOut {
    /// Authentication and ACLs of both brokers.
    pub(crate) auth: &'static str,
    /// How each figure is measured.
    pub(crate) figures: &'static str,
}

/// One broker's part.
#[derive(Debug, Serialize)]
pub(crate) struct PartOut {
    /// Which broker.
    pub(crate) broker: BrokerKind,
    /// Its name and version.
    pub(crate) version: String,
    /// Seconds from the clients' start until every client had its CONNACK.
    pub(crate) connect_secs: f64,
    /// Devices ÷ `connect_secs`.
    pub(crate) connect_per_sec: f64,
    /// Sessions established (CONNACKs) in all; above the devices when
    /// clients had to reconnect.
    pub(crate) sessions: u64,
    /// Broker RSS before any device connected (the gateway, and for
    /// mosquitto the bench's `$SYS` observer, connected).
    pub(crate) rss_before_bytes: Option<u64>,
    /// Broker RSS once every device was connected and registered (idle:
    /// no telemetry yet, each device's retained meta and status stored).
    pub(crate) rss_connected_bytes: Option<u64>,
    /// (connected − before) ÷ devices.
    pub(crate) rss_per_connection_bytes: Option<f64>,
    /// Broker RSS at the end of the window.
    pub(crate) rss_end_bytes: Option<u64>,
    /// Length of the window, s.
    pub(crate) window_secs: f64,
    /// Telemetry handed to the clients in the window.
    pub(crate) published: u64,
    /// Per second.
    pub(crate) published_per_sec: f64,
    /// Telemetry a full client queue refused (since the start).
    pub(crate) dropped: u64,
    /// PUBLISH packets the broker received in the window, by its own
    /// figures.
    pub(crate) broker_in: u64,
    /// Per second, over the span of the broker's figures.
    pub(crate) broker_in_per_sec: Option<f64>,
    /// PUBLISH packets the broker sent (to the gateway) per second.
    pub(crate) broker_out_per_sec: Option<f64>,
    /// Bytes received per PUBLISH received (MQTT framing included).
    pub(crate) bytes_per_message: Option<f64>,
    /// Messages the gateway's MQTT driver received in the window.
    pub(crate) driver_messages: u64,
    /// Per second: the end-to-end message rate (device → broker →
    /// driver).
    pub(crate) driver_messages_per_sec: f64,
    /// Points the gateway batched in the window.
    pub(crate) gateway_points: u64,
    /// Per second.
    pub(crate) gateway_points_per_sec: f64,
    /// Points the registry accepted in the window.
    pub(crate) registry_points: u64,
    /// Per second.
    pub(crate) registry_points_per_sec: f64,
    /// Driver messages ÷ published (≈ 1: nothing lost on the way).
    pub(crate) delivered_share: Option<f64>,
    /// CPU seconds in the window.
    pub(crate) cpu: CpuOut,
    /// Broker CPU seconds per 1 000 messages published.
    pub(crate) broker_cpu_per_1000: Option<f64>,
    /// Gateway CPU seconds per 1 000 messages published.
    pub(crate) gateway_cpu_per_1000: Option<f64>,
    /// Publish to counted.
    pub(crate) latency: LatencyOut,
    /// Fewest client sessions up in any sample.
    pub(crate) clients_connected_min: i64,
    /// Fewest devices online at the gateway in any sample.
    pub(crate) devices_online_min: i64,
    /// Largest uplink lag seen, s.
    pub(crate) uplink_lag_seconds_max: f64,
    /// Messages the driver could not understand (since the start).
    pub(crate) malformed: u64,
    /// Messages the driver ignored (since the start).
    pub(crate) ignored: u64,
    /// Driver errors (lost broker sessions) since the start.
    pub(crate) driver_errors: u64,
    /// Batches dropped from the gateway's full spool.
    pub(crate) batches_dropped: u64,
    /// Points or batches the registry refused (since the start).
    pub(crate) registry_rejected: u64,
    /// The registry's counts after the window.
    pub(crate) counts: Counts,
    /// One sample a second.
    pub(crate) timeline: Vec<Sample>,
    /// What the processes logged and how they stopped.
    pub(crate) processes: ProcessesOut,
}

/// CPU seconds in a window.
#[derive(Debug, Default, Serialize)]
pub(crate) struct CpuOut {
    /// The broker.
    pub(crate) broker: Option<f64>,
    /// The gateway.
    pub(crate) gateway: Option<f64>,
    /// The registry.
    pub(crate) registry: Option<f64>,
    /// The bench process: the device clients (and the bench's reading).
    pub(crate) clients: Option<f64>,
    /// Every process of the machine.
    pub(crate) machine_busy: Option<f64>,
    /// Of those, processes the bench did not start.
    pub(crate) others: Option<f64>,
}

/// A child's log and stop.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ProcessOut {
    /// What it logged.
    pub(crate) log: LogSummary,
    /// How it stopped.
    pub(crate) stopped: Option<Stopped>,
}

/// The part's child processes.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ProcessesOut {
    /// The broker.
    pub(crate) broker: ProcessOut,
    /// The gateway.
    pub(crate) gateway: ProcessOut,
    /// The registry.
    pub(crate) registry: ProcessOut,
}

/// fieldlink ÷ mosquitto.
#[derive(Debug, Serialize)]
pub(crate) struct Ratios {
    /// Connections per second while connecting.
    pub(crate) connect_per_sec: Option<f64>,
    /// RSS per connection (below 1: fieldlink uses less).
    pub(crate) rss_per_connection: Option<f64>,
    /// End-to-end messages per second.
    pub(crate) driver_messages_per_sec: Option<f64>,
    /// Broker CPU per 1 000 messages (below 1: fieldlink uses less).
    pub(crate) broker_cpu_per_1000: Option<f64>,
    /// Gateway CPU per 1 000 messages.
    pub(crate) gateway_cpu_per_1000: Option<f64>,
    /// Latency p50 (upper bound).
    pub(crate) latency_p50: Option<f64>,
    /// Latency p99 (upper bound).
    pub(crate) latency_p99: Option<f64>,
}

fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

impl Ratios {
    /// The ratios of `ours` to `peer`.
    pub(crate) fn of(ours: &PartOut, peer: &PartOut) -> Ratios {
        Ratios {
            connect_per_sec: div(Some(ours.connect_per_sec), Some(peer.connect_per_sec)),
            rss_per_connection: div(ours.rss_per_connection_bytes, peer.rss_per_connection_bytes),
            driver_messages_per_sec: div(
                Some(ours.driver_messages_per_sec),
                Some(peer.driver_messages_per_sec),
            ),
            broker_cpu_per_1000: div(ours.broker_cpu_per_1000, peer.broker_cpu_per_1000),
            gateway_cpu_per_1000: div(ours.gateway_cpu_per_1000, peer.gateway_cpu_per_1000),
            latency_p50: div(ours.latency.upper.p50_ms, peer.latency.upper.p50_ms),
            latency_p99: div(ours.latency.upper.p99_ms, peer.latency.upper.p99_ms),
        }
    }
}

/// The machine.
#[derive(Debug, Serialize)]
pub(crate) struct MachineOut {
    /// Cores.
    pub(crate) cores: usize,
    /// Share of the machine busy in the second before the bench started
    /// anything (other work on the box skews every figure).
    pub(crate) busy_before: Option<f64>,
    /// The open-files limit per process (`ulimit -n`).
    pub(crate) open_files_limit: Option<u64>,
}

pub(crate) use crate::common::per_sec;

/// CPU seconds per 1 000 of `n`, `None` without CPU figures or messages.
pub(crate) fn per_1000(cpu: Option<f64>, n: u64) -> Option<f64> {
    cpu.filter(|_| n > 0).map(|c| c / n as f64 * 1000.0)
}

impl Results {
    /// Writes `<out>/mqtt-<devices>d-<rate>-<unix>.json`.
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub(crate) fn write_json(&self, out: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let path = out.join(format!(
            "mqtt-{}d-{}-{}.json",
            self.args.devices, self.args.rate, self.started_unix
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
        let f = &self.fieldlink;
        let p = self.peer.as_ref();
        let r = self.ratios.as_ref();
        let _ = writeln!(
            s,
            "\nmqtt bench: {} devices × {} msg/s each ({:.0} msg/s offered), {:.1} s window, {} warm-up",
            self.args.devices,
            self.args.rate,
            self.load.offered_per_sec,
            f.window_secs,
            format_secs(self.load.warmup_secs)
        );
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        let ratio = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "\n{:<38} {:>15} {:>15} {:>7}",
            "", "fieldlink", "mosquitto", "ratio"
        );
        let mut row = |name: &str, ours: String, peer: String, ratio: String| {
            let _ = writeln!(s, "{name:<38} {ours:>15} {peer:>15} {ratio:>7}");
        };
        let both =
            |pick: &dyn Fn(&PartOut) -> String| (pick(f), p.map_or_else(|| "-".to_owned(), pick));
        let (a, b) = both(&|x| format!("{:.0}", x.connect_per_sec));
        row(
            "connect rate (connections/s)",
            a,
            b,
            ratio(r.and_then(|r| r.connect_per_sec)),
        );
        let (a, b) = both(&|x| format!("{:.1}", x.connect_secs));
        row("  all connected after (s)", a, b, String::new());
        let (a, b) = both(&|x| opt(x.rss_per_connection_bytes.map(|v| v / 1e3), 2));
        row(
            "broker RSS per connection (KB)",
            a,
            b,
            ratio(r.and_then(|r| r.rss_per_connection)),
        );
        let (a, b) = both(&|x| format!("{}→{}", mb(x.rss_before_bytes), mb(x.rss_connected_bytes)));
        row("  RSS before → connected (MB)", a, b, String::new());
        let (a, b) = both(&|x| format!("{:.0}", x.driver_messages_per_sec));
        row(
            "messages/s end to end (driver)",
            a,
            b,
            ratio(r.and_then(|r| r.driver_messages_per_sec)),
        );
        let (a, b) = both(&|x| format!("{:.0}", x.published_per_sec));
        row("  published by the clients", a, b, String::new());
        let (a, b) = both(&|x| opt(x.broker_in_per_sec, 0));
        row("  received by the broker", a, b, String::new());
        let (a, b) = both(&|x| format!("{:.0}", x.registry_points_per_sec));
        row("  points/s accepted by the registry", a, b, String::new());
        let (a, b) = both(&|x| opt(x.broker_cpu_per_1000.map(|v| v * 1e3), 1));
        row(
            "broker CPU ms per 1 000 messages",
            a,
            b,
            ratio(r.and_then(|r| r.broker_cpu_per_1000)),
        );
        let (a, b) = both(&|x| opt(x.gateway_cpu_per_1000.map(|v| v * 1e3), 1));
        row(
            "gateway CPU ms per 1 000 messages",
            a,
            b,
            ratio(r.and_then(|r| r.gateway_cpu_per_1000)),
        );
        let (a, b) = both(&|x| bounds(x.latency.lower.p50_ms, x.latency.upper.p50_ms));
        row(
            "latency p50, publish→counted (ms)",
            a,
            b,
            ratio(r.and_then(|r| r.latency_p50)),
        );
        let (a, b) = both(&|x| bounds(x.latency.lower.p99_ms, x.latency.upper.p99_ms));
        row(
            "latency p99 (ms)",
            a,
            b,
            ratio(r.and_then(|r| r.latency_p99)),
        );
        let (a, b) = both(&|x| format!("{}/{}", x.counts.reporting, self.args.devices));
        row("devices reporting at the registry", a, b, String::new());
        let _ = writeln!(
            s,
            "  (CPU per 1 000 messages published by the clients in the window; latency between the probe's lower and upper bound, ratios of the upper)"
        );
        for part in std::iter::once(f).chain(p) {
            let _ = writeln!(
                s,
                "\n{}: {}\n  broker CPU {} s ({} cores), gateway {} s, registry {} s, clients {} s in the window; {} bytes per message; delivered {} %",
                part.broker.name(),
                part.version,
                opt(part.cpu.broker, 2),
                opt(part.cpu.broker.map(|c| c / part.window_secs.max(1e-9)), 2),
                opt(part.cpu.gateway, 2),
                opt(part.cpu.registry, 2),
                opt(part.cpu.clients, 2),
                opt(part.bytes_per_message, 0),
                opt(part.delivered_share.map(|v| v * 100.0), 1),
            );
            let _ = writeln!(
                s,
                "  RSS at the end {}; {} sessions for {} devices, fewest connected {}, fewest online {}; uplink lag ≤ {:.2} s; {} malformed, {} ignored, {} driver errors, {} dropped batches, {} rejected at the registry",
                mb(part.rss_end_bytes),
                part.sessions,
                self.args.devices,
                part.clients_connected_min,
                part.devices_online_min,
                part.uplink_lag_seconds_max,
                part.malformed,
                part.ignored,
                part.driver_errors,
                part.batches_dropped,
                part.registry_rejected
            );
            let l = &part.latency;
            let _ = writeln!(
                s,
                "  latency: {} samples of {} devices in {} reads ({} failed, {} ms each); max {} ms; logs: broker {}/{}, gateway {}/{}, registry {}/{} warnings/errors",
                l.samples,
                l.devices,
                l.reads,
                l.failed_reads,
                opt(l.read_ms_mean, 1),
                opt(l.upper.max_ms, 0),
                part.processes.broker.log.warnings,
                part.processes.broker.log.errors,
                part.processes.gateway.log.warnings,
                part.processes.gateway.log.errors,
                part.processes.registry.log.warnings,
                part.processes.registry.log.errors,
            );
        }
        if let (None, Some(why)) = (&self.peer, &self.peer_missing) {
            let _ = writeln!(s, "\npeer: MISSING — {why}");
        }
        let _ = writeln!(
            s,
            "machine: {} cores, busy {} % before the bench",
            self.machine.cores,
            opt(self.machine.busy_before.map(|b| b * 100.0), 0)
        );
        s
    }
}

fn format_secs(secs: f64) -> String {
    format!("{secs:.0} s")
}

/// `lo–hi`, for a latency between two bounds.
fn bounds(lo: Option<f64>, hi: Option<f64>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{lo:.0}–{hi:.0}"),
        (None, Some(hi)) => format!("≤{hi:.0}"),
        _ => "-".to_owned(),
    }
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_owned(), |b| format!("{:.1}", b as f64 / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_guard_against_empty_windows() {
        assert_eq!(per_sec(10, 0.0), 0.0);
        assert_eq!(per_sec(10, 2.0), 5.0);
        assert_eq!(per_1000(None, 10), None);
        assert_eq!(per_1000(Some(1.0), 0), None);
        assert_eq!(per_1000(Some(0.5), 2000), Some(0.25));
        assert_eq!(div(Some(1.0), Some(0.0)), None);
        assert_eq!(div(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(bounds(Some(1.2), Some(50.7)), "1–51");
        assert_eq!(bounds(None, None), "-");
    }
}
