//! The gateway's measuring window: a reading of its metrics and of the
//! processes' CPU at the start, one a second (the timeline), one at the end;
//! figures are the differences.

use std::time::{Duration, Instant};

use super::gateway::GatewayProcess;
use super::report::{Sample, per_sec};
use super::scrape::Snapshot;
use crate::process::{cpu_seconds, cpu_seconds_of, machine_busy_seconds, rss_bytes};
use crate::prometheus::Endpoint;

/// The registry's count of telemetry points it accepted.
const REGISTRY_POINTS: &str = "fieldlink_registry_points_accepted_total";

/// Time between samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Progress is printed every this many samples.
const PRINT_EVERY: usize = 5;

/// Processes whose CPU the window records.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    /// The gateway.
    pub(crate) gateway: u32,
    /// The registry.
    pub(crate) registry: u32,
    /// The processes serving the fleet.
    pub(crate) fleet: Vec<u32>,
    /// The registry's `/metrics`.
    pub(crate) registry_metrics: Endpoint,
}

/// One reading.
#[derive(Debug, Clone)]
pub(crate) struct Reading {
    /// When it was taken.
    pub(crate) at: Instant,
    /// The gateway's metrics.
    pub(crate) metrics: Snapshot,
    /// Gateway CPU seconds so far.
    pub(crate) gateway_cpu: Option<f64>,
    /// Registry CPU seconds so far.
    pub(crate) registry_cpu: Option<f64>,
    /// Fleet CPU seconds so far.
    pub(crate) fleet_cpu: Option<f64>,
    /// Machine busy seconds so far.
    pub(crate) busy: Option<f64>,
    /// Points the registry accepted so far (`None`: its metrics did not
    /// answer).
    pub(crate) registry_points: Option<u64>,
}

impl Reading {
    async fn take(gateway: &GatewayProcess, watched: &Watched) -> anyhow::Result<Reading> {
        let metrics = gateway.scrape().await?;
        let registry_points = watched
            .registry_metrics
            .scrape()
            .await
            .ok()
            .map(|s| s.count(REGISTRY_POINTS));
        Ok(Reading {
            at: Instant::now(),
            metrics,
            gateway_cpu: cpu_seconds(watched.gateway),
            registry_cpu: cpu_seconds(watched.registry),
            fleet_cpu: cpu_seconds_of(&watched.fleet),
            busy: machine_busy_seconds(),
            registry_points,
        })
    }

    /// `later − self` of one CPU figure.
    pub(crate) fn cpu_diff(
        &self,
        later: &Reading,
        pick: impl Fn(&Reading) -> Option<f64>,
    ) -> Option<f64> {
        Some(pick(later)? - pick(self)?)
    }
}

/// What the window saw.
#[derive(Debug)]
pub(crate) struct Window {
    /// At the start.
    pub(crate) first: Reading,
    /// At the end.
    pub(crate) last: Reading,
    /// One sample a second.
    pub(crate) timeline: Vec<Sample>,
    /// Fewest sessions up in any sample.
    pub(crate) devices_online_min: i64,
    /// Largest uplink lag in any sample.
    pub(crate) uplink_lag_max: f64,
    /// Most batches waiting in the spool in any sample.
    pub(crate) spool_batches_max: u64,
}

impl Window {
    /// Seconds between the first and the last reading.
    pub(crate) fn seconds(&self) -> f64 {
        self.last.at.duration_since(self.first.at).as_secs_f64()
    }
}

/// Measures for `duration`, printing progress.
///
/// # Errors
/// When the gateway's metrics stop answering.
pub(crate) async fn measure(
    gateway: &GatewayProcess,
    watched: &Watched,
    duration: Duration,
) -> anyhow::Result<Window> {
    let first = Reading::take(gateway, watched).await?;
    let end = first.at + duration;
    let mut previous = first.clone();
    let mut timeline = Vec::new();
    let mut devices_online_min = first.metrics.devices_online;
    let mut uplink_lag_max = first.metrics.uplink_lag_seconds;
    let mut spool_batches_max = first.metrics.spool_batches;
    // On a fixed grid from the start, so every sample spans a whole second
    // (the devices poll in step: a shorter span could miss a whole tick).
    let mut k = 1u32;
    loop {
        let next = (first.at + SAMPLE_EVERY * k).min(end);
        k += 1;
        tokio::time::sleep_until(next.into()).await;
        let reading = Reading::take(gateway, watched).await?;
        let seconds = reading.at.duration_since(previous.at).as_secs_f64();
        let m = &reading.metrics;
        let sample = Sample {
            at_secs: reading.at.duration_since(first.at).as_secs_f64(),
            transactions_per_sec: per_sec(
                m.requests.saturating_sub(previous.metrics.requests),
                seconds,
            ),
            points_per_sec: per_sec(m.points.saturating_sub(previous.metrics.points), seconds),
            cpu_utilization: previous
                .cpu_diff(&reading, |r| r.gateway_cpu)
                .map(|c| if seconds > 0.0 { c / seconds } else { 0.0 }),
            devices_online: m.devices_online,
            rss_mb: rss_bytes(watched.gateway).map(|b| b as f64 / 1e6),
            uplink_lag_seconds: m.uplink_lag_seconds,
            spool_batches: m.spool_batches,
            delivered_points_per_sec: reading
                .registry_points
                .zip(previous.registry_points)
                .map(|(now, before)| per_sec(now.saturating_sub(before), seconds)),
        };
        devices_online_min = devices_online_min.min(m.devices_online);
        uplink_lag_max = uplink_lag_max.max(m.uplink_lag_seconds);
        spool_batches_max = spool_batches_max.max(m.spool_batches);
        if (timeline.len() + 1) % PRINT_EVERY == 0 {
            println!(
                "  {:>5.1} s: {:>9.0} transactions/s, {:>10.0} points/s, gateway CPU {}, {} online, uplink lag {:.2} s, spool {} batches",
                sample.at_secs,
                sample.transactions_per_sec,
                sample.points_per_sec,
                sample
                    .cpu_utilization
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
                sample.devices_online,
                sample.uplink_lag_seconds,
                sample.spool_batches
            );
        }
        timeline.push(sample);
        previous = reading;
        if previous.at >= end {
            break;
        }
    }
    Ok(Window {
        first,
        last: previous,
        timeline,
        devices_online_min,
        uplink_lag_max,
        spool_batches_max,
    })
}
