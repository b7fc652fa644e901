//! Prometheus metrics of the gateway: the core's counters and gauges, and
//! one [`DriverMetrics`] per protocol (labelled `protocol="..."`).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fieldlink_model::Protocol;

/// Upper bounds of the poll latency histogram, seconds.
const POLL_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0];

/// Counters of one protocol's driver.
#[derive(Debug, Default)]
pub struct DriverMetrics {
    /// Requests sent to devices (reads, subscriptions, ...).
    pub requests: AtomicU64,
    /// Requests answered with a protocol exception or bad status.
    pub exceptions: AtomicU64,
    /// Polls or sessions that failed (timeout, broken connection).
    pub errors: AtomicU64,
    /// Failed connection attempts.
    pub connect_failures: AtomicU64,
    /// Input that could not be understood (bad payloads, bad frames); each
    /// one is also logged with where it came from.
    pub malformed: AtomicU64,
    /// Input ignored on purpose (unknown devices not auto-registered, ...).
    pub ignored: AtomicU64,
    /// Devices discovered at run time.
    pub discovered: AtomicU64,
    /// Messages received from devices by drivers they push to (MQTT
    /// publishes handed to the MQTT JSON driver), whatever became of them.
    pub messages: AtomicU64,
    /// Polls per bucket: `poll_buckets[i]` counts the polls above bound
    /// `i - 1` and at most bound `i` (one increment per poll; the render
    /// sums them into Prometheus' cumulative buckets).
    poll_buckets: [AtomicU64; POLL_BUCKETS.len()],
    poll_count: AtomicU64,
    poll_sum_micros: AtomicU64,
}

impl DriverMetrics {
    /// Counts requests and exceptions of a read.
    pub fn count_requests(&self, requests: u32, exceptions: u32) {
        self.requests.fetch_add(u64::from(requests), Relaxed);
        self.exceptions.fetch_add(u64::from(exceptions), Relaxed);
    }

    /// Records a poll's latency.
    pub fn observe_poll(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.poll_count.fetch_add(1, Relaxed);
        self.poll_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
        let bucket = POLL_BUCKETS.partition_point(|bound| seconds > *bound);
        if let Some(bucket) = self.poll_buckets.get(bucket) {
            bucket.fetch_add(1, Relaxed);
        }
    }

    fn is_used(&self) -> bool {
        [
            &self.requests,
            &self.errors,
            &self.connect_failures,
            &self.malformed,
            &self.ignored,
            &self.discovered,
            &self.messages,
            &self.poll_count,
        ]
        .iter()
        .any(|a| a.load(Relaxed) > 0)
    }
}

/// Gateway counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Devices with a live session.
    pub devices_online: AtomicI64,
    /// Devices declared (configured and discovered).
    pub devices: AtomicU64,
    /// Points put into batches.
    pub points: AtomicU64,
    /// Readings dropped because their device or tag was never declared (a
    /// driver bug).
    pub undeclared_readings: AtomicU64,
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
    drivers: [DriverMetrics; Protocol::ALL.len()],
}

impl Metrics {
    /// The counters of `protocol`'s driver.
    pub fn driver(&self, protocol: Protocol) -> &DriverMetrics {
        &self.drivers[protocol.index()]
    }

    /// Sum of a driver counter over every protocol (for tests and summaries).
    pub fn driver_total(&self, counter: impl Fn(&DriverMetrics) -> &AtomicU64) -> u64 {
        self.drivers.iter().map(|d| counter(d).load(Relaxed)).sum()
    }

    /// Renders Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let c = |a: &AtomicU64| a.load(Relaxed).to_string();
        let mut one = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "fieldlink_gateway_devices",
            "gauge",
            "Devices declared by drivers (configured and discovered).",
            c(&self.devices),
        );
        one(
            "fieldlink_gateway_devices_online",
            "gauge",
            "Devices with a live session.",
            self.devices_online.load(Relaxed).to_string(),
        );
        one(
            "fieldlink_gateway_points_total",
            "counter",
            "Points put into batches.",
            c(&self.points),
        );
        one(
            "fieldlink_gateway_undeclared_readings_total",
            "counter",
            "Readings dropped because their device or tag was never declared.",
            c(&self.undeclared_readings),
        );
        one(
            "fieldlink_gateway_batches_spooled_total",
            "counter",
            "Batches appended to the disk spool.",
            c(&self.batches_spooled),
        );
        one(
            "fieldlink_gateway_batches_acked_total",
            "counter",
            "Batches acknowledged by the registry.",
            c(&self.batches_acked),
        );
        one(
            "fieldlink_gateway_spool_dropped_batches_total",
            "counter",
            "Batches dropped because the spool was full (oldest first).",
            c(&self.batches_dropped),
        );
        one(
            "fieldlink_gateway_spool_batches",
            "gauge",
            "Batches in the spool.",
            c(&self.spool_batches),
        );
        one(
            "fieldlink_gateway_spool_bytes",
            "gauge",
            "Bytes in the spool.",
            c(&self.spool_bytes),
        );
        one(
            "fieldlink_gateway_uplink_lag_seconds",
            "gauge",
            "Age of the oldest unacknowledged batch.",
            format!("{}", self.uplink_lag_ms.load(Relaxed) as f64 / 1000.0),
        );
        one(
            "fieldlink_gateway_uplink_connected",
            "gauge",
            "1 while the stream to the registry is up.",
            c(&self.uplink_connected),
        );
        self.render_drivers(&mut out);
        out
    }

    fn render_drivers(&self, out: &mut String) {
        let used: Vec<(Protocol, &DriverMetrics)> = Protocol::ALL
            .iter()
            .map(|p| (*p, self.driver(*p)))
            .filter(|(_, d)| d.is_used())
            .collect();
        type Counter = fn(&DriverMetrics) -> &AtomicU64;
        let counters: [(&str, &str, Counter); 8] = [
            (
                "requests",
                "Requests sent to devices (reads, subscriptions, ...).",
                |d| &d.requests,
            ),
            (
                "exceptions",
                "Requests answered with a protocol exception or bad status (tags marked bad).",
                |d| &d.exceptions,
            ),
            (
                "errors",
                "Polls or sessions that failed (timeout, broken connection).",
                |d| &d.errors,
            ),
            ("connect_failures", "Failed connection attempts.", |d| {
                &d.connect_failures
            }),
            (
                "malformed",
                "Input that could not be understood (bad payloads or frames).",
                |d| &d.malformed,
            ),
            (
                "ignored",
                "Input ignored on purpose (unknown devices not auto-registered, ...).",
                |d| &d.ignored,
            ),
            (
                "discovered_devices",
                "Devices discovered at run time.",
                |d| &d.discovered,
            ),
            (
                "messages",
                "Messages received from devices by push drivers (MQTT publishes), whatever became of them.",
                |d| &d.messages,
            ),
        ];
        for (name, help, counter) in counters {
            let metric = format!("fieldlink_gateway_driver_{name}_total");
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (protocol, d) in &used {
                let _ = writeln!(
                    out,
                    "{metric}{{protocol=\"{protocol}\"}} {}",
                    counter(d).load(Relaxed)
                );
            }
        }
        let name = "fieldlink_gateway_poll_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of one poll-group read.\n# TYPE {name} histogram"
        );
        for (protocol, d) in used.iter().filter(|(_, d)| d.poll_count.load(Relaxed) > 0) {
            let mut cumulative = 0u64;
            for (bucket, bound) in d.poll_buckets.iter().zip(POLL_BUCKETS) {
                cumulative += bucket.load(Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{protocol=\"{protocol}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = d.poll_count.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{protocol=\"{protocol}\",le=\"+Inf\"}} {count}\n{name}_sum{{protocol=\"{protocol}\"}} {}\n{name}_count{{protocol=\"{protocol}\"}} {count}",
                d.poll_sum_micros.load(Relaxed) as f64 / 1e6
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_counters_are_labelled_by_protocol() {
        let m = Metrics::default();
        m.driver(Protocol::OpcUa).malformed.fetch_add(3, Relaxed);
        m.driver(Protocol::MqttJson).messages.fetch_add(7, Relaxed);
        m.driver(Protocol::ModbusTcp)
            .observe_poll(Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("fieldlink_gateway_driver_malformed_total{protocol=\"opc-ua\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("fieldlink_gateway_driver_messages_total{protocol=\"mqtt-json\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("fieldlink_gateway_poll_seconds_count{protocol=\"modbus-tcp\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("protocol=\"sparkplug-b\""),
            "unused drivers stay quiet"
        );
    }

    #[test]
    fn poll_buckets_render_cumulative() {
        let m = Metrics::default();
        let d = m.driver(Protocol::ModbusTcp);
        for ms in [0, 1, 3, 3, 40, 5000] {
            d.observe_poll(Duration::from_millis(ms));
        }
        let text = m.render();
        let bucket = |le: &str| {
            let key = format!(
                "fieldlink_gateway_poll_seconds_bucket{{protocol=\"modbus-tcp\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(bucket("0.0005"), Some(1));
        assert_eq!(bucket("0.001"), Some(2), "1 ms is at most 0.001 s");
        assert_eq!(bucket("0.005"), Some(4));
        assert_eq!(bucket("0.05"), Some(5));
        assert_eq!(bucket("2"), Some(5));
        assert_eq!(bucket("+Inf"), Some(6));
    }
}
