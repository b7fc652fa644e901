//! The core's poller: serves protocols that are asked for values (Modbus)
//! through the push seam.
//!
//! A polled driver implements [`Poller`] (open a session to a target) and
//! [`PolledSession`] (read one poll group into pre-filled readings). The
//! poller runs one task per device: it declares the device, connects with a
//! timeout, reads each poll group at its interval (back to back when the
//! interval is 0), stamps readings with the
//! time of the read, turns failures into bad-quality readings and a metric,
//! backs off exponentially (with jitter) from a failing device, and reports
//! session state — one silent device never stalls the others.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fieldlink_model::now_unix_nanos;
use fieldlink_model::proto::point::Value;
use rand::Rng;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sink::{Reading, Sink};
use crate::device::{DeviceHandle, DeviceInfo, TagId, TagInfo};
use crate::error::DriverError;

/// A polled protocol: opens sessions to targets.
pub trait Poller: Send + Sync + 'static {
    /// How to reach one device (address, unit id, read plans, ...).
    type Target: Send + Sync + 'static;
    /// A live session with one device.
    type Session: PolledSession;

    /// Opens a session to `target`. The poller bounds it with the timeout.
    fn connect(
        &self,
        target: &Self::Target,
    ) -> impl Future<Output = Result<Self::Session, DriverError>> + Send;
}

/// What one group read cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Requests sent.
    pub requests: u32,
    /// Requests the device answered with an exception.
    pub exceptions: u32,
}

/// A live session with one polled device.
pub trait PolledSession: Send + 'static {
    /// Reads poll group `group` into `out`: one reading per tag of the group,
    /// in the group's order, pre-filled as BAD with the device, tag and time
    /// set. Set `value` and `quality` of each tag the device answered (and
    /// `time`, if the protocol has a source time); leave a refused tag bad.
    /// `Err` means the session is broken and will be reopened.
    fn read_group(
        &mut self,
        group: usize,
        out: &mut [Reading],
    ) -> impl Future<Output = Result<ReadStats, DriverError>> + Send;

    /// Writes `value` to tag `tag` (an index into the device's tags).
    fn write(
        &mut self,
        tag: TagId,
        value: &Value,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
}

/// Tags read together at one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollGroup {
    /// How often the group is read.
    pub interval: Duration,
    /// Its tags: a range of ids into the device's tag table.
    pub tags: Range<TagId>,
}

/// A device the poller serves.
#[derive(Debug)]
pub struct PolledDevice<T> {
    /// What is announced.
    pub info: DeviceInfo,
    /// Its tag table (every group's tags, in group order).
    pub tags: Arc<[TagInfo]>,
    /// Its poll groups; devices of one template share them.
    pub groups: Arc<[PollGroup]>,
    /// How to reach it.
    pub target: Arc<T>,
}

impl<T> Clone for PolledDevice<T> {
    fn clone(&self) -> Self {
        PolledDevice {
            info: self.info.clone(),
            tags: self.tags.clone(),
            groups: self.groups.clone(),
            target: self.target.clone(),
        }
    }
}

/// Timing of the poll loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Connect timeout, and a quarter of the time a group read may take.
    pub timeout: Duration,
    /// First backoff after a failure.
    pub backoff_min: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Failed polls in a row before the device is offline.
    pub failures_before_offline: u32,
}

/// Serves `devices` until `shutdown`: one task per device.
pub async fn run<P: Poller>(
    poller: Arc<P>,
    devices: Vec<PolledDevice<P::Target>>,
    timing: Timing,
    sink: Sink,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    for device in devices {
        tasks.spawn(run_device(
            poller.clone(),
            device,
            timing.clone(),
            sink.clone(),
            shutdown.clone(),
        ));
    }
    tasks.close();
    tasks.wait().await;
}

/// Whether a device's session was last reported up.
#[derive(Debug, Default)]
struct Reported {
    online: Option<bool>,
}

/// Runs one device until `shutdown`: declare, connect, poll every group at
/// its interval, report readings and session state, back off when it fails.
async fn run_device<P: Poller>(
    poller: Arc<P>,
    device: PolledDevice<P::Target>,
    timing: Timing,
    sink: Sink,
    shutdown: CancellationToken,
) {
    let protocol = device.info.protocol;
    let id = device.info.id.clone();
    let handle = match sink.declare(device.info.clone(), &device.tags).await {
        Ok(declared) => declared.device,
        Err(e) => {
            tracing::error!(device = %id, error = %e, "cannot serve the device");
            return;
        }
    };
    let metrics = sink.metrics(protocol);
    let mut backoff = timing.backoff_min;
    let mut state = Reported::default();
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = timeout(timing.timeout, poller.connect(&device.target)) => r,
        };
        let failure = match connected {
            Ok(Ok(mut session)) => {
                let ctx = PollContext {
                    device: &device,
                    handle,
                    timing: &timing,
                    sink: &sink,
                    shutdown: &shutdown,
                };
                match poll(&mut session, &ctx, &mut state).await {
                    Polled::Shutdown => return,
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
            state.online = Some(false);
            tracing::warn!(device = %id, reason = %failure, "device offline");
            if sink.status(handle, false, failure).await.is_err() {
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

/// What a device's poll loop needs besides its session.
struct PollContext<'a, T> {
    device: &'a PolledDevice<T>,
    handle: DeviceHandle,
    timing: &'a Timing,
    sink: &'a Sink,
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
async fn poll<S: PolledSession, T>(
    session: &mut S,
    ctx: &PollContext<'_, T>,
    state: &mut Reported,
) -> Polled {
    let PollContext {
        device,
        handle,
        timing,
        sink,
        shutdown,
    } = *ctx;
    let metrics = sink.metrics(device.info.protocol);
    // Spread first polls over (up to 5 s of) each interval, so that devices
    // connected together do not poll together ever after.
    let start = Instant::now();
    let mut due: Vec<Instant> = device
        .groups
        .iter()
        .map(|g| {
            let spread = g.interval.min(Duration::from_secs(5));
            start + spread.mul_f64(rand::rng().random_range(0.0..1.0))
        })
        .collect();
    let read_limit = timing.timeout * 4;
    let mut failures = 0u32;
    let mut answered = false;
    loop {
        let Some((group, at)) = due.iter().copied().enumerate().min_by_key(|(_, at)| *at) else {
            return Polled::Shutdown;
        };
        if at > Instant::now() {
            tokio::select! {
                _ = shutdown.cancelled() => return Polled::Shutdown,
                _ = sleep_until(at) => {}
            }
        } else if shutdown.is_cancelled() {
            // Due already (a group read back to back): no timer.
            return Polled::Shutdown;
        }
        let tags = device.groups[group].tags.clone();
        let time = now_unix_nanos();
        let mut readings: Vec<Reading> = tags.map(|tag| Reading::bad(handle, tag, time)).collect();
        let started = Instant::now();
        let result = timeout(read_limit, session.read_group(group, &mut readings)).await;
        metrics.observe_poll(started.elapsed());
        let (failed, fatal) = match result {
            Ok(Ok(stats)) => {
                metrics.count_requests(stats.requests, stats.exceptions);
                (readings.iter().all(|r| r.value.is_none()), None)
            }
            Ok(Err(e)) => {
                metrics.errors.fetch_add(1, Relaxed);
                reset_bad(&mut readings);
                (true, Some(e.to_string()))
            }
            Err(_) => {
                metrics.errors.fetch_add(1, Relaxed);
                reset_bad(&mut readings);
                (true, Some(format!("poll timed out after {read_limit:?}")))
            }
        };
        if !failed && state.online != Some(true) {
            state.online = Some(true);
            if sink.status(handle, true, "answering").await.is_err() {
                return Polled::Shutdown;
            }
        }
        answered |= !failed;
        if sink.push(readings).await.is_err() {
            return Polled::Shutdown;
        }
        failures = if failed { failures + 1 } else { 0 };
        if let Some(why) = fatal {
            return Polled::Failed { why, answered };
        }
        if failures >= timing.failures_before_offline.max(1) {
            let why = format!("{failures} failed polls in a row");
            return Polled::Failed { why, answered };
        }
        // Keep the cadence; after a stall, skip missed ticks rather than burst.
        let interval = device.groups[group].interval;
        let next = at + interval;
        due[group] = if next < Instant::now() {
            Instant::now() + interval
        } else {
            next
        };
    }
}

/// A read that failed part-way keeps no partial values.
fn reset_bad(readings: &mut [Reading]) {
    for r in readings {
        r.value = None;
        r.quality = fieldlink_model::proto::Quality::Bad;
    }
}
