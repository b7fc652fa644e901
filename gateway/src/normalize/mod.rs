//! Normalization: driver events into protobuf batches on the disk spool.
//!
//! The [`Normalizer`] is the one owner of the batch under construction. It
//! reads the drivers' events in order: a declared device (or a grown tag
//! table) becomes an announce, a session change a `DeviceStatus` (changes
//! only), readings become points grouped per device ([`encode`] writes them
//! straight into protobuf). A batch is sealed when it holds
//! `batch_max_points` points or about 1 MiB, or its first item is
//! `batch_max_delay` old; it is then appended to the spool, recorded in the
//! ledger, and the uplink is woken.

mod announce;
mod encode;
mod ledger;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldlink_model::proto;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

pub use announce::Announcements;
pub use ledger::Ledger;

use crate::device::DeviceInfo;
use crate::driver::{DriverEvent, Reading, TagTable};
use crate::metrics::Metrics;
use crate::spool::Spool;
use encode::BatchBuilder;

/// A batch is sealed once its encoding reaches about this size.
const BATCH_MAX_BYTES: usize = 1 << 20;

/// What the normalizer knows of a declared device: the identity and tag
/// table the sink keeps (shared, not copied).
#[derive(Debug)]
struct Known {
    info: Arc<DeviceInfo>,
    tags: Arc<TagTable>,
    online: Option<bool>,
}

/// Builds batches and spools them.
#[derive(Debug)]
pub struct Normalizer {
    devices: Vec<Option<Known>>,
    /// How many of `devices` are declared (kept, not counted per announce).
    declared: u64,
    announcements: Arc<Announcements>,
    spool: Arc<Mutex<Spool>>,
    wake_uplink: Arc<Notify>,
    metrics: Arc<Metrics>,
    max_points: usize,
    max_delay: Duration,
    builder: BatchBuilder,
    sealed_at: Option<Instant>,
    ledger: Option<Ledger>,
}

impl Normalizer {
    /// A normalizer that spools into `spool` and keeps `announcements` up
    /// to date.
    pub fn new(
        announcements: Arc<Announcements>,
        spool: Arc<Mutex<Spool>>,
        wake_uplink: Arc<Notify>,
        metrics: Arc<Metrics>,
        max_points: usize,
        max_delay: Duration,
    ) -> Self {
        Normalizer {
            devices: Vec::new(),
            declared: 0,
            announcements,
            spool,
            wake_uplink,
            metrics,
            max_points,
            max_delay,
            builder: BatchBuilder::new(None),
            sealed_at: None,
            ledger: None,
        }
    }

    /// Also keeps a [`Ledger`] of what is spooled.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.builder = BatchBuilder::new(Some(ledger.offset()));
        self.ledger = Some(ledger);
        self
    }

    /// Runs until the event channel closes (every driver stopped) or
    /// `shutdown`; seals what is left.
    pub(crate) async fn run(
        mut self,
        mut events: mpsc::Receiver<DriverEvent>,
        shutdown: CancellationToken,
    ) {
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
        // Drain what the drivers already produced.
        while let Ok(event) = events.try_recv() {
            self.add(event);
        }
        self.seal();
    }

    /// Adds an event; seals the batch once it is full. Announces count
    /// too: 10 000 devices declared at start with 125-tag tables are
    /// 5.8 MB of announces, above the registry's 4 MiB message limit if
    /// they went out as one batch.
    fn add(&mut self, event: DriverEvent) {
        self.add_event(event);
        if self.builder.points() >= self.max_points || self.builder.bytes() >= BATCH_MAX_BYTES {
            self.seal();
        }
    }

    fn add_event(&mut self, event: DriverEvent) {
        if self.sealed_at.is_none() {
            self.sealed_at = Some(Instant::now() + self.max_delay);
        }
        match event {
            DriverEvent::Announce { device, info, tags } => {
                let index = device.index() as usize;
                if self.devices.len() <= index {
                    self.devices.resize_with(index + 1, || None);
                }
                let slot = &mut self.devices[index];
                if slot.is_none() {
                    self.declared += 1;
                    self.metrics.devices.store(self.declared, Relaxed);
                }
                let known = slot.get_or_insert_with(|| Known {
                    info: info.clone(),
                    tags: tags.clone(),
                    online: None,
                });
                known.info = info;
                // Tables only grow: an announce overtaken by a later one of
                // the same device must not shrink what is known.
                if tags.len() >= known.tags.len() {
                    known.tags = tags;
                }
                let announce = known.info.announce(&known.tags);
                self.announcements
                    .set(device.index(), known.info.clone(), known.tags.clone());
                self.builder.announce(announce);
            }
            DriverEvent::Status {
                device,
                online,
                reason,
                time,
            } => {
                let Some(known) = self
                    .devices
                    .get_mut(device.index() as usize)
                    .and_then(Option::as_mut)
                else {
                    self.metrics.undeclared_readings.fetch_add(1, Relaxed);
                    return;
                };
                if known.online == Some(online) {
                    return;
                }
                match (known.online, online) {
                    (Some(true), false) => self.metrics.devices_online.fetch_sub(1, Relaxed),
                    (_, true) => self.metrics.devices_online.fetch_add(1, Relaxed),
                    _ => 0,
                };
                known.online = Some(online);
                let state = if online {
                    proto::device_status::State::Online
                } else {
                    proto::device_status::State::Offline
                };
                self.builder.status(proto::DeviceStatus {
                    device_id: known.info.id.clone(),
                    state: state as i32,
                    reason,
                    time_unix_nano: u64::try_from(time).unwrap_or(0),
                });
            }
            DriverEvent::Readings(readings) => {
                for run in readings.chunk_by(|a, b| a.device == b.device) {
                    self.points(run);
                }
            }
        }
    }

    /// Adds readings of one device (`run` is not empty, every reading of
    /// the same device): the device is looked up once.
    fn points(&mut self, run: &[Reading]) {
        let Some(first) = run.first() else {
            return;
        };
        let device = first.device.index();
        let Some(known) = self.devices.get(device as usize).and_then(Option::as_ref) else {
            self.metrics
                .undeclared_readings
                .fetch_add(run.len() as u64, Relaxed);
            return;
        };
        let builder = &mut self.builder;
        let mut slot = None;
        let mut undeclared = 0u64;
        for r in run {
            // The registry rejects ids outside the announced table.
            if r.tag as usize >= known.tags.len() {
                undeclared += 1;
                continue;
            }
            // The device gets a buffer only once it has a point to put in it.
            if slot.is_none() {
                slot = Some(builder.device(device, &known.info.id));
            }
            if let Some(slot) = slot.as_mut() {
                slot.point(r);
            }
        }
        if undeclared > 0 {
            self.metrics
                .undeclared_readings
                .fetch_add(undeclared, Relaxed);
        }
    }

    /// Appends the batch under construction to the spool.
    fn seal(&mut self) {
        self.sealed_at = None;
        if self.builder.is_empty() {
            return;
        }
        let points = self.builder.points();
        let devices = &self.devices;
        let ledger = &mut self.ledger;
        let payload = self.builder.seal(
            |index| {
                devices
                    .get(index as usize)
                    .and_then(Option::as_ref)
                    .map(|k| k.info.id.as_str())
            },
            |id, day, n| {
                if let Some(ledger) = ledger.as_mut() {
                    ledger.add(id, day, n);
                }
            },
        );
        let appended = {
            let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            let appended = spool.append(&payload);
            self.metrics.spool_batches.store(spool.batches(), Relaxed);
            self.metrics.spool_bytes.store(spool.bytes(), Relaxed);
            self.metrics
                .uplink_lag_ms
                .store(spool.oldest_age_ms(), Relaxed);
            appended
        };
        match appended {
            Ok((_, _, dropped)) => {
                if let Some(ledger) = self.ledger.as_mut()
                    && let Err(e) = ledger.flush()
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
                // Lines for a batch that is not spooled must not be kept.
                if let Some(ledger) = self.ledger.as_mut() {
                    ledger.discard();
                }
                tracing::error!(error = %e, points, "cannot spool a batch; it is lost");
                self.metrics.batches_dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fieldlink_model::{Category, Protocol};
    use prost::Message;

    use super::*;
    use crate::device::{DeviceHandle, DeviceInfo, TagInfo, ValueKind};

    fn info(i: u32) -> DeviceInfo {
        DeviceInfo {
            id: format!("device-{i:05}"),
            category: Category::Robots,
            protocol: Protocol::ModbusTcp,
            device_type: "t".into(),
            name: "n".into(),
            endpoint: String::new(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn many_announces_are_cut_into_batches_of_about_a_mebibyte() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Mutex::new(
            Spool::open(dir.path(), 1 << 30, 64 << 20, false).unwrap(),
        ));
        let mut normalizer = Normalizer::new(
            Arc::default(),
            spool.clone(),
            Arc::default(),
            Arc::default(),
            10_000,
            Duration::from_secs(3600),
        );
        let tags: Arc<TagTable> = Arc::new(
            (0..125)
                .map(|t| TagInfo::new(format!("t{t:04}"), ValueKind::Int))
                .collect(),
        );
        let devices = 3000u32;
        for i in 0..devices {
            normalizer.add(DriverEvent::Announce {
                device: DeviceHandle(i),
                info: Arc::new(info(i)),
                tags: tags.clone(),
            });
        }
        normalizer.seal();
        let spool = spool.lock().unwrap();
        let (epoch, _) = spool.live();
        let records = spool.read_after(epoch, 0, 1000).unwrap();
        assert!(records.len() > 1, "{} records", records.len());
        let mut announced = 0;
        for (_, payload) in &records {
            assert!(payload.len() < BATCH_MAX_BYTES + 4096, "{}", payload.len());
            announced += proto::Batch::decode(payload.as_slice())
                .unwrap()
                .announces
                .len();
        }
        assert_eq!(announced, devices as usize);
    }

    #[test]
    fn the_declared_gauge_counts_each_device_once_however_often_it_announces() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Mutex::new(
            Spool::open(dir.path(), 1 << 30, 64 << 20, false).unwrap(),
        ));
        let metrics = Arc::new(Metrics::default());
        let mut normalizer = Normalizer::new(
            Arc::default(),
            spool,
            Arc::default(),
            metrics.clone(),
            10_000,
            Duration::from_secs(3600),
        );
        let tags: Arc<TagTable> =
            Arc::new([TagInfo::new("t", ValueKind::Int)].into_iter().collect());
        // Devices 0, 7 and 3, then 7 again (a reconnect announces anew).
        for i in [0u32, 7, 3, 7, 0] {
            normalizer.add(DriverEvent::Announce {
                device: DeviceHandle(i),
                info: Arc::new(info(i)),
                tags: tags.clone(),
            });
        }
        assert_eq!(metrics.devices.load(Relaxed), 3);
    }
}
