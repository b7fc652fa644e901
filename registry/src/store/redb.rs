//! The embedded default store on [redb]: a single file, ACID, copy-on-write
//! B-trees, crash-safe without a recovery step, pure Rust (no C toolchain on
//! a fresh machine). One write transaction per [`Commit`]: the registry groups
//! many batches from all streams into one commit, because one fsync per batch
//! would cap ingest near 5 000 batches/s.

use std::path::Path;

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use fieldlink_model::Day;

use super::day_blocks::{self, BLOCK_BYTES, Block};
use super::{Commit, DayDelta, DayStats, DeviceRecord, DeviceStatusRecord, Store};
use crate::error::StoreError;

/// Device records by device id (JSON, written on announce only).
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// Status by device index: (online, time, reason).
const STATUSES: TableDefinition<u32, (bool, i64, &str)> = TableDefinition::new("statuses");
/// Per (day, block of 16 devices): their (points, first, last). See
/// [`day_blocks`].
const DAY_BLOCKS: TableDefinition<u64, &[u8; BLOCK_BYTES]> = TableDefinition::new("day_blocks");
/// Per (day, device index): (points, first, last); read once, at open, to
/// move a store written before [`DAY_BLOCKS`] into it.
const LEGACY_DAYS: TableDefinition<u64, (u64, i64, i64)> = TableDefinition::new("days");
/// Highest durable sequence by stream key.
const STREAMS: TableDefinition<&str, u64> = TableDefinition::new("streams");

/// Legacy rows moved into blocks per step of the migration.
const MIGRATE_CHUNK: usize = 1 << 16;

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "registry.redb";

/// Merges a run of deltas that share block `key` with one B-tree descent
/// when the block is stored (updated in place), two when it is not.
fn merge_run(
    blocks: &mut ::redb::Table<'_, u64, &[u8; BLOCK_BYTES]>,
    key: u64,
    run: &[DayDelta],
) -> Result<(), StoreError> {
    if let Some(mut found) = blocks.get_mut(key).map_err(db_err)? {
        let mut block: Block = *found.value();
        day_blocks::merge_all(&mut block, run);
        return found.insert(&block).map_err(db_err);
    }
    let mut block = day_blocks::EMPTY;
    day_blocks::merge_all(&mut block, run);
    blocks.insert(key, &block).map_err(db_err)?;
    Ok(())
}

/// Moves the rows of a store written before [`DAY_BLOCKS`] into blocks, in
/// one transaction, and drops the old table; the rows moved.
fn migrate_legacy_days(db: &Database) -> Result<u64, StoreError> {
    {
        let read = db.begin_read().map_err(db_err)?;
        if missing_table_is_empty(read.open_table(LEGACY_DAYS))?.is_none() {
            return Ok(0);
        }
    }
    let txn = db.begin_write().map_err(db_err)?;
    let mut moved = 0;
    {
        let legacy = txn.open_table(LEGACY_DAYS).map_err(db_err)?;
        let mut blocks = txn.open_table(DAY_BLOCKS).map_err(db_err)?;
        // In chunks, so a large store is not held in memory at once; a run
        // cut by a chunk's end merges into the block its first part wrote.
        let mut chunk: Vec<DayDelta> = Vec::with_capacity(MIGRATE_CHUNK);
        let mut rows = legacy.iter().map_err(db_err)?;
        loop {
            chunk.clear();
            for entry in rows.by_ref().take(MIGRATE_CHUNK) {
                let (key, value) = entry.map_err(db_err)?;
                let (points, first, last) = value.value();
                let (day, index) = day_blocks::split(key.value());
                chunk.push(DayDelta {
                    day,
                    index,
                    stats: DayStats {
                        points,
                        first,
                        last,
                    },
                });
            }
            if chunk.is_empty() {
                break;
            }
            for (key, run) in day_blocks::runs(&chunk) {
                merge_run(&mut blocks, key, run)?;
            }
            moved += chunk.len() as u64;
        }
    }
    txn.delete_table(LEGACY_DAYS).map_err(db_err)?;
    txn.commit().map_err(db_err)?;
    Ok(moved)
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
            txn.open_table(DAY_BLOCKS).map_err(db_err)?;
            txn.open_table(STREAMS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let moved = migrate_legacy_days(&db)?;
        if moved > 0 {
            tracing::info!(
                rows = moved,
                "per-day figures moved into blocks of 16 devices"
            );
        }
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
            let mut blocks = txn.open_table(DAY_BLOCKS).map_err(db_err)?;
            for (key, run) in day_blocks::runs(&commit.day_deltas) {
                merge_run(&mut blocks, key, run)?;
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
        let Some(table) = missing_table_is_empty(txn.open_table(DAY_BLOCKS))? else {
            return Ok(());
        };
        let range = day_blocks::key(from, 0)..=day_blocks::key(to, u32::MAX);
        for entry in table.range(range).map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let (day, number) = day_blocks::split(key.value());
            for delta in day_blocks::rows(day, number, value.value()) {
                visit(delta);
            }
        }
        Ok(())
    }

    fn device_days(&self, index: u32, from: Day, to: Day) -> Result<Vec<DayDelta>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let Some(table) = missing_table_is_empty(txn.open_table(DAY_BLOCKS))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut day = from;
        while day <= to {
            let block = table.get(day_blocks::key_of(day, index)).map_err(db_err)?;
            if let Some(stats) = block.and_then(|b| day_blocks::read(b.value(), index)) {
                out.push(DayDelta { day, index, stats });
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
            let mut table = txn.open_table(DAY_BLOCKS).map_err(db_err)?;
            let mut rows = 0;
            for entry in table
                .extract_from_if(..day_blocks::key(day, 0), |_, _| true)
                .map_err(db_err)?
            {
                let (key, block) = entry.map_err(db_err)?;
                let (day, number) = day_blocks::split(key.value());
                rows += day_blocks::rows(day, number, block.value()).count() as u64;
            }
            removed = rows;
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
                    // Merged with the stored figures, not in their place.
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
        let delta = |index, points, first, last| DayDelta {
            day: Day(3),
            index,
            stats: DayStats {
                points,
                first,
                last,
            },
        };
        let days = |deltas| Commit {
            day_deltas: deltas,
            ..Commit::default()
        };
        store.commit(&days(vec![delta(1, 4, 10, 40)])).unwrap();
        // 1 is stored (merged where it lies), 2 is not (written).
        store
            .commit(&days(vec![delta(1, 2, 5, 20), delta(2, 7, 70, 90)]))
            .unwrap();
        store.commit(&days(vec![delta(1, 1, 60, 60)])).unwrap();
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

    #[test]
    fn a_store_of_per_device_day_rows_is_moved_into_blocks_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut legacy = txn.open_table(LEGACY_DAYS).unwrap();
                for (day, index, points) in [(4, 15u32, 2u64), (4, 16, 3), (5, 0, 1), (-2, 7, 9)] {
                    legacy
                        .insert(day_blocks::key(Day(day), index), (points, 10, 20))
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let mut rows = Vec::new();
        store
            .scan_days(Day(-10), Day(10), &mut |d| {
                rows.push((d.day.0, d.index, d.stats.points));
            })
            .unwrap();
        assert_eq!(rows, [(-2, 7, 9), (4, 15, 2), (4, 16, 3), (5, 0, 1)]);
        assert_eq!(store.device_days(16, Day(4), Day(5)).unwrap().len(), 1);
        drop(store);
        // Moved once: the old table is gone, a second open finds the same.
        let store = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let mut again = 0;
        store
            .scan_days(Day(-10), Day(10), &mut |_| again += 1)
            .unwrap();
        assert_eq!(again, 4);
        assert_eq!(store.prune_days_before(Day(5)).unwrap(), 3);
    }
}
