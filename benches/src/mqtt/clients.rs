//! The simulated devices: one rumqttc client per MQTT JSON device of the
//! plan ([`MqttFleet`]), in the bench process. Their memory and CPU are the
//! bench's, never the broker's or the gateway's (those are child processes
//! measured through `/proc`).
//!
//! They start silent (every device [`Fault::Hung`]: connected, registration
//! and status published, no telemetry), so that the broker's memory per
//! connection is measured on idle connections; [`Clients::release`] lets
//! every device publish from its next tick on.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::bail;
use fieldlink_sim::mqtt::{BrokerAddr, Credentials, MqttFleet, MqttFleetOptions, MqttFleetStats};
use fieldlink_sim::{Controls, Fault, FleetPlan};

/// How often the connected count is looked at while waiting.
const WAIT_STEP: Duration = Duration::from_millis(10);

/// The running clients.
#[derive(Debug)]
pub(crate) struct Clients {
    fleet: MqttFleet,
    stats: Arc<MqttFleetStats>,
    controls: Controls,
    indexes: Vec<u32>,
    started: Instant,
}

/// What the clients did so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClientCounts {
    /// Sessions up now.
    pub(crate) connected: i64,
    /// Sessions established since the start (more than the devices when
    /// clients had to reconnect).
    pub(crate) sessions: u64,
    /// Telemetry messages handed to the clients.
    pub(crate) published: u64,
    /// Telemetry messages a full client queue refused.
    pub(crate) dropped: u64,
}

impl Clients {
    /// Starts a silent client for every MQTT JSON device of `plan` at
    /// `broker`, each publishing every `interval` once released.
    pub(crate) fn start(
        plan: &FleetPlan,
        credentials: &Credentials,
        broker: BrokerAddr,
        interval: Duration,
    ) -> Clients {
        let controls = Controls::default();
        let indexes: Vec<u32> = plan.devices().map(|d| d.index).collect();
        for &i in &indexes {
            controls.faults.set(i, Fault::Hung);
        }
        let started = Instant::now();
        let fleet = MqttFleet::start(
            plan,
            MqttFleetOptions {
                broker,
                credentials: credentials.clone(),
                interval,
                controls: controls.clone(),
            },
        );
        let stats = fleet.stats();
        Clients {
            fleet,
            stats,
            controls,
            indexes,
            started,
        }
    }

    /// Clients started.
    pub(crate) fn devices(&self) -> u32 {
        self.fleet.devices()
    }

    /// The counters now.
    pub(crate) fn counts(&self) -> ClientCounts {
        ClientCounts {
            connected: self.stats.connected.load(Relaxed),
            sessions: self.stats.sessions.load(Relaxed),
            published: self.stats.published.load(Relaxed),
            dropped: self.stats.dropped.load(Relaxed),
        }
    }

    /// Waits until every client has its session; returns the time from the
    /// start of the clients.
    ///
    /// # Errors
    /// When that takes longer than `timeout`.
    pub(crate) async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let want = i64::from(self.devices());
        let deadline = self.started + timeout;
        loop {
            let counts = self.counts();
            if counts.connected >= want {
                return Ok(self.started.elapsed());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {want} clients connected after {} s ({} sessions established in all)",
                    counts.connected,
                    timeout.as_secs(),
                    counts.sessions
                );
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// Every device publishes telemetry from its next tick on.
    pub(crate) fn release(&self) {
        for &i in &self.indexes {
            self.controls.faults.set(i, Fault::None);
        }
    }

    /// Disconnects every client cleanly and waits.
    pub(crate) async fn stop(self) {
        self.fleet.stop().await;
    }
}
