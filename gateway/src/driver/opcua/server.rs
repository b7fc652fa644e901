//! One server's task: the one owner of its session, its devices, their
//! items and their online state.
//!
//! It declares the server's devices at start, connects (retrying with
//! backoff), and on every session up: reads the server's operation limits,
//! resolves roots and browse paths, browses `browse = true` devices, reads
//! the DataTypes of untyped tags, declares what is new and makes every item
//! monitored ([`super::items::ensure`]) or, in poll mode, reads them all
//! every `poll_interval`. Notifications arrive from the session's event loop
//! through a channel, one message per publish response, and become one
//! batch of readings. A device is online while the session is up and its
//! items deliver values: when every item of a device is bad, it goes offline
//! with the status as reason; its first good value brings it back. When the
//! session drops, every device of the server goes offline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use fieldlink_model::proto::{Quality, point::Value};
use fieldlink_model::{Protocol, now_unix_nanos};
use opcua::client::{Client, Session, SessionConnectMode};
use opcua::types::{
    AttributeId, DataValue, NodeId, QualifiedName, ReadValueId, StatusCode, TimestampsToReturn,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, ServerLimits, in_batches, read_limits};
use super::browse::{self, Batches};
use super::config::{Address, DevicePlan, ItemSettings, Mode, OpcUaSection, ServerPlan};
use super::items::{self, EnsureError, Health, Item, ItemState, Items, Note, Plan};
use super::quality::{Converted, convert, quality, source_time};
use super::session::{self, Connected, SessionEvent};
use crate::device::{DeviceHandle, TagId, TagInfo, ValueKind};
use crate::driver::{Reading, Sink, SinkError};
use crate::metrics::{DriverMetrics, Metrics};

/// How long a retry of a failed setup waits.
const SETUP_RETRY: Duration = Duration::from_secs(2);
/// How long closing the session may take at shutdown.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// One device of the server as the task tracks it.
#[derive(Debug)]
struct Device {
    plan: DevicePlan,
    handle: Option<DeviceHandle>,
    /// The announced tag table, in id order.
    tags: Vec<TagInfo>,
    /// Tag name → item handle (tags that have an item).
    items_by_name: HashMap<String, u32>,
    root: Option<NodeId>,
    next_browse: Instant,
    items: u32,
    bad: u32,
    online: Option<bool>,
}

/// The task of one server.
pub struct ServerTask {
    plan: ServerPlan,
    section: Arc<OpcUaSection>,
    client: Arc<Client>,
    sink: Sink,
    metrics: Arc<Metrics>,
    devices: Vec<Device>,
    items: Items,
    notes_tx: mpsc::UnboundedSender<Note>,
    notes_rx: mpsc::UnboundedReceiver<Note>,
    limits: ServerLimits,
    batches: Batches,
    create: Batch,
    polling: bool,
    /// Setup must run (again) while the session is up.
    setup_due: Option<Instant>,
    /// When the session last came up.
    up_at: Instant,
}

impl std::fmt::Debug for ServerTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTask")
            .field("server", &self.plan.name)
            .field("devices", &self.devices.len())
            .field("items", &self.items.len())
            .finish_non_exhaustive()
    }
}

fn batches(limits: &ServerLimits, max: usize) -> (Batches, Batch) {
    (
        Batches {
            browse: Batch::new(limits.nodes_per_browse, max),
            translate: Batch::new(limits.nodes_per_translate, max),
            read: Batch::new(limits.nodes_per_read, max),
        },
        Batch::new(limits.monitored_items_per_call, max),
    )
}

impl ServerTask {
    /// A task for `plan`.
    pub fn new(
        plan: ServerPlan,
        section: Arc<OpcUaSection>,
        client: Arc<Client>,
        sink: Sink,
    ) -> ServerTask {
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let devices = plan
            .devices
            .iter()
            .map(|d| Device {
                plan: d.clone(),
                handle: None,
                tags: Vec::new(),
                items_by_name: HashMap::new(),
                root: None,
                next_browse: now,
                items: 0,
                bad: 0,
                online: None,
            })
            .collect();
        let limits = ServerLimits::default();
        let (b, create) = batches(&limits, section.max_batch);
        let polling = plan.config.mode == Mode::Poll;
        ServerTask {
            metrics: sink.gateway_metrics().clone(),
            plan,
            section,
            client,
            sink,
            devices,
            items: Items::default(),
            notes_tx,
            notes_rx,
            limits,
            batches: b,
            create,
            polling,
            setup_due: None,
            up_at: now,
        }
    }

    fn m(&self) -> &DriverMetrics {
        self.metrics.driver(Protocol::OpcUa)
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.declare_configured().await.is_err() {
            return;
        }
        let mut backoff = self.section.reconnect_min;
        loop {
            let connected = tokio::select! {
                () = shutdown.cancelled() => return,
                c = session::connect(&self.client, &self.plan.config, &self.section) => c,
            };
            let connected = match connected {
                Ok(c) => c,
                Err(why) => {
                    self.m().connect_failures.fetch_add(1, Relaxed);
                    tracing::warn!(server = %self.plan.name, endpoint = %self.plan.config.endpoint, "cannot connect: {why}");
                    if self
                        .all_offline(&format!("cannot connect: {why}"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.section.reconnect_max);
                    continue;
                }
            };
            backoff = self.section.reconnect_min;
            match self.serve(connected, &shutdown).await {
                Served::Stop => return,
                Served::Rebuild(status) => {
                    tracing::info!(server = %self.plan.name, %status, "session ended; rebuilding it");
                    if self
                        .all_offline(&format!("session ended: {status}"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    async fn serve(&mut self, mut connected: Connected, shutdown: &CancellationToken) -> Served {
        let session = connected.session.clone();
        let mut up = false;
        let mut poll = tokio::time::interval(self.plan.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let browse_every = self
            .devices
            .iter()
            .filter(|d| d.plan.browse)
            .map(|d| d.plan.rebrowse_interval)
            .min()
            .unwrap_or(Duration::from_secs(3600));
        let mut browse_tick = tokio::time::interval(browse_every);
        browse_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let setup_at = self.setup_due.filter(|_| up);
            tokio::select! {
                () = shutdown.cancelled() => {
                    connected.close(CLOSE_LIMIT).await;
                    return Served::Stop;
                }
                event = connected.events.recv() => {
                    let Some(event) = event else {
                        return Served::Rebuild(StatusCode::BadConnectionClosed);
                    };
                    match event {
                        SessionEvent::Up(mode) => {
                            up = true;
                            self.up_at = Instant::now();
                            let fresh = matches!(mode, SessionConnectMode::NewSession(_));
                            tracing::info!(server = %self.plan.name, ?mode, "session up");
                            if self.setup(&session, fresh).await.is_err() {
                                return Served::Stop;
                            }
                        }
                        SessionEvent::Down(status) => {
                            up = false;
                            self.m().errors.fetch_add(1, Relaxed);
                            tracing::warn!(server = %self.plan.name, %status, "session lost");
                            if self.all_offline(&format!("session lost: {status}")).await.is_err() {
                                return Served::Stop;
                            }
                        }
                        SessionEvent::ConnectFailed(status) => {
                            self.m().connect_failures.fetch_add(1, Relaxed);
                            tracing::debug!(server = %self.plan.name, %status, "reconnect failed");
                        }
                        SessionEvent::Ended(status) => {
                            self.m().errors.fetch_add(1, Relaxed);
                            drop(connected);
                            return Served::Rebuild(status);
                        }
                    }
                }
                note = self.notes_rx.recv() => {
                    // The task holds a sender: the channel never closes.
                    let Some(note) = note else { return Served::Stop };
                    if self.on_note(note).await.is_err() {
                        return Served::Stop;
                    }
                }
                _ = poll.tick(), if up && self.polling => {
                    if self.poll_once(&session).await.is_err() {
                        return Served::Stop;
                    }
                }
                _ = browse_tick.tick(), if up && browse_every < Duration::from_secs(3600) => {
                    if self.rebrowse(&session).await.is_err() {
                        return Served::Stop;
                    }
                }
                () = sleep_until(setup_at) => {
                    if self.setup(&session, false).await.is_err() {
                        return Served::Stop;
                    }
                }
            }
        }
    }

    /// Declares every device with its typed configured tags.
    async fn declare_configured(&mut self) -> Result<(), SinkError> {
        for i in 0..self.devices.len() {
            let tags: Vec<TagInfo> = self.devices[i]
                .plan
                .tags
                .iter()
                .filter_map(|t| {
                    t.kind
                        .map(|k| TagInfo::new(t.name.clone(), k).with_unit(t.unit.clone()))
                })
                .collect();
            self.declare(i, tags).await?;
        }
        Ok(())
    }

    /// Declares `new` tags of device `i` (appended to its table); returns
    /// the ids of `new` (`None` beyond the gateway's tag limit).
    async fn declare(
        &mut self,
        i: usize,
        new: Vec<TagInfo>,
    ) -> Result<Vec<Option<TagId>>, SinkError> {
        let device = &mut self.devices[i];
        let first = device.tags.len();
        device.tags.extend(new);
        match self
            .sink
            .declare(device.plan.info.clone(), &device.tags)
            .await
        {
            Ok(declared) => {
                device.handle = Some(declared.device);
                Ok(declared.tags[first..].to_vec())
            }
            Err(SinkError::Closed) => Err(SinkError::Closed),
            Err(e) => {
                tracing::error!(device = %device.plan.info.id, "cannot declare: {e}");
                device.tags.truncate(first);
                Ok(Vec::new())
            }
        }
    }

    /// What runs on every session up (and again when it failed).
    async fn setup(&mut self, session: &Arc<Session>, fresh: bool) -> Result<(), SinkError> {
        self.setup_due = None;
        if fresh || self.limits == ServerLimits::default() {
            self.limits = read_limits(session).await;
            let (b, create) = batches(&self.limits, self.section.max_batch);
            self.batches = b;
            self.create = create;
            self.m().requests.fetch_add(1, Relaxed);
            tracing::debug!(server = %self.plan.name, limits = ?self.limits, "server limits");
        }
        if fresh {
            let (kept, lost) = items::transfer(session).await;
            if kept + lost > 0 {
                tracing::info!(server = %self.plan.name, transferred = kept, recreated = lost, "subscriptions of the last session");
            }
            // Items the last session refused may exist now.
            for item in self.items.iter_mut() {
                if matches!(item.state, ItemState::Failed(_)) {
                    item.state = ItemState::Pending;
                }
            }
        }
        let mut ok = true;
        for i in 0..self.devices.len() {
            match self.resolve_device(session, i).await {
                Ok(()) => {}
                Err(Failure::Sink(e)) => return Err(e),
                Err(Failure::Call(e)) => {
                    ok = false;
                    self.m().errors.fetch_add(1, Relaxed);
                    tracing::warn!(server = %self.plan.name, device = %self.devices[i].plan.info.id, "setup: {e}");
                }
            }
        }
        if ok {
            self.activate(session).await;
        }
        if !ok
            || self
                .items
                .iter()
                .any(|(_, it)| it.state == ItemState::Pending)
        {
            self.setup_due = Some(Instant::now() + SETUP_RETRY);
        }
        Ok(())
    }

    /// Resolves device `i`'s root, its configured tags and (for `browse`)
    /// the variables under its root, and adds items for what is new.
    async fn resolve_device(&mut self, session: &Session, i: usize) -> Result<(), Failure> {
        if self.devices[i].root.is_none() {
            let root = browse::resolve_root(
                session,
                &self.devices[i].plan.root,
                &mut self.batches.translate,
            )
            .await
            .map_err(Failure::Call)?;
            self.devices[i].root = Some(root);
        }
        let Some(root) = self.devices[i].root.clone() else {
            return Ok(());
        };
        // Configured tags without an item yet.
        let pending: Vec<usize> = self.devices[i]
            .plan
            .tags
            .iter()
            .enumerate()
            .filter(|(_, t)| !self.devices[i].items_by_name.contains_key(&t.name))
            .map(|(n, _)| n)
            .collect();
        let mut nodes: Vec<(String, NodeId, Option<ValueKind>, String, ItemSettings)> = Vec::new();
        let mut paths = Vec::new();
        let mut path_tags = Vec::new();
        for &n in &pending {
            let t = &self.devices[i].plan.tags[n];
            match &t.address {
                Address::Node(node) => {
                    nodes.push((
                        t.name.clone(),
                        node.clone(),
                        t.kind,
                        t.unit.clone(),
                        t.settings,
                    ));
                }
                Address::Path(p) => {
                    paths.push(p.clone());
                    path_tags.push(n);
                }
            }
        }
        if !paths.is_empty() {
            let resolved = browse::translate(session, &root, &paths, &mut self.batches.translate)
                .await
                .map_err(Failure::Call)?;
            for (n, r) in path_tags.into_iter().zip(resolved) {
                let t = &self.devices[i].plan.tags[n];
                match r {
                    Ok(node) => {
                        nodes.push((t.name.clone(), node, t.kind, t.unit.clone(), t.settings))
                    }
                    Err(status) => {
                        self.metrics
                            .driver(Protocol::OpcUa)
                            .exceptions
                            .fetch_add(1, Relaxed);
                        tracing::warn!(device = %self.devices[i].plan.info.id, tag = %t.name, %status, "browse path does not resolve");
                    }
                }
            }
        }
        if self.devices[i].plan.browse {
            let found = browse::variables_under(session, &root, &mut self.batches.browse)
                .await
                .map_err(Failure::Call)?;
            self.devices[i].next_browse = Instant::now() + self.devices[i].plan.rebrowse_interval;
            let settings = self.devices[i].plan.defaults;
            for f in found {
                let known = self.devices[i].items_by_name.contains_key(&f.name)
                    || nodes.iter().any(|(n, ..)| *n == f.name);
                if !known {
                    nodes.push((f.name, f.node, None, String::new(), settings));
                }
            }
        }
        self.add_items(session, i, nodes).await?;
        // Configured tags that have their item are kept there only (a large
        // tag list is not held twice).
        let device = &mut self.devices[i];
        let before = device.plan.tags.len();
        device
            .plan
            .tags
            .retain(|t| !device.items_by_name.contains_key(&t.name));
        if device.plan.tags.len() < before {
            device.plan.tags.shrink_to_fit();
        }
        Ok(())
    }

    async fn add_items(
        &mut self,
        session: &Session,
        i: usize,
        mut nodes: Vec<(String, NodeId, Option<ValueKind>, String, ItemSettings)>,
    ) -> Result<(), Failure> {
        if nodes.is_empty() {
            return Ok(());
        }
        let untyped: Vec<NodeId> = nodes
            .iter()
            .filter(|n| n.2.is_none())
            .map(|n| n.1.clone())
            .collect();
        if !untyped.is_empty() {
            let kinds = browse::kinds(session, &untyped, &mut self.batches.read)
                .await
                .map_err(Failure::Call)?;
            let mut kinds = kinds.into_iter();
            for n in nodes.iter_mut().filter(|n| n.2.is_none()) {
                n.2 = kinds.next().flatten();
            }
        }
        let (typed, skipped): (Vec<_>, Vec<_>) = nodes.into_iter().partition(|n| n.2.is_some());
        if !skipped.is_empty() {
            self.m().ignored.fetch_add(skipped.len() as u64, Relaxed);
            tracing::debug!(device = %self.devices[i].plan.info.id, n = skipped.len(), "variables of types without a point representation (arrays, structures) are not tags");
        }
        // Tags already declared (configured with a type) keep their ids.
        let mut new_infos = Vec::new();
        for (name, _, kind, unit, _) in &typed {
            if !self.devices[i].tags.iter().any(|t| &t.name == name)
                && let Some(kind) = kind
            {
                new_infos.push(TagInfo::new(name.clone(), *kind).with_unit(unit.clone()));
            }
        }
        if !new_infos.is_empty() {
            self.declare(i, new_infos).await.map_err(Failure::Sink)?;
        }
        for (name, node, kind, _, settings) in typed {
            let Some(tag) = self.devices[i].tags.iter().position(|t| t.name == name) else {
                continue;
            };
            let (Some(kind), Ok(tag)) = (kind, TagId::try_from(tag)) else {
                continue;
            };
            let kind = self.devices[i]
                .tags
                .get(tag as usize)
                .map_or(kind, |t| t.kind);
            let handle = self.items.push(Item {
                device: i,
                tag,
                kind,
                node,
                settings,
                state: ItemState::Pending,
                health: Health::Unknown,
            });
            self.devices[i].items_by_name.insert(name, handle);
        }
        Ok(())
    }

    /// Makes pending items monitored (or, polling, active).
    async fn activate(&mut self, session: &Arc<Session>) {
        let pending = self
            .items
            .iter()
            .filter(|(_, it)| it.state == ItemState::Pending)
            .count();
        if self.polling {
            for item in self.items.iter_mut() {
                if item.state == ItemState::Pending {
                    item.state = ItemState::Active;
                }
            }
            self.recount();
            return;
        }
        let per_subscription = match (
            self.plan.config.max_items_per_subscription,
            self.limits.items_per_subscription,
        ) {
            (0, None) => usize::MAX,
            (0, Some(l)) => l,
            (c, None) => c,
            (c, Some(l)) => c.min(l),
        };
        let plan = Plan {
            publishing_interval: self.plan.publishing_interval,
            per_subscription,
            max_subscriptions: self.limits.subscriptions_per_session.unwrap_or(usize::MAX),
        };
        let started = Instant::now();
        match items::ensure(
            session,
            &mut self.items,
            plan,
            &mut self.create,
            &self.notes_tx,
        )
        .await
        {
            Ok(outcome) => {
                self.m().requests.fetch_add(outcome.calls, Relaxed);
                self.m()
                    .exceptions
                    .fetch_add(outcome.refused as u64, Relaxed);
                if outcome.created > 0 || outcome.refused > 0 || pending > 0 {
                    tracing::info!(
                        server = %self.plan.name,
                        created = outcome.created,
                        refused = outcome.refused,
                        subscriptions = outcome.subscriptions,
                        calls = outcome.calls,
                        batch = self.create.size(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        since_session_up_ms = self.up_at.elapsed().as_millis() as u64,
                        "monitored items created"
                    );
                }
            }
            Err(EnsureError::Unsupported(status)) => {
                tracing::warn!(server = %self.plan.name, %status, "subscriptions refused; falling back to cyclic reads every {:?}", self.plan.config.poll_interval);
                self.polling = true;
                for item in self.items.iter_mut() {
                    if item.state == ItemState::Pending {
                        item.state = ItemState::Active;
                    }
                }
            }
            Err(EnsureError::Failed(e)) => {
                self.m().errors.fetch_add(1, Relaxed);
                tracing::warn!(server = %self.plan.name, "creating monitored items: {e}");
                self.setup_due = Some(Instant::now() + SETUP_RETRY);
            }
        }
        self.recount();
    }

    /// Recounts each device's active items.
    fn recount(&mut self) {
        for d in &mut self.devices {
            d.items = 0;
            d.bad = 0;
        }
        for (_, item) in self.items.iter() {
            if item.state == ItemState::Active
                && let Some(d) = self.devices.get_mut(item.device)
            {
                d.items += 1;
                if item.health == Health::Bad {
                    d.bad += 1;
                }
            }
        }
    }

    async fn rebrowse(&mut self, session: &Arc<Session>) -> Result<(), SinkError> {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.devices.len())
            .filter(|&i| self.devices[i].plan.browse && self.devices[i].next_browse <= now)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let before = self.items.len();
        for i in due {
            match self.resolve_device(session, i).await {
                Ok(()) => {}
                Err(Failure::Sink(e)) => return Err(e),
                Err(Failure::Call(e)) => {
                    self.m().errors.fetch_add(1, Relaxed);
                    tracing::debug!(device = %self.devices[i].plan.info.id, "rebrowse: {e}");
                }
            }
        }
        if self.items.len() > before {
            self.activate(session).await;
        }
        Ok(())
    }

    async fn poll_once(&mut self, session: &Session) -> Result<(), SinkError> {
        let handles: Vec<u32> = self
            .items
            .iter()
            .filter(|(_, it)| it.state == ItemState::Active)
            .map(|(h, _)| h)
            .collect();
        if handles.is_empty() {
            return Ok(());
        }
        let requests: Vec<ReadValueId> = handles
            .iter()
            .filter_map(|&h| {
                self.items.get_mut(h).map(|it| ReadValueId {
                    node_id: it.node.clone(),
                    attribute_id: AttributeId::Value as u32,
                    index_range: Default::default(),
                    data_encoding: QualifiedName::null(),
                })
            })
            .collect();
        let mut calls = 0;
        let result = in_batches(
            &requests,
            &mut self.batches.read,
            &mut calls,
            |slice| async move { session.read(&slice, TimestampsToReturn::Both, 0.0).await },
        )
        .await;
        self.m().requests.fetch_add(calls, Relaxed);
        match result {
            Ok(values) => {
                let changes: Vec<(u32, DataValue)> = handles.into_iter().zip(values).collect();
                self.on_changes(changes).await
            }
            Err(e) => {
                self.m().errors.fetch_add(1, Relaxed);
                tracing::debug!(server = %self.plan.name, "cyclic read: {e}");
                Ok(())
            }
        }
    }

    async fn on_note(&mut self, note: Note) -> Result<(), SinkError> {
        match note {
            Note::Changes(changes) => self.on_changes(changes).await,
            Note::Status(status) => {
                if !status.is_good() {
                    self.m().errors.fetch_add(1, Relaxed);
                    tracing::warn!(server = %self.plan.name, %status, "subscription status changed");
                }
                Ok(())
            }
        }
    }

    /// Turns one batch of values into readings and status changes.
    async fn on_changes(&mut self, changes: Vec<(u32, DataValue)>) -> Result<(), SinkError> {
        let received = now_unix_nanos();
        let mut readings = Vec::with_capacity(changes.len());
        let mut statuses: Vec<(DeviceHandle, bool, String)> = Vec::new();
        let metrics = self.metrics.driver(Protocol::OpcUa);
        for (handle, dv) in changes {
            let Some(item) = self.items.get_mut(handle) else {
                metrics.ignored.fetch_add(1, Relaxed);
                continue;
            };
            let Some(device) = self.devices.get_mut(item.device) else {
                continue;
            };
            let Some(dev_handle) = device.handle else {
                continue;
            };
            let time = source_time(&dv, received);
            let status = dv.status.unwrap_or(StatusCode::Good);
            let mut q = quality(status);
            let mut value: Option<Value> = None;
            if q != Quality::Bad {
                match dv.value.map_or(Converted::Empty, |v| convert(v, item.kind)) {
                    Converted::Value(v) => value = Some(v),
                    Converted::Unsupported => {
                        metrics.ignored.fetch_add(1, Relaxed);
                        continue;
                    }
                    Converted::Empty | Converted::Mismatch => {
                        metrics.malformed.fetch_add(1, Relaxed);
                        q = Quality::Bad;
                    }
                }
            } else {
                metrics.exceptions.fetch_add(1, Relaxed);
            }
            let healthy = q != Quality::Bad;
            let was = item.health;
            item.health = if healthy { Health::Good } else { Health::Bad };
            if item.state == ItemState::Active {
                match (was, item.health) {
                    (Health::Bad, Health::Good) => device.bad = device.bad.saturating_sub(1),
                    (Health::Unknown | Health::Good, Health::Bad) => device.bad += 1,
                    _ => {}
                }
            }
            if healthy && device.online != Some(true) {
                device.online = Some(true);
                statuses.push((dev_handle, true, "values arrive".to_owned()));
            } else if !healthy
                && device.items > 0
                && device.bad >= device.items
                && device.online != Some(false)
            {
                device.online = Some(false);
                statuses.push((dev_handle, false, format!("every item is bad: {status}")));
            }
            readings.push(Reading {
                device: dev_handle,
                tag: item.tag,
                time,
                quality: q,
                value,
            });
        }
        for (device, online, reason) in statuses {
            self.sink.status(device, online, reason).await?;
        }
        self.sink.push(readings).await
    }

    /// Every device offline with `reason`; items' health forgotten.
    async fn all_offline(&mut self, reason: &str) -> Result<(), SinkError> {
        for item in self.items.iter_mut() {
            item.health = Health::Unknown;
        }
        for d in &mut self.devices {
            d.bad = 0;
            if d.online == Some(false) {
                continue;
            }
            d.online = Some(false);
            if let Some(handle) = d.handle {
                self.sink.status(handle, false, reason).await?;
            }
        }
        Ok(())
    }
}

enum Served {
    Stop,
    Rebuild(StatusCode),
}

enum Failure {
    Sink(SinkError),
    Call(opcua::types::Error),
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
