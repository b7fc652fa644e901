//! In-process links: the broker's events handed to the gateway's drivers in
//! the same process, and their publishes taken back into the broker.
//!
//! Every connection handler emits its client's `Connected`, `Publish` and
//! `Disconnected` events to each link whose tenant matches, in order. A full
//! link makes the publisher wait (its socket is not read meanwhile, so TCP
//! pushes back on the device): nothing is dropped while the broker runs. A
//! link whose receiver was dropped is forgotten.
//!
//! A new link first gets the state the broker holds, as a subscriber would:
//! a `Connected` event for every client of its tenant that is connected
//! now, then every retained message of its tenant (up to
//! [`MAX_RETAINED`] in the broker), so a driver that starts after its
//! devices still learns who is online and what registered. The snapshot and
//! the link's registration happen under one lock with the updates of that
//! state, so no event is seen twice or out of order.
//!
//! A link's `publish` side is one task with a router link of its own: each
//! [`OutgoingPublish`] is checked against the tenant's service ACL, goes
//! into the router (so MQTT subscribers get it) and to the other links.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use fieldlink_model::mqtt::{ClientInfo, MqttEvent, MqttPublish, OutgoingPublish};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet, Publish};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::acl::ClientAcl;
use crate::metrics::Metrics;

/// Which clients' events a link receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFilter {
    /// Only clients of this tenant (and the link publishes as a service of
    /// it); `None`: every tenant's clients, and publishes are not limited
    /// (trusted in-process code).
    pub tenant: Option<String>,
}

/// One link's event sender.
#[derive(Debug)]
struct Sink {
    id: u64,
    tenant: Option<Arc<str>>,
    tx: mpsc::Sender<MqttEvent>,
}

/// Retained messages the broker keeps for new links; past it, new retained
/// topics are not kept (counted in `fieldlink_broker_link_retained_dropped_total`).
pub const MAX_RETAINED: usize = 200_000;

/// What a new link is told first.
#[derive(Debug, Default)]
struct State {
    /// Retained messages are not kept and who is online is the owner's to
    /// tell (the lean ingress: it keeps no per-topic state, and its session
    /// table already knows who is connected).
    owner_tracks: bool,
    /// Connected clients by (tenant, client id).
    online: HashMap<(Option<Arc<str>>, Arc<str>), ClientInfo>,
    /// Retained messages by topic (a topic belongs to one tenant's prefix).
    retained: HashMap<Arc<str>, (Option<Arc<str>>, MqttPublish)>,
}

impl State {
    /// Updates the state with `event` of a client of `tenant`.
    fn apply(&mut self, tenant: Option<&str>, event: &MqttEvent, metrics: &Metrics) {
        // The client's own tenant name is shared, not copied, when it is
        // the one given (an online entry per connection must stay small).
        let tenant_of = |client: &ClientInfo| -> Option<Arc<str>> {
            match (&client.tenant, tenant) {
                (Some(own), Some(t)) if &**own == t => Some(own.clone()),
                _ => tenant.map(Arc::from),
            }
        };
        match event {
            MqttEvent::Connected(_) | MqttEvent::Disconnected { .. } | MqttEvent::Publish(_)
                if self.owner_tracks => {}
            MqttEvent::Connected(info) => {
                self.online
                    .insert((tenant_of(info), info.client_id.clone()), info.clone());
            }
            MqttEvent::Disconnected { client, .. } => {
                self.online
                    .remove(&(tenant_of(client), client.client_id.clone()));
            }
            MqttEvent::Publish(p) if p.retain => {
                if p.payload.is_empty() {
                    self.retained.remove(&p.topic);
                } else if self.retained.len() < MAX_RETAINED || self.retained.contains_key(&p.topic)
                {
                    self.retained
                        .insert(p.topic.clone(), (tenant.map(Arc::from), p.clone()));
                } else {
                    metrics.link_retained_dropped.fetch_add(1, Relaxed);
                }
            }
            MqttEvent::Publish(_) => {}
        }
    }

    /// What a link of `tenant` (`None`: every tenant) is told first.
    fn replay(&self, tenant: Option<&str>) -> Vec<MqttEvent> {
        let wanted = |t: &Option<Arc<str>>| tenant.is_none() || t.as_deref() == tenant;
        let mut events: Vec<MqttEvent> = self
            .online
            .iter()
            .filter(|((t, _), _)| wanted(t))
            .map(|(_, info)| MqttEvent::Connected(info.clone()))
            .collect();
        events.extend(
            self.retained
                .values()
                .filter(|(t, _)| wanted(t))
                .map(|(_, p)| MqttEvent::Publish(p.clone())),
        );
        events
    }
}

/// Every link's event sender.
#[derive(Debug, Default)]
pub(crate) struct Links {
    sinks: RwLock<Arc<[Arc<Sink>]>>,
    next_id: AtomicU64,
    state: Mutex<State>,
}

impl Links {
    /// Links that keep no retained messages and leave who is online to
    /// their owner: a new member is told what [`Links::add_told`]'s `told`
    /// gives, and [`Links::emit_marking`] marks who was announced.
    pub(crate) fn owner_tracked() -> Links {
        let links = Links::default();
        links
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .owner_tracks = true;
        links
    }

    /// Adds a link of `tenant` whose channel holds `capacity` events beyond
    /// what it is told first; returns its id and receiver.
    pub(crate) fn add(
        &self,
        tenant: Option<Arc<str>>,
        capacity: usize,
    ) -> (u64, mpsc::Receiver<MqttEvent>) {
        self.add_told(tenant, capacity, |_| Vec::new())
    }

    /// [`Links::add`], the new link told first what the links keep and then
    /// `told(tenant)`, both read under the lock [`Links::emit_marking`]'s
    /// marks are made under.
    pub(crate) fn add_told(
        &self,
        tenant: Option<Arc<str>>,
        capacity: usize,
        told: impl FnOnce(Option<&str>) -> Vec<MqttEvent>,
    ) -> (u64, mpsc::Receiver<MqttEvent>) {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut replay = state.replay(tenant.as_deref());
        replay.extend(told(tenant.as_deref()));
        let (tx, rx) = mpsc::channel(capacity.max(1) + replay.len());
        for event in replay {
            // Fits: the channel was sized for it, and nobody else has it yet.
            let _ = tx.try_send(event);
        }
        let mut sinks = self.sinks.write().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<Arc<Sink>> = sinks.iter().cloned().collect();
        list.push(Arc::new(Sink { id, tenant, tx }));
        *sinks = list.into();
        (id, rx)
    }

    fn remove(&self, id: u64) {
        let mut sinks = self.sinks.write().unwrap_or_else(|p| p.into_inner());
        let list: Vec<Arc<Sink>> = sinks.iter().filter(|s| s.id != id).cloned().collect();
        *sinks = list.into();
    }

    /// Forgets every link: their receivers end once the last event queued
    /// before is read (broker stop).
    pub(crate) fn clear(&self) {
        *self.sinks.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(Vec::new());
    }

    /// Hands `event` to every link of `tenant` (`None`: every link) but
    /// `skip`, waiting while one is full. Returns `false` when `stop` cancelled a wait (the event
    /// is then not delivered to that link and is counted as dropped).
    ///
    /// # Cancel safety
    /// Not cancel-safe: dropped mid-way, later links miss the event. Callers
    /// pass their stop token instead of racing this future.
    pub(crate) async fn emit(
        &self,
        tenant: Option<&str>,
        skip: Option<u64>,
        event: MqttEvent,
        metrics: &Metrics,
        stop: &CancellationToken,
    ) -> bool {
        self.emit_marking(tenant, skip, event, metrics, stop, || {})
            .await
    }

    /// [`Links::emit`], calling `mark` (a state change of the owner's, such
    /// as "announced") under the lock that new links' snapshots are read
    /// under, so a link added meanwhile sees the event either in what it is
    /// told first or as this event.
    pub(crate) async fn emit_marking(
        &self,
        tenant: Option<&str>,
        skip: Option<u64>,
        event: MqttEvent,
        metrics: &Metrics,
        stop: &CancellationToken,
        mark: impl FnOnce(),
    ) -> bool {
        let changes_state = !matches!(&event, MqttEvent::Publish(p) if !p.retain);
        let sinks = if changes_state {
            // State changes and the link list are read together, so that a
            // link added meanwhile gets the change either in its snapshot
            // or as this event, never both or neither.
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.apply(tenant, &event, metrics);
            mark();
            self.sinks.read().unwrap_or_else(|p| p.into_inner()).clone()
        } else {
            self.sinks.read().unwrap_or_else(|p| p.into_inner()).clone()
        };
        for sink in sinks.iter() {
            let wanted = match (sink.tenant.as_deref(), tenant) {
                (None, _) | (_, None) => true,
                (Some(mine), Some(theirs)) => mine == theirs,
            };
            if Some(sink.id) == skip || !wanted {
                continue;
            }
            match sink.tx.try_send(event.clone()) {
                Ok(()) => {
                    metrics.link_events.fetch_add(1, Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.remove(sink.id),
                Err(mpsc::error::TrySendError::Full(event)) => {
                    metrics.link_waits.fetch_add(1, Relaxed);
                    tokio::select! {
                        sent = sink.tx.send(event) => match sent {
                            Ok(()) => {
                                metrics.link_events.fetch_add(1, Relaxed);
                            }
                            Err(_) => self.remove(sink.id),
                        },
                        _ = stop.cancelled() => {
                            metrics.link_dropped.fetch_add(1, Relaxed);
                            return false;
                        }
                    }
                }
            }
        }
        true
    }
}

/// What a link's publish task needs.
pub(crate) struct LinkPublisher {
    pub(crate) id: u64,
    pub(crate) tenant: Option<Arc<str>>,
    pub(crate) acl: ClientAcl,
    pub(crate) rx: mpsc::Receiver<OutgoingPublish>,
}

impl LinkPublisher {
    /// Takes the link's publishes into the router and the other links until
    /// the sender is dropped or the broker stops.
    pub(crate) async fn run(mut self, shared: Arc<crate::Shared>) {
        let client_id: Arc<str> = Arc::from(format!("fieldlink-link-{}", self.id));
        let router = shared.router.clone();
        let router_id = format!("link.{}", self.id);
        let link =
            tokio::task::spawn_blocking(move || router.link(&router_id).map_err(|e| e.to_string()))
                .await;
        let (mut tx, _rx) = match link {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => {
                tracing::error!(link = %client_id, error = %e, "router refused an in-process link; its publishes are dropped");
                return;
            }
            Err(e) => {
                tracing::error!(link = %client_id, error = %e, "router link task failed");
                return;
            }
        };
        loop {
            let outgoing = tokio::select! {
                _ = shared.stop.cancelled() => break,
                next = self.rx.recv() => match next {
                    Some(p) => p,
                    None => break,
                },
            };
            if outgoing.qos > 1 || !self.acl.may_publish(&outgoing.topic) {
                shared.metrics.link_refused.fetch_add(1, Relaxed);
                tracing::warn!(link = %client_id, tenant = ?self.tenant, topic = %outgoing.topic, qos = outgoing.qos,
                    "in-process publish refused (service ACL, QoS 0 or 1)");
                continue;
            }
            let received = fieldlink_model::now_unix_nanos();
            let topic: Arc<str> = Arc::from(outgoing.topic.as_str());
            let publish = Publish::new(
                bytes::Bytes::copy_from_slice(topic.as_bytes()),
                outgoing.payload.clone(),
                outgoing.retain,
            );
            if tx.send(Packet::Publish(publish, None)).await.is_err() {
                tracing::error!(link = %client_id, "router link closed; in-process publishes stop");
                break;
            }
            let event = MqttEvent::Publish(MqttPublish {
                client: Some(ClientInfo {
                    client_id: client_id.clone(),
                    username: None,
                    tenant: self.tenant.clone(),
                    time_unix_nano: received,
                }),
                topic,
                payload: outgoing.payload,
                qos: outgoing.qos,
                retain: outgoing.retain,
                received_unix_nano: received,
            });
            shared
                .links
                .emit(
                    self.tenant.as_deref(),
                    Some(self.id),
                    event,
                    &shared.metrics,
                    &shared.stop,
                )
                .await;
        }
        let _ = tx
            .send(Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                },
                None,
            ))
            .await;
    }
}
