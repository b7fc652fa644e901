//! Prometheus metrics of the gateway.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the poll latency histogram, seconds.
const POLL_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0];

/// Gateway counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Read requests sent to devices.
    pub requests: AtomicU64,
    /// Requests answered with a Modbus exception.
    pub exceptions: AtomicU64,
    /// Polls that failed (timeout, broken connection).
    pub errors: AtomicU64,
    /// Failed connection attempts.
    pub connect_failures: AtomicU64,
    /// Devices with a live session.
    pub devices_online: AtomicI64,
    /// Points put into batches.
    pub points: AtomicU64,
    /// Batches appended to the spool.
    pub batches_spooled: AtomicU64,
    /// Batches acknowledged by the registry.
    pub batches_acked: AtomicU64,
    /// Batches dropped because the spool was full.
    pub batches_dropped: AtomicU64,
    /// Batches in the spool now.
    pub spool_batches: AtomicU64,
    /// Bytes in the spool now.
    pub spool_bytes: AtomicU64,
    /// Age of the oldest unacknowledged batch, milliseconds (uplink lag).
    pub uplink_lag_ms: AtomicU64,
    /// 1 while the uplink stream is up.
    pub uplink_connected: AtomicU64,
    poll_buckets: [AtomicU64; POLL_BUCKETS.len()],
    poll_count: AtomicU64,
    poll_sum_micros: AtomicU64,
}

impl Metrics {
    /// A device session came up (`true`) or went down.
    pub fn device_online(&self, up: bool) {
        self.devices_online
            .fetch_add(if up { 1 } else { -1 }, Relaxed);
    }

    /// Counts requests and exceptions of a poll.
    pub fn count_requests(&self, requests: u32, exceptions: u32) {
        self.requests.fetch_add(u64::from(requests), Relaxed);
        self.exceptions.fetch_add(u64::from(exceptions), Relaxed);
    }

    /// Counts failed polls.
    pub fn count_errors(&self, n: u64) {
        self.errors.fetch_add(n, Relaxed);
    }

    /// Records a poll's latency.
    pub fn observe_poll(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.poll_count.fetch_add(1, Relaxed);
        self.poll_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
        for (bucket, bound) in self.poll_buckets.iter().zip(POLL_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
    }

    /// Renders Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let c = |a: &AtomicU64| a.load(Relaxed).to_string();
        line(
            "fieldlink_gateway_driver_requests_total",
            "counter",
            "Read requests sent to devices.",
            c(&self.requests),
        );
        line(
            "fieldlink_gateway_driver_exceptions_total",
            "counter",
            "Requests answered with a protocol exception (tags marked bad).",
            c(&self.exceptions),
        );
        line(
            "fieldlink_gateway_driver_errors_total",
            "counter",
            "Polls that failed (timeout, broken connection).",
            c(&self.errors),
        );
        line(
            "fieldlink_gateway_driver_connect_failures_total",
            "counter",
            "Failed connection attempts.",
            c(&self.connect_failures),
        );
        line(
            "fieldlink_gateway_devices_online",
            "gauge",
            "Devices with a live session.",
            self.devices_online.load(Relaxed).to_string(),
        );
        line(
            "fieldlink_gateway_points_total",
            "counter",
            "Points put into batches.",
            c(&self.points),
        );
        line(
            "fieldlink_gateway_batches_spooled_total",
            "counter",
            "Batches appended to the disk spool.",
            c(&self.batches_spooled),
        );
        line(
            "fieldlink_gateway_batches_acked_total",
            "counter",
            "Batches acknowledged by the registry.",
            c(&self.batches_acked),
        );
        line(
            "fieldlink_gateway_spool_dropped_batches_total",
            "counter",
            "Batches dropped because the spool was full (oldest first).",
            c(&self.batches_dropped),
        );
        line(
            "fieldlink_gateway_spool_batches",
            "gauge",
            "Batches in the spool.",
            c(&self.spool_batches),
        );
        line(
            "fieldlink_gateway_spool_bytes",
            "gauge",
            "Bytes in the spool.",
            c(&self.spool_bytes),
        );
        line(
            "fieldlink_gateway_uplink_lag_seconds",
            "gauge",
            "Age of the oldest unacknowledged batch.",
            format!("{}", self.uplink_lag_ms.load(Relaxed) as f64 / 1000.0),
        );
        line(
            "fieldlink_gateway_uplink_connected",
            "gauge",
            "1 while the stream to the registry is up.",
            c(&self.uplink_connected),
        );
        let _ = writeln!(
            out,
            "# HELP fieldlink_gateway_poll_seconds Latency of one poll-group read.\n# TYPE fieldlink_gateway_poll_seconds histogram"
        );
        for (bucket, bound) in self.poll_buckets.iter().zip(POLL_BUCKETS) {
            let _ = writeln!(
                out,
                "fieldlink_gateway_poll_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Relaxed)
            );
        }
        let count = self.poll_count.load(Relaxed);
        let _ = writeln!(
            out,
            "fieldlink_gateway_poll_seconds_bucket{{le=\"+Inf\"}} {count}\nfieldlink_gateway_poll_seconds_sum {}\nfieldlink_gateway_poll_seconds_count {count}",
            self.poll_sum_micros.load(Relaxed) as f64 / 1e6
        );
        out
    }
}
