//! The embedded default store on [redb]: a single file, ACID, copy-on-write
//! B-trees, crash-safe without a recovery step, pure Rust (no C toolchain on
//! a fresh machine). One write transaction per [`Commit`]: the registry groups
//! many batches from all streams into one commit, because one fsync per batch
//! would cap ingest near 5 000 batches/s.

use std::path::Path;

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use fieldlink_model::Day;

use super::{Commit, DayDelta, DayStats, DeviceRecord, DeviceStatusRecord, Store};
use crate::error::StoreError;

/// Device records by device id (JSON, written on announce only).
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// Status by device index: (online, time, reason).
const STATUSES: TableDefinition<u32, (bool, i64, &str)> = TableDefinition::new("statuses");
/// Per (day, device index): (points, first, last). See [`day_key`].
const DAYS: TableDefinition<u64, (u64, i64, i64)> = TableDefinition::new("days");
/// Highest durable sequence by stream key.
const STREAMS: TableDefinition<&str, u64> = TableDefinition::new("streams");

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "registry.redb";

/// The key of a (day, device) pair: day in the high half, order-preserving
/// for negative days, so that a day's devices are one contiguous range.
fn day_key(day: Day, index: u32) -> u64 {
    let biased = (day.0 as u32) ^ 0x8000_0000;
    (u64::from(biased) << 32) | u64::from(index)
}

fn split_day_key(key: u64) -> (Day, u32) {
    let biased = (key >> 32) as u32;
    (Day((biased ^ 0x8000_0000) as i32), key as u32)
}

/// Merges `delta` into its (day, device) row with one B-tree descent: a
/// fresh pair is inserted (and merged only if a row was there after all:
/// the hint is never trusted), a known one updated in place (the value is
/// fixed-width, so redb rewrites it where it lies).
fn merge_day(
    days: &mut ::redb::Table<'_, u64, (u64, i64, i64)>,
    delta: &DayDelta,
) -> Result<(), StoreError> {
    let key = day_key(delta.day, delta.index);
    let mut stats = delta.stats;
    let row = |s: &DayStats| (s.points, s.first, s.last);
    if delta.fresh {
        let old = days
            .insert(key, row(&stats))
            .map_err(db_err)?
            .map(|old| old.value());
        if let Some((points, first, last)) = old {
            stats.merge(&DayStats {
                points,
                first,
                last,
            });
            days.insert(key, row(&stats)).map_err(db_err)?;
        }
        return Ok(());
    }
    let updated = match days.get_mut(key).map_err(db_err)? {
        Some(mut found) => {
            let (points, first, last) = found.value();
            stats.merge(&DayStats {
                points,
                first,
                last,
            });
            found.insert(row(&stats)).map_err(db_err)?;
            true
        }
        None => false,
    };
    if !updated {
        days.insert(key, row(&stats)).map_err(db_err)?;
    }
    Ok(())
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The redb-backed [`Store`].
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the store in `dir` with a page cache of at most
    /// `cache_bytes`.
    ///
    /// # Errors
    /// `StoreError` when the directory or the file cannot be used.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            dir: dir.to_owned(),
            source,
        })?;
        let db = ::redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(dir.join(FILE_NAME))
            .map_err(db_err)?;
        // Create the tables so that readers never meet a missing one.
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(DEVICES).map_err(db_err)?;
            txn.open_table(STATUSES).map_err(db_err)?;
            txn.open_table(DAYS).map_err(db_err)?;
            txn.open_table(STREAMS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(RedbStore { db })
    }
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<DeviceRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupted {
        key: format!("devices/{key}"),
        why: e.to_string(),
    })
}

fn missing_table_is_empty<T>(result: Result<T, TableError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(db_err(e)),
    }
}

impl Store for RedbStore {
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut devices = txn.open_table(DEVICES).map_err(db_err)?;
            for record in &commit.devices {
                let bytes = serde_json::to_vec(record).map_err(db_err)?;
                devices
                    .insert(record.id.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
            }
            let mut statuses = txn.open_table(STATUSES).map_err(db_err)?;
            for (index, status) in &commit.statuses {
                statuses
                    .insert(index, (status.online, status.time, status.reason.as_str()))
                    .map_err(db_err)?;
            }
            let mut days = txn.open_table(DAYS).map_err(db_err)?;
            for delta in &commit.day_deltas {
                merge_day(&mut days, delta)?;
            }
            let mut streams = txn.open_table(STREAMS).map_err(db_err)?;
            for (key, sequence) in &commit.streams {
                streams.insert(key.as_str(), sequence).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    fn scan_devices(
        &self,
        after: Option<&str>,
        visit: &mut dyn FnMut(DeviceRecord) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Some(table) = missing_table_is_empty(txn.open_table(DEVICES))? else {
            return Ok(());
        };
        let range = match after {
            Some(after) => {
                table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            }
            None => table.range::<&str>(..),
        }
        .map_err(db_err)?;
        for entry in range {
            let (key, value) = entry.map_err(db_err)?;
            let record = decode_record(key.value(), value.value())?;
            if !visit(record) {
                break;
            }
        }
        Ok(())
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Some(table) = missing_table_is_empty(txn.open_table(DEVICES))? else {
            return Ok(None);
        };
        match table.get(id).map_err(db_err)? {
            Some(value) => decode_record(id, value.value()).map(Some),
            None => Ok(None),
        }
    }

    fn scan_statuses(
        &self,
        visit: &mut dyn FnMut(u32, DeviceStatusRecord),
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Some(table) = missing_table_is_empty(txn.open_table(STATUSES))? else {
            return Ok(());
        };
        for entry in table.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let (online, time, reason) = value.value();
            visit(
                key.value(),
                DeviceStatusRecord {
                    online,
                    time,
                    reason: reason.to_owned(),
                },
            );
        }
        Ok(())
    }

    fn status(&self, index: u32) -> Result<Option<DeviceStatusRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Some(table) = missing_table_is_empty(txn.open_table(STATUSES))? else {
            return Ok(None);
        };
        Ok(table.get(index).map_err(db_err)?.map(|value| {
            let (online, time, reason) = value.value();
            DeviceStatusRecord {
                online,
                time,
                reason: reason.to_owned(),
            }
        }))
    }

    fn scan_days(
        &self,
        from: Day,
        to: Day,
        visit: &mut dyn FnMut(DayDelta),
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Some(table) = missing_table_is_empty(txn.open_table(DAYS))? else {
            return Ok(());
        };
        let range = day_key(from, 0)..=day_key(to, u32::MAX);
        for entry in table.range(range).map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let (day, index) = split_day_key(key.value());
            let (points, first, last) = value.value();
            visit(DayDelta {
                day,
                index,
                stats: DayStats {
                    points,
                    first,
                    last,
                },
                fresh: false,
            });
        }
        Ok(())
    }

    fn device_days(&self, index: u32, from: Day, to: Day) -> Result<Vec<DayDelta>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Some(table) = missing_table_is_empty(txn.open_table(DAYS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut day = from;
        while day <= to {
            if let Some(value) = table.get(day_key(day, index)).map_err(db_err)? {
                let (points, first, last) = value.value();
                out.push(DayDelta {
                    day,
                    index,
                    stats: DayStats {
                        points,
                        first,
                        last,
                    },
                    fresh: false,
                });
            }
            day = day.plus(1);
        }
        Ok(out)
    }

    fn streams(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Some(table) = missing_table_is_empty(txn.open_table(STREAMS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            out.push((key.value().to_owned(), value.value()));
        }
        Ok(out)
    }

    fn prune_days_before(&self, day: Day) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed;
        {
            let mut table = txn.open_table(DAYS).map_err(db_err)?;
            let before = table
                .extract_from_if(..day_key(day, 0), |_, _| true)
                .map_err(db_err)?;
            removed = before.count() as u64;
        }
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fieldlink_model::{Category, Cloud, Protocol};

    use super::*;

    fn record(id: &str, index: u32) -> DeviceRecord {
        DeviceRecord {
            id: id.to_owned(),
            index,
            category: Category::Robots,
            device_type: "KR-6".to_owned(),
            name: format!("robot {id}"),
            protocol: Protocol::ModbusTcp,
            endpoint: "127.0.0.1:502".to_owned(),
            attributes: BTreeMap::from([("vendor".to_owned(), "kuka".to_owned())]),
            tenant: "t".to_owned(),
            cloud: Cloud::Public,
            gateway_id: "gw".to_owned(),
            first_seen: 5,
            retired: false,
            tags: 3,
        }
    }

    #[test]
    fn day_keys_order_by_day_then_index() {
        let keys = [
            day_key(Day(-3), 9),
            day_key(Day(-1), 0),
            day_key(Day(0), 0),
            day_key(Day(0), u32::MAX),
            day_key(Day(20_000), 1),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(split_day_key(day_key(Day(-7), 42)), (Day(-7), 42));
    }

    #[test]
    fn commit_merges_days_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
            let commit = Commit {
                devices: vec![record("b", 1), record("a", 0)],
                statuses: vec![(
                    0,
                    DeviceStatusRecord {
                        online: true,
                        time: 7,
                        reason: "connected".into(),
                    },
                )],
                day_deltas: vec![DayDelta {
                    day: Day(10),
                    index: 0,
                    stats: DayStats {
                        points: 3,
                        first: 100,
                        last: 200,
                    },
                    fresh: true,
                }],
                streams: vec![("t/gw/s".into(), 4)],
            };
            store.commit(&commit).unwrap();
            let more = Commit {
                day_deltas: vec![DayDelta {
                    day: Day(10),
                    index: 0,
                    stats: DayStats {
                        points: 2,
                        first: 50,
                        last: 150,
                    },
                    // A wrong hint must not lose the stored figures.
                    fresh: true,
                }],
                streams: vec![("t/gw/s".into(), 5)],
                ..Commit::default()
            };
            store.commit(&more).unwrap();
        }
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let mut ids = Vec::new();
        store
            .scan_devices(None, &mut |r| {
                ids.push(r.id);
                true
            })
            .unwrap();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(store.device("b").unwrap(), Some(record("b", 1)));
        let days = store.device_days(0, Day(0), Day(20)).unwrap();
        assert_eq!(
            days[0].stats,
            DayStats {
                points: 5,
                first: 50,
                last: 200
            }
        );
        assert_eq!(store.streams().unwrap(), [("t/gw/s".to_owned(), 5)]);
        assert!(store.status(0).unwrap().unwrap().online);
        assert_eq!(store.prune_days_before(Day(11)).unwrap(), 1);
        assert!(store.device_days(0, Day(0), Day(20)).unwrap().is_empty());
    }

    #[test]
    fn a_known_row_merges_in_place_and_a_missing_one_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let delta = |index, points, first, last, fresh| DayDelta {
            day: Day(3),
            index,
            stats: DayStats {
                points,
                first,
                last,
            },
            fresh,
        };
        let days = |deltas| Commit {
            day_deltas: deltas,
            ..Commit::default()
        };
        store
            .commit(&days(vec![delta(1, 4, 10, 40, true)]))
            .unwrap();
        // Not fresh: 1 is stored (merged where it lies), 2 is not (a hint
        // that is wrong the other way must still write it).
        store
            .commit(&days(vec![
                delta(1, 2, 5, 20, false),
                delta(2, 7, 70, 90, false),
            ]))
            .unwrap();
        store
            .commit(&days(vec![delta(1, 1, 60, 60, false)]))
            .unwrap();
        drop(store);
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let mut rows = Vec::new();
        store
            .scan_days(Day(3), Day(3), &mut |d| rows.push((d.index, d.stats)))
            .unwrap();
        let stats = |points, first, last| DayStats {
            points,
            first,
            last,
        };
        assert_eq!(rows, [(1, stats(7, 5, 60)), (2, stats(7, 70, 90))]);
    }
}
