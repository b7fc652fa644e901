//! Normalization: device events into protobuf batches.
//!
//! Readings become points (tag name, value, quality, source time) grouped
//! per device; status changes become `DeviceStatus`. A batch is sealed when
//! it holds `batch_max_points` points or its first item is
//! `batch_max_delay` old, then appended to the spool, and the uplink is woken.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldlink_model::proto::{self, Batch, DeviceAnnounce, DeviceTelemetry, Point};
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::config::Device;
use crate::driver::DeviceEvent;
use crate::metrics::Metrics;
use crate::spool::Spool;

/// The announce of a configured device.
pub fn announce(device: &Device) -> DeviceAnnounce {
    DeviceAnnounce {
        device_id: device.id.clone(),
        class: device.category.class().code().to_owned(),
        category: device.category.code().to_owned(),
        r#type: device.device_type.clone(),
        name: device.name.clone(),
        protocol: device.protocol.code().to_owned(),
        endpoint: device.endpoint.clone(),
        attributes: device.attributes.clone().into_iter().collect(),
    }
}

/// Devices announced per batch.
const ANNOUNCES_PER_BATCH: usize = 2_000;

/// Encoded batches announcing every device.
pub fn announce_batches(devices: &[Arc<Device>]) -> Vec<Vec<u8>> {
    devices
        .chunks(ANNOUNCES_PER_BATCH)
        .map(|chunk| {
            Batch {
                announces: chunk.iter().map(|d| announce(d)).collect(),
                ..Batch::default()
            }
            .encode_to_vec()
        })
        .collect()
}

/// Builds batches and spools them.
#[derive(Debug)]
pub struct Normalizer {
    devices: Arc<Vec<Arc<Device>>>,
    spool: Arc<Mutex<Spool>>,
    wake_uplink: Arc<Notify>,
    metrics: Arc<Metrics>,
    max_points: usize,
    max_delay: Duration,
    batch: Batch,
    points: usize,
    by_device: HashMap<u32, usize>,
    sealed_at: Option<Instant>,
    ledger: Option<Ledger>,
    announces: Arc<Vec<Vec<u8>>>,
}

/// The gateway's own record of what it produced: per sealed batch, one line
/// per device and day, `device_id,day,points` (good or uncertain points, the
/// ones the registry counts), appended right after the batch is spooled.
/// Evaluators and tests reconcile the registry's running logs with it.
#[derive(Debug)]
pub struct Ledger {
    file: std::fs::File,
    offset: fieldlink_model::UtcOffset,
}

impl Ledger {
    /// Opens (appends to) `path`; days are cut at `offset`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(
        path: &std::path::Path,
        offset: fieldlink_model::UtcOffset,
    ) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Ledger { file, offset })
    }

    fn record(&mut self, batch: &Batch) -> std::io::Result<()> {
        use std::io::Write;
        let mut lines = String::new();
        for t in &batch.telemetry {
            let mut days: Vec<(fieldlink_model::Day, u64)> = Vec::new();
            for p in t
                .points
                .iter()
                .filter(|p| p.quality != proto::Quality::Bad as i32)
            {
                let day = fieldlink_model::Day::of(
                    i64::try_from(p.time_unix_nano).unwrap_or(i64::MAX),
                    self.offset,
                );
                match days.iter_mut().find(|(d, _)| *d == day) {
                    Some((_, n)) => *n += 1,
                    None => days.push((day, 1)),
                }
            }
            for (day, n) in days {
                lines.push_str(&format!("{},{day},{n}\n", t.device_id));
            }
        }
        self.file.write_all(lines.as_bytes())
    }
}

impl Normalizer {
    /// A normalizer over the gateway's devices; `announces` (see
    /// [`announce_batches`]) are spooled first on every start.
    pub fn new(
        devices: Arc<Vec<Arc<Device>>>,
        announces: Arc<Vec<Vec<u8>>>,
        spool: Arc<Mutex<Spool>>,
        wake_uplink: Arc<Notify>,
        metrics: Arc<Metrics>,
        max_points: usize,
        max_delay: Duration,
    ) -> Self {
        Normalizer {
            devices,
            spool,
            wake_uplink,
            metrics,
            max_points,
            max_delay,
            batch: Batch::default(),
            points: 0,
            by_device: HashMap::new(),
            sealed_at: None,
            ledger: None,
            announces,
        }
    }

    /// Also keeps a [`Ledger`] of what is spooled.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Runs until the event channel closes or `shutdown`; seals what is left.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<DeviceEvent>,
        shutdown: CancellationToken,
    ) {
        // Every start announces every device: announces are idempotent.
        for payload in self.announces.clone().iter() {
            self.append(payload, None, 0);
        }
        let mut buffer = Vec::with_capacity(256);
        loop {
            let deadline = self
                .sealed_at
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sleep_until(deadline), if self.sealed_at.is_some() => self.seal(),
                n = events.recv_many(&mut buffer, 256) => {
                    if n == 0 {
                        break;
                    }
                    for event in buffer.drain(..) {
                        self.add(event);
                    }
                }
            }
        }
        // Drain what the device tasks already produced.
        while let Ok(event) = events.try_recv() {
            self.add(event);
        }
        self.seal();
    }

    fn add(&mut self, event: DeviceEvent) {
        if self.sealed_at.is_none() {
            self.sealed_at = Some(Instant::now() + self.max_delay);
        }
        match event {
            DeviceEvent::Status {
                device,
                online,
                reason,
                time,
            } => {
                let Some(d) = self.devices.get(device as usize) else {
                    return;
                };
                let state = if online {
                    proto::device_status::State::Online
                } else {
                    proto::device_status::State::Offline
                };
                self.batch.statuses.push(proto::DeviceStatus {
                    device_id: d.id.clone(),
                    state: state as i32,
                    reason,
                    time_unix_nano: u64::try_from(time).unwrap_or(0),
                });
            }
            DeviceEvent::Readings {
                device,
                group,
                time,
                readings,
            } => {
                let Some(d) = self.devices.get(device as usize) else {
                    return;
                };
                let Some(tags) = d.poll_groups.get(usize::from(group)).map(|g| &g.tags) else {
                    return;
                };
                let slot = *self.by_device.entry(device).or_insert_with(|| {
                    self.batch.telemetry.push(DeviceTelemetry {
                        device_id: d.id.clone(),
                        points: Vec::new(),
                    });
                    self.batch.telemetry.len() - 1
                });
                let time = u64::try_from(time).unwrap_or(0);
                let points = &mut self.batch.telemetry[slot].points;
                for (tag, reading) in tags.iter().zip(readings) {
                    points.push(Point {
                        tag: tag.name.clone(),
                        time_unix_nano: time,
                        quality: reading.quality as i32,
                        value: reading.value,
                    });
                }
                self.points += tags.len();
                if self.points >= self.max_points {
                    self.seal();
                }
            }
        }
    }

    /// Appends the batch under construction to the spool.
    fn seal(&mut self) {
        self.sealed_at = None;
        let batch = std::mem::take(&mut self.batch);
        let points = std::mem::take(&mut self.points);
        self.by_device.clear();
        if batch.announces.is_empty() && batch.statuses.is_empty() && batch.telemetry.is_empty() {
            return;
        }
        let payload = batch.encode_to_vec();
        self.append(&payload, Some(&batch), points);
    }

    /// Appends an encoded batch to the spool and wakes the uplink; `batch`
    /// (when it may hold telemetry) goes to the ledger.
    fn append(&mut self, payload: &[u8], batch: Option<&Batch>, points: usize) {
        let appended = {
            let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            let appended = spool.append(payload);
            self.metrics.spool_batches.store(spool.batches(), Relaxed);
            self.metrics.spool_bytes.store(spool.bytes(), Relaxed);
            self.metrics
                .uplink_lag_ms
                .store(spool.oldest_age_ms(), Relaxed);
            appended
        };
        match appended {
            Ok((_, _, dropped)) => {
                if let (Some(ledger), Some(batch)) = (self.ledger.as_mut(), batch)
                    && let Err(e) = ledger.record(batch)
                {
                    tracing::error!(error = %e, "cannot write the ledger");
                }
                self.metrics.points.fetch_add(points as u64, Relaxed);
                self.metrics.batches_spooled.fetch_add(1, Relaxed);
                self.metrics
                    .batches_dropped
                    .fetch_add(dropped.batches, Relaxed);
                self.wake_uplink.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, points, "cannot spool a batch; it is lost");
                self.metrics.batches_dropped.fetch_add(1, Relaxed);
            }
        }
    }
}
