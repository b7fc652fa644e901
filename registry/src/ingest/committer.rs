//! The committer: one thread that turns checked batches from every stream
//! into group commits, then updates the live counters and acknowledges.
//!
//! Per round it takes every batch waiting (up to `commit_max_batches`), plans
//! the changes against the live state without touching it, makes the plan
//! durable in one store commit, and only then applies it and sends the acks.
//! A batch whose sequence is not above its stream's durable sequence is a
//! replay: acknowledged again, never applied twice. If the commit fails,
//! nothing is applied and nothing acknowledged; the streams are ended so
//! their gateways replay later.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;
use std::time::Instant;

use fieldlink_model::Cloud;
use fieldlink_model::proto::{
    self, Ack, RegistryMessage, RejectReason, Rejection, registry_message::Body,
};
use fieldlink_model::{Day, now_unix_nanos};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tonic::Status;

use super::prepare::Checked;
use crate::Shared;
use crate::counters::{Counters, Slot};
use crate::store::{Commit, DayDelta, DayStats, DeviceRecord, DeviceStatusRecord};

/// Where a stream's answers go, and who it is.
#[derive(Debug)]
pub(crate) struct StreamCtx {
    /// Durable-sequence key: tenant, gateway id and stream id.
    pub(crate) key: String,
    pub(crate) tenant: u16,
    pub(crate) tenant_name: String,
    pub(crate) cloud: Cloud,
    pub(crate) gateway: u32,
    pub(crate) gateway_id: String,
    pub(crate) responder: mpsc::UnboundedSender<Outbound>,
}

/// A message for the gateway, with the in-flight permit it releases once it
/// is handed to the transport.
pub(crate) type Outbound = (
    Result<RegistryMessage, Status>,
    Option<OwnedSemaphorePermit>,
);

/// A checked batch waiting for the committer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) stream: Arc<StreamCtx>,
    pub(crate) sequence: u64,
    pub(crate) checked: Checked,
    /// Released once the ack is sent: bounds a stream's batches in flight.
    pub(crate) permit: OwnedSemaphorePermit,
}

impl Pending {
    /// Rows the batch can write: bounds the size of a commit round.
    fn weight(&self) -> usize {
        let c = &self.checked;
        c.announces.len()
            + c.statuses.len()
            + c.retires.len()
            + c.telemetry.iter().map(|t| c.days(t).len()).sum::<usize>()
    }
}

/// Runs until every sender is gone. Blocks: run it on its own thread.
///
/// A round takes the waiting batches in arrival order up to
/// `commit_max_batches` batches and `commit_max_items` rows (announces,
/// statuses, device-days), so a mass announce cannot make one huge round
/// that holds every other stream's acks for seconds.
pub(crate) fn run(mut rx: mpsc::Receiver<Pending>, shared: Arc<Shared>) {
    let max_batches = shared.settings.commit_max_batches;
    let max_items = shared.settings.commit_max_items;
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let mut round = Vec::with_capacity(max_batches.min(4096));
    loop {
        if waiting.is_empty() {
            match rx.blocking_recv() {
                Some(pending) => waiting.push_back(pending),
                None => return,
            }
        }
        while waiting.len() < max_batches {
            match rx.try_recv() {
                Ok(pending) => waiting.push_back(pending),
                Err(_) => break,
            }
        }
        let mut items = 0;
        while let Some(next) = waiting.front() {
            let weight = next.weight();
            let full = round.len() >= max_batches || items + weight > max_items;
            if full && !round.is_empty() {
                break;
            }
            items += weight;
            if let Some(pending) = waiting.pop_front() {
                round.push(pending);
            }
        }
        commit_round(&shared, &mut round);
        round.clear();
    }
}

/// Plans, commits, applies and acknowledges one round of batches.
pub(super) fn commit_round(shared: &Shared, round: &mut Vec<Pending>) {
    let now = now_unix_nanos();
    let plan = {
        let counters = shared.read_counters();
        let mut planner = Planner::new(&counters, shared, now);
        for pending in round.iter_mut() {
            planner.add(pending);
        }
        planner.finish()
    };
    let started = Instant::now();
    let result = if plan.commit.is_empty() {
        Ok(())
    } else {
        shared.store.commit(&plan.commit)
    };
    match result {
        Ok(()) => {
            if !plan.commit.is_empty() {
                shared
                    .metrics
                    .observe_commit(started.elapsed().as_secs_f64());
            }
            {
                let mut counters = shared.write_counters();
                plan.apply(&mut counters);
            }
            plan.count(shared);
            for (pending, ack) in round.drain(..).zip(plan.acks) {
                // Closed only when the stream is gone: then nobody waits.
                let ack = Ok(RegistryMessage {
                    body: Some(Body::Ack(ack)),
                });
                let _ = pending.stream.responder.send((ack, Some(pending.permit)));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batches = round.len(), "group commit failed; nothing acknowledged");
            shared
                .metrics
                .commit_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for pending in round.drain(..) {
                let error = proto::Error {
                    code: proto::error::Code::Storage as i32,
                    message: format!("registry storage failed: {e}; retry later"),
                    sequence: pending.sequence,
                };
                let error = Ok(RegistryMessage {
                    body: Some(Body::Error(error)),
                });
                let _ = pending.stream.responder.send((error, None));
                let status = Err(Status::unavailable("registry storage failed"));
                let _ = pending
                    .stream
                    .responder
                    .send((status, Some(pending.permit)));
            }
        }
    }
}

/// The changes of one round, planned against the live state.
#[derive(Debug, Default)]
struct Plan {
    commit: Commit,
    /// New devices in index order.
    new_devices: Vec<(String, Slot)>,
    /// Changed slots of existing devices.
    changed: HashMap<u32, Slot>,
    acks: Vec<Ack>,
    applied: u64,
    duplicates: u64,
    accepted_points: u64,
    bad_quality_points: u64,
    rejected: Vec<(RejectReason, u64)>,
}

impl Plan {
    fn apply(&self, counters: &mut Counters) {
        for (id, slot) in &self.new_devices {
            counters.push_device(id, *slot);
        }
        // Only existing devices are here: changes to new ones were folded
        // into `new_devices` while planning.
        for (index, slot) in &self.changed {
            counters.set_slot(*index, *slot);
        }
        for delta in &self.commit.day_deltas {
            counters.mark_reported(delta);
        }
        for (key, sequence) in &self.commit.streams {
            counters.set_stream_sequence(key, *sequence);
        }
    }

    fn count(&self, shared: &Shared) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &shared.metrics;
        m.batches_applied.fetch_add(self.applied, Relaxed);
        m.batches_duplicate.fetch_add(self.duplicates, Relaxed);
        m.points_accepted.fetch_add(self.accepted_points, Relaxed);
        m.points_bad_quality
            .fetch_add(self.bad_quality_points, Relaxed);
        for (reason, n) in &self.rejected {
            m.reject(*reason, *n);
        }
    }
}

/// Builds a [`Plan`] batch by batch, seeing its own earlier changes.
struct Planner<'a> {
    counters: &'a Counters,
    shared: &'a Shared,
    now: i64,
    plan: Plan,
    new_ids: HashMap<String, u32>,
    sequences: HashMap<String, u64>,
    /// Every (day, index, stats) of the round in arrival order; sorted and
    /// merged per pair once, in [`Planner::finish`] (cheaper than a map
    /// entry per device and a sort of the map afterwards).
    deltas: Vec<(Day, u32, DayStats)>,
}

impl<'a> Planner<'a> {
    fn new(counters: &'a Counters, shared: &'a Shared, now: i64) -> Self {
        Planner {
            counters,
            shared,
            now,
            plan: Plan::default(),
            new_ids: HashMap::default(),
            sequences: HashMap::default(),
            deltas: Vec::new(),
        }
    }

    fn index_of(&self, id: &str) -> Option<u32> {
        self.new_ids
            .get(id)
            .copied()
            .or_else(|| self.counters.index_of(id))
    }

    fn slot(&self, index: u32) -> Option<Slot> {
        if let Some(slot) = self.plan.changed.get(&index) {
            return Some(*slot);
        }
        let existing = self.counters.len();
        match (index as usize).checked_sub(existing) {
            Some(new) => self.plan.new_devices.get(new).map(|(_, s)| *s),
            None => self.counters.slot(index).copied(),
        }
    }

    fn set_slot(&mut self, index: u32, slot: Slot) {
        let existing = self.counters.len();
        match (index as usize).checked_sub(existing) {
            Some(new) => {
                if let Some(entry) = self.plan.new_devices.get_mut(new) {
                    entry.1 = slot;
                }
            }
            None => {
                self.plan.changed.insert(index, slot);
            }
        }
    }

    fn add(&mut self, pending: &mut Pending) {
        let stream = pending.stream.clone();
        let durable = self
            .sequences
            .get(&stream.key)
            .copied()
            .unwrap_or_else(|| self.counters.stream_sequence(&stream.key));
        if pending.sequence <= durable {
            self.plan.duplicates += 1;
            self.plan.acks.push(Ack {
                sequence: pending.sequence,
                duplicate: true,
                ..Ack::default()
            });
            return;
        }
        self.sequences.insert(stream.key.clone(), pending.sequence);
        let mut checked = std::mem::take(&mut pending.checked);
        let mut ack = Ack {
            sequence: pending.sequence,
            rejected_points: checked.rejected_points,
            bad_quality_points: checked.bad_quality_points,
            rejections: std::mem::take(&mut checked.rejections),
            ..Ack::default()
        };
        for r in &ack.rejections {
            self.plan
                .rejected
                .push((r.reason(), u64::from(r.count.max(1))));
        }
        for a in std::mem::take(&mut checked.announces) {
            self.announce(&stream, a, &mut ack);
        }
        for s in std::mem::take(&mut checked.statuses) {
            self.status(&stream, s, &mut ack);
        }
        for (id, reason) in std::mem::take(&mut checked.retires) {
            self.retire(&stream, &id, &reason, &mut ack);
        }
        for t in &checked.telemetry {
            let id = checked.id(t);
            match self.own_device_at(&stream, id, t.index, &mut ack, t.points) {
                Some((_, slot)) if slot.retired => {
                    let detail = format!("device `{id}` is retired");
                    self.rejection(&mut ack, id, RejectReason::UnknownDevice, detail, t.points);
                }
                Some((_, slot)) if t.max_tag.is_some_and(|tag| tag >= slot.tags) => {
                    let detail = format!(
                        "{} point(s) of device `{id}` rejected: tag id {} is not in its announced table of {} tag(s)",
                        t.points,
                        t.max_tag.unwrap_or(0),
                        slot.tags
                    );
                    self.rejection(&mut ack, id, RejectReason::UnknownTag, detail, t.points);
                }
                Some((index, _)) => {
                    for (day, stats) in checked.days(t) {
                        self.deltas.push((*day, index, *stats));
                    }
                    ack.accepted_points += t.points;
                }
                None => {}
            }
        }
        self.plan.accepted_points += ack.accepted_points;
        self.plan.bad_quality_points += ack.bad_quality_points;
        self.plan.applied += 1;
        self.plan.acks.push(ack);
    }

    fn rejection(&mut self, ack: &mut Ack, id: &str, reason: RejectReason, detail: String, n: u64) {
        ack.rejections.push(Rejection {
            device_id: id.to_owned(),
            reason: reason as i32,
            detail,
            count: u32::try_from(n).unwrap_or(u32::MAX),
        });
        if matches!(
            reason,
            RejectReason::UnknownDevice | RejectReason::OtherTenant | RejectReason::UnknownTag
        ) {
            ack.rejected_points += n;
        }
        self.plan.rejected.push((reason, n));
    }

    /// The device if it exists and belongs to the stream's tenant; otherwise
    /// a rejection covering `n` points (or records) is added.
    fn own_device(
        &mut self,
        stream: &StreamCtx,
        id: &str,
        ack: &mut Ack,
        n: u64,
    ) -> Option<(u32, Slot)> {
        self.own_device_at(stream, id, None, ack, n)
    }

    /// [`Planner::own_device`] with the index already looked up, if it was
    /// (an id's index never changes once assigned).
    fn own_device_at(
        &mut self,
        stream: &StreamCtx,
        id: &str,
        hint: Option<u32>,
        ack: &mut Ack,
        n: u64,
    ) -> Option<(u32, Slot)> {
        let Some(index) = hint.or_else(|| self.index_of(id)) else {
            let detail = format!("device `{id}` was never announced");
            self.rejection(ack, id, RejectReason::UnknownDevice, detail, n);
            return None;
        };
        let slot = self.slot(index)?;
        if slot.tenant != stream.tenant {
            let detail = format!(
                "device `{id}` belongs to tenant `{}`",
                self.counters.tenant_name(slot.tenant)
            );
            self.rejection(ack, id, RejectReason::OtherTenant, detail, n);
            return None;
        }
        Some((index, slot))
    }

    fn announce(&mut self, stream: &StreamCtx, a: super::prepare::Announce, ack: &mut Ack) {
        let (index, first_seen) = match self.index_of(&a.id) {
            Some(_) => match self.own_device(stream, &a.id, ack, 1) {
                Some((index, slot)) => (index, slot.first_seen),
                None => return,
            },
            None => {
                let index = self.counters.next_index() + self.plan.new_devices.len() as u32;
                if index == u32::MAX {
                    let detail = "the registry holds the most devices it can index".to_owned();
                    self.rejection(ack, &a.id, RejectReason::UnknownDevice, detail, 1);
                    return;
                }
                self.new_ids.insert(a.id.clone(), index);
                let slot = Slot {
                    category: a.category,
                    protocol: a.protocol,
                    cloud: stream.cloud,
                    online: false,
                    retired: false,
                    tenant: stream.tenant,
                    gateway: stream.gateway,
                    tags: 0,
                    first_seen: self.now,
                    last_point: 0,
                    status_time: 0,
                };
                self.plan.new_devices.push((a.id.clone(), slot));
                (index, self.now)
            }
        };
        if let Some(mut slot) = self.slot(index) {
            slot.category = a.category;
            slot.protocol = a.protocol;
            slot.cloud = stream.cloud;
            slot.gateway = stream.gateway;
            slot.retired = false;
            // Tables only grow (ids stay stable); an older announce replayed
            // from a backlog must not shrink what points may use.
            slot.tags = slot.tags.max(a.tags);
            self.set_slot(index, slot);
        }
        let tags = self.slot(index).map_or(a.tags, |s| s.tags);
        self.plan.commit.devices.push(DeviceRecord {
            id: a.id,
            index,
            category: a.category,
            device_type: a.device_type,
            name: a.name,
            protocol: a.protocol,
            endpoint: a.endpoint,
            attributes: a.attributes,
            tenant: stream.tenant_name.clone(),
            cloud: stream.cloud,
            gateway_id: stream.gateway_id.clone(),
            first_seen,
            retired: false,
            tags,
        });
    }

    fn status(&mut self, stream: &StreamCtx, s: super::prepare::StatusChange, ack: &mut Ack) {
        let Some((index, mut slot)) = self.own_device(stream, &s.id, ack, 1) else {
            return;
        };
        if s.time < slot.status_time {
            return; // An older change than the one already known.
        }
        slot.online = s.online;
        slot.status_time = s.time;
        self.set_slot(index, slot);
        self.plan.commit.statuses.push((
            index,
            DeviceStatusRecord {
                online: s.online,
                time: s.time,
                reason: s.reason,
            },
        ));
    }

    fn retire(&mut self, stream: &StreamCtx, id: &str, reason: &str, ack: &mut Ack) {
        let Some((index, mut slot)) = self.own_device(stream, id, ack, 1) else {
            return;
        };
        let record = self
            .plan
            .commit
            .devices
            .iter()
            .rev()
            .find(|r| r.id == id)
            .cloned()
            .map(Ok)
            .or_else(|| self.shared.store.device(id).transpose());
        match record {
            Some(Ok(mut record)) => {
                record.retired = true;
                slot.retired = true;
                self.set_slot(index, slot);
                self.plan.commit.devices.push(record);
                tracing::info!(device = id, reason, "device retired");
            }
            Some(Err(e)) => {
                tracing::error!(device = id, error = %e, "cannot read device to retire it");
            }
            None => {}
        }
    }

    fn finish(mut self) -> Plan {
        let mut raw = std::mem::take(&mut self.deltas);
        // Merging is commutative: the order within a pair does not matter.
        raw.sort_unstable_by_key(|&(day, index, _)| (day, index));
        let mut deltas: Vec<DayDelta> = Vec::with_capacity(raw.len());
        for (day, index, stats) in raw {
            match deltas.last_mut() {
                Some(last) if last.day == day && last.index == index => last.stats.merge(&stats),
                _ => deltas.push(DayDelta { day, index, stats }),
            }
        }
        self.plan.commit.day_deltas = deltas;
        self.plan.commit.streams = self.sequences.into_iter().collect();
        self.plan
    }
}
