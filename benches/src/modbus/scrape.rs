//! The gateway's Prometheus metrics: one scrape as a [`Snapshot`], the
//! difference of two as a measuring window, and quantiles from the poll
//! latency histogram.

use serde::Serialize;

use crate::prometheus::Endpoint;

/// The gateway figures the bench reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// `fieldlink_gateway_driver_requests_total`.
    pub(crate) requests: u64,
    /// `fieldlink_gateway_driver_exceptions_total`.
    pub(crate) exceptions: u64,
    /// `fieldlink_gateway_driver_errors_total`.
    pub(crate) errors: u64,
    /// `fieldlink_gateway_driver_connect_failures_total`.
    pub(crate) connect_failures: u64,
    /// `fieldlink_gateway_devices_online`.
    pub(crate) devices_online: i64,
    /// `fieldlink_gateway_points_total`.
    pub(crate) points: u64,
    /// `fieldlink_gateway_batches_acked_total`.
    pub(crate) batches_acked: u64,
    /// `fieldlink_gateway_spool_dropped_batches_total`.
    pub(crate) batches_dropped: u64,
    /// `fieldlink_gateway_spool_batches`.
    pub(crate) spool_batches: u64,
    /// `fieldlink_gateway_uplink_lag_seconds`.
    pub(crate) uplink_lag_seconds: f64,
    /// `fieldlink_gateway_poll_seconds_bucket`: (upper bound, cumulative
    /// count), `+Inf` last.
    pub(crate) poll_buckets: Vec<(f64, u64)>,
    /// `fieldlink_gateway_poll_seconds_count`.
    pub(crate) poll_count: u64,
    /// `fieldlink_gateway_poll_seconds_sum`.
    pub(crate) poll_sum: f64,
}

impl Snapshot {
    /// Parses Prometheus text; unknown lines are ignored, missing figures
    /// stay 0.
    pub(crate) fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let number = value.trim().parse::<f64>().unwrap_or(0.0);
            let count = number.max(0.0) as u64;
            // Driver figures carry a `protocol` label: summed over protocols.
            let (name, labels) = match key.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (key, ""),
            };
            match name {
                "fieldlink_gateway_driver_requests_total" => s.requests += count,
                "fieldlink_gateway_driver_exceptions_total" => s.exceptions += count,
                "fieldlink_gateway_driver_errors_total" => s.errors += count,
                "fieldlink_gateway_driver_connect_failures_total" => s.connect_failures += count,
                "fieldlink_gateway_devices_online" => s.devices_online = number as i64,
                "fieldlink_gateway_points_total" => s.points = count,
                "fieldlink_gateway_batches_acked_total" => s.batches_acked = count,
                "fieldlink_gateway_spool_dropped_batches_total" => s.batches_dropped = count,
                "fieldlink_gateway_spool_batches" => s.spool_batches = count,
                "fieldlink_gateway_uplink_lag_seconds" => s.uplink_lag_seconds = number,
                "fieldlink_gateway_poll_seconds_count" => s.poll_count += count,
                "fieldlink_gateway_poll_seconds_sum" => s.poll_sum += number,
                "fieldlink_gateway_poll_seconds_bucket" => {
                    let bound = labels
                        .split(',')
                        .find_map(|l| l.strip_prefix("le=\""))
                        .map(|b| b.trim_end_matches('"'));
                    if let Some(bound) = bound {
                        let bound = if bound == "+Inf" {
                            f64::INFINITY
                        } else {
                            bound.parse().unwrap_or(f64::INFINITY)
                        };
                        match s.poll_buckets.iter_mut().find(|b| b.0 == bound) {
                            Some(b) => b.1 += count,
                            None => s.poll_buckets.push((bound, count)),
                        }
                    }
                }
                _ => {}
            }
        }
        s.poll_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        s
    }

    /// Poll latency between `self` (earlier) and `later`.
    pub(crate) fn poll_latency(&self, later: &Snapshot) -> PollLatency {
        let buckets: Vec<(f64, u64)> = later
            .poll_buckets
            .iter()
            .map(|&(bound, n)| {
                let before = self
                    .poll_buckets
                    .iter()
                    .find(|b| b.0 == bound)
                    .map_or(0, |b| b.1);
                (bound, n.saturating_sub(before))
            })
            .collect();
        let count = later.poll_count.saturating_sub(self.poll_count);
        let sum = (later.poll_sum - self.poll_sum).max(0.0);
        let q = |q: f64| quantile(&buckets, count, q);
        let (p50_ms, p50_le_ms) = q(0.50);
        let (p99_ms, p99_le_ms) = q(0.99);
        PollLatency {
            count,
            mean_ms: if count == 0 {
                None
            } else {
                Some(sum / count as f64 * 1e3)
            },
            p50_ms,
            p99_ms,
            p50_le_ms,
            p99_le_ms,
            buckets_ms: buckets
                .iter()
                .map(|&(bound, n)| (bucket_label(bound), n))
                .collect(),
        }
    }
}

fn bucket_label(bound: f64) -> String {
    if bound.is_finite() {
        format!("{}", bound * 1e3)
    } else {
        "+Inf".to_owned()
    }
}

/// The `q` quantile (ms, linearly interpolated in its bucket) and the upper
/// bound of its bucket (ms; `None` for `+Inf`) from cumulative buckets.
fn quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> (Option<f64>, Option<f64>) {
    if count == 0 {
        return (None, None);
    }
    let rank = (q * count as f64).ceil().max(1.0);
    let mut lower = (0.0, 0u64);
    for &(bound, cumulative) in buckets {
        if cumulative as f64 >= rank {
            if !bound.is_finite() {
                // Past the last finite bound: all we know is "above it".
                return (Some(lower.0 * 1e3), None);
            }
            let inside = (cumulative - lower.1).max(1) as f64;
            let share = (rank - lower.1 as f64) / inside;
            let value = lower.0 + (bound - lower.0) * share;
            return (Some(value * 1e3), Some(bound * 1e3));
        }
        lower = (bound, cumulative);
    }
    (None, None)
}

/// Poll-group read latency from the gateway's histogram
/// (`fieldlink_gateway_poll_seconds`) over a window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PollLatency {
    /// Poll-group reads in the window.
    pub(crate) count: u64,
    /// Exact mean (histogram sum / count), ms.
    pub(crate) mean_ms: Option<f64>,
    /// Median, interpolated within its bucket, ms.
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile, interpolated within its bucket, ms.
    pub(crate) p99_ms: Option<f64>,
    /// Upper bound of the median's bucket, ms.
    pub(crate) p50_le_ms: Option<f64>,
    /// Upper bound of the 99th percentile's bucket, ms (`None`: `+Inf`).
    pub(crate) p99_le_ms: Option<f64>,
    /// The window's cumulative buckets, by upper bound in ms.
    pub(crate) buckets_ms: Vec<(String, u64)>,
}

/// Scrapes the gateway's metrics.
#[derive(Debug, Clone)]
pub(crate) struct Scraper {
    endpoint: Endpoint,
}

impl Scraper {
    /// A scraper of `http://ADDR/metrics`.
    pub(crate) fn new(addr: std::net::SocketAddr) -> anyhow::Result<Scraper> {
        Ok(Scraper {
            endpoint: Endpoint::new(format!("http://{addr}/metrics"))?,
        })
    }

    /// One scrape.
    ///
    /// # Errors
    /// When the gateway does not answer 200 with text.
    pub(crate) async fn scrape(&self) -> anyhow::Result<Snapshot> {
        Ok(Snapshot::parse(&self.endpoint.text().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP fieldlink_gateway_driver_requests_total Read requests sent to devices.
# TYPE fieldlink_gateway_driver_requests_total counter
fieldlink_gateway_driver_requests_total 1200
fieldlink_gateway_driver_errors_total 2
fieldlink_gateway_devices_online 20
fieldlink_gateway_points_total 15000
fieldlink_gateway_uplink_lag_seconds 0.25
fieldlink_gateway_poll_seconds_bucket{le=\"0.001\"} 100
fieldlink_gateway_poll_seconds_bucket{le=\"0.002\"} 180
fieldlink_gateway_poll_seconds_bucket{le=\"0.005\"} 199
fieldlink_gateway_poll_seconds_bucket{le=\"+Inf\"} 200
fieldlink_gateway_poll_seconds_sum 0.3
fieldlink_gateway_poll_seconds_count 200
";

    #[test]
    fn a_scrape_parses() {
        let s = Snapshot::parse(TEXT);
        assert_eq!(s.requests, 1200);
        assert_eq!(s.errors, 2);
        assert_eq!(s.devices_online, 20);
        assert_eq!(s.points, 15000);
        assert!((s.uplink_lag_seconds - 0.25).abs() < 1e-9);
        assert_eq!(s.poll_buckets.len(), 4);
        assert!(s.poll_buckets[3].0.is_infinite());
        assert_eq!(s.poll_count, 200);
    }

    #[test]
    fn quantiles_come_from_the_window_only() {
        let later = Snapshot::parse(TEXT);
        let latency = Snapshot::default().poll_latency(&later);
        assert_eq!(latency.count, 200);
        assert!((latency.mean_ms.unwrap() - 1.5).abs() < 1e-9);
        // Rank 100 of 200: the end of the first bucket.
        assert!((latency.p50_ms.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(latency.p50_le_ms, Some(1.0));
        // Rank 198: bucket 0.002..0.005, 18 of 19 in.
        assert_eq!(latency.p99_le_ms, Some(5.0));
        let p99 = latency.p99_ms.unwrap();
        assert!(p99 > 4.0 && p99 <= 5.0, "{p99}");

        let latency = later.poll_latency(&later);
        assert_eq!(latency.count, 0);
        assert_eq!(latency.p50_ms, None);
    }

    #[test]
    fn a_quantile_past_the_last_bound_is_open() {
        let buckets = [(0.5, 1), (2.0, 2), (f64::INFINITY, 10)];
        assert_eq!(quantile(&buckets, 10, 0.99), (Some(2000.0), None));
    }
}
