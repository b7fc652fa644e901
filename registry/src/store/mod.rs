//! Durable state of the registry behind the [`Store`] trait.
//!
//! The counting code sees only this trait: the embedded default is
//! [`RedbStore`]; a PostgreSQL backend implements the same calls (device rows
//! upserted, per-day rows merged with `ON CONFLICT DO UPDATE`).
//!
//! What is stored:
//! - device records, keyed by device id, each with its dense `index`;
//! - device status (online/offline, time, reason), keyed by index;
//! - per device and day: points received, first and last point time — the
//!   running log (附件11), and also the persisted form of the per-day
//!   distinct sets (the keys of a day are exactly that day's reporting set);
//! - per stream: the highest batch sequence made durable (exactly-once).
//!
//! A [`Commit`] is applied atomically: all of it is durable or none of it.

mod day_blocks;
mod redb;

use std::collections::BTreeMap;

use fieldlink_model::{Category, Cloud, Day, Protocol};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

pub use self::redb::{FILE_NAME, RedbStore};

/// Everything the registry keeps about one device, but its live counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Globally unique device id.
    pub id: String,
    /// Dense index of the device, assigned at first announce, never reused.
    pub index: u32,
    /// Category; the class follows from it.
    pub category: Category,
    /// Model name.
    #[serde(rename = "type")]
    pub device_type: String,
    /// Human name.
    pub name: String,
    /// Protocol the gateway speaks to it.
    pub protocol: Protocol,
    /// Where the gateway reaches it.
    pub endpoint: String,
    /// Static attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Tenant whose gateway announced it.
    pub tenant: String,
    /// Cloud of that tenant at announce time.
    pub cloud: Cloud,
    /// Gateway that connects it.
    pub gateway_id: String,
    /// When the registry first heard of it (ns since epoch).
    pub first_seen: i64,
    /// Taken out of service: not counted as registered.
    #[serde(default)]
    pub retired: bool,
    /// Entries of its announced tag table (the ids its points may carry).
    /// The names stay with the gateway: nothing the registry counts or
    /// shows reads them.
    #[serde(default)]
    pub tags: u32,
}

/// Last reported session state of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatusRecord {
    /// Online as last reported by its gateway.
    pub online: bool,
    /// When the state changed (ns since epoch).
    pub time: i64,
    /// Why, as the gateway said.
    pub reason: String,
}

/// A device's figures for one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayStats {
    /// Points received and accepted.
    pub points: u64,
    /// Earliest point time (ns since epoch).
    pub first: i64,
    /// Latest point time (ns since epoch).
    pub last: i64,
}

impl DayStats {
    /// Stats of a single point.
    pub fn point(time: i64) -> Self {
        DayStats {
            points: 1,
            first: time,
            last: time,
        }
    }

    /// Folds `other` into `self`.
    pub fn merge(&mut self, other: &DayStats) {
        self.points += other.points;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// Per-day figures to add for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayDelta {
    /// The day.
    pub day: Day,
    /// The device's dense index.
    pub index: u32,
    /// What to merge in.
    pub stats: DayStats,
}

/// One atomic group of changes.
#[derive(Debug, Default, Clone)]
pub struct Commit {
    /// Device records to insert or replace.
    pub devices: Vec<DeviceRecord>,
    /// Status changes, by device index.
    pub statuses: Vec<(u32, DeviceStatusRecord)>,
    /// Per-day figures to merge; sorted by (day, index), one per pair.
    pub day_deltas: Vec<DayDelta>,
    /// Highest durable sequence per stream key.
    pub streams: Vec<(String, u64)>,
}

impl Commit {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
            && self.statuses.is_empty()
            && self.day_deltas.is_empty()
            && self.streams.is_empty()
    }
}

/// The durable state of the registry.
///
/// Calls may block on disk: run them off the async runtime.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Makes `commit` durable, all or nothing.
    ///
    /// # Errors
    /// `StoreError` when nothing was written.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;

    /// Visits every device record, in device id order, from `after` (exclusive).
    /// The visitor returns `false` to stop.
    ///
    /// # Errors
    /// `StoreError` on a read failure or a corrupted record.
    fn scan_devices(
        &self,
        after: Option<&str>,
        visit: &mut dyn FnMut(DeviceRecord) -> bool,
    ) -> Result<(), StoreError>;

    /// The record of one device.
    ///
    /// # Errors
    /// `StoreError` on a read failure or a corrupted record.
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// Visits every stored status.
    ///
    /// # Errors
    /// `StoreError` on a read failure.
    fn scan_statuses(
        &self,
        visit: &mut dyn FnMut(u32, DeviceStatusRecord),
    ) -> Result<(), StoreError>;

    /// The status of one device.
    ///
    /// # Errors
    /// `StoreError` on a read failure.
    fn status(&self, index: u32) -> Result<Option<DeviceStatusRecord>, StoreError>;

    /// Visits the per-day figures of every device for days `from..=to`, in
    /// (day, index) order.
    ///
    /// # Errors
    /// `StoreError` on a read failure.
    fn scan_days(
        &self,
        from: Day,
        to: Day,
        visit: &mut dyn FnMut(DayDelta),
    ) -> Result<(), StoreError>;

    /// The per-day figures of one device for days `from..=to`.
    ///
    /// # Errors
    /// `StoreError` on a read failure.
    fn device_days(&self, index: u32, from: Day, to: Day) -> Result<Vec<DayDelta>, StoreError>;

    /// Every stream's highest durable sequence.
    ///
    /// # Errors
    /// `StoreError` on a read failure.
    fn streams(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Drops per-day figures of days before `day`.
    ///
    /// # Errors
    /// `StoreError` when nothing was removed.
    fn prune_days_before(&self, day: Day) -> Result<u64, StoreError>;
}
