//! The index of device ids: id → dense index, at about 30 bytes per device
//! beyond the id's own bytes.
//!
//! Ids are stored once, end to end, each behind a one-byte length, in pages
//! of [`ARENA_PAGE`] bytes ([`MAX_DEVICE_ID_BYTES`] is 128, so an id never
//! straddles two). Where each index's id starts is a [`PagedVec`] of `u64`.
//! The lookup is a `hashbrown::HashTable` of bare `u32` indexes (5 bytes a
//! slot with its control byte), hashed and compared through the arena: no
//! `String` or `Box<str>` per device (24 to 40 bytes of pointer, length
//! and allocator rounding each), no key copy in the map.

use std::hash::BuildHasher;

use fieldlink_model::MAX_DEVICE_ID_BYTES;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

use super::paged::PagedVec;

/// Bytes per arena page.
const ARENA_PAGE: usize = 1 << 20;
// A page holds at least one id behind its length byte.
const _: () = assert!(ARENA_PAGE > MAX_DEVICE_ID_BYTES + 1 && MAX_DEVICE_ID_BYTES <= 255);

/// Device ids by dense index, and the reverse lookup.
#[derive(Debug, Default)]
pub(crate) struct DeviceIds {
    arena: Vec<Vec<u8>>,
    /// Position of index i's length byte: page × ARENA_PAGE + offset.
    starts: PagedVec<u64>,
    table: HashTable<u32>,
    hasher: FixedState,
}

impl DeviceIds {
    /// Ids held; the next one gets this index.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// The id of `index`.
    pub(crate) fn id(&self, index: u32) -> Option<&str> {
        let start = *self.starts.get(index as usize)?;
        id_at(&self.arena, start)
    }

    /// The index of `id`.
    pub(crate) fn get(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.table.find(hash, |&i| self.id(i) == Some(id)).copied()
    }

    /// Stores `id` under the next index, or under `index` if given, and
    /// returns the index. An id already held keeps its index (returned).
    /// A given `index` past the end leaves holes before it, which hold an
    /// empty id (found by no lookup) until an id is stored there (the store
    /// loads devices in id order, not index order). Storing over an index
    /// that holds an id would strand that id: only holes are filled.
    pub(crate) fn insert(&mut self, id: &str, index: Option<u32>) -> u32 {
        if let Some(known) = self.get(id) {
            return known;
        }
        let index = match index {
            Some(i) if (i as usize) < self.len() => {
                let start = self.append(id);
                if let Some(slot) = self.starts.get_mut(i as usize) {
                    *slot = start;
                }
                i
            }
            Some(i) => {
                while self.len() < i as usize {
                    let start = self.append("");
                    self.starts.push(start);
                }
                self.push_id(id)
            }
            None => self.push_id(id),
        };
        let hash = self.hasher.hash_one(id);
        let (arena, starts, hasher) = (&self.arena, &self.starts, &self.hasher);
        self.table.insert_unique(hash, index, |&i| {
            let id = starts
                .get(i as usize)
                .and_then(|s| id_at(arena, *s))
                .unwrap_or("");
            hasher.hash_one(id)
        });
        index
    }

    /// Appends `id` under the next index; returns the index.
    fn push_id(&mut self, id: &str) -> u32 {
        let start = self.append(id);
        let index = u32::try_from(self.starts.len()).unwrap_or(u32::MAX);
        self.starts.push(start);
        index
    }

    /// Appends `id`'s bytes (cut to 255) behind their length; returns where.
    fn append(&mut self, id: &str) -> u64 {
        let bytes = &id.as_bytes()[..id.len().min(255)];
        let need = bytes.len() + 1;
        let fits = self
            .arena
            .last()
            .is_some_and(|page| page.len() + need <= ARENA_PAGE);
        if !fits {
            self.arena.push(Vec::with_capacity(ARENA_PAGE));
        }
        let page_index = self.arena.len() - 1;
        let page = &mut self.arena[page_index];
        let start = (page_index * ARENA_PAGE + page.len()) as u64;
        // At most 255 bytes: the length fits a byte.
        page.push(bytes.len() as u8);
        page.extend_from_slice(bytes);
        start
    }
}

fn id_at(arena: &[Vec<u8>], start: u64) -> Option<&str> {
    let start = usize::try_from(start).ok()?;
    let page = arena.get(start / ARENA_PAGE)?;
    let at = start % ARENA_PAGE;
    let len = usize::from(*page.get(at)?);
    std::str::from_utf8(page.get(at + 1..at + 1 + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_find_their_index_and_back() {
        let mut ids = DeviceIds::default();
        let n = 200_000u32;
        for i in 0..n {
            assert_eq!(
                ids.insert(
                    &format!("device-{i:06}-{}", "x".repeat((i % 120) as usize)),
                    None
                ),
                i
            );
        }
        for i in (0..n).step_by(997) {
            let id = format!("device-{i:06}-{}", "x".repeat((i % 120) as usize));
            assert_eq!(ids.get(&id), Some(i));
            assert_eq!(ids.id(i), Some(id.as_str()));
        }
        assert_eq!(ids.get("device-x"), None);
        assert_eq!(
            ids.insert("device-000001-x", None),
            1,
            "known ids keep theirs"
        );
        assert_eq!(ids.len(), n as usize);
        let long = "é".repeat(64);
        let i = ids.insert(&long, None);
        assert_eq!(ids.id(i), Some(long.as_str()));
    }

    #[test]
    fn holes_before_a_given_index_are_found_by_no_id() {
        let mut ids = DeviceIds::default();
        assert_eq!(ids.insert("a", Some(3)), 3);
        assert_eq!(ids.len(), 4);
        assert_eq!(ids.id(1), Some(""));
        assert_eq!(ids.get(""), None);
        assert_eq!(ids.insert("b", None), 4);
        assert_eq!(ids.insert("c", Some(1)), 1, "a hole is filled");
        assert_eq!(ids.get("c"), Some(1));
        assert_eq!(ids.id(1), Some("c"));
        assert_eq!(ids.len(), 5);
    }
}
