//! Sparkplug B 3.0 host application: edge nodes and their devices announce
//! themselves in births, report in data messages and leave in deaths.
//!
//! - **Host state**: as a primary host it connects with the Will
//!   `spBv1.0/STATE/{host_id}` = `{"online":false,"timestamp":T}` (QoS 1,
//!   retained), subscribes to `spBv1.0/{group}/#` for its groups and to
//!   `spBv1.0/STATE/+`, then publishes `{"online":true,"timestamp":T}`
//!   before anything else, on every session; it republishes it when it sees
//!   its own STATE offline, and publishes the offline STATE before a clean
//!   disconnect.
//! - **Births**: NBIRTH (with `bdSeq`, seq 0) opens an edge node's session;
//!   NBIRTH and DBIRTH declare devices — the edge node itself when it has
//!   metrics of its own — with their metrics as tags; a metric's alias maps
//!   to its tag id and its datatype to a value kind ([`decode`]). A device's
//!   class and category come from its birth (properties or metrics named
//!   `fieldlink/class`, `fieldlink/category`, `fieldlink/type`,
//!   `fieldlink/name`) or from `[[sparkplug.devices]]` rules; a device with
//!   neither is counted as ignored and logged.
//! - **Data**: NDATA and DDATA metrics, by alias or name, become readings
//!   stamped with the metric's (or payload's) timestamp; `is_null` is bad
//!   quality.
//! - **Deaths**: an NDEATH whose bdSeq matches the session's takes the node
//!   and all its devices offline (a stale one is ignored and counted);
//!   DDEATH one device. Devices that an edge node does not re-birth after an
//!   NBIRTH go offline with its first data message.
//! - **Rebirth**: a sequence gap (after `reorder_timeout`), an unknown
//!   alias, data before birth or from an unknown device sends the node
//!   `Node Control/Rebirth = true` (NCMD), at most once per
//!   `rebirth_interval`.
//! - **Hostile input** (oversized or undecodable payloads, a birth with more
//!   than `max_metrics` metrics — counted before decoding — colliding
//!   aliases, ids the registry refuses, other tenants' groups) is counted,
//!   logged at a bounded rate, and never stops the host.

pub mod config;
pub mod decode;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fieldlink_model::mqtt::{MqttEvent, MqttPublish, OutgoingPublish};
use fieldlink_model::sparkplug::proto::payload::{Metric, metric};
use fieldlink_model::sparkplug::proto::{DataType, Payload};
use fieldlink_model::sparkplug::{
    BD_SEQ, MessageType, NAMESPACE, REBIRTH, Topic, node_topic, state_topic,
};
use fieldlink_model::{Category, DeviceClass, Protocol, now_unix_nanos, validate_device_id};
use futures::FutureExt;
use prost::Message;
use tokio::time::Instant;

use self::config::{Configured, NodesAsDevices, glob, render};
use self::decode::Identity;
use super::mqtt_source::{LogLimiter, MqttSource, SourceEvent, SourceOptions, Subscription};
use super::{
    BoxRun, DriverConfig, DriverContext, DriverInstance, DriverKind, Reading, Sink, SinkError,
};
use crate::device::{DeviceHandle, DeviceInfo, TagId, TagInfo};
use crate::driver::mqtt::payload::{MAX_AHEAD_NANOS, MIN_TIME_NANOS};
use crate::metrics::DriverMetrics;

const BATCH_EVENTS: usize = 256;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The Sparkplug B family: section `sparkplug`, protocol `sparkplug-b`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SparkplugKind;

impl DriverKind for SparkplugKind {
    fn section(&self) -> &'static str {
        "sparkplug"
    }

    fn protocols(&self) -> &'static [Protocol] {
        &[Protocol::SparkplugB]
    }

    fn configure(&self, config: DriverConfig<'_>) -> Result<Arc<dyn DriverInstance>, Vec<String>> {
        Ok(Arc::new(SparkplugDriver::configure(config)?))
    }
}

/// The configured host application.
#[derive(Debug)]
pub struct SparkplugDriver {
    config: Arc<Configured>,
}

/// The STATE payload of Sparkplug 3.0.
pub fn state_payload(online: bool, timestamp_ms: i64) -> String {
    format!("{{\"online\":{online},\"timestamp\":{timestamp_ms}}}")
}

impl SparkplugDriver {
    /// Validates `[sparkplug]`.
    ///
    /// # Errors
    /// Every problem, each naming its key path.
    pub fn configure(config: DriverConfig<'_>) -> Result<SparkplugDriver, Vec<String>> {
        Ok(SparkplugDriver {
            config: Arc::new(config::configure(config)?),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Configured {
        &self.config
    }

    /// `spBv1.0/{group}/#` per group and `spBv1.0/STATE/+`.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut subs: Vec<Subscription> = self
            .config
            .groups
            .iter()
            .map(|g| Subscription {
                filter: format!("{NAMESPACE}/{g}/#"),
                qos: 0,
            })
            .collect();
        subs.push(Subscription {
            filter: format!("{NAMESPACE}/STATE/+"),
            qos: 1,
        });
        subs
    }

    fn state(&self, online: bool, timestamp_ms: i64) -> OutgoingPublish {
        OutgoingPublish {
            topic: state_topic(&self.config.host_id),
            payload: state_payload(online, timestamp_ms).into(),
            qos: 1,
            retain: true,
        }
    }
}

impl DriverInstance for SparkplugDriver {
    fn embedded_links(&self) -> usize {
        usize::from(matches!(
            self.config.broker.target,
            crate::driver::mqtt_source::Target::Embedded
        ))
    }

    fn device_count(&self) -> usize {
        0
    }

    fn run(self: Arc<Self>, ctx: DriverContext) -> BoxRun {
        Box::pin(async move {
            let stamp = now_unix_nanos() / 1_000_000;
            let primary = self.config.section.primary;
            let birth = primary.then(|| self.state(true, stamp));
            let options = SourceOptions {
                subscriptions: self.subscriptions(),
                will: primary.then(|| self.state(false, stamp)),
                births: birth.iter().cloned().collect(),
            };
            let source = match MqttSource::start(&self.config.broker, options, &ctx.resources) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "sparkplug host cannot start");
                    ctx.sink
                        .metrics(Protocol::SparkplugB)
                        .errors
                        .fetch_add(1, Relaxed);
                    ctx.shutdown.cancelled().await;
                    return;
                }
            };
            let farewell: Vec<OutgoingPublish> = primary
                .then(|| self.state(false, stamp))
                .into_iter()
                .collect();
            let mut host = Host {
                cfg: self.config.clone(),
                url: self.config.broker.url(),
                sink: ctx.sink.clone(),
                source,
                birth,
                nodes: HashMap::new(),
                readings: Vec::with_capacity(1024),
                limiter: LogLimiter::default(),
            };
            host.run(&ctx).await;
            let _ = host.flush().await;
            host.source.close(farewell, CLOSE_TIMEOUT).await;
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Tag {
    id: Option<TagId>,
    datatype: u32,
}

#[derive(Debug, Default)]
struct Dev {
    /// `None`: not declared (no identity, or not a device).
    handle: Option<DeviceHandle>,
    aliases: HashMap<u64, Tag>,
    names: HashMap<Box<str>, Tag>,
    online: bool,
    born: bool,
}

#[derive(Debug, Default)]
struct Node {
    online: bool,
    bd_seq: Option<u64>,
    last_seq: Option<u8>,
    /// Sequence numbers still missing (a 256-bit set) and until when they
    /// may arrive.
    missing: [u64; 4],
    gap_deadline: Option<Instant>,
    births_done: bool,
    last_rebirth: Option<Instant>,
    node_dev: Dev,
    devices: HashMap<Box<str>, Dev>,
}

impl Node {
    fn missing_any(&self) -> bool {
        self.missing.iter().any(|w| *w != 0)
    }
    fn set_missing(&mut self, seq: u8, on: bool) {
        let (w, b) = (usize::from(seq / 64), seq % 64);
        if on {
            self.missing[w] |= 1 << b;
        } else {
            self.missing[w] &= !(1 << b);
        }
    }
    fn is_missing(&self, seq: u8) -> bool {
        self.missing[usize::from(seq / 64)] & (1 << (seq % 64)) != 0
    }
}

enum Refusal {
    Malformed(String),
    Ignored(String),
}

enum Seq {
    Ok,
    /// A gap: request a rebirth now.
    Gap(String),
}

enum Action {
    Stop,
    Event(Option<SourceEvent>),
    Tick,
}

struct Host {
    cfg: Arc<Configured>,
    url: String,
    sink: Sink,
    source: MqttSource,
    birth: Option<OutgoingPublish>,
    nodes: HashMap<Box<str>, HashMap<Box<str>, Node>>,
    readings: Vec<Reading>,
    limiter: LogLimiter,
}

fn metric_ms_to_nanos(ms: u64) -> Option<i64> {
    i64::try_from(ms).ok()?.checked_mul(1_000_000)
}

impl Host {
    fn metrics(&self) -> &DriverMetrics {
        self.sink.metrics(Protocol::SparkplugB)
    }

    async fn run(&mut self, ctx: &DriverContext) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reorder = !self.cfg.section.reorder_timeout.is_zero();
        loop {
            let action = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => Action::Stop,
                event = self.source.next() => Action::Event(event),
                _ = tick.tick(), if reorder => Action::Tick,
            };
            let event = match action {
                Action::Stop => return,
                Action::Tick => {
                    self.expire_gaps();
                    continue;
                }
                Action::Event(None) => {
                    tracing::error!("sparkplug source stopped");
                    return;
                }
                Action::Event(Some(event)) => event,
            };
            if self.handle(event).await.is_err() {
                return;
            }
            for _ in 0..BATCH_EVENTS {
                match self.source.next().now_or_never() {
                    Some(Some(event)) => {
                        if self.handle(event).await.is_err() {
                            return;
                        }
                    }
                    _ => break,
                }
            }
            if self.flush().await.is_err() {
                return;
            }
        }
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        if self.readings.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.readings, Vec::with_capacity(1024));
        self.sink.push(batch).await
    }

    fn refuse(&mut self, topic: &str, refusal: Refusal) {
        let (counter, why, malformed) = match &refusal {
            Refusal::Malformed(why) => (&self.metrics().malformed, why, true),
            Refusal::Ignored(why) => (&self.metrics().ignored, why, false),
        };
        counter.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.limiter.allow() {
            if malformed {
                tracing::warn!(
                    topic,
                    suppressed,
                    "sparkplug: malformed message refused: {why}"
                );
            } else {
                tracing::info!(topic, suppressed, "sparkplug: message ignored: {why}");
            }
        }
    }

    async fn handle(&mut self, event: SourceEvent) -> Result<(), SinkError> {
        match event {
            SourceEvent::Up => {
                tracing::info!(broker = %self.url, host_id = %self.cfg.host_id, "sparkplug host online");
                Ok(())
            }
            SourceEvent::Down { reason } => {
                self.metrics().errors.fetch_add(1, Relaxed);
                // Without the broker nothing is known to be alive.
                let mut offline = Vec::new();
                for node in self.nodes.values_mut().flat_map(|g| g.values_mut()) {
                    node.online = false;
                    node.last_seq = None;
                    for dev in std::iter::once(&mut node.node_dev).chain(node.devices.values_mut())
                    {
                        dev.born = false;
                        if std::mem::replace(&mut dev.online, false)
                            && let Some(h) = dev.handle
                        {
                            offline.push(h);
                        }
                    }
                }
                self.flush().await?;
                for h in offline {
                    self.sink.status(h, false, reason.as_str()).await?;
                }
                Ok(())
            }
            SourceEvent::Mqtt(MqttEvent::Publish(p)) => {
                if let Some(r) = self.publish(&p).await? {
                    self.refuse(&p.topic, r);
                }
                Ok(())
            }
            // Sparkplug sessions are births and deaths, not connections.
            SourceEvent::Mqtt(_) => Ok(()),
        }
    }

    fn serves(&self, group: &str) -> bool {
        self.cfg.groups.iter().any(|g| g == "+" || g == group)
    }

    async fn publish(&mut self, p: &MqttPublish) -> Result<Option<Refusal>, SinkError> {
        if !p.topic.starts_with("spBv1.0/") {
            return Ok(None); // not Sparkplug B (the embedded link hands over everything)
        }
        if let (Some(ours), Some(theirs)) = (
            &self.cfg.broker.tenant,
            p.client.as_ref().and_then(|c| c.tenant.as_deref()),
        ) && ours != theirs
        {
            return Ok(Some(Refusal::Ignored(format!(
                "a client of tenant `{theirs}`"
            ))));
        }
        let topic = match Topic::parse(&p.topic) {
            Ok(t) => t,
            Err(e) => return Ok(Some(Refusal::Malformed(e.to_string()))),
        };
        let (group, kind, edge, device) = match topic {
            Topic::State { host_id } => {
                self.state(host_id, &p.payload);
                return Ok(None);
            }
            Topic::Node { group, kind, edge } => (group, kind, edge, None),
            Topic::Device {
                group,
                kind,
                edge,
                device,
            } => (group, kind, edge, Some(device)),
        };
        if !self.serves(group) {
            return Ok(Some(Refusal::Ignored(format!(
                "group `{group}` is not served here"
            ))));
        }
        if matches!(kind, MessageType::NCmd | MessageType::DCmd) {
            return Ok(None); // commands: ours or another host's
        }
        let section = &self.cfg.section;
        if p.payload.len() > section.max_payload_bytes {
            return Ok(Some(Refusal::Malformed(format!(
                "payload of {} bytes is over sparkplug.max_payload_bytes ({})",
                p.payload.len(),
                section.max_payload_bytes
            ))));
        }
        match decode::count_metrics(&p.payload, section.max_metrics) {
            Err(e) => return Ok(Some(Refusal::Malformed(e.to_string()))),
            Ok(n) if n > section.max_metrics => {
                return Ok(Some(Refusal::Malformed(format!(
                    "more than sparkplug.max_metrics ({}) metrics",
                    section.max_metrics
                ))));
            }
            Ok(_) => {}
        }
        let payload = match Payload::decode(p.payload.clone()) {
            Ok(payload) => payload,
            Err(e) => {
                return Ok(Some(Refusal::Malformed(format!(
                    "not a Sparkplug B payload: {e}"
                ))));
            }
        };
        if payload.seq.is_some_and(|s| s > 255) {
            return Ok(Some(Refusal::Malformed("seq above 255".to_owned())));
        }
        if kind != MessageType::NDeath && payload.seq.is_none() {
            return Ok(Some(Refusal::Malformed(format!("{kind} without seq"))));
        }
        let seq = payload.seq.and_then(|s| u8::try_from(s).ok());
        match (kind, device) {
            (MessageType::NBirth, None) => self.nbirth(group, edge, seq, &payload, p).await,
            (MessageType::NDeath, None) => self.ndeath(group, edge, &payload).await,
            (MessageType::NData, None) => self.data(group, edge, None, seq, &payload, p).await,
            (MessageType::DBirth, Some(d)) => self.dbirth(group, edge, d, seq, &payload, p).await,
            (MessageType::DDeath, Some(d)) => self.ddeath(group, edge, d, seq).await,
            (MessageType::DData, Some(d)) => {
                self.data(group, edge, Some(d), seq, &payload, p).await
            }
            _ => Ok(None),
        }
    }

    /// Our own STATE seen offline while we are connected: say online again.
    fn state(&mut self, host_id: &str, payload: &[u8]) {
        if host_id != self.cfg.host_id {
            return;
        }
        let Some(birth) = self.birth.clone() else {
            return;
        };
        let offline = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("online").and_then(serde_json::Value::as_bool))
            == Some(false);
        if offline {
            tracing::info!("our STATE reads offline; publishing it online again");
            if let Err(e) = self.source.try_publish(birth) {
                tracing::warn!(error = %e, "cannot republish STATE");
            }
        }
    }

    fn node(&mut self, group: &str, edge: &str) -> &mut Node {
        if !self.nodes.contains_key(group) {
            self.nodes.insert(group.into(), HashMap::new());
        }
        let edges = self.nodes.get_mut(group).expect("inserted above"); // just inserted or present
        if !edges.contains_key(edge) {
            edges.insert(edge.into(), Node::default());
        }
        edges.get_mut(edge).expect("inserted above")
    }

    fn find(&mut self, group: &str, edge: &str) -> Option<&mut Node> {
        self.nodes.get_mut(group)?.get_mut(edge)
    }

    /// Sends a rebirth request unless one went out recently.
    fn rebirth(&mut self, group: &str, edge: &str, why: &str) {
        let interval = self.cfg.section.rebirth_interval;
        let now = Instant::now();
        let node = self.node(group, edge);
        if node
            .last_rebirth
            .is_some_and(|t| now.duration_since(t) < interval)
        {
            return;
        }
        node.last_rebirth = Some(now);
        node.missing = [0; 4];
        node.gap_deadline = None;
        let ms = now_unix_nanos() / 1_000_000;
        let payload = Payload {
            timestamp: u64::try_from(ms).ok(),
            metrics: vec![Metric {
                name: Some(REBIRTH.to_owned()),
                timestamp: u64::try_from(ms).ok(),
                datatype: Some(DataType::Boolean as u32),
                value: Some(metric::Value::BooleanValue(true)),
                ..Metric::default()
            }],
            ..Payload::default()
        };
        let message = OutgoingPublish {
            topic: node_topic(group, MessageType::NCmd, edge),
            payload: payload.encode_to_vec().into(),
            qos: 0,
            retain: false,
        };
        self.metrics().requests.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.limiter.allow() {
            tracing::info!(
                group,
                edge,
                suppressed,
                "sparkplug: requesting a rebirth: {why}"
            );
        }
        if let Err(e) = self.source.try_publish(message) {
            tracing::warn!(group, edge, error = %e, "cannot send a rebirth request");
        }
    }

    /// Checks and records a data or device message's seq.
    fn check_seq(&mut self, group: &str, edge: &str, seq: Option<u8>) -> Seq {
        let reorder = self.cfg.section.reorder_timeout;
        let node = self.node(group, edge);
        let Some(seq) = seq else {
            return Seq::Gap("no seq".to_owned());
        };
        let Some(last) = node.last_seq else {
            node.last_seq = Some(seq);
            return Seq::Ok;
        };
        let expected = last.wrapping_add(1);
        if seq == expected {
            node.last_seq = Some(seq);
            return Seq::Ok;
        }
        if !reorder.is_zero() && node.is_missing(seq) {
            node.set_missing(seq, false);
            if !node.missing_any() {
                node.gap_deadline = None;
            }
            return Seq::Ok;
        }
        let why = format!("sequence gap: expected {expected}, got {seq}");
        node.last_seq = Some(seq);
        if reorder.is_zero() {
            return Seq::Gap(why);
        }
        let mut s = expected;
        while s != seq {
            node.set_missing(s, true);
            s = s.wrapping_add(1);
        }
        node.gap_deadline.get_or_insert(Instant::now() + reorder);
        Seq::Ok
    }

    fn expire_gaps(&mut self) {
        let now = Instant::now();
        let late: Vec<(String, String)> = self
            .nodes
            .iter()
            .flat_map(|(g, edges)| edges.iter().map(move |(e, n)| (g, e, n)))
            .filter(|(_, _, n)| n.gap_deadline.is_some_and(|d| d <= now) && n.missing_any())
            .map(|(g, e, _)| (g.to_string(), e.to_string()))
            .collect();
        for (g, e) in late {
            self.rebirth(&g, &e, "sequence numbers missing after the reorder timeout");
        }
    }

    async fn nbirth(
        &mut self,
        group: &str,
        edge: &str,
        seq: Option<u8>,
        payload: &Payload,
        p: &MqttPublish,
    ) -> Result<Option<Refusal>, SinkError> {
        let Some(bd_seq) = bd_seq(payload) else {
            return Ok(Some(Refusal::Malformed(
                "NBIRTH without a bdSeq metric".to_owned(),
            )));
        };
        let node = self.node(group, edge);
        node.online = true;
        node.bd_seq = Some(bd_seq);
        node.last_seq = seq;
        node.missing = [0; 4];
        node.gap_deadline = None;
        node.births_done = false;
        for dev in node.devices.values_mut() {
            dev.born = false;
        }
        let own_metrics = payload.metrics.iter().any(is_tag);
        let declare = match self.cfg.section.nodes_as_devices {
            NodesAsDevices::Always => true,
            NodesAsDevices::Never => false,
            NodesAsDevices::Auto => own_metrics,
        };
        let dev = self.birth(group, edge, None, payload, p, declare).await?;
        let node = self.node(group, edge);
        match dev {
            Ok(dev) => {
                node.node_dev = dev;
                Ok(None)
            }
            Err(r) => {
                node.node_dev = Dev::default();
                Ok(Some(r))
            }
        }
    }

    async fn dbirth(
        &mut self,
        group: &str,
        edge: &str,
        device: &str,
        seq: Option<u8>,
        payload: &Payload,
        p: &MqttPublish,
    ) -> Result<Option<Refusal>, SinkError> {
        if !self.find(group, edge).is_some_and(|n| n.online) {
            self.rebirth(group, edge, "DBIRTH from an edge node without NBIRTH");
            return Ok(None);
        }
        if let Seq::Gap(why) = self.check_seq(group, edge, seq) {
            self.rebirth(group, edge, &why);
        }
        let dev = self
            .birth(group, edge, Some(device), payload, p, true)
            .await?;
        let node = self.node(group, edge);
        match dev {
            Ok(mut dev) => {
                dev.born = true;
                node.devices.insert(device.into(), dev);
                Ok(None)
            }
            Err(r) => {
                // Known but not declared: its data is dropped quietly.
                node.devices.insert(
                    device.into(),
                    Dev {
                        born: true,
                        ..Dev::default()
                    },
                );
                Ok(Some(r))
            }
        }
    }

    /// Declares the device of a birth (unless `declare` is false) and
    /// records its metrics; hands over the birth's values.
    async fn birth(
        &mut self,
        group: &str,
        edge: &str,
        device: Option<&str>,
        payload: &Payload,
        p: &MqttPublish,
        declare: bool,
    ) -> Result<Result<Dev, Refusal>, SinkError> {
        let mut tags = Vec::new();
        let mut dev = Dev::default();
        let mut infos: Vec<TagInfo> = Vec::new();
        for m in &payload.metrics {
            let Some(name) = m.name.as_deref() else {
                return Ok(Err(Refusal::Malformed(
                    "a birth metric without a name".to_owned(),
                )));
            };
            if !is_tag(m) {
                continue;
            }
            let Some(kind) = m.datatype.and_then(decode::kind_of) else {
                continue; // datasets, templates, arrays: not points
            };
            if name.is_empty() || name.len() > 256 {
                return Ok(Err(Refusal::Malformed(
                    "a metric name of 0 or over 256 bytes".to_owned(),
                )));
            }
            if dev.names.contains_key(name) {
                return Ok(Err(Refusal::Malformed(format!(
                    "metric `{name}` is born twice"
                ))));
            }
            if let Some(alias) = m.alias
                && dev.aliases.contains_key(&alias)
            {
                return Ok(Err(Refusal::Malformed(format!(
                    "alias {alias} is given to two metrics"
                ))));
            }
            let tag = Tag {
                id: None,
                datatype: m.datatype.unwrap_or_default(),
            };
            dev.names.insert(name.into(), tag);
            if let Some(alias) = m.alias {
                dev.aliases.insert(alias, tag);
            }
            tags.push(m);
            infos.push(TagInfo::new(name, kind));
        }
        // Control metrics are known (data may carry them) but not tags.
        for m in &payload.metrics {
            if let (Some(name), false) = (m.name.as_deref(), is_tag(m)) {
                let tag = Tag {
                    id: None,
                    datatype: m.datatype.unwrap_or_default(),
                };
                dev.names.entry(name.into()).or_insert(tag);
                if let Some(alias) = m.alias {
                    dev.aliases.entry(alias).or_insert(tag);
                }
            }
        }
        if !declare {
            return Ok(Ok(dev));
        }
        let info = match self.identity(group, edge, device, payload) {
            Ok(info) => info,
            Err(r) => return Ok(Err(r)),
        };
        self.flush().await?;
        let declared = match self.sink.declare(info, &infos).await {
            Ok(d) => d,
            Err(SinkError::Closed) => return Err(SinkError::Closed),
            Err(e) => return Ok(Err(Refusal::Ignored(e.to_string()))),
        };
        for (m, id) in tags.iter().zip(&declared.tags) {
            let id = *id;
            if let Some(name) = m.name.as_deref()
                && let Some(t) = dev.names.get_mut(name)
            {
                t.id = id;
            }
            if let Some(alias) = m.alias
                && let Some(t) = dev.aliases.get_mut(&alias)
            {
                t.id = id;
            }
        }
        let was = self.current(group, edge, device);
        if was.is_none() {
            self.metrics().discovered.fetch_add(1, Relaxed);
        }
        dev.handle = Some(declared.device);
        dev.online = true;
        if was != Some(true) {
            self.sink.status(declared.device, true, "birth").await?;
        }
        let problems = values(
            &dev,
            &payload.metrics,
            payload.timestamp,
            p.received_unix_nano,
            &mut self.readings,
        );
        if problems > 0 {
            self.metrics().malformed.fetch_add(1, Relaxed);
        }
        Ok(Ok(dev))
    }

    /// Whether the device was declared before and online.
    fn current(&self, group: &str, edge: &str, device: Option<&str>) -> Option<bool> {
        let node = self.nodes.get(group)?.get(edge)?;
        let dev = match device {
            None => &node.node_dev,
            Some(d) => node.devices.get(d)?,
        };
        dev.handle.map(|_| dev.online)
    }

    fn identity(
        &self,
        group: &str,
        edge: &str,
        device: Option<&str>,
        payload: &Payload,
    ) -> Result<DeviceInfo, Refusal> {
        let s = &self.cfg.section;
        let id = match device {
            Some(d) => render(&s.device_id, group, edge, d),
            None => render(&s.node_id, group, edge, ""),
        };
        validate_device_id(&id).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let birth = Identity::of_birth(&payload.metrics);
        let d = device.unwrap_or("");
        let rule = self
            .cfg
            .rules
            .iter()
            .find(|r| glob(&r.group, group) && glob(&r.edge, edge) && glob(&r.device, d));
        let category = match (&birth.category, rule) {
            (Some(c), _) => c
                .parse::<Category>()
                .map_err(|e| Refusal::Malformed(format!("{id}: {e}")))?,
            (None, Some(r)) => r.category,
            (None, None) => {
                return Err(Refusal::Ignored(format!(
                    "device `{id}` has no class and category (no fieldlink/class, fieldlink/category in its birth, no [[sparkplug.devices]] rule)"
                )));
            }
        };
        if let Some(class) = &birth.class {
            let class: DeviceClass = class
                .parse()
                .map_err(|e| Refusal::Malformed(format!("{id}: {e}")))?;
            if class != category.class() {
                return Err(Refusal::Malformed(format!(
                    "{id}: category `{category}` belongs to class `{}`, not `{class}`",
                    category.class()
                )));
            }
        }
        let device_type = birth
            .device_type
            .or_else(|| rule.and_then(|r| r.device_type.clone()))
            .unwrap_or_else(|| "sparkplug-device".to_owned());
        let name = birth
            .name
            .or_else(|| {
                rule.and_then(|r| r.name.as_deref())
                    .map(|n| render(n, group, edge, d))
            })
            .unwrap_or_else(|| {
                if d.is_empty() {
                    edge.to_owned()
                } else {
                    d.to_owned()
                }
            });
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("sparkplug_group".to_owned(), group.to_owned());
        attributes.insert("sparkplug_edge_node".to_owned(), edge.to_owned());
        if !d.is_empty() {
            attributes.insert("sparkplug_device".to_owned(), d.to_owned());
        }
        let path = if d.is_empty() {
            format!("{group}/{edge}")
        } else {
            format!("{group}/{edge}/{d}")
        };
        Ok(DeviceInfo {
            id,
            category,
            protocol: Protocol::SparkplugB,
            device_type,
            name,
            endpoint: format!("{}/{path}", self.url),
            attributes,
        })
    }

    async fn ndeath(
        &mut self,
        group: &str,
        edge: &str,
        payload: &Payload,
    ) -> Result<Option<Refusal>, SinkError> {
        let Some(bd) = bd_seq(payload) else {
            return Ok(Some(Refusal::Malformed(
                "NDEATH without a bdSeq metric".to_owned(),
            )));
        };
        let Some(node) = self.find(group, edge) else {
            return Ok(Some(Refusal::Ignored(
                "NDEATH of an unknown edge node".to_owned(),
            )));
        };
        if node.bd_seq != Some(bd) {
            let current = node.bd_seq;
            return Ok(Some(Refusal::Ignored(format!(
                "stale NDEATH: bdSeq {bd}, the session's is {current:?}"
            ))));
        }
        node.online = false;
        node.last_seq = None;
        let mut offline = Vec::new();
        for dev in std::iter::once(&mut node.node_dev).chain(node.devices.values_mut()) {
            dev.born = false;
            if std::mem::replace(&mut dev.online, false)
                && let Some(h) = dev.handle
            {
                offline.push(h);
            }
        }
        // The will's timestamp is from CONNECT time, older than the
        // session's births (the specification says it is of no use): the
        // death is stamped now.
        self.flush().await?;
        for h in offline {
            self.sink.status(h, false, "NDEATH").await?;
        }
        Ok(None)
    }

    async fn ddeath(
        &mut self,
        group: &str,
        edge: &str,
        device: &str,
        seq: Option<u8>,
    ) -> Result<Option<Refusal>, SinkError> {
        if !self.find(group, edge).is_some_and(|n| n.online) {
            self.rebirth(group, edge, "DDEATH from an edge node without NBIRTH");
            return Ok(None);
        }
        if let Seq::Gap(why) = self.check_seq(group, edge, seq) {
            self.rebirth(group, edge, &why);
        }
        let node = self.node(group, edge);
        let Some(dev) = node.devices.get_mut(device) else {
            return Ok(Some(Refusal::Ignored(format!(
                "DDEATH of unknown device `{device}`"
            ))));
        };
        dev.born = false;
        let handle = dev.handle;
        if std::mem::replace(&mut dev.online, false)
            && let Some(h) = handle
        {
            self.flush().await?;
            self.sink.status(h, false, "DDEATH").await?;
        }
        Ok(None)
    }

    async fn data(
        &mut self,
        group: &str,
        edge: &str,
        device: Option<&str>,
        seq: Option<u8>,
        payload: &Payload,
        p: &MqttPublish,
    ) -> Result<Option<Refusal>, SinkError> {
        let kind = if device.is_some() { "DDATA" } else { "NDATA" };
        if !self.find(group, edge).is_some_and(|n| n.online) {
            self.rebirth(group, edge, &format!("{kind} before NBIRTH"));
            return Ok(None);
        }
        if let Seq::Gap(why) = self.check_seq(group, edge, seq) {
            self.rebirth(group, edge, &why);
        }
        self.births_done(group, edge).await?;
        // Borrowed in place (no per-message copy of the device's tables).
        let dev = self
            .nodes
            .get(group)
            .and_then(|g| g.get(edge))
            .and_then(|node| match device {
                None => Some(&node.node_dev),
                Some(d) => node.devices.get(d).filter(|dev| dev.born),
            });
        let Some(dev) = dev else {
            self.rebirth(group, edge, &format!("{kind} of a device without DBIRTH"));
            return Ok(None);
        };
        let unknown = payload.metrics.iter().any(|m| {
            !m.alias.is_some_and(|a| dev.aliases.contains_key(&a))
                && !m.name.as_deref().is_some_and(|n| dev.names.contains_key(n))
        });
        let problems = values(
            dev,
            &payload.metrics,
            payload.timestamp,
            p.received_unix_nano,
            &mut self.readings,
        );
        if unknown {
            self.rebirth(
                group,
                edge,
                &format!("{kind} with an unknown alias or metric"),
            );
        }
        Ok((problems > 0).then(|| {
            Refusal::Malformed(format!(
                "{problems} metric(s) with a wrong value type or impossible time"
            ))
        }))
    }

    /// The first data message after an NBIRTH: devices that were not born
    /// again are gone.
    async fn births_done(&mut self, group: &str, edge: &str) -> Result<(), SinkError> {
        let node = self.node(group, edge);
        if std::mem::replace(&mut node.births_done, true) {
            return Ok(());
        }
        let mut gone = Vec::new();
        for dev in node.devices.values_mut() {
            if !dev.born
                && std::mem::replace(&mut dev.online, false)
                && let Some(h) = dev.handle
            {
                gone.push(h);
            }
        }
        if !gone.is_empty() {
            self.flush().await?;
        }
        for h in gone {
            self.sink
                .status(h, false, "not in the edge node's new birth sequence")
                .await?;
        }
        Ok(())
    }
}

/// Readings of `metrics` resolved against `dev`, appended to `out`; returns
/// how many were unfit (wrong type, impossible time). Unknown ones are
/// skipped.
fn values(
    dev: &Dev,
    metrics: &[Metric],
    stamp: Option<u64>,
    received: i64,
    out: &mut Vec<Reading>,
) -> usize {
    let Some(handle) = dev.handle else {
        return 0;
    };
    let now = now_unix_nanos();
    let fallback = stamp.and_then(metric_ms_to_nanos).unwrap_or(received);
    let mut problems = 0;
    for m in metrics {
        let tag = m
            .alias
            .and_then(|a| dev.aliases.get(&a))
            .or_else(|| m.name.as_deref().and_then(|n| dev.names.get(n)));
        let Some(Tag {
            id: Some(id),
            datatype,
        }) = tag.copied()
        else {
            continue;
        };
        let time = m.timestamp.and_then(metric_ms_to_nanos).unwrap_or(fallback);
        if time < MIN_TIME_NANOS || time > now.saturating_add(MAX_AHEAD_NANOS) {
            problems += 1;
            continue;
        }
        match decode::value_of(datatype, m) {
            Ok(Some(v)) => out.push(Reading::good(handle, id, time, v)),
            Ok(None) => out.push(Reading::bad(handle, id, time)),
            Err(_) => {
                problems += 1;
                out.push(Reading::bad(handle, id, time));
            }
        }
    }
    problems
}

/// Metrics that become tags: named, and not bdSeq, Node Control or
/// identity.
fn is_tag(m: &Metric) -> bool {
    m.name.as_deref().is_some_and(|n| {
        n != BD_SEQ && !n.starts_with("Node Control/") && !Identity::is_identity_metric(n)
    })
}

/// The bdSeq metric's value.
fn bd_seq(payload: &Payload) -> Option<u64> {
    payload
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some(BD_SEQ))
        .and_then(|m| match m.value {
            Some(metric::Value::LongValue(v)) => Some(v),
            Some(metric::Value::IntValue(v)) => Some(u64::from(v)),
            _ => None,
        })
}

#[cfg(test)]
mod tests;
