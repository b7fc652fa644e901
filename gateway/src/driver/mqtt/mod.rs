//! MQTT JSON driver: devices that publish JSON on topics carrying their id
//! (`{tenant}/{device_id}/telemetry`), through the embedded broker or an
//! external one ([`crate::driver::mqtt_source`]).
//!
//! - **Tags**: each `[[mqtt.topics]]` template maps payload fields to tags
//!   by JSON pointer ([`payload`]), or every numeric and boolean top-level
//!   field (`tags = "auto"`; a field seen for the first time becomes a new
//!   tag, announced again). The source time comes from a configured field,
//!   else the time of receipt.
//! - **Identity**: configured devices (`[devices.mqtt]`), devices that
//!   register on the meta topic (retained JSON `class`, `category`, `type`,
//!   `name`, `attributes`), or devices first seen on a template with
//!   `auto_register`. Anything else is counted in `ignored` and logged.
//! - **Online**: on the embedded broker a device is online while a client
//!   that published for it is connected; everywhere, its status topic
//!   (`online` retained on connect, `offline` as its Last Will) and its
//!   telemetry (a live message means a live session) set it; losing the
//!   broker takes every device offline; `offline_after` expires silent
//!   ones.
//! - **Hostile input** — payloads over `max_payload_bytes`, non-JSON, wrong
//!   types, missing fields, impossible times, ids the registry refuses,
//!   other tenants' messages — is counted (`malformed`, `ignored`), logged
//!   with its topic at a bounded rate, and never stops the driver.

pub mod config;
pub mod payload;
pub mod topic;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fieldlink_model::mqtt::{ClientInfo, MqttEvent, MqttPublish};
use fieldlink_model::proto::point::Value as PointValue;
use fieldlink_model::{Category, DeviceClass, Protocol, validate_device_id};
use futures::FutureExt;
use serde_json::Value;
use tokio::time::Instant;

use self::config::{Configured, Mapping, Template};
use self::topic::Captures;
use super::mqtt_source::{LogLimiter, MqttSource, SourceEvent, SourceOptions, Subscription};
use super::{
    BoxRun, DriverConfig, DriverContext, DriverInstance, DriverKind, Reading, Sink, SinkError,
    TagTable,
};
use crate::device::{DeviceHandle, DeviceInfo, TagId, TagInfo, ValueKind};
use crate::metrics::DriverMetrics;

/// Events handled before readings are handed to the core in one batch.
const BATCH_EVENTS: usize = 256;
/// Time allowed to disconnect cleanly at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Statuses of devices not registered yet kept for their registration (a
/// broker need not deliver a device's status and meta topics in the order
/// it published them: rumqttd keeps a log per topic).
const MAX_PENDING_STATUSES: usize = 65_536;

/// The MQTT JSON family: section `mqtt`, protocol `mqtt-json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MqttKind;

impl DriverKind for MqttKind {
    fn section(&self) -> &'static str {
        "mqtt"
    }

    fn protocols(&self) -> &'static [Protocol] {
        &[Protocol::MqttJson]
    }

    fn configure(&self, config: DriverConfig<'_>) -> Result<Arc<dyn DriverInstance>, Vec<String>> {
        Ok(Arc::new(MqttDriver::configure(config)?))
    }
}

/// The configured MQTT JSON driver.
#[derive(Debug)]
pub struct MqttDriver {
    config: Arc<Configured>,
}

impl MqttDriver {
    /// Validates `[mqtt]` and the devices' `[devices.mqtt]`.
    ///
    /// # Errors
    /// Every problem, each naming its key path.
    pub fn configure(config: DriverConfig<'_>) -> Result<MqttDriver, Vec<String>> {
        Ok(MqttDriver {
            config: Arc::new(config::configure(config)?),
        })
    }

    /// The validated configuration.
    pub fn config(&self) -> &Configured {
        &self.config
    }

    /// The filters it subscribes to at an external broker: meta, status,
    /// each template and each device's own topic.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let c = &self.config;
        let tenant = c.broker.tenant.as_deref();
        let mut filters: Vec<String> = Vec::new();
        for t in c.meta.iter().chain(&c.status) {
            filters.push(t.filter(tenant));
        }
        filters.extend(c.templates.iter().map(|t| t.topic.filter(tenant)));
        filters.extend(c.devices.iter().filter_map(|d| d.topic.clone()));
        let mut seen = std::collections::HashSet::new();
        filters.retain(|f| seen.insert(f.clone()));
        filters
            .into_iter()
            .map(|filter| Subscription {
                filter,
                qos: c.section.qos,
            })
            .collect()
    }
}

impl DriverInstance for MqttDriver {
    fn embedded_links(&self) -> usize {
        usize::from(matches!(
            self.config.broker.target,
            crate::driver::mqtt_source::Target::Embedded
        ))
    }

    fn device_count(&self) -> usize {
        self.config.devices.len()
    }

    fn run(self: Arc<Self>, ctx: DriverContext) -> BoxRun {
        Box::pin(async move {
            let options = SourceOptions {
                subscriptions: self.subscriptions(),
                ..SourceOptions::default()
            };
            let source = match MqttSource::start(&self.config.broker, options, &ctx.resources) {
                Ok(source) => source,
                Err(e) => {
                    tracing::error!(error = %e, "mqtt driver cannot start");
                    ctx.sink
                        .metrics(Protocol::MqttJson)
                        .errors
                        .fetch_add(1, RELAXED);
                    ctx.shutdown.cancelled().await;
                    return;
                }
            };
            let mut runner = Runner::new(self.config.clone(), ctx.sink.clone());
            if runner.declare_configured().await.is_err() {
                return;
            }
            runner.run(source, ctx).await;
        })
    }
}

const RELAXED: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

/// What the driver knows of one device.
#[derive(Debug)]
struct Dev {
    /// Its identity, the same `Arc` the sink keeps.
    info: Arc<DeviceInfo>,
    handle: DeviceHandle,
    configured: bool,
    /// A configured device's fixed mapping.
    mapping: Option<Arc<Mapping>>,
    /// Declared ids of listed tags, per mapping (by address; few per device).
    listed: Vec<(usize, Vec<Option<TagId>>)>,
    /// Its whole tag table as the sink last returned it (shared with the
    /// devices that have the same one): automatic tags' ids by field name.
    table: Arc<TagTable>,
    /// Tags declared, for the automatic limit.
    tag_count: usize,
    online: bool,
    last_seen: Instant,
}

struct Runner {
    cfg: Arc<Configured>,
    sink: Sink,
    devices: Vec<Dev>,
    by_id: HashMap<Box<str>, usize>,
    by_topic: HashMap<Box<str>, usize>,
    /// Embedded broker: the devices each client published for.
    clients: HashMap<Arc<str>, Vec<usize>>,
    /// The latest status of each device not registered yet (at most
    /// [`MAX_PENDING_STATUSES`]), applied when it registers.
    pending_status: HashMap<Box<str>, bool>,
    readings: Vec<Reading>,
    limiter: LogLimiter,
    url: String,
}

/// A refusal of one message, for the log.
enum Refusal {
    Malformed(String),
    Ignored(String),
}

impl Runner {
    fn new(cfg: Arc<Configured>, sink: Sink) -> Runner {
        let url = cfg.broker.url();
        Runner {
            cfg,
            sink,
            devices: Vec::new(),
            by_id: HashMap::new(),
            by_topic: HashMap::new(),
            clients: HashMap::new(),
            pending_status: HashMap::new(),
            readings: Vec::with_capacity(1024),
            limiter: LogLimiter::default(),
            url,
        }
    }

    fn metrics(&self) -> &DriverMetrics {
        self.sink.metrics(Protocol::MqttJson)
    }

    async fn declare_configured(&mut self) -> Result<(), SinkError> {
        let cfg = self.cfg.clone();
        for entry in &cfg.devices {
            let tags = entry
                .mapping
                .as_ref()
                .map(|m| m.infos.as_slice())
                .unwrap_or_default();
            let info = Arc::new(entry.info.clone());
            let declared = match self.sink.declare_shared(info.clone(), tags).await {
                Ok(d) => d,
                Err(SinkError::Closed) => return Err(SinkError::Closed),
                Err(e) => {
                    tracing::error!(device = %entry.info.id, error = %e, "cannot declare a configured MQTT device");
                    continue;
                }
            };
            let index = self.devices.len();
            let listed = match &entry.mapping {
                Some(m) if !m.auto => vec![(mapping_key(m), declared.tags.clone())],
                _ => Vec::new(),
            };
            self.devices.push(Dev {
                info,
                handle: declared.device,
                configured: true,
                mapping: entry.mapping.clone(),
                tag_count: declared.tags.iter().flatten().count(),
                listed,
                table: declared.table,
                online: false,
                last_seen: Instant::now(),
            });
            self.by_id.insert(entry.info.id.as_str().into(), index);
            if let Some(topic) = &entry.topic {
                self.by_topic.insert(topic.as_str().into(), index);
            }
        }
        Ok(())
    }

    async fn run(mut self, mut source: MqttSource, ctx: DriverContext) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expiry = self.cfg.section.offline_after;
        loop {
            let first = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break,
                event = source.next() => event,
                _ = tick.tick(), if expiry.is_some() => {
                    if self.expire().await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(event) = first else {
                tracing::error!("mqtt source stopped");
                break;
            };
            if self.handle(event).await.is_err() {
                return;
            }
            for _ in 0..BATCH_EVENTS {
                match source.next().now_or_never() {
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
        let _ = self.flush().await;
        source.close(Vec::new(), CLOSE_TIMEOUT).await;
    }

    async fn flush(&mut self) -> Result<(), SinkError> {
        if self.readings.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.readings, Vec::with_capacity(1024));
        self.sink.push(batch).await
    }

    async fn handle(&mut self, event: SourceEvent) -> Result<(), SinkError> {
        match event {
            SourceEvent::Up => {
                tracing::info!(broker = %self.url, "mqtt driver subscribed");
                Ok(())
            }
            SourceEvent::Down { reason } => {
                self.metrics().errors.fetch_add(1, RELAXED);
                self.clients.clear();
                for i in 0..self.devices.len() {
                    self.set_online(i, false, &reason).await?;
                }
                Ok(())
            }
            SourceEvent::Mqtt(MqttEvent::Publish(p)) => {
                self.metrics().messages.fetch_add(1, RELAXED);
                let refusal = self.publish(&p).await?;
                if let Some(refusal) = refusal {
                    self.refuse(&p.topic, refusal);
                }
                Ok(())
            }
            SourceEvent::Mqtt(MqttEvent::Connected(client)) => {
                if self.foreign(&client) {
                    return Ok(());
                }
                let own = self.client_device(&client);
                if let Some(i) = own {
                    self.set_online(i, true, "client connected").await?;
                }
                Ok(())
            }
            SourceEvent::Mqtt(MqttEvent::Disconnected {
                client,
                clean,
                reason,
            }) => {
                let mut gone = self.clients.remove(&client.client_id).unwrap_or_default();
                match self.client_device(&client) {
                    Some(i) => gone.push(i),
                    // Gone before its registration arrived.
                    None => {
                        for id in client
                            .username
                            .as_deref()
                            .into_iter()
                            .chain([&*client.client_id])
                        {
                            if let Some(online) = self.pending_status.get_mut(id) {
                                *online = false;
                            }
                        }
                    }
                }
                let why = if clean {
                    format!("client disconnected ({reason})")
                } else {
                    format!("client connection lost ({reason})")
                };
                for i in gone {
                    self.set_online(i, false, &why).await?;
                }
                Ok(())
            }
        }
    }

    /// Whether a client belongs to another tenant than the one served.
    fn foreign(&self, client: &ClientInfo) -> bool {
        match (&self.cfg.broker.tenant, &client.tenant) {
            (Some(ours), Some(theirs)) => ours.as_str() != &**theirs,
            _ => false,
        }
    }

    /// The device whose id is the client's user name or client id.
    fn client_device(&self, client: &ClientInfo) -> Option<usize> {
        client
            .username
            .as_deref()
            .and_then(|u| self.by_id.get(u))
            .or_else(|| self.by_id.get(&*client.client_id))
            .copied()
    }

    fn refuse(&mut self, topic: &str, refusal: Refusal) {
        let (counter, why) = match &refusal {
            Refusal::Malformed(why) => (&self.metrics().malformed, why),
            Refusal::Ignored(why) => (&self.metrics().ignored, why),
        };
        counter.fetch_add(1, RELAXED);
        if let Some(suppressed) = self.limiter.allow() {
            match refusal {
                Refusal::Malformed(_) => {
                    tracing::warn!(topic, suppressed, "mqtt: malformed message refused: {why}")
                }
                Refusal::Ignored(_) => {
                    tracing::info!(topic, suppressed, "mqtt: message ignored: {why}")
                }
            }
        }
    }

    async fn publish(&mut self, p: &MqttPublish) -> Result<Option<Refusal>, SinkError> {
        if let Some(client) = &p.client
            && self.foreign(client)
        {
            return Ok(Some(Refusal::Ignored(format!(
                "client `{}` belongs to tenant `{}`",
                client.client_id,
                client.tenant.as_deref().unwrap_or("?")
            ))));
        }
        let cfg = self.cfg.clone();
        if let Some(&i) = self.by_topic.get(&*p.topic) {
            let Some(mapping) = self.devices[i].mapping.clone() else {
                return Ok(None);
            };
            let root = match self.parse(p) {
                Ok(root) => root,
                Err(r) => return Ok(Some(r)),
            };
            return self.telemetry(i, &mapping, p, &root).await;
        }
        if let Some(c) = cfg.status.as_ref().and_then(|t| t.captures(&p.topic)) {
            return match self.device_of(&c) {
                Err(r) => Ok(Some(r)),
                Ok(id) => self.status(id, p).await,
            };
        }
        if let Some(c) = cfg.meta.as_ref().and_then(|t| t.captures(&p.topic)) {
            return match self.device_of(&c) {
                Err(r) => Ok(Some(r)),
                Ok(id) => self.meta(id, p).await,
            };
        }
        for template in &cfg.templates {
            if let Some(c) = template.topic.captures(&p.topic) {
                let id = match self.device_of(&c) {
                    Ok(id) => id,
                    Err(r) => return Ok(Some(r)),
                };
                // Parsed before anything is registered: garbage registers
                // nobody.
                let root = match self.parse(p) {
                    Ok(root) => root,
                    Err(r) => return Ok(Some(r)),
                };
                let i = match self.by_id.get(id) {
                    Some(&i) => i,
                    None => match self.register(id, template, p).await? {
                        Ok(i) => i,
                        Err(r) => return Ok(Some(r)),
                    },
                };
                let mapping = self.devices[i]
                    .mapping
                    .clone()
                    .unwrap_or_else(|| template.mapping.clone());
                return self.telemetry(i, &mapping, p, &root).await;
            }
        }
        // Not a topic of this driver (the embedded link hands over every
        // message of the tenant).
        Ok(None)
    }

    fn oversized(&self, p: &MqttPublish) -> Refusal {
        Refusal::Malformed(format!(
            "payload of {} bytes is over mqtt.max_payload_bytes ({})",
            p.payload.len(),
            self.cfg.section.max_payload_bytes
        ))
    }

    /// The device id of a match, checked.
    fn device_of<'t>(&self, c: &Captures<'t>) -> Result<&'t str, Refusal> {
        if let (Some(ours), Some(theirs)) = (&self.cfg.broker.tenant, c.tenant)
            && ours != theirs
        {
            return Err(Refusal::Ignored(format!(
                "topic of tenant `{theirs}`, this gateway serves `{ours}`"
            )));
        }
        let id = c.device_id.unwrap_or_default();
        validate_device_id(id).map_err(|e| Refusal::Malformed(e.to_string()))?;
        Ok(id)
    }

    async fn set_online(&mut self, i: usize, online: bool, reason: &str) -> Result<(), SinkError> {
        let Some(dev) = self.devices.get_mut(i) else {
            return Ok(());
        };
        if online {
            dev.last_seen = Instant::now();
        }
        if dev.online == online {
            return Ok(());
        }
        dev.online = online;
        let handle = dev.handle;
        self.flush().await?;
        self.sink.status(handle, online, reason).await
    }

    async fn expire(&mut self) -> Result<(), SinkError> {
        let Some(after) = self.cfg.section.offline_after else {
            return Ok(());
        };
        let now = Instant::now();
        let silent: Vec<usize> = (0..self.devices.len())
            .filter(|&i| {
                let d = &self.devices[i];
                d.online && now.duration_since(d.last_seen) >= after
            })
            .collect();
        let reason = format!("nothing received for {after:?}");
        for i in silent {
            self.set_online(i, false, &reason).await?;
        }
        Ok(())
    }

    /// Declares a new device, returns its index.
    async fn add_device(
        &mut self,
        info: DeviceInfo,
        tags: &[TagInfo],
    ) -> Result<Result<usize, Refusal>, SinkError> {
        self.flush().await?;
        let info = Arc::new(info);
        let declared = match self.sink.declare_shared(info.clone(), tags).await {
            Ok(d) => d,
            Err(SinkError::Closed) => return Err(SinkError::Closed),
            Err(e) => return Ok(Err(Refusal::Ignored(e.to_string()))),
        };
        self.metrics().discovered.fetch_add(1, RELAXED);
        let index = self.devices.len();
        self.by_id.insert(info.id.as_str().into(), index);
        self.devices.push(Dev {
            info,
            handle: declared.device,
            configured: false,
            mapping: None,
            listed: Vec::new(),
            table: declared.table,
            tag_count: declared.tags.iter().flatten().count(),
            online: false,
            last_seen: Instant::now(),
        });
        if let Some(online) = self
            .pending_status
            .remove(self.devices[index].info.id.as_str())
        {
            let reason = if online {
                "status online (received before the registration)"
            } else {
                "status offline (received before the registration)"
            };
            self.set_online(index, online, reason).await?;
        }
        Ok(Ok(index))
    }

    fn endpoint(&self, topic: &str) -> String {
        format!("{}/{topic}", self.url)
    }

    async fn register(
        &mut self,
        id: &str,
        template: &Template,
        p: &MqttPublish,
    ) -> Result<Result<usize, Refusal>, SinkError> {
        let Some(r) = &template.register else {
            return Ok(Err(Refusal::Ignored(format!(
                "unknown device `{id}` (not configured, not registered on the meta topic, and template `{}` has no auto_register)",
                template.name
            ))));
        };
        let tenant = self.cfg.broker.tenant.as_deref().unwrap_or_default();
        let info = DeviceInfo {
            id: id.to_owned(),
            category: r.category,
            protocol: Protocol::MqttJson,
            device_type: r.device_type.clone(),
            name: r
                .name
                .replace("{device_id}", id)
                .replace("{tenant}", tenant),
            endpoint: self.endpoint(&p.topic),
            attributes: r.attributes.clone(),
        };
        self.add_device(info, &[]).await
    }

    /// The payload as JSON, within the size limit.
    fn parse(&self, p: &MqttPublish) -> Result<Value, Refusal> {
        if p.payload.len() > self.cfg.section.max_payload_bytes {
            return Err(self.oversized(p));
        }
        serde_json::from_slice(&p.payload).map_err(|e| Refusal::Malformed(format!("not JSON: {e}")))
    }

    async fn telemetry(
        &mut self,
        i: usize,
        mapping: &Arc<Mapping>,
        p: &MqttPublish,
        root: &Value,
    ) -> Result<Option<Refusal>, SinkError> {
        // A live message means a live session.
        if !p.retain {
            if let Some(client) = &p.client {
                let list = self.clients.entry(client.client_id.clone()).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
            self.set_online(i, true, "publishing").await?;
        }
        let now = fieldlink_model::now_unix_nanos();
        let time = match &mapping.time {
            None => p.received_unix_nano,
            Some(t) => match root.pointer(&t.pointer) {
                None if t.required => {
                    return Ok(Some(Refusal::Malformed(format!(
                        "no timestamp at `{}`",
                        t.pointer
                    ))));
                }
                None => p.received_unix_nano,
                Some(v) => match payload::parse_time(v, &t.pointer, t.format, now) {
                    Ok(nanos) => nanos,
                    Err(e) => {
                        return Ok(Some(Refusal::Malformed(format!("timestamp: {e}"))));
                    }
                },
            },
        };
        if mapping.auto {
            self.auto_tags(i, mapping, root, time).await
        } else {
            self.listed_tags(i, mapping, root, time).await
        }
    }

    async fn listed_tags(
        &mut self,
        i: usize,
        mapping: &Arc<Mapping>,
        root: &Value,
        time: i64,
    ) -> Result<Option<Refusal>, SinkError> {
        let key = mapping_key(mapping);
        let at = match self.devices[i].listed.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.flush().await?;
                let dev = &self.devices[i];
                let declared = match self
                    .sink
                    .declare_shared(dev.info.clone(), &mapping.infos)
                    .await
                {
                    Ok(d) => d,
                    Err(SinkError::Closed) => return Err(SinkError::Closed),
                    Err(e) => return Ok(Some(Refusal::Ignored(e.to_string()))),
                };
                let dev = &mut self.devices[i];
                dev.table = declared.table;
                dev.tag_count = dev.tag_count.max(declared.tags.iter().flatten().count());
                dev.listed.push((key, declared.tags));
                dev.listed.len() - 1
            }
        };
        let dev = &self.devices[i];
        let handle = dev.handle;
        let ids = &dev.listed[at].1;
        let mut problem = None;
        for (tag, id) in mapping.tags.iter().zip(ids.iter().copied()) {
            let Some(id) = id else { continue };
            match root.pointer(&tag.pointer) {
                None if tag.optional => {}
                None => {
                    problem.get_or_insert_with(|| format!("no field at `{}`", tag.pointer));
                }
                Some(v) => match payload::convert(v, &tag.pointer, tag.ty, tag.scale, tag.offset) {
                    Ok(Some(value)) => self.readings.push(Reading::good(handle, id, time, value)),
                    Ok(None) => self.readings.push(Reading::bad(handle, id, time)),
                    Err(e) => {
                        self.readings.push(Reading::bad(handle, id, time));
                        problem.get_or_insert_with(|| e.to_string());
                    }
                },
            }
        }
        Ok(problem.map(Refusal::Malformed))
    }

    async fn auto_tags(
        &mut self,
        i: usize,
        mapping: &Arc<Mapping>,
        root: &Value,
        time: i64,
    ) -> Result<Option<Refusal>, SinkError> {
        let Some(fields) = root.as_object() else {
            return Ok(Some(Refusal::Malformed(
                "automatic tags need a JSON object".to_owned(),
            )));
        };
        let skip = mapping
            .time
            .as_ref()
            .and_then(|t| t.pointer.strip_prefix('/'))
            .filter(|p| !p.contains('/'));
        let handle = self.devices[i].handle;
        let mut new: Vec<(TagInfo, PointValue)> = Vec::new();
        let limit = self.cfg.section.max_tags_per_device;
        let mut over = 0usize;
        for (name, v) in fields {
            if Some(name.as_str()) == skip {
                continue;
            }
            let Some(value) = payload::auto_value(v) else {
                continue;
            };
            match self.devices[i].table.id(name) {
                Some(id) => self.readings.push(Reading::good(handle, id, time, value)),
                None if name.is_empty() || name.len() > 128 => over += 1,
                None if self.devices[i].tag_count + new.len() >= limit => over += 1,
                None => new.push((TagInfo::new(name.clone(), ValueKind::of(&value)), value)),
            }
        }
        if !new.is_empty() {
            self.flush().await?;
            let infos: Vec<TagInfo> = new.iter().map(|(t, _)| t.clone()).collect();
            let dev = &self.devices[i];
            let declared = match self.sink.declare_shared(dev.info.clone(), &infos).await {
                Ok(d) => d,
                Err(SinkError::Closed) => return Err(SinkError::Closed),
                Err(e) => return Ok(Some(Refusal::Ignored(e.to_string()))),
            };
            let dev = &mut self.devices[i];
            dev.table = declared.table;
            for ((_, value), id) in new.into_iter().zip(declared.tags) {
                match id {
                    Some(id) => {
                        dev.tag_count += 1;
                        self.readings.push(Reading::good(handle, id, time, value));
                    }
                    // Beyond the gateway's limit: remembered as full.
                    None => {
                        over += 1;
                        dev.tag_count = limit;
                    }
                }
            }
        }
        Ok((over > 0).then(|| {
            Refusal::Ignored(format!(
                "{over} field(s) not mapped: the device has its limit of tags (mqtt.max_tags_per_device or limits.max_tags_per_device) or the name is empty or over 128 bytes"
            ))
        }))
    }

    async fn status(&mut self, id: &str, p: &MqttPublish) -> Result<Option<Refusal>, SinkError> {
        if p.payload.len() > 1024 {
            return Ok(Some(self.oversized(p)));
        }
        let Some(&i) = self.by_id.get(id) else {
            return Ok(self.pend_status(id, &p.payload));
        };
        match parse_status(&p.payload) {
            Some(online) => {
                let reason = if online {
                    "status online"
                } else {
                    "status offline"
                };
                self.set_online(i, online, reason).await?;
                Ok(None)
            }
            None => Ok(Some(Refusal::Malformed(
                "status must be `online` or `offline`".to_owned(),
            ))),
        }
    }

    /// Keeps the status of a device not registered yet, for when it does.
    fn pend_status(&mut self, id: &str, payload: &[u8]) -> Option<Refusal> {
        let Some(online) = parse_status(payload) else {
            return Some(Refusal::Malformed(
                "status must be `online` or `offline`".to_owned(),
            ));
        };
        if let Some(pending) = self.pending_status.get_mut(id) {
            *pending = online;
            return None;
        }
        if self.pending_status.len() >= MAX_PENDING_STATUSES {
            return Some(Refusal::Ignored(format!(
                "status of unknown device `{id}` (and {MAX_PENDING_STATUSES} others already wait for their registration)"
            )));
        }
        self.pending_status.insert(id.into(), online);
        None
    }

    async fn meta(&mut self, id: &str, p: &MqttPublish) -> Result<Option<Refusal>, SinkError> {
        if p.payload.is_empty() {
            // A cleared retained message: nothing to register.
            return Ok(None);
        }
        if p.payload.len() > self.cfg.section.max_payload_bytes.min(64 << 10) {
            return Ok(Some(self.oversized(p)));
        }
        let meta = match parse_meta(&p.payload) {
            Ok(m) => m,
            Err(why) => return Ok(Some(Refusal::Malformed(format!("registration: {why}")))),
        };
        match self.by_id.get(id).copied() {
            Some(i) if self.devices[i].configured => {
                tracing::debug!(
                    device = id,
                    "registration of a configured device ignored (the config wins)"
                );
                Ok(None)
            }
            Some(i) => {
                let dev = &mut self.devices[i];
                let info = DeviceInfo {
                    category: meta.category,
                    device_type: meta
                        .device_type
                        .unwrap_or_else(|| dev.info.device_type.clone()),
                    name: meta.name.unwrap_or_else(|| dev.info.name.clone()),
                    attributes: meta.attributes,
                    ..(*dev.info).clone()
                };
                if info != *dev.info {
                    let info = Arc::new(info);
                    dev.info = info.clone();
                    self.flush().await?;
                    match self.sink.declare_shared(info, &[]).await {
                        Ok(declared) => self.devices[i].table = declared.table,
                        Err(SinkError::Closed) => return Err(SinkError::Closed),
                        Err(e) => return Ok(Some(Refusal::Ignored(e.to_string()))),
                    }
                }
                Ok(None)
            }
            None => {
                let info = DeviceInfo {
                    id: id.to_owned(),
                    category: meta.category,
                    protocol: Protocol::MqttJson,
                    device_type: meta.device_type.unwrap_or_else(|| "mqtt-device".to_owned()),
                    name: meta.name.unwrap_or_else(|| id.to_owned()),
                    endpoint: self.endpoint(&p.topic),
                    attributes: meta.attributes,
                };
                Ok(self.add_device(info, &[]).await?.err())
            }
        }
    }
}

/// Mappings are shared `Arc`s; their address tells them apart.
fn mapping_key(m: &Arc<Mapping>) -> usize {
    Arc::as_ptr(m) as usize
}

/// `online`/`offline` as text, a JSON string, `{"online": bool}` or
/// `{"status": "online"}`.
fn parse_status(payload: &[u8]) -> Option<bool> {
    let word = |s: &str| match s.trim().to_ascii_lowercase().as_str() {
        "online" | "connected" | "up" => Some(true),
        "offline" | "disconnected" | "down" => Some(false),
        _ => None,
    };
    let text = std::str::from_utf8(payload).ok()?;
    if let Some(b) = word(text) {
        return Some(b);
    }
    match serde_json::from_str::<Value>(text).ok()? {
        Value::String(s) => word(&s),
        Value::Bool(b) => Some(b),
        Value::Object(o) => match (o.get("online"), o.get("status").or(o.get("state"))) {
            (Some(Value::Bool(b)), _) => Some(*b),
            (_, Some(Value::String(s))) => word(s),
            _ => None,
        },
        _ => None,
    }
}

/// A device's registration.
#[derive(Debug, PartialEq)]
struct Meta {
    category: Category,
    device_type: Option<String>,
    name: Option<String>,
    attributes: std::collections::BTreeMap<String, String>,
}

/// A registration as sent: the fields read, each any JSON value until
/// checked (others are ignored), without a map of the whole object.
#[derive(serde::Deserialize)]
struct RawMeta {
    category: Option<Value>,
    class: Option<Value>,
    #[serde(rename = "type")]
    device_type: Option<Value>,
    name: Option<Value>,
    attributes: Option<Value>,
}

fn short(v: Option<Value>, key: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 256 && !s.chars().any(char::is_control) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string of at most 256 bytes")),
    }
}

fn parse_meta(payload: &[u8]) -> Result<Meta, String> {
    let v: RawMeta = serde_json::from_slice(payload).map_err(|e| {
        if e.is_data() {
            // Valid JSON of another shape (an array, a string), or a field
            // given twice.
            format!("not a JSON object of registration fields: {e}")
        } else {
            format!("not JSON: {e}")
        }
    })?;
    let category: Category = short(v.category, "category")?
        .ok_or("no `category`")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    if let Some(class) = short(v.class, "class")? {
        let class: DeviceClass = class.parse().map_err(|e| format!("{e}"))?;
        if class != category.class() {
            return Err(format!(
                "category `{category}` belongs to class `{}`, not `{class}`",
                category.class()
            ));
        }
    }
    let mut attributes = std::collections::BTreeMap::new();
    match v.attributes {
        None | Some(Value::Null) => {}
        Some(Value::Object(a)) => {
            if a.len() > 64 {
                return Err("more than 64 attributes".to_owned());
            }
            for (k, value) in a {
                let text = match value {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(format!(
                            "attribute `{k}` must be a string, number or boolean"
                        ));
                    }
                };
                if k.len() > 128 || text.len() > 1024 {
                    return Err(format!("attribute `{k}` is too long"));
                }
                attributes.insert(k, text);
            }
        }
        Some(_) => return Err("`attributes` must be an object".to_owned()),
    }
    Ok(Meta {
        category,
        device_type: short(v.device_type, "type")?,
        name: short(v.name, "name")?,
        attributes,
    })
}

#[cfg(test)]
mod tests;
