//! Prometheus metrics of the registry: counters kept with atomics on the
//! ingest path, gauges computed from the live state when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use fieldlink_model::proto::RejectReason;

/// Upper bounds of the commit latency histogram, seconds.
const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// Reasons a point or record can be rejected, in metric label order.
pub const REASONS: [RejectReason; 10] = [
    RejectReason::UnknownDevice,
    RejectReason::TooOld,
    RejectReason::InFuture,
    RejectReason::InvalidClass,
    RejectReason::InvalidCategory,
    RejectReason::InvalidProtocol,
    RejectReason::InvalidDeviceId,
    RejectReason::OtherTenant,
    RejectReason::InvalidStatus,
    RejectReason::UnknownTag,
];

fn reason_label(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::Unspecified => "unspecified",
        RejectReason::UnknownDevice => "unknown_device",
        RejectReason::TooOld => "too_old",
        RejectReason::InFuture => "in_future",
        RejectReason::InvalidClass => "invalid_class",
        RejectReason::InvalidCategory => "invalid_category",
        RejectReason::InvalidProtocol => "invalid_protocol",
        RejectReason::InvalidDeviceId => "invalid_device_id",
        RejectReason::OtherTenant => "other_tenant",
        RejectReason::InvalidStatus => "invalid_status",
        RejectReason::UnknownTag => "unknown_tag",
    }
}

/// Ingest counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Streams opened and authenticated.
    pub streams_opened: AtomicU64,
    /// Streams refused for a missing or unknown token.
    pub streams_unauthenticated: AtomicU64,
    /// Streams that ended with an error (decode, size, protocol).
    pub stream_errors: AtomicU64,
    /// Streams open now.
    pub streams_active: AtomicU64,
    /// Batches applied.
    pub batches_applied: AtomicU64,
    /// Batches acknowledged again without applying (replays).
    pub batches_duplicate: AtomicU64,
    /// Points accepted.
    pub points_accepted: AtomicU64,
    /// Points of quality BAD (no value): acknowledged, not counted.
    pub points_bad_quality: AtomicU64,
    /// Rejected points or records, by reason (index in [`REASONS`]).
    pub rejected: [AtomicU64; REASONS.len()],
    /// Storage commits.
    pub commits: AtomicU64,
    /// Storage commits that failed.
    pub commit_failures: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_seconds_sum_micros: AtomicU64,
}

impl Metrics {
    /// Counts `n` rejections for `reason`.
    pub fn reject(&self, reason: RejectReason, n: u64) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(n, Relaxed);
        }
    }

    /// Records one commit's latency.
    pub fn observe_commit(&self, seconds: f64) {
        self.commits.fetch_add(1, Relaxed);
        for (bucket, bound) in self.commit_buckets.iter().zip(COMMIT_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.commit_seconds_sum_micros
            .fetch_add((seconds * 1e6) as u64, Relaxed);
    }

    /// Renders the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Relaxed));
        };
        counter(
            out,
            "fieldlink_registry_streams_opened_total",
            "Gateway streams opened and authenticated.",
            &self.streams_opened,
        );
        counter(
            out,
            "fieldlink_registry_streams_unauthenticated_total",
            "Gateway streams refused for a missing or unknown token.",
            &self.streams_unauthenticated,
        );
        counter(
            out,
            "fieldlink_registry_stream_errors_total",
            "Gateway streams ended by an error (malformed or oversized message, protocol).",
            &self.stream_errors,
        );
        let _ = writeln!(
            out,
            "# HELP fieldlink_registry_streams_active Gateway streams open now.\n# TYPE fieldlink_registry_streams_active gauge\nfieldlink_registry_streams_active {}",
            self.streams_active.load(Relaxed)
        );
        counter(
            out,
            "fieldlink_registry_batches_applied_total",
            "Batches made durable and counted.",
            &self.batches_applied,
        );
        counter(
            out,
            "fieldlink_registry_batches_duplicate_total",
            "Replayed batches acknowledged again without counting.",
            &self.batches_duplicate,
        );
        counter(
            out,
            "fieldlink_registry_points_accepted_total",
            "Telemetry points accepted.",
            &self.points_accepted,
        );
        counter(
            out,
            "fieldlink_registry_points_bad_quality_total",
            "Points of quality BAD (failed reads): acknowledged, not counted as real-time data.",
            &self.points_bad_quality,
        );
        let _ = writeln!(
            out,
            "# HELP fieldlink_registry_rejected_total Points or records rejected, by reason.\n# TYPE fieldlink_registry_rejected_total counter"
        );
        for (reason, value) in REASONS.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "fieldlink_registry_rejected_total{{reason=\"{}\"}} {}",
                reason_label(*reason),
                value.load(Relaxed)
            );
        }
        counter(
            out,
            "fieldlink_registry_commit_failures_total",
            "Storage commits that failed (their batches were not acknowledged).",
            &self.commit_failures,
        );
        let _ = writeln!(
            out,
            "# HELP fieldlink_registry_commit_seconds Latency of storage group commits.\n# TYPE fieldlink_registry_commit_seconds histogram"
        );
        for (bucket, bound) in self.commit_buckets.iter().zip(COMMIT_BUCKETS) {
            let _ = writeln!(
                out,
                "fieldlink_registry_commit_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let commits = self.commits.load(Relaxed);
        let _ = writeln!(
            out,
            "fieldlink_registry_commit_seconds_bucket{{le=\"+Inf\"}} {commits}\nfieldlink_registry_commit_seconds_sum {}\nfieldlink_registry_commit_seconds_count {commits}",
            self.commit_seconds_sum_micros.load(Relaxed) as f64 / 1e6
        );
    }
}
