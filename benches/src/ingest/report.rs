//! The bench's figures: one serializable [`Results`], printed for people and
//! written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::postgres::PeerOut;
use super::reconcile::{Commits, Reconciliation};
use super::summary_probe::SummaryOut;
use crate::process::{LogSummary, Stopped, ThreadCpu};

/// Everything a run measured, with its arguments.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    /// Always `ingest`.
    pub(crate) bench: &'static str,
    /// When the run started, seconds since the Unix epoch.
    pub(crate) started_unix: u64,
    /// The flags, and what follows from them.
    pub(crate) args: ArgsOut,
    /// The registry driven.
    pub(crate) registry: RegistryOut,
    /// Phase 1.
    pub(crate) announce: AnnounceOut,
    /// Phase 2.
    pub(crate) telemetry: TelemetryOut,
    /// Registry resident memory.
    pub(crate) rss: RssOut,
    /// CPU used during the telemetry phase.
    pub(crate) cpu: CpuOut,
    /// The registry's group commits during the telemetry phase, from its
    /// `/metrics`.
    pub(crate) commits: Option<Commits>,
    /// The registry's counts against the bench's.
    pub(crate) reconciliation: Reconciliation,
    /// The registry stopped and started again on its data, when the bench
    /// started it.
    pub(crate) restart: Option<RestartOut>,
    /// The same (day, device) upsert load into the peer, with `--peer`.
    pub(crate) peer: Option<PeerOut>,
    /// Registry device-days/s over the peer's.
    pub(crate) device_days_ratio: Option<f64>,
}

/// The flags.
#[derive(Debug, Serialize)]
pub(crate) struct ArgsOut {
    /// `--devices`.
    pub(crate) devices: u64,
    /// `--streams`.
    pub(crate) streams: usize,
    /// `--batch`.
    pub(crate) batch: usize,
    /// `--points-per-device`.
    pub(crate) points_per_device: usize,
    /// Devices per telemetry batch (`batch / points_per_device`).
    pub(crate) devices_per_batch: u32,
    /// Points per full telemetry batch.
    pub(crate) points_per_batch: u64,
    /// `--duration`, seconds.
    pub(crate) duration_secs: f64,
    /// Outstanding batches per stream.
    pub(crate) window: usize,
    /// `--registry`.
    pub(crate) registry: Option<String>,
    /// `--http`.
    pub(crate) http: Option<String>,
    /// `--out`.
    pub(crate) out: PathBuf,
    /// `--peer`.
    pub(crate) peer: Option<&'static str>,
    /// `--peer-clients`.
    pub(crate) peer_clients: usize,
    /// `--peer-rows-per-statement`.
    pub(crate) peer_rows_per_statement: usize,
}

/// The registry driven.
#[derive(Debug, Serialize)]
pub(crate) struct RegistryOut {
    /// Started by the bench.
    pub(crate) spawned: bool,
    /// gRPC URL.
    pub(crate) grpc: String,
    /// HTTP URL.
    pub(crate) http: Option<String>,
    /// How it stopped, when spawned.
    pub(crate) stopped: Option<Stopped>,
    /// What it logged, when spawned.
    pub(crate) log: Option<LogSummary>,
}

/// Phase 1 figures.
#[derive(Debug, Serialize)]
pub(crate) struct AnnounceOut {
    /// Devices announced.
    pub(crate) devices: u64,
    /// Announce batches acknowledged.
    pub(crate) batches: u64,
    /// Wall time of the phase.
    pub(crate) seconds: f64,
    /// Devices announced per second.
    pub(crate) devices_per_sec: f64,
    /// Announces and statuses rejected.
    pub(crate) rejected: u64,
    /// Ack latency of announce batches.
    pub(crate) ack_latency_us: Latency,
}

/// Phase 2 figures.
#[derive(Debug, Serialize)]
pub(crate) struct TelemetryOut {
    /// From the start until the last ack.
    pub(crate) seconds: f64,
    /// Batches acknowledged.
    pub(crate) batches: u64,
    /// Acknowledged batches per second.
    pub(crate) batches_per_sec: f64,
    /// Points sent.
    pub(crate) points_sent: u64,
    /// Points accepted (sum of `accepted_points`).
    pub(crate) points_accepted: u64,
    /// Accepted points per second.
    pub(crate) points_per_sec: f64,
    /// (day, device) records the accepted points created or updated: one per
    /// device of each accepted batch.
    pub(crate) device_days: u64,
    /// Device-days per second.
    pub(crate) device_days_per_sec: f64,
    /// Points rejected (sum of `rejected_points`).
    pub(crate) points_rejected: u64,
    /// Bytes of telemetry messages sent (protobuf, before gRPC framing).
    pub(crate) bytes_sent: u64,
    /// Megabytes (10^6) of telemetry sent per second.
    pub(crate) mbytes_per_sec: f64,
    /// Acks marked duplicate (should be 0).
    pub(crate) duplicates: u64,
    /// Acks that were not for the oldest outstanding batch (should be 0).
    pub(crate) out_of_order_acks: u64,
    /// Rejected items by reason, both phases.
    pub(crate) rejections: BTreeMap<String, u64>,
    /// Some rejection details.
    pub(crate) rejection_samples: Vec<String>,
    /// Ack latency, send to ack.
    pub(crate) ack_latency_us: Latency,
    /// Distinct devices with at least one accepted point.
    pub(crate) devices_reporting: u64,
    /// Accepted points per second over each progress interval.
    pub(crate) timeline: Vec<Interval>,
    /// `GET /api/v1/summary` latency while the telemetry streamed.
    pub(crate) summary: Option<SummaryOut>,
}

/// Throughput over one progress interval.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Interval {
    /// Seconds since the telemetry started, at the interval's end.
    pub(crate) at_secs: f64,
    /// Accepted points per second.
    pub(crate) points_per_sec: f64,
    /// Device-days per second.
    pub(crate) device_days_per_sec: f64,
    /// Acked batches per second.
    pub(crate) batches_per_sec: f64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    /// Samples.
    pub(crate) count: u64,
    /// Mean.
    pub(crate) mean: f64,
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// Largest.
    pub(crate) max: u64,
}

impl Latency {
    /// The percentiles of `h`.
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        Latency {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Registry resident memory (`VmRSS`), when the bench started it.
#[derive(Debug, Serialize)]
pub(crate) struct RssOut {
    /// Right after start.
    pub(crate) baseline_bytes: Option<u64>,
    /// After every device was announced.
    pub(crate) after_announce_bytes: Option<u64>,
    /// After the telemetry phase.
    pub(crate) end_bytes: Option<u64>,
    /// (after announce − baseline) / devices.
    pub(crate) bytes_per_device_after_announce: Option<f64>,
    /// (end − baseline) / devices.
    pub(crate) bytes_per_device_end: Option<f64>,
}

impl RssOut {
    /// Figures from three readings over `devices`.
    pub(crate) fn new(
        baseline: Option<u64>,
        after_announce: Option<u64>,
        end: Option<u64>,
        devices: u64,
    ) -> Self {
        let per_device = |later: Option<u64>| {
            let (base, later) = (baseline?, later?);
            Some((later as f64 - base as f64) / devices.max(1) as f64)
        };
        RssOut {
            baseline_bytes: baseline,
            after_announce_bytes: after_announce,
            end_bytes: end,
            bytes_per_device_after_announce: per_device(after_announce),
            bytes_per_device_end: per_device(end),
        }
    }
}

/// A restart of the bench's registry on its persisted state.
#[derive(Debug, Serialize)]
pub(crate) struct RestartOut {
    /// Seconds from SIGTERM to its exit.
    pub(crate) stop_secs: f64,
    /// Seconds from the new process's start to its listening line (it
    /// listens once its store is loaded).
    pub(crate) listening_secs: f64,
    /// Seconds from the new process's start until `GET /api/v1/summary`
    /// first reports the counts of before the restart: the restart time.
    pub(crate) serving_correct_secs: Option<f64>,
    /// The counts after the restart against the bench's.
    pub(crate) reconciliation: Reconciliation,
    /// RSS of the restarted registry once it serves correct counts.
    pub(crate) rss_bytes: Option<u64>,
    /// That RSS over the devices: the memory a registered device costs
    /// without the announce phase's transient buffers.
    pub(crate) bytes_per_device: Option<f64>,
}

/// CPU seconds during the telemetry phase.
#[derive(Debug, Serialize)]
pub(crate) struct CpuOut {
    /// Used by the registry (spawned only).
    pub(crate) registry_seconds: Option<f64>,
    /// Used by the bench process.
    pub(crate) bench_seconds: Option<f64>,
    /// The registry's CPU by thread name, busiest first.
    pub(crate) registry_threads: Vec<ThreadCpu>,
    /// Cores available.
    pub(crate) cores: usize,
    /// Used by every process of the machine.
    pub(crate) machine_seconds: Option<f64>,
    /// Used by other processes than the registry and the bench (other work
    /// on the machine skews the figures).
    pub(crate) other_seconds: Option<f64>,
}

pub(crate) use crate::common::per_sec;

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / 1_048_576.0),
    )
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}{unit}"))
}

fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "n/a".to_owned(), |n| n.to_string())
}

impl Results {
    /// The human summary.
    pub(crate) fn summary(&self) -> String {
        let mut s = String::new();
        let a = &self.args;
        let t = &self.telemetry;
        let l = &t.ack_latency_us;
        let _ = writeln!(
            s,
            "bench ingest: {} devices, {} streams, {} points/batch ({} devices x {}), {:.0} s, window {}",
            a.devices,
            a.streams,
            a.points_per_batch,
            a.devices_per_batch,
            a.points_per_device,
            a.duration_secs,
            a.window
        );
        let _ = writeln!(
            s,
            "  registry          {} ({})",
            self.registry.grpc,
            if self.registry.spawned {
                "started by the bench"
            } else {
                "given"
            }
        );
        let an = &self.announce;
        let _ = writeln!(
            s,
            "  announce          {} devices in {:.2} s = {:.0} devices/s ({} batches, {} rejected)",
            an.devices, an.seconds, an.devices_per_sec, an.batches, an.rejected
        );
        let _ = writeln!(
            s,
            "  announce acks     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            an.ack_latency_us.p50 as f64 / 1000.0,
            an.ack_latency_us.p99 as f64 / 1000.0,
            an.ack_latency_us.max as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "  points/s          {:.0} accepted ({} points in {:.2} s; {} sent, {:.1} MB/s)",
            t.points_per_sec, t.points_accepted, t.seconds, t.points_sent, t.mbytes_per_sec
        );
        let _ = writeln!(
            s,
            "  device-days/s     {:.0} ({} (day, device) records created or updated)",
            t.device_days_per_sec, t.device_days
        );
        let _ = writeln!(
            s,
            "  batches/s         {:.0} acked ({} batches)",
            t.batches_per_sec, t.batches
        );
        let _ = writeln!(
            s,
            "  ack latency       p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (n={})",
            l.p50 as f64 / 1000.0,
            l.p90 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.p999 as f64 / 1000.0,
            l.max as f64 / 1000.0,
            l.count
        );
        let _ = writeln!(
            s,
            "  rejected          {} points; duplicates {}; out-of-order acks {}",
            t.points_rejected, t.duplicates, t.out_of_order_acks
        );
        for (reason, n) in &t.rejections {
            let _ = writeln!(s, "    {reason}: {n}");
        }
        for sample in &t.rejection_samples {
            let _ = writeln!(s, "    e.g. {sample}");
        }
        if let Some(probe) = &t.summary {
            let l = &probe.latency_us;
            let _ = writeln!(
                s,
                "  GET /summary      p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms during telemetry (n={}, {} errors)",
                l.p50 as f64 / 1000.0,
                l.p99 as f64 / 1000.0,
                l.max as f64 / 1000.0,
                probe.requests,
                probe.errors
            );
        }
        let r = &self.rss;
        let _ = writeln!(
            s,
            "  registry RSS      baseline {}, after announce {}, end {}",
            mib(r.baseline_bytes),
            mib(r.after_announce_bytes),
            mib(r.end_bytes)
        );
        let _ = writeln!(
            s,
            "  RSS per device    {} after announce, {} at end",
            opt(r.bytes_per_device_after_announce, " B"),
            opt(r.bytes_per_device_end, " B")
        );
        if let Some(r) = &self.restart {
            let _ = writeln!(
                s,
                "  restart           stopped in {:.2} s; listening after {:.2} s, correct counts after {} ({}); RSS {} = {} per device",
                r.stop_secs,
                r.listening_secs,
                opt(r.serving_correct_secs, " s"),
                r.reconciliation.verdict(),
                mib(r.rss_bytes),
                opt(r.bytes_per_device, " B"),
            );
        }
        let _ = writeln!(
            s,
            "  CPU (telemetry)   registry {}, bench {}, other processes {} over {:.2} s wall on {} cores",
            opt(self.cpu.registry_seconds, " s"),
            opt(self.cpu.bench_seconds, " s"),
            opt(self.cpu.other_seconds, " s"),
            t.seconds,
            self.cpu.cores
        );
        if !self.cpu.registry_threads.is_empty() {
            let threads: Vec<String> = self
                .cpu
                .registry_threads
                .iter()
                .filter(|t| t.seconds > 0.0)
                .map(|t| format!("{} x{} {:.1} s", t.name, t.threads, t.seconds))
                .collect();
            let _ = writeln!(s, "    registry threads: {}", threads.join(", "));
        }
        if let Some(c) = &self.commits {
            let _ = writeln!(
                s,
                "  store commits     {} rounds, {:.1} batches/round, mean {:.2} ms, {:.1} s in store commits ({:.0}% of the phase); {} stream errors",
                c.rounds,
                c.batches_per_round,
                c.mean_ms,
                c.seconds,
                100.0 * c.seconds / t.seconds.max(f64::MIN_POSITIVE),
                c.stream_errors
            );
        }
        let c = &self.reconciliation;
        let _ = writeln!(
            s,
            "  reconciliation    {}: registered {} (expected {}), reporting {} (expected {}), public/private {}/{} (expected {}/{}){}{}",
            c.verdict(),
            count(c.registered),
            c.expected_registered,
            count(c.reporting),
            c.expected_reporting,
            count(c.registered_public),
            count(c.registered_private),
            count(c.expected_public),
            count(c.expected_private),
            c.day
                .as_deref()
                .map(|d| format!(", day {d}"))
                .unwrap_or_default(),
            c.note
                .as_deref()
                .map(|n| format!(" — {n}"))
                .unwrap_or_default(),
        );
        if let Some(p) = &self.peer {
            let l = &p.statement_latency_us;
            let _ = writeln!(
                s,
                "  peer {} {}  {:.0} device-days/s ({} rows in {:.2} s; {} clients, {} rows/statement; statement p50 {:.2} ms, p99 {:.2} ms; {} distinct rows, expected {})",
                p.peer,
                p.server_version,
                p.device_days_per_sec,
                p.device_days,
                p.seconds,
                p.clients,
                p.rows_per_statement,
                l.p50 as f64 / 1000.0,
                l.p99 as f64 / 1000.0,
                p.distinct_rows,
                p.expected_distinct_rows
            );
            let _ = writeln!(
                s,
                "  ratio             registry / {} = {} device-days/s",
                p.peer,
                self.device_days_ratio
                    .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"))
            );
        }
        if let Some(stopped) = &self.registry.stopped {
            let _ = writeln!(
                s,
                "  registry stop     {} after {:.2} s{}",
                stopped.status,
                stopped.seconds,
                if stopped.clean { "" } else { " (NOT CLEAN)" }
            );
        }
        if let Some(log) = &self.registry.log {
            let _ = writeln!(
                s,
                "  registry log      {} warning(s), {} error(s)",
                log.warnings, log.errors
            );
            for line in &log.problems {
                let _ = writeln!(s, "    | {line}");
            }
        }
        s
    }

    /// Writes the JSON to `<out>/ingest-<devices>d-<streams>s-<unix_secs>.json`.
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub(crate) fn write_json(&self, out: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let path = out.join(format!(
            "ingest-{}d-{}s-{}.json",
            self.args.devices, self.args.streams, self.started_unix
        ));
        let json = serde_json::to_string_pretty(self).context("cannot serialize the results")?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}
