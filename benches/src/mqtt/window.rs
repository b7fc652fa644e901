//! The measuring window: a reading of every counter (clients, broker,
//! gateway, registry) and of the processes' CPU at the start, one a second
//! (the timeline) and one at the end; figures are the differences.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::broker::{BrokerProcess, BrokerReading};
use super::clients::{ClientCounts, Clients};
use super::gateway::{GatewayProcess, GatewayReading};
use crate::common::per_sec;
use crate::process::{cpu_seconds, machine_busy_seconds, own_cpu_seconds, rss_bytes};
use crate::prometheus::Endpoint;

/// Time between samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Progress is printed every this many samples.
const PRINT_EVERY: usize = 5;

/// What the window reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watched<'a> {
    /// The device clients (in this process).
    pub(crate) clients: &'a Clients,
    /// The broker under test.
    pub(crate) broker: &'a BrokerProcess,
    /// The gateway.
    pub(crate) gateway: &'a GatewayProcess,
    /// The registry's `/metrics`.
    pub(crate) registry: &'a Endpoint,
    /// The registry's pid.
    pub(crate) registry_pid: u32,
}

/// CPU seconds used so far, per process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    /// The broker.
    pub(crate) broker: Option<f64>,
    /// The gateway.
    pub(crate) gateway: Option<f64>,
    /// The registry.
    pub(crate) registry: Option<f64>,
    /// This process: the device clients (and the bench's own reading).
    pub(crate) clients: Option<f64>,
    /// Every process of the machine.
    pub(crate) busy: Option<f64>,
}

impl Cpu {
    fn take(w: &Watched<'_>) -> Cpu {
        Cpu {
            broker: cpu_seconds(w.broker.pid()),
            gateway: cpu_seconds(w.gateway.pid()),
            registry: cpu_seconds(w.registry_pid),
            clients: own_cpu_seconds(),
            busy: machine_busy_seconds(),
        }
    }
}

/// One reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    /// When it was taken.
    pub(crate) at: Instant,
    /// The clients' counters.
    pub(crate) clients: ClientCounts,
    /// The broker's figures.
    pub(crate) broker: BrokerReading,
    /// The gateway's figures.
    pub(crate) gateway: GatewayReading,
    /// `fieldlink_registry_points_accepted_total`.
    pub(crate) registry_points: u64,
    /// `fieldlink_registry_rejected_total` (points and batches refused).
    pub(crate) registry_rejected: u64,
    /// CPU so far.
    pub(crate) cpu: Cpu,
    /// The broker's RSS.
    pub(crate) broker_rss: Option<u64>,
}

impl Reading {
    /// Reads everything once.
    ///
    /// # Errors
    /// When a process's figures do not answer.
    pub(crate) async fn take(w: &Watched<'_>) -> anyhow::Result<Reading> {
        let clients = w.clients.counts();
        let (broker, gateway, registry) =
            tokio::join!(w.broker.reading(), w.gateway.reading(), w.registry.scrape());
        let registry = registry?;
        Ok(Reading {
            at: Instant::now(),
            clients,
            broker: broker?,
            gateway: gateway?,
            registry_points: registry.count("fieldlink_registry_points_accepted_total"),
            registry_rejected: registry.count("fieldlink_registry_rejected_total"),
            cpu: Cpu::take(w),
            broker_rss: rss_bytes(w.broker.pid()),
        })
    }

    /// `later − self` of one CPU figure.
    pub(crate) fn cpu_diff(
        &self,
        later: &Reading,
        pick: impl Fn(&Cpu) -> Option<f64>,
    ) -> Option<f64> {
        Some(pick(&later.cpu)? - pick(&self.cpu)?)
    }
}

/// One second of the window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Seconds into the window.
    pub(crate) at_secs: f64,
    /// Telemetry handed to the clients, per second.
    pub(crate) published_per_sec: f64,
    /// PUBLISH packets the broker received, per second (`None` while
    /// mosquitto's `$SYS` had no new value).
    pub(crate) broker_in_per_sec: Option<f64>,
    /// Messages the gateway's MQTT driver received, per second.
    pub(crate) driver_messages_per_sec: f64,
    /// Points the registry accepted, per second.
    pub(crate) registry_points_per_sec: f64,
    /// Broker CPU seconds per second.
    pub(crate) broker_cpu: Option<f64>,
    /// Gateway CPU seconds per second.
    pub(crate) gateway_cpu: Option<f64>,
    /// Broker RSS, MB.
    pub(crate) broker_rss_mb: Option<f64>,
    /// Client sessions up.
    pub(crate) clients_connected: i64,
    /// Devices online at the gateway.
    pub(crate) devices_online: i64,
    /// The gateway's uplink lag, seconds.
    pub(crate) uplink_lag_seconds: f64,
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
    /// Fewest client sessions up in any sample.
    pub(crate) clients_connected_min: i64,
    /// Fewest devices online at the gateway in any sample.
    pub(crate) devices_online_min: i64,
    /// Largest uplink lag in any sample.
    pub(crate) uplink_lag_max: f64,
}

impl Window {
    /// Seconds between the first and the last reading.
    pub(crate) fn seconds(&self) -> f64 {
        self.last.at.duration_since(self.first.at).as_secs_f64()
    }

    /// PUBLISH packets the broker received in the window and over how many
    /// seconds its own figures say (for mosquitto, between the `$SYS`
    /// updates the first and last readings saw).
    pub(crate) fn broker_in(&self) -> (u64, f64) {
        let (a, b) = (&self.first.broker, &self.last.broker);
        (
            b.messages_in.saturating_sub(a.messages_in),
            b.at.saturating_duration_since(a.at).as_secs_f64(),
        )
    }
}

/// Measures for `duration`, printing progress.
///
/// # Errors
/// When a process's figures stop answering.
pub(crate) async fn measure(w: &Watched<'_>, duration: Duration) -> anyhow::Result<Window> {
    let first = Reading::take(w).await?;
    let end = first.at + duration;
    let mut previous = first;
    let mut timeline = Vec::new();
    let mut clients_connected_min = first.clients.connected;
    let mut devices_online_min = first.gateway.devices_online;
    let mut uplink_lag_max = first.gateway.uplink_lag_seconds;
    // On a fixed grid from the start, so every sample spans a whole second.
    let mut k = 1u32;
    loop {
        let next = (first.at + SAMPLE_EVERY * k).min(end);
        k += 1;
        tokio::time::sleep_until(next.into()).await;
        let r = Reading::take(w).await?;
        let seconds = r.at.duration_since(previous.at).as_secs_f64();
        let broker_seconds = r
            .broker
            .at
            .saturating_duration_since(previous.broker.at)
            .as_secs_f64();
        let cores = |pick: fn(&Cpu) -> Option<f64>| {
            previous
                .cpu_diff(&r, pick)
                .map(|c| if seconds > 0.0 { c / seconds } else { 0.0 })
        };
        let sample = Sample {
            at_secs: r.at.duration_since(first.at).as_secs_f64(),
            published_per_sec: per_sec(
                r.clients
                    .published
                    .saturating_sub(previous.clients.published),
                seconds,
            ),
            broker_in_per_sec: (broker_seconds >= 0.5).then(|| {
                per_sec(
                    r.broker
                        .messages_in
                        .saturating_sub(previous.broker.messages_in),
                    broker_seconds,
                )
            }),
            driver_messages_per_sec: per_sec(
                r.gateway.messages.saturating_sub(previous.gateway.messages),
                seconds,
            ),
            registry_points_per_sec: per_sec(
                r.registry_points.saturating_sub(previous.registry_points),
                seconds,
            ),
            broker_cpu: cores(|c| c.broker),
            gateway_cpu: cores(|c| c.gateway),
            broker_rss_mb: r.broker_rss.map(|b| b as f64 / 1e6),
            clients_connected: r.clients.connected,
            devices_online: r.gateway.devices_online,
            uplink_lag_seconds: r.gateway.uplink_lag_seconds,
        };
        clients_connected_min = clients_connected_min.min(r.clients.connected);
        devices_online_min = devices_online_min.min(r.gateway.devices_online);
        uplink_lag_max = uplink_lag_max.max(r.gateway.uplink_lag_seconds);
        if (timeline.len() + 1) % PRINT_EVERY == 0 {
            let opt =
                |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.d$}"));
            println!(
                "  {:>5.1} s: {:>8.0} published/s, broker {:>8} in/s, driver {:>8.0} msgs/s, registry {:>9.0} points/s, CPU broker {} gateway {}, {} online",
                sample.at_secs,
                sample.published_per_sec,
                opt(sample.broker_in_per_sec, 0),
                sample.driver_messages_per_sec,
                sample.registry_points_per_sec,
                opt(sample.broker_cpu, 2),
                opt(sample.gateway_cpu, 2),
                sample.devices_online,
            );
        }
        timeline.push(sample);
        previous = r;
        if previous.at >= end {
            break;
        }
    }
    Ok(Window {
        first,
        last: previous,
        timeline,
        clients_connected_min,
        devices_online_min,
        uplink_lag_max,
    })
}
