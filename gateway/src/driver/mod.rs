//! Drivers: how the gateway talks to devices.
//!
//! A protocol implements [`Driver`] (open a [`Session`] to a device) and
//! [`Session`] (read one poll group, write one tag). Everything else is the
//! core's job, the same for every protocol: [`run_device`] schedules each
//! device's poll groups on the device's own task, times requests out, turns
//! failures into bad-quality readings and a metric, backs off exponentially
//! from a failing device and reports its session state (online/offline) —
//! one silent device never stalls the others.
//!
//! # Writing a driver
//! A driver opens a session per device and reads poll groups; the core does
//! the rest. This one answers every tag with a constant, and shows the whole
//! contract:
//!
//! ```
//! use fieldlink_gateway::config::Device;
//! use fieldlink_gateway::driver::{Driver, GroupRead, Reading, Session};
//! use fieldlink_gateway::DriverError;
//! use fieldlink_model::Protocol;
//! use fieldlink_model::proto::point::Value;
//!
//! struct ConstDriver;
//!
//! struct ConstSession {
//!     tags_per_group: Vec<usize>,
//! }
//!
//! impl Driver for ConstDriver {
//!     type Session = ConstSession;
//!
//!     fn protocol(&self) -> Protocol {
//!         Protocol::OpcUa // the protocol code your devices are announced with
//!     }
//!
//!     async fn connect(&self, device: &Device) -> Result<ConstSession, DriverError> {
//!         // Open the connection to `device.addr` here; an Err is retried with backoff.
//!         Ok(ConstSession {
//!             tags_per_group: device.poll_groups.iter().map(|g| g.tags.len()).collect(),
//!         })
//!     }
//! }
//!
//! impl Session for ConstSession {
//!     async fn read_group(&mut self, group: usize) -> Result<GroupRead, DriverError> {
//!         let tags = *self.tags_per_group.get(group).ok_or_else(|| {
//!             DriverError::Invalid(format!("no poll group {group}"))
//!         })?;
//!         // One reading per tag, in the group's order; `Reading::bad()` for a
//!         // tag the device refused; `Err` when the session is broken.
//!         Ok(GroupRead {
//!             readings: vec![Reading::good(Value::DoubleValue(42.0)); tags],
//!             requests: 1,
//!             exceptions: 0,
//!         })
//!     }
//!
//!     async fn write(&mut self, tag: &str, _value: &Value) -> Result<(), DriverError> {
//!         Err(DriverError::Invalid(format!("tag `{tag}` is read-only")))
//!     }
//! }
//! ```
//!
//! See [`modbus`] for a complete driver.

pub mod modbus;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fieldlink_model::proto::{Quality, point::Value};
use fieldlink_model::{Protocol, now_unix_nanos};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::config::{Device, ModbusConfig};
use crate::error::DriverError;
use crate::metrics::Metrics;

/// One tag's value from one read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The value; `None` when the read failed.
    pub value: Option<Value>,
    /// Its quality.
    pub quality: Quality,
}

impl Reading {
    /// A good value.
    pub fn good(value: Value) -> Self {
        Reading {
            value: Some(value),
            quality: Quality::Good,
        }
    }

    /// No value: the device refused or did not answer.
    pub fn bad() -> Self {
        Reading {
            value: None,
            quality: Quality::Bad,
        }
    }
}

/// The result of reading one poll group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupRead {
    /// One reading per tag of the group, in the group's order.
    pub readings: Vec<Reading>,
    /// Requests sent.
    pub requests: u32,
    /// Requests the device answered with an exception.
    pub exceptions: u32,
}

/// A protocol driver: opens sessions to devices.
pub trait Driver: Send + Sync + 'static {
    /// A live session with one device.
    type Session: Session;

    /// The protocol this driver speaks.
    fn protocol(&self) -> Protocol;

    /// Opens a session to `device`. The core bounds it with the driver timeout.
    fn connect(
        &self,
        device: &Device,
    ) -> impl Future<Output = Result<Self::Session, DriverError>> + Send;
}

/// A live session with one device.
pub trait Session: Send + 'static {
    /// Reads poll group `group` (index into the device's `poll_groups`).
    ///
    /// Returns one reading per tag; a tag the device refuses is a bad
    /// reading. `Err` means the session is broken and will be reopened.
    fn read_group(
        &mut self,
        group: usize,
    ) -> impl Future<Output = Result<GroupRead, DriverError>> + Send;

    /// Writes `value` to the tag named `tag`.
    fn write(
        &mut self,
        tag: &str,
        value: &Value,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
}

/// What device tasks report to the normalizer.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEvent {
    /// The session came up or went down.
    Status {
        /// Index of the device in the gateway's settings.
        device: u32,
        /// Session up.
        online: bool,
        /// Why.
        reason: String,
        /// When (ns since epoch).
        time: i64,
    },
    /// A poll group was read.
    Readings {
        /// Index of the device.
        device: u32,
        /// Index of the poll group.
        group: u16,
        /// When (ns since epoch).
        time: i64,
        /// One per tag of the group.
        readings: Vec<Reading>,
    },
}

/// Timing of the core's device loop.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Connect and request timeout.
    pub timeout: Duration,
    /// First backoff after a failure.
    pub backoff_min: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Failed polls in a row before the device is offline.
    pub failures_before_offline: u32,
}

impl From<&ModbusConfig> for Timing {
    fn from(m: &ModbusConfig) -> Self {
        Timing {
            timeout: m.timeout,
            backoff_min: m.backoff_min,
            backoff_max: m.backoff_max,
            failures_before_offline: m.failures_before_offline.max(1),
        }
    }
}

/// Runs one device until `shutdown`: connect, poll every group at its
/// interval, report readings and session state, back off when it fails.
pub async fn run_device<D: Driver>(
    driver: Arc<D>,
    device: Arc<Device>,
    index: u32,
    timing: Timing,
    events: mpsc::Sender<DeviceEvent>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut backoff = timing.backoff_min;
    let mut state = Reported::default();
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = timeout(timing.timeout, driver.connect(&device)) => r,
        };
        let failure = match connected {
            Ok(Ok(mut session)) => {
                let ctx = PollContext {
                    device: &device,
                    index,
                    timing: &timing,
                    events: &events,
                    metrics: &metrics,
                    shutdown: &shutdown,
                };
                match poll(&mut session, &ctx, &mut state).await {
                    Polled::Shutdown => {
                        if state.online == Some(true) {
                            metrics.device_online(false);
                        }
                        return;
                    }
                    Polled::Failed { why, answered } => {
                        if answered {
                            backoff = timing.backoff_min;
                        }
                        why
                    }
                }
            }
            Ok(Err(e)) => {
                metrics.connect_failures.fetch_add(1, Relaxed);
                format!("connect: {e}")
            }
            Err(_) => {
                metrics.connect_failures.fetch_add(1, Relaxed);
                format!("connect: timed out after {:?}", timing.timeout)
            }
        };
        if state.online != Some(false) {
            if state.online == Some(true) {
                metrics.device_online(false);
            }
            state.online = Some(false);
            tracing::warn!(device = %device.id, reason = %failure, "device offline");
            if events
                .send(status_event(index, false, failure))
                .await
                .is_err()
            {
                return;
            }
        }
        // Jitter spreads the retries of devices that failed together.
        let jitter = rand::rng().random_range(0.5..1.0);
        let wait = backoff.mul_f64(jitter);
        backoff = (backoff * 2).min(timing.backoff_max);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep(wait) => {}
        }
    }
}

/// The session state last reported for a device.
#[derive(Debug, Default)]
struct Reported {
    online: Option<bool>,
}

fn status_event(device: u32, online: bool, reason: String) -> DeviceEvent {
    DeviceEvent::Status {
        device,
        online,
        reason,
        time: now_unix_nanos(),
    }
}

/// What a device's poll loop needs besides its session.
struct PollContext<'a> {
    device: &'a Device,
    index: u32,
    timing: &'a Timing,
    events: &'a mpsc::Sender<DeviceEvent>,
    metrics: &'a Metrics,
    shutdown: &'a CancellationToken,
}

/// How a poll loop ended.
enum Polled {
    Shutdown,
    /// The session failed; `answered` if the device answered a read first.
    Failed {
        why: String,
        answered: bool,
    },
}

/// Polls until the session fails or shutdown. A device counts as online
/// from its first read that yields a value: a port that accepts connections
/// but never answers, or refuses every read, is not a device that is up.
async fn poll<S: Session>(session: &mut S, ctx: &PollContext<'_>, state: &mut Reported) -> Polled {
    let PollContext {
        device,
        index,
        timing,
        events,
        metrics,
        shutdown,
    } = *ctx;
    // Spread first polls over (up to 5 s of) each interval, so that devices
    // connected together do not poll together ever after.
    let start = Instant::now();
    let mut due: Vec<Instant> = device
        .poll_groups
        .iter()
        .map(|g| {
            let spread = g.interval.min(Duration::from_secs(5));
            start + spread.mul_f64(rand::rng().random_range(0.0..1.0))
        })
        .collect();
    let mut failures = 0u32;
    let mut answered = false;
    loop {
        let Some((group, at)) = due.iter().copied().enumerate().min_by_key(|(_, at)| *at) else {
            return Polled::Shutdown;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Polled::Shutdown,
            _ = sleep_until(at) => {}
        }
        let started = Instant::now();
        let result = timeout(timing.timeout * 4, session.read_group(group)).await;
        metrics.observe_poll(started.elapsed());
        let tags = device.poll_groups[group].tags.len();
        let (readings, failed, fatal) = match result {
            Ok(Ok(read)) => {
                metrics.count_requests(read.requests, read.exceptions);
                let all_bad = read.readings.iter().all(|r| r.value.is_none());
                (read.readings, all_bad, None)
            }
            Ok(Err(e)) => {
                metrics.count_errors(1);
                (vec![Reading::bad(); tags], true, Some(e.to_string()))
            }
            Err(_) => {
                metrics.count_errors(1);
                let why = format!("poll timed out after {:?}", timing.timeout * 4);
                (vec![Reading::bad(); tags], true, Some(why))
            }
        };
        if !failed && state.online != Some(true) {
            state.online = Some(true);
            metrics.device_online(true);
            if events
                .send(status_event(index, true, "answering".into()))
                .await
                .is_err()
            {
                return Polled::Shutdown;
            }
        }
        answered |= !failed;
        let event = DeviceEvent::Readings {
            device: index,
            group: u16::try_from(group).unwrap_or(u16::MAX),
            time: now_unix_nanos(),
            readings,
        };
        if events.send(event).await.is_err() {
            return Polled::Shutdown;
        }
        failures = if failed { failures + 1 } else { 0 };
        if let Some(why) = fatal {
            return Polled::Failed { why, answered };
        }
        if failures >= timing.failures_before_offline {
            let why = format!("{failures} failed polls in a row");
            return Polled::Failed { why, answered };
        }
        // Keep the cadence; after a stall, skip missed ticks rather than burst.
        let interval = device.poll_groups[group].interval;
        let next = at + interval;
        due[group] = if next < Instant::now() {
            Instant::now() + interval
        } else {
            next
        };
    }
}
