//! The session table: one live connection per (tenant, client id), each
//! entry only a pointer to the connection's [`Presence`], which holds its
//! own key (a map from a copied key would cost twice the pointer's room
//! per connection).

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use super::Presence;

/// Connected clients by (tenant, client id).
#[derive(Debug, Default)]
pub(super) struct SessionTable {
    hasher: std::collections::hash_map::RandomState,
    table: HashTable<Arc<Presence>>,
}

/// The key of a presence: (tenant, client id).
fn key(p: &Presence) -> (&str, &str) {
    (p.info.tenant.as_deref().unwrap_or(""), &p.info.client_id)
}

impl SessionTable {
    fn hash(&self, p: &Presence) -> u64 {
        self.hasher.hash_one(key(p))
    }

    /// The connection holding `p`'s (tenant, client id), if any.
    pub(super) fn holder(&self, p: &Presence) -> Option<&Arc<Presence>> {
        let wanted = key(p);
        self.table.find(self.hash(p), |e| key(e) == wanted)
    }

    /// The connection holding (`tenant`, `client_id`), if any.
    pub(super) fn find(&self, tenant: &str, client_id: &str) -> Option<&Arc<Presence>> {
        let wanted = (tenant, client_id);
        self.table
            .find(self.hasher.hash_one(wanted), |e| key(e) == wanted)
    }

    /// Puts `p` in; its key must be free ([`SessionTable::holder`] is `None`).
    pub(super) fn insert(&mut self, p: Arc<Presence>) {
        let hash = self.hash(&p);
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, p, |e| hasher.hash_one(key(e)));
    }

    /// Takes `p` out if it (not a successor) holds its key.
    pub(super) fn remove(&mut self, p: &Arc<Presence>) {
        if let Ok(entry) = self.table.find_entry(self.hash(p), |e| Arc::ptr_eq(e, p)) {
            entry.remove();
            if self.table.len() * 4 < self.table.capacity() && self.table.capacity() > 1024 {
                // Gives back room after a mass disconnect.
                let hasher = &self.hasher;
                self.table.shrink_to_fit(|e| hasher.hash_one(key(e)));
            }
        }
    }

    /// Every connected client.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<Presence>> {
        self.table.iter()
    }

    /// How many clients are connected.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};

    use fieldlink_model::mqtt::ClientInfo;

    use super::*;

    /// A presence with no socket, for tests of the shard's tables.
    pub(in crate::ingress) fn presence(tenant: &str, client_id: &str) -> Arc<Presence> {
        Arc::new(Presence {
            info: ClientInfo {
                client_id: Arc::from(client_id),
                username: None,
                tenant: Some(Arc::from(tenant)),
                time_unix_nano: 0,
            },
            fd: -1,
            why: AtomicU8::new(0),
            last_read_ms: AtomicU64::new(0),
            silence_ms: 0,
            announced: AtomicBool::new(false),
        })
    }

    #[test]
    fn one_holder_per_tenant_and_client_id_and_only_it_is_removed() {
        let mut table = SessionTable::default();
        let first = presence("acme", "dev-1");
        table.insert(first.clone());
        table.insert(presence("other", "dev-1"));
        assert_eq!(table.len(), 2);
        let successor = presence("acme", "dev-1");
        let held = table.holder(&successor).expect("dev-1 of acme is held");
        assert!(Arc::ptr_eq(held, &first));
        // A successor that does not hold the key removes nothing.
        table.remove(&successor);
        assert_eq!(table.len(), 2);
        table.remove(&first);
        assert_eq!(table.len(), 1);
        assert!(table.holder(&successor).is_none());
        assert!(table.holder(&presence("other", "dev-1")).is_some());
        assert!(table.find("other", "dev-1").is_some());
        assert!(table.find("acme", "dev-1").is_none());
        assert!(table.find("other", "dev-2").is_none());
    }

    #[test]
    fn room_is_given_back_after_a_mass_disconnect() {
        let mut table = SessionTable::default();
        let all: Vec<_> = (0..10_000)
            .map(|i| presence("acme", &format!("dev-{i}")))
            .collect();
        for p in &all {
            table.insert(p.clone());
        }
        let full = table.table.capacity();
        for p in &all[100..] {
            table.remove(p);
        }
        assert_eq!(table.len(), 100);
        assert!(
            table.table.capacity() < full / 4,
            "{}",
            table.table.capacity()
        );
        for p in &all[..100] {
            assert!(table.holder(p).is_some_and(|h| Arc::ptr_eq(h, p)));
        }
    }
}
