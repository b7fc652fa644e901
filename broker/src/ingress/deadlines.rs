//! Keep-alive deadlines by time slot: a connection is looked at when its
//! silence could first have run out (and again at its next possible
//! deadline if it spoke since), not on every sweep. A sweep over every
//! session each 250 ms cost a shard of 15 000 idle connections 60 000
//! looks a second, and a million connections 0.4 of a core.

use std::collections::BTreeMap;
use std::sync::Weak;

use super::Presence;

/// Connections by the slot their silence may run out in.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    slot_ms: u64,
    slots: BTreeMap<u64, Vec<Weak<Presence>>>,
}

impl Deadlines {
    /// Deadlines kept to `slot_ms` (a connection is told at most that
    /// late).
    pub(super) fn new(slot_ms: u64) -> Deadlines {
        Deadlines {
            slot_ms: slot_ms.max(1),
            slots: BTreeMap::new(),
        }
    }

    /// Looks at `presence` once `due_ms` has passed.
    pub(super) fn watch(&mut self, due_ms: u64, presence: Weak<Presence>) {
        let slot = due_ms.div_ceil(self.slot_ms);
        self.slots.entry(slot).or_default().push(presence);
    }

    /// Every connection whose slot has passed at `now_ms`, taken out.
    pub(super) fn take_due(&mut self, now_ms: u64) -> Vec<Weak<Presence>> {
        let mut due = Vec::new();
        while let Some(entry) = self.slots.first_entry() {
            if entry.key().saturating_mul(self.slot_ms) > now_ms {
                break;
            }
            due.append(&mut entry.remove());
        }
        due
    }

    /// Connections watched (gone ones included until their slot passes).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ingress::table::tests::presence;

    #[test]
    fn a_connection_is_due_once_its_slot_has_passed() {
        let mut d = Deadlines::new(250);
        let a = presence("t", "a");
        let b = presence("t", "b");
        d.watch(1_000, Arc::downgrade(&a));
        d.watch(1_001, Arc::downgrade(&b));
        assert!(d.take_due(999).is_empty());
        let due = d.take_due(1_000);
        assert_eq!(due.len(), 1);
        assert!(Arc::ptr_eq(&due[0].upgrade().unwrap(), &a));
        // 1 001 is in the slot that ends at 1 250.
        assert!(d.take_due(1_249).is_empty());
        assert_eq!(d.take_due(1_250).len(), 1);
        assert_eq!(d.len(), 0);
    }
}
