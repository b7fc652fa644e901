//! Tag tables shared by the devices that have the same one.
//!
//! Thousands of devices of one type (an MQTT fleet whose tags are found in
//! its payloads, Modbus devices of one model) have the same tag table. The
//! [`Sink`](super::Sink) keeps each device's table as an `Arc<TagTable>`
//! taken from [`TagTables`], which hands out one table per distinct content:
//! the names are stored once per type, not once per device. A device whose
//! table grows beyond its type's (a field only it sends) gets a table of its
//! own — the shared one with its tags appended, so the ids it had keep their
//! values.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::ops::Deref;
use std::sync::{Arc, Weak};

use crate::device::{TagId, TagInfo};

/// A device's tag table: the tags in id order and an index by name. Never
/// changes once built; a grown table is a new one.
#[derive(Debug, Default)]
pub struct TagTable {
    tags: Box<[TagInfo]>,
    ids: HashMap<Box<str>, TagId>,
}

impl TagTable {
    /// The id of the tag named `name`.
    pub fn id(&self, name: &str) -> Option<TagId> {
        self.ids.get(name).copied()
    }

    /// The tags, in id order.
    pub fn tags(&self) -> &[TagInfo] {
        &self.tags
    }
}

impl From<Vec<TagInfo>> for TagTable {
    /// A table of `tags` in that order; a repeated name keeps its first id.
    fn from(tags: Vec<TagInfo>) -> TagTable {
        let mut ids = HashMap::with_capacity(tags.len());
        for (i, tag) in tags.iter().enumerate() {
            // Tables are bounded by `max_tags_per_device`, far below u32.
            ids.entry(tag.name.as_str().into()).or_insert(i as TagId);
        }
        TagTable {
            tags: tags.into_boxed_slice(),
            ids,
        }
    }
}

impl FromIterator<TagInfo> for TagTable {
    fn from_iter<I: IntoIterator<Item = TagInfo>>(iter: I) -> TagTable {
        TagTable::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl Deref for TagTable {
    type Target = [TagInfo];

    fn deref(&self) -> &[TagInfo] {
        &self.tags
    }
}

impl PartialEq for TagTable {
    fn eq(&self, other: &TagTable) -> bool {
        self.tags == other.tags
    }
}

impl Eq for TagTable {}

/// Hands out one shared [`TagTable`] per distinct content. It holds the
/// tables weakly: a table no device uses any more is freed (its entry is
/// swept later).
#[derive(Debug, Default)]
pub(crate) struct TagTables {
    hasher: RandomState,
    /// By hash of the tags: the tables with that hash.
    tables: HashMap<u64, Vec<Weak<TagTable>>>,
    /// Entries when the dead ones were last swept, to sweep again once
    /// there are twice as many.
    swept_at: usize,
    entries: usize,
}

impl TagTables {
    /// The shared table of `tags`, made if there is none.
    pub(crate) fn intern(&mut self, tags: Vec<TagInfo>) -> Arc<TagTable> {
        let hash = self.hash(&tags);
        let bucket = self.tables.entry(hash).or_default();
        let before = bucket.len();
        bucket.retain(|w| w.strong_count() > 0);
        self.entries -= before - bucket.len();
        let found = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|t| *t.tags == *tags);
        let table = match found {
            Some(table) => table,
            None => {
                let table = Arc::new(TagTable::from(tags));
                bucket.push(Arc::downgrade(&table));
                self.entries += 1;
                table
            }
        };
        if self.entries > 2 * self.swept_at.max(1024) {
            self.sweep();
        }
        table
    }

    /// The table of `table`'s tags followed by `more`.
    pub(crate) fn grown(&mut self, table: &TagTable, more: Vec<TagInfo>) -> Arc<TagTable> {
        let mut tags = Vec::with_capacity(table.len() + more.len());
        tags.extend_from_slice(table);
        tags.extend(more);
        self.intern(tags)
    }

    fn sweep(&mut self) {
        self.tables.retain(|_, bucket| {
            bucket.retain(|w| w.strong_count() > 0);
            !bucket.is_empty()
        });
        self.entries = self.tables.values().map(Vec::len).sum();
        self.swept_at = self.entries;
    }

    fn hash(&self, tags: &[TagInfo]) -> u64 {
        self.hasher.hash_one(tags)
    }

    /// Tables held (live or not swept yet), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tables.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::ValueKind;

    fn tags(names: &[&str]) -> Vec<TagInfo> {
        names
            .iter()
            .map(|n| TagInfo::new(*n, ValueKind::Double))
            .collect()
    }

    #[test]
    fn equal_tables_are_shared_and_ids_follow_the_order() {
        let mut tables = TagTables::default();
        let a = tables.intern(tags(&["speed", "temp"]));
        let b = tables.intern(tags(&["speed", "temp"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            (a.id("speed"), a.id("temp"), a.id("x")),
            (Some(0), Some(1), None)
        );
        let other = tables.intern(tags(&["temp", "speed"]));
        assert!(!Arc::ptr_eq(&a, &other), "another order is another table");
        assert_eq!(other.id("speed"), Some(1));
        let unit = tables.intern(vec![
            TagInfo::new("speed", ValueKind::Double).with_unit("rpm"),
            TagInfo::new("temp", ValueKind::Double),
        ]);
        assert!(!Arc::ptr_eq(&a, &unit), "another unit is another table");
    }

    #[test]
    fn a_device_that_adds_a_tag_gets_its_own_table_and_keeps_its_ids() {
        let mut tables = TagTables::default();
        let shared = tables.intern(tags(&["speed", "temp"]));
        let other_device = shared.clone();
        let grown = tables.grown(&shared, tags(&["extra"]));
        assert!(!Arc::ptr_eq(&shared, &grown));
        assert_eq!(
            (grown.id("speed"), grown.id("temp"), grown.id("extra")),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(
            other_device.id("extra"),
            None,
            "the type's table is unchanged"
        );
        assert_eq!(other_device.len(), 2);
        let again = tables.grown(&other_device, tags(&["extra"]));
        assert!(Arc::ptr_eq(&grown, &again), "grown alike, shared again");
    }

    #[test]
    fn tables_no_device_uses_are_freed_and_swept() {
        let mut tables = TagTables::default();
        for i in 0..5000 {
            drop(tables.intern(tags(&[&format!("t{i}")])));
        }
        let kept = tables.intern(tags(&["kept"]));
        assert!(tables.len() < 2100, "{} entries", tables.len());
        assert!(Arc::ptr_eq(&kept, &tables.intern(tags(&["kept"]))));
    }
}
