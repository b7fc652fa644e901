//! The registry's live picture: which devices exist (dense index over device
//! ids), their attributes as small codes, their session state, the gateways
//! that connect them, and per day the exact set of devices that reported.
//!
//! Memory per device is its id once in an arena plus about 13 bytes of
//! index ([`ids`]) and one [`Slot`] of 40 bytes in a paged array
//! ([`paged`]); names, types, attributes and tag names stay in the store. Per-day distinct sets
//! are roaring bitmaps over the dense indexes (about one bit per reporting
//! device and day when dense). Only the committer mutates devices and days of
//! a [`Counters`]; every such change also updates its [`ReadModel`], so the
//! HTTP side reads figures under a shared lock held for O(gateways × cells),
//! never a pass over the devices.

mod ids;
mod paged;

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;

use fieldlink_model::{Category, Cloud, Day, Protocol, UtcOffset};
use roaring::RoaringBitmap;
use tokio_util::sync::CancellationToken;

use crate::read_model::ReadModel;
use crate::store::{DayDelta, DeviceRecord, DeviceStatusRecord};
use crate::tally::Tally;
use ids::DeviceIds;
use paged::PagedVec;

/// A device's attributes and state, packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Category (the class follows from it).
    pub category: Category,
    /// Protocol.
    pub protocol: Protocol,
    /// Cloud of its tenant.
    pub cloud: Cloud,
    /// Online as last reported by its gateway.
    pub online: bool,
    /// Taken out of service.
    pub retired: bool,
    /// Interned tenant.
    pub tenant: u16,
    /// Interned gateway.
    pub gateway: u32,
    /// Entries of its announced tag table: its points' tag ids are below.
    pub tags: u32,
    /// First heard of (ns).
    pub first_seen: i64,
    /// Latest accepted point time (ns), 0 for none.
    pub last_point: i64,
    /// Time of the latest status change (ns), 0 for none.
    pub status_time: i64,
}

impl Slot {
    /// Latest sign of life: a point or a status change.
    pub fn last_seen(&self) -> i64 {
        self.last_point.max(self.status_time)
    }
}

/// One gateway's live sessions.
#[derive(Debug)]
pub struct GatewayState {
    /// Interned tenant.
    pub tenant: u16,
    /// Gateway id.
    pub id: String,
    /// Streams open now.
    pub sessions: u32,
    /// When its last stream ended (or the registry started), ns.
    pub disconnected_at: i64,
    /// Software version from its hello.
    pub version: String,
    /// Protocols it has drivers for, from its hello.
    pub protocols: BTreeSet<Protocol>,
}

impl GatewayState {
    /// True while it has a stream, or lost it less than `grace` ago.
    pub fn is_live(&self, now: i64, grace_nanos: i64) -> bool {
        self.sessions > 0 || now.saturating_sub(self.disconnected_at) <= grace_nanos
    }
}

/// The exact set of devices that reported on one day.
#[derive(Debug, Default, Clone)]
pub struct DaySet {
    /// Dense indexes of the devices.
    pub devices: RoaringBitmap,
    /// How many (roaring's `len` is not O(1)).
    pub count: u64,
}

/// Interns short strings (tenants, gateways) to small integers.
#[derive(Debug, Default)]
struct Interner<K> {
    ids: HashMap<K, u32>,
}

impl<K: std::hash::Hash + Eq + Clone> Interner<K> {
    fn get(&self, key: &K) -> Option<u32> {
        self.ids.get(key).copied()
    }

    fn intern(&mut self, key: &K, next: u32) -> (u32, bool) {
        match self.ids.get(key) {
            Some(id) => (*id, false),
            None => {
                self.ids.insert(key.clone(), next);
                (next, true)
            }
        }
    }
}

/// The live registry state.
#[derive(Debug)]
pub struct Counters {
    ids: DeviceIds,
    slots: PagedVec<Slot>,
    tenant_names: Vec<String>,
    tenant_ids: Interner<String>,
    gateways: Vec<GatewayState>,
    gateway_ids: Interner<(u16, String)>,
    days: BTreeMap<Day, DaySet>,
    model: ReadModel,
    streams: HashMap<String, u64>,
    stream_sessions: HashMap<String, (u64, CancellationToken)>,
    session_generation: u64,
    /// Registry time zone.
    pub offset: UtcOffset,
    /// Grace period of dropped gateways, ns.
    pub grace_nanos: i64,
    /// When the registry started, ns.
    pub started_at: i64,
}

impl Counters {
    /// An empty state.
    pub fn new(offset: UtcOffset, grace_nanos: i64, now: i64) -> Self {
        Counters {
            ids: DeviceIds::default(),
            slots: PagedVec::default(),
            tenant_names: Vec::new(),
            tenant_ids: Interner::default(),
            gateways: Vec::new(),
            gateway_ids: Interner::default(),
            days: BTreeMap::new(),
            model: ReadModel::default(),
            streams: HashMap::default(),
            stream_sessions: HashMap::default(),
            session_generation: 0,
            offset,
            grace_nanos,
            started_at: now,
        }
    }

    /// Number of device indexes in use (retired included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no device was ever announced.
    pub fn is_empty(&self) -> bool {
        self.slots.len() == 0
    }

    /// The index of a device id.
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.ids.get(id)
    }

    /// The id of an index.
    pub fn id_of(&self, index: u32) -> Option<&str> {
        self.ids.id(index)
    }

    /// The slot of an index.
    pub fn slot(&self, index: u32) -> Option<&Slot> {
        self.slots.get(index as usize)
    }

    /// Every slot, by index.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    /// The next index a new device gets.
    pub fn next_index(&self) -> u32 {
        // The committer refuses to grow past u32::MAX devices.
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// Interned id of a tenant name (interning it).
    pub fn tenant(&mut self, name: &str) -> u16 {
        let next = u32::try_from(self.tenant_names.len()).unwrap_or(u32::MAX);
        let (id, new) = self.tenant_ids.intern(&name.to_owned(), next);
        if new {
            self.tenant_names.push(name.to_owned());
        }
        u16::try_from(id).unwrap_or(u16::MAX)
    }

    /// Interned id of a tenant name, if known.
    pub fn tenant_id(&self, name: &str) -> Option<u16> {
        self.tenant_ids
            .get(&name.to_owned())
            .and_then(|id| u16::try_from(id).ok())
    }

    /// Name of an interned tenant.
    pub fn tenant_name(&self, id: u16) -> &str {
        self.tenant_names
            .get(usize::from(id))
            .map_or("", String::as_str)
    }

    /// Every tenant name, by interned id.
    pub fn tenant_names(&self) -> &[String] {
        &self.tenant_names
    }

    /// Interned id of a gateway (interning it).
    pub fn gateway(&mut self, tenant: u16, id: &str, now: i64) -> u32 {
        let next = u32::try_from(self.gateways.len()).unwrap_or(u32::MAX);
        let (index, new) = self.gateway_ids.intern(&(tenant, id.to_owned()), next);
        if new {
            self.gateways.push(GatewayState {
                tenant,
                id: id.to_owned(),
                sessions: 0,
                disconnected_at: now,
                version: String::new(),
                protocols: BTreeSet::new(),
            });
        }
        index
    }

    /// Interned id of a gateway, if known.
    pub fn gateway_id(&self, tenant: u16, id: &str) -> Option<u32> {
        self.gateway_ids.get(&(tenant, id.to_owned()))
    }

    /// The state of an interned gateway.
    pub fn gateway_state(&self, index: u32) -> Option<&GatewayState> {
        self.gateways.get(index as usize)
    }

    /// All gateways.
    pub fn gateways(&self) -> &[GatewayState] {
        &self.gateways
    }

    /// A gateway stream starts. A gateway may hold several streams at once
    /// (live data and a replayed backlog); a new session of the same stream
    /// key cancels the old one. Returns the session's generation and the
    /// token that cancels it.
    pub fn session_start(
        &mut self,
        gateway: u32,
        stream_key: &str,
        version: &str,
        protocols: BTreeSet<Protocol>,
    ) -> (u64, CancellationToken) {
        let token = CancellationToken::new();
        self.session_generation += 1;
        let generation = self.session_generation;
        if let Some((_, old)) = self
            .stream_sessions
            .insert(stream_key.to_owned(), (generation, token.clone()))
        {
            old.cancel();
        }
        let state = &mut self.gateways[gateway as usize];
        state.sessions += 1;
        state.version = version.to_owned();
        state.protocols = protocols;
        (generation, token)
    }

    /// A gateway stream ended at `now`.
    pub fn session_end(&mut self, gateway: u32, stream_key: &str, generation: u64, now: i64) {
        let state = &mut self.gateways[gateway as usize];
        state.sessions = state.sessions.saturating_sub(1);
        if state.sessions == 0 {
            state.disconnected_at = now;
        }
        if self
            .stream_sessions
            .get(stream_key)
            .is_some_and(|(g, _)| *g == generation)
        {
            self.stream_sessions.remove(stream_key);
        }
    }

    /// Whether the device at `index` counts as online at `now`.
    pub fn is_online(&self, slot: &Slot, now: i64) -> bool {
        slot.online
            && !slot.retired
            && self
                .gateways
                .get(slot.gateway as usize)
                .is_some_and(|g| g.is_live(now, self.grace_nanos))
    }

    /// Adds a new device; its index must be [`Counters::next_index`].
    pub fn push_device(&mut self, id: &str, slot: Slot) -> u32 {
        let index = self.next_index();
        self.ids.insert(id, Some(index));
        // No day set holds an index without a slot (see `mark_reported`).
        self.model.add_slot(&slot);
        self.slots.push(slot);
        index
    }

    /// Replaces the slot of an existing device.
    pub fn set_slot(&mut self, index: u32, slot: Slot) {
        if let Some(s) = self.slots.get_mut(index as usize) {
            self.model.change_slot(index, s, &slot, &self.days);
            *s = slot;
        }
    }

    /// Records that device `delta.index` reported on `delta.day`; true when
    /// it is the device's first report that day. A report of an index
    /// without a device is ignored (false).
    pub fn mark_reported(&mut self, delta: &DayDelta) -> bool {
        let Some(slot) = self.slots.get_mut(delta.index as usize) else {
            return false;
        };
        slot.last_point = slot.last_point.max(delta.stats.last);
        let set = self.days.entry(delta.day).or_default();
        let new = set.devices.insert(delta.index);
        set.count += u64::from(new);
        if new {
            self.model.first_report(delta.day, slot);
        }
        new
    }

    /// The figures of `day` as of `now`, from the read model: O(gateways ×
    /// cells in use).
    pub fn figures(&self, day: Day, now: i64) -> Tally {
        self.model.tally(day, now, &self.gateways, self.grace_nanos)
    }

    /// The devices that reported on `day`.
    pub fn day(&self, day: Day) -> Option<&DaySet> {
        self.days.get(&day)
    }

    /// Days with any report, oldest first.
    pub fn days(&self) -> impl Iterator<Item = (&Day, &DaySet)> {
        self.days.iter()
    }

    /// Forgets the per-day sets of days before `day`.
    pub fn prune_days_before(&mut self, day: Day) {
        self.days = self.days.split_off(&day);
        self.model.prune_days_before(day);
    }

    /// The highest durable sequence of a stream.
    pub fn stream_sequence(&self, key: &str) -> u64 {
        self.streams.get(key).copied().unwrap_or(0)
    }

    /// Records a stream's highest durable sequence.
    pub fn set_stream_sequence(&mut self, key: &str, sequence: u64) {
        match self.streams.get_mut(key) {
            Some(s) => *s = (*s).max(sequence),
            None => {
                self.streams.insert(key.to_owned(), sequence);
            }
        }
    }

    /// Loads one stored device (at start-up).
    pub fn load_device(&mut self, record: &DeviceRecord, now: i64) {
        let tenant = self.tenant(&record.tenant);
        let gateway = self.gateway(tenant, &record.gateway_id, now);
        let index = record.index as usize;
        while self.slots.len() <= index {
            // Holes (never expected) stay retired placeholders.
            let placeholder = placeholder_slot();
            self.model.add_slot(&placeholder);
            self.slots.push(placeholder);
        }
        let slot = Slot {
            category: record.category,
            protocol: record.protocol,
            cloud: record.cloud,
            online: false,
            retired: record.retired,
            tenant,
            gateway,
            tags: record.tags,
            first_seen: record.first_seen,
            last_point: 0,
            status_time: 0,
        };
        self.set_slot(record.index, slot);
        self.ids.insert(&record.id, Some(record.index));
    }

    /// Loads one stored status (at start-up).
    pub fn load_status(&mut self, index: u32, status: &DeviceStatusRecord) {
        if let Some(mut slot) = self.slot(index).copied() {
            slot.online = status.online;
            slot.status_time = status.time;
            self.set_slot(index, slot);
        }
    }
}

fn placeholder_slot() -> Slot {
    Slot {
        category: Category::Safety,
        protocol: Protocol::ModbusTcp,
        cloud: Cloud::Private,
        online: false,
        retired: true,
        tenant: u16::MAX,
        gateway: u32::MAX,
        tags: 0,
        first_seen: 0,
        last_point: 0,
        status_time: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DayStats;

    fn slot(gateway: u32) -> Slot {
        Slot {
            category: Category::MachineTools,
            protocol: Protocol::ModbusTcp,
            cloud: Cloud::Public,
            online: true,
            retired: false,
            tenant: 0,
            gateway,
            tags: 1,
            first_seen: 1,
            last_point: 0,
            status_time: 0,
        }
    }

    #[test]
    fn a_device_counts_once_per_day() {
        let mut c = Counters::new(UtcOffset::CHINA, 0, 0);
        let index = c.push_device("d1", slot(0));
        let delta = |day, t| DayDelta {
            day: Day(day),
            index,
            stats: DayStats::point(t),
        };
        assert!(c.mark_reported(&delta(10, 5)));
        assert!(!c.mark_reported(&delta(10, 9)));
        assert!(c.mark_reported(&delta(11, 7)));
        assert_eq!(c.day(Day(10)).unwrap().count, 1);
        assert_eq!(c.day(Day(11)).unwrap().count, 1);
        assert_eq!(c.slot(index).unwrap().last_point, 9);
        c.prune_days_before(Day(11));
        assert!(c.day(Day(10)).is_none());
    }

    #[test]
    fn online_needs_a_live_gateway_within_grace() {
        let grace = 1_000;
        let mut c = Counters::new(UtcOffset::CHINA, grace, 0);
        let t = c.tenant("t");
        let g = c.gateway(t, "gw", 0);
        let s = slot(g);
        // Just started: within the grace period of the start.
        assert!(c.is_online(&s, 500));
        assert!(!c.is_online(&s, 1_500));
        let (generation, token) = c.session_start(g, "k", "1.0", BTreeSet::new());
        assert!(c.is_online(&s, 10_000));
        // A second session of the same stream cancels the first; another
        // stream of the same gateway (a replay) does not.
        let (replay, replay_token) = c.session_start(g, "k2", "1.0", BTreeSet::new());
        let (second, _) = c.session_start(g, "k", "1.0", BTreeSet::new());
        assert!(token.is_cancelled());
        assert!(!replay_token.is_cancelled());
        c.session_end(g, "k", generation, 10_000);
        c.session_end(g, "k2", replay, 10_000);
        assert!(c.is_online(&s, 50_000), "the newer session is still up");
        c.session_end(g, "k", second, 60_000);
        assert!(c.is_online(&s, 60_500));
        assert!(!c.is_online(&s, 61_001));
    }
}
