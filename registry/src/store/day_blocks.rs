//! The per-day figures of [`SLOTS`] consecutive devices in one stored value.
//!
//! A round of telemetry touches devices a gateway announced together, and
//! those have consecutive indexes; keyed by (day, device) each of them cost
//! the store its own B-tree descent, keyed by (day, block) sixteen share one.
//! A block is fixed-width, so redb rewrites it where it lies.
//!
//! Slot `i` of block `b` is device `b * SLOTS + i`: points (u64), first and
//! last point time (i64, ns since epoch), little-endian. No points: no row.

use fieldlink_model::Day;

use super::{DayDelta, DayStats};

/// Devices per block.
pub(super) const SLOTS: u32 = 16;
const SLOT_BYTES: usize = 24;
/// Bytes of a stored block.
pub(super) const BLOCK_BYTES: usize = SLOTS as usize * SLOT_BYTES;

/// One stored block.
pub(super) type Block = [u8; BLOCK_BYTES];

/// An empty block (no device of it reported that day).
pub(super) const EMPTY: Block = [0; BLOCK_BYTES];

/// The key of a (day, block) pair: day in the high half, order-preserving
/// for negative days, so that a day's blocks are one contiguous range in
/// device order.
pub(super) fn key(day: Day, block: u32) -> u64 {
    let biased = (day.0 as u32) ^ 0x8000_0000;
    (u64::from(biased) << 32) | u64::from(block)
}

/// The key of the block holding device `index` on `day`.
pub(super) fn key_of(day: Day, index: u32) -> u64 {
    key(day, index / SLOTS)
}

/// The day and block of a key.
pub(super) fn split(key: u64) -> (Day, u32) {
    let biased = (key >> 32) as u32;
    (Day((biased ^ 0x8000_0000) as i32), key as u32)
}

fn slot_range(index: u32) -> std::ops::Range<usize> {
    let start = (index % SLOTS) as usize * SLOT_BYTES;
    start..start + SLOT_BYTES
}

fn word(bytes: &[u8]) -> [u8; 8] {
    let mut w = [0; 8];
    w.copy_from_slice(bytes);
    w
}

/// The figures of device `index` in `block`, if it reported.
pub(super) fn read(block: &Block, index: u32) -> Option<DayStats> {
    let slot = &block[slot_range(index)];
    let points = u64::from_le_bytes(word(&slot[0..8]));
    (points > 0).then(|| DayStats {
        points,
        first: i64::from_le_bytes(word(&slot[8..16])),
        last: i64::from_le_bytes(word(&slot[16..24])),
    })
}

/// Stores `stats` for device `index` in `block`.
fn write(block: &mut Block, index: u32, stats: &DayStats) {
    let slot = &mut block[slot_range(index)];
    slot[0..8].copy_from_slice(&stats.points.to_le_bytes());
    slot[8..16].copy_from_slice(&stats.first.to_le_bytes());
    slot[16..24].copy_from_slice(&stats.last.to_le_bytes());
}

/// Merges every delta of `run` into its device's slot of `block`.
pub(super) fn merge_all(block: &mut Block, run: &[DayDelta]) {
    for delta in run {
        let mut stats = delta.stats;
        if let Some(old) = read(block, delta.index) {
            stats.merge(&old);
        }
        write(block, delta.index, &stats);
    }
}

/// The devices of `block` (block number `number` of `day`) that reported,
/// in index order.
pub(super) fn rows(day: Day, number: u32, block: &Block) -> impl Iterator<Item = DayDelta> + '_ {
    let first = number.saturating_mul(SLOTS);
    (0..SLOTS).filter_map(move |slot| {
        let index = first.checked_add(slot)?;
        read(block, index).map(|stats| DayDelta { day, index, stats })
    })
}

/// The runs of `deltas` (sorted by (day, index)) that share a block.
pub(super) fn runs(deltas: &[DayDelta]) -> impl Iterator<Item = (u64, &[DayDelta])> {
    let mut rest = deltas;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let k = key_of(first.day, first.index);
        let len = rest
            .iter()
            .position(|d| key_of(d.day, d.index) != k)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(len);
        rest = tail;
        Some((k, run))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(day: i32, index: u32, points: u64, first: i64, last: i64) -> DayDelta {
        DayDelta {
            day: Day(day),
            index,
            stats: DayStats {
                points,
                first,
                last,
            },
        }
    }

    #[test]
    fn keys_order_by_day_then_device() {
        let mut keys = vec![
            key_of(Day(1), 40),
            key_of(Day(-1), 0),
            key_of(Day(0), 5),
            key_of(Day(1), 3),
        ];
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                key_of(Day(-1), 0),
                key_of(Day(0), 5),
                key_of(Day(1), 3),
                key_of(Day(1), 40)
            ]
        );
        assert_eq!(split(key_of(Day(-3), 33)), (Day(-3), 2));
        assert_eq!(key_of(Day(7), 15), key_of(Day(7), 0));
        assert_ne!(key_of(Day(7), 16), key_of(Day(7), 15));
    }

    #[test]
    fn slots_merge_and_read_back_without_touching_neighbours() {
        let mut block = EMPTY;
        merge_all(&mut block, &[delta(2, 33, 3, 100, 200)]);
        merge_all(
            &mut block,
            &[delta(2, 33, 2, 50, 150), delta(2, 47, 1, -5, -5)],
        );
        assert_eq!(
            read(&block, 33),
            Some(DayStats {
                points: 5,
                first: 50,
                last: 200
            })
        );
        assert_eq!(read(&block, 34), None);
        let found: Vec<_> = rows(Day(2), 2, &block)
            .map(|d| (d.index, d.stats.points))
            .collect();
        assert_eq!(found, [(33, 5), (47, 1)]);
    }

    #[test]
    fn sorted_deltas_split_into_one_run_per_block() {
        let deltas = [
            delta(1, 0, 1, 0, 0),
            delta(1, 15, 1, 0, 0),
            delta(1, 16, 1, 0, 0),
            delta(2, 16, 1, 0, 0),
        ];
        let lens: Vec<_> = runs(&deltas)
            .map(|(k, run)| (split(k), run.len()))
            .collect();
        assert_eq!(lens, [((Day(1), 0), 2), ((Day(1), 1), 1), ((Day(2), 1), 1)]);
        assert_eq!(runs(&[]).count(), 0);
    }
}
