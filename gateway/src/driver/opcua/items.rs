//! The monitored items of one server and the subscriptions that carry them.
//!
//! Every tag of every device on a server is one [`Item`]; its client handle
//! is its index + 1, so a notification finds its device and tag without a
//! lookup table. [`ensure`] makes the server's subscriptions hold every item
//! that is not yet monitored: it fills subscriptions up to the server's
//! per-subscription limit, opens new ones when they are full, and creates
//! items in batches the server accepts (see [`super::batch`]). It is the one
//! path for the first subscription, for tags discovered at run time and for
//! repairing what a reconnect could not transfer or re-create.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore, Session};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeNotification, DataChangeTrigger, DataValue,
    DeadbandType, ExtensionObject, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, NotificationMessage, QualifiedName, ReadValueId,
    StatusChangeNotification, StatusCode, TimestampsToReturn, match_extension_object_owned,
};
use tokio::sync::mpsc;

use super::batch::{Batch, is_too_large};
use super::config::{DeadbandKind, ItemSettings};
use crate::device::{TagId, ValueKind};

/// Most notifications asked for in one publish response (keeps responses
/// under common message size limits).
pub const MAX_NOTIFICATIONS_PER_PUBLISH: u32 = 4000;

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    /// Not monitored yet (or the session that monitored it is gone).
    Pending,
    /// Monitored (or polled).
    Active,
    /// The server refused it (unknown node, not readable, ...); retried on
    /// the next session.
    Failed(StatusCode),
}

/// What the last value of an item said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Nothing heard since the session came up.
    Unknown,
    /// A good or uncertain value.
    Good,
    /// A bad status.
    Bad,
}

/// One tag of one device on the server.
#[derive(Debug, Clone)]
pub struct Item {
    /// Index of its device in the server's device list.
    pub device: usize,
    /// Its tag id.
    pub tag: TagId,
    /// The kind of value the tag carries.
    pub kind: ValueKind,
    /// The variable.
    pub node: NodeId,
    /// Sampling, queue, deadband.
    pub settings: ItemSettings,
    /// Monitored or not.
    pub state: ItemState,
    /// Last value's health.
    pub health: Health,
}

/// The items of a server, by client handle − 1.
#[derive(Debug, Default)]
pub struct Items {
    items: Vec<Item>,
}

impl Items {
    /// Adds an item; returns its client handle.
    pub fn push(&mut self, item: Item) -> u32 {
        self.items.push(item);
        // Bounded by the gateway's device and tag limits.
        self.items.len() as u32
    }

    /// The item of client handle `handle`.
    pub fn get_mut(&mut self, handle: u32) -> Option<&mut Item> {
        self.items.get_mut((handle as usize).checked_sub(1)?)
    }

    /// Every item with its handle.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Item)> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, it)| (i as u32 + 1, it))
    }

    /// Every item, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Item> {
        self.items.iter_mut()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True without items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What a subscription hands the server task: the data changes of one
/// notification message, or a change of the subscription's state.
#[derive(Debug)]
pub enum Note {
    /// `(client handle, value)` of one publish response.
    Changes(Vec<(u32, DataValue)>),
    /// The server changed the subscription's state (e.g. it timed out).
    Status(StatusCode),
}

/// Receives the notifications of a subscription (inside the session's
/// event loop, which must not block) and forwards them to the server task.
#[derive(Debug)]
pub struct Forwarder {
    tx: mpsc::UnboundedSender<Note>,
}

impl Forwarder {
    /// A forwarder into `tx`.
    pub fn new(tx: mpsc::UnboundedSender<Note>) -> Forwarder {
        Forwarder { tx }
    }
}

impl OnSubscriptionNotificationCore for Forwarder {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        let Some(data) = notification.notification_data else {
            return;
        };
        for obj in data {
            match_extension_object_owned!(obj,
                v: DataChangeNotification => {
                    let changes: Vec<(u32, DataValue)> = v
                        .monitored_items
                        .into_iter()
                        .flatten()
                        .map(|n| (n.client_handle, n.value))
                        .collect();
                    let _ = self.tx.send(Note::Changes(changes));
                },
                v: StatusChangeNotification => {
                    let _ = self.tx.send(Note::Status(v.status));
                }
            )
        }
    }
}

/// How items are created on a server.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Publishing interval of new subscriptions.
    pub publishing_interval: Duration,
    /// Most items per subscription (`usize::MAX`: no limit).
    pub per_subscription: usize,
    /// Most subscriptions in the session.
    pub max_subscriptions: usize,
}

/// What [`ensure`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Items created.
    pub created: usize,
    /// Items the server refused.
    pub refused: usize,
    /// Calls made.
    pub calls: u64,
    /// Subscriptions created.
    pub subscriptions: usize,
}

/// Why subscriptions cannot be used on a server.
#[derive(Debug)]
pub enum EnsureError {
    /// The server does not do subscriptions (fall back to polling).
    Unsupported(StatusCode),
    /// The call failed (the session is probably gone).
    Failed(opcua::types::Error),
}

fn filter(deadband: DeadbandKind) -> ExtensionObject {
    let (deadband_type, deadband_value) = match deadband {
        DeadbandKind::None => return ExtensionObject::null(),
        DeadbandKind::Absolute(v) => (DeadbandType::Absolute, v),
        DeadbandKind::Percent(p) => (DeadbandType::Percent, p),
    };
    ExtensionObject::from_message(DataChangeFilter {
        trigger: DataChangeTrigger::StatusValue,
        deadband_type: deadband_type as u32,
        deadband_value,
    })
}

/// The create request of item `handle`.
pub fn request(handle: u32, item: &Item) -> MonitoredItemCreateRequest {
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId {
            node_id: item.node.clone(),
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            data_encoding: QualifiedName::null(),
        },
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: handle,
            sampling_interval: item.settings.sampling_interval.as_secs_f64() * 1000.0,
            filter: filter(item.settings.deadband),
            queue_size: item.settings.queue_size,
            discard_oldest: true,
        },
    }
}

/// The subscriptions of the session and how many items each holds, and
/// the client handles already monitored.
fn current(session: &Session) -> (Vec<(u32, usize)>, HashSet<u32>) {
    let state = session.subscription_state().lock();
    let mut subs = Vec::new();
    let mut handles = HashSet::new();
    for id in state.subscription_ids().unwrap_or_default() {
        if let Some(sub) = state.get(id) {
            let mut n = 0;
            for item in sub.monitored_items() {
                handles.insert(item.client_handle());
                n += 1;
            }
            subs.push((id, n));
        }
    }
    (subs, handles)
}

/// After a new session: asks the server to transfer the old session's
/// subscriptions; those it does not keep are dropped from the session's
/// state (their items are then re-created by [`ensure`]). Returns how many
/// were transferred and how many dropped.
pub async fn transfer(session: &Session) -> (usize, usize) {
    let ids = session
        .subscription_state()
        .lock()
        .subscription_ids()
        .unwrap_or_default();
    if ids.is_empty() {
        return (0, 0);
    }
    let lost: Vec<u32> = match session.transfer_subscriptions(&ids, true).await {
        Ok(results) => ids
            .iter()
            .zip(
                results
                    .iter()
                    .map(|r| r.status_code)
                    .chain(std::iter::repeat(StatusCode::BadUnexpectedError)),
            )
            .filter(|(_, s)| !s.is_good())
            .map(|(id, _)| *id)
            .collect(),
        Err(_) => ids.clone(),
    };
    if !lost.is_empty() {
        // The server answers each with BadSubscriptionIdInvalid; the call
        // also forgets them locally.
        let _ = session.delete_subscriptions(&lost).await;
    }
    (ids.len() - lost.len(), lost.len())
}

/// Makes every pending item (and every active one the session lost) a
/// monitored item. Items the server refuses are marked failed.
///
/// # Errors
/// [`EnsureError::Unsupported`] when the server refuses subscriptions;
/// [`EnsureError::Failed`] when a call fails otherwise.
pub async fn ensure(
    session: &Arc<Session>,
    items: &mut Items,
    plan: Plan,
    batch: &mut Batch,
    notes: &mpsc::UnboundedSender<Note>,
) -> Result<Outcome, EnsureError> {
    let (mut subs, monitored) = current(session);
    let mut outcome = Outcome::default();
    let mut missing: Vec<u32> = Vec::new();
    for (handle, item) in items.iter() {
        match item.state {
            ItemState::Failed(_) => {}
            ItemState::Active if monitored.contains(&handle) => {}
            _ => missing.push(handle),
        }
    }
    let mut next = 0;
    while next < missing.len() {
        let slot = match subs.iter().position(|(_, n)| *n < plan.per_subscription) {
            Some(i) => i,
            None => {
                if subs.len() >= plan.max_subscriptions {
                    return Err(EnsureError::Unsupported(
                        StatusCode::BadTooManySubscriptions,
                    ));
                }
                outcome.calls += 1;
                let id = session
                    .create_subscription(
                        plan.publishing_interval,
                        60,
                        10,
                        MAX_NOTIFICATIONS_PER_PUBLISH,
                        0,
                        true,
                        Forwarder::new(notes.clone()),
                    )
                    .await
                    .map_err(|e| match e.status() {
                        s @ (StatusCode::BadServiceUnsupported
                        | StatusCode::BadTooManySubscriptions
                        | StatusCode::BadNotSupported) => EnsureError::Unsupported(s),
                        _ => EnsureError::Failed(e),
                    })?;
                outcome.subscriptions += 1;
                subs.push((id, 0));
                subs.len() - 1
            }
        };
        let (sub_id, held) = subs[slot];
        let take = (plan.per_subscription - held)
            .min(batch.size())
            .min(missing.len() - next);
        let chunk: Vec<u32> = missing[next..next + take].to_vec();
        let requests: Vec<MonitoredItemCreateRequest> = chunk
            .iter()
            .filter_map(|&h| items.get_mut(h).map(|it| request(h, it)))
            .collect();
        outcome.calls += 1;
        match session
            .create_monitored_items(sub_id, TimestampsToReturn::Both, requests)
            .await
        {
            Ok(results) if results.len() == chunk.len() => {
                let mut full = false;
                for (&handle, created) in chunk.iter().zip(results) {
                    let Some(item) = items.get_mut(handle) else {
                        continue;
                    };
                    let status = created.result.status_code;
                    if status.is_good() {
                        item.state = ItemState::Active;
                        outcome.created += 1;
                        subs[slot].1 += 1;
                    } else if status == StatusCode::BadTooManyMonitoredItems {
                        // The subscription is full: this one goes elsewhere.
                        full = true;
                        missing.push(handle);
                    } else {
                        item.state = ItemState::Failed(status);
                        outcome.refused += 1;
                    }
                }
                if full {
                    subs[slot].1 = plan.per_subscription;
                }
                next += take;
            }
            Ok(results) => {
                return Err(EnsureError::Failed(opcua::types::Error::new(
                    StatusCode::BadUnexpectedError,
                    format!(
                        "the server answered {} results for {} monitored items",
                        results.len(),
                        chunk.len()
                    ),
                )));
            }
            // The subscription holds what the server allows: use another.
            Err(e) if e.status() == StatusCode::BadTooManyMonitoredItems => {
                subs[slot].1 = plan.per_subscription;
            }
            Err(e) if is_too_large(e.status()) && batch.halve() => {
                tracing::debug!(
                    status = %e.status(),
                    batch = batch.size(),
                    "server refused a create call as too large; halving the batch"
                );
            }
            Err(e) => return Err(EnsureError::Failed(e)),
        }
    }
    Ok(outcome)
}
