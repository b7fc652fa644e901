//! The [`Sink`]: how a driver hands the core what it learns. Devices and
//! their tag tables are declared (at start for configured devices, at run
//! time for discovered ones) and reach the registry as announces; session
//! state and readings follow, in the order the driver sends them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fieldlink_model::proto::{Quality, point::Value};
use fieldlink_model::{Protocol, now_unix_nanos};
use tokio::sync::mpsc;

use super::tag_table::{TagTable, TagTables};
use crate::device::{DeviceHandle, DeviceInfo, TagId, TagInfo};
use crate::metrics::{DriverMetrics, Metrics};

/// One value of one tag, with its own source time.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The device.
    pub device: DeviceHandle,
    /// The tag (an id from [`Declared::tag`]).
    pub tag: TagId,
    /// Source timestamp, nanoseconds since the Unix epoch: when the device
    /// sampled it, or when the gateway received it if the protocol has no
    /// source time.
    pub time: i64,
    /// Quality of the value.
    pub quality: Quality,
    /// The value; `None` when there is none (a failed read), quality BAD.
    pub value: Option<Value>,
}

impl Reading {
    /// A good value.
    pub fn good(device: DeviceHandle, tag: TagId, time: i64, value: Value) -> Reading {
        Reading {
            device,
            tag,
            time,
            quality: Quality::Good,
            value: Some(value),
        }
    }

    /// No value: the read failed or the device refused it.
    pub fn bad(device: DeviceHandle, tag: TagId, time: i64) -> Reading {
        Reading {
            device,
            tag,
            time,
            quality: Quality::Bad,
            value: None,
        }
    }
}

/// What the core learns from drivers, in order. The normalizer turns these
/// into batches; the conformance kit and driver tests read them directly
/// (see [`Sink::channel`]).
#[derive(Debug, Clone)]
pub enum DriverEvent {
    /// A device was declared, or its info or tag table changed.
    Announce {
        /// The device.
        device: DeviceHandle,
        /// Its identity.
        info: Arc<DeviceInfo>,
        /// The whole tag table so far (it only grows; shared with the
        /// devices that have the same one).
        tags: Arc<TagTable>,
    },
    /// A session came up or went down.
    Status {
        /// The device.
        device: DeviceHandle,
        /// Session up.
        online: bool,
        /// Why.
        reason: String,
        /// When, nanoseconds since the epoch.
        time: i64,
    },
    /// Readings, of any devices.
    Readings(Vec<Reading>),
}

/// The result of [`Sink::declare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The device's handle.
    pub device: DeviceHandle,
    /// The device's whole tag table after the declaration (ids by name for
    /// drivers that find tags at run time).
    pub table: Arc<TagTable>,
    /// The id of each declared tag, in the order given; `None` for a tag
    /// beyond the gateway's `max_tags_per_device` or whose name is empty or
    /// longer than [`MAX_TAG_NAME_BYTES`] (it is not announced, and its
    /// values cannot be sent).
    pub tags: Vec<Option<TagId>>,
}

impl Declared {
    /// The id of the `i`-th declared tag.
    pub fn tag(&self, i: usize) -> Option<TagId> {
        self.tags.get(i).copied().flatten()
    }
}

/// Why a declaration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The gateway is stopping.
    #[error("the gateway is stopping")]
    Closed,
    /// Another driver already serves a device with this id.
    #[error("device id `{id}` is already served over {other}; ids must be unique in a gateway")]
    Conflict {
        /// The id.
        id: String,
        /// The protocol it is served over.
        other: Protocol,
    },
    /// The gateway serves as many devices as it may.
    #[error("cannot add device `{id}`: the gateway serves its limit of {limit} devices")]
    TooManyDevices {
        /// The id refused.
        id: String,
        /// `limits.max_devices`.
        limit: usize,
    },
}

/// Longest tag name a driver may declare, in bytes.
pub const MAX_TAG_NAME_BYTES: usize = 128;

/// Bounds on what drivers may declare (discovery is driven by devices, so
/// by input from outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most devices in one gateway.
    pub max_devices: usize,
    /// Most tags per device.
    pub max_tags_per_device: usize,
}

/// A declared device: two pointers, its identity (shared with the driver
/// that declared it and the normalizer) and its tag table (shared with the
/// devices that have the same one).
#[derive(Debug)]
struct Entry {
    info: Arc<DeviceInfo>,
    tags: Arc<TagTable>,
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<String, u32>,
    devices: Vec<Entry>,
    tables: TagTables,
}

/// Hands driver output to the core. Cheap to clone: every device task may
/// hold one.
#[derive(Debug, Clone)]
pub struct Sink {
    events: mpsc::Sender<DriverEvent>,
    table: Arc<Mutex<Table>>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl Sink {
    pub(crate) fn new(
        events: mpsc::Sender<DriverEvent>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Sink {
        Sink {
            events,
            table: Arc::default(),
            limits,
            metrics,
        }
    }

    /// A sink whose events the caller reads: for driver tests and the
    /// conformance kit, which run a driver without the rest of the gateway.
    pub fn channel(
        capacity: usize,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> (Sink, mpsc::Receiver<DriverEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Sink::new(tx, limits, metrics), rx)
    }

    /// Declares a device and (some of) its tags; returns its handle and the
    /// tags' ids. Declaring again with the same id (a rebirth, a new payload
    /// field) returns the same handle: known tags keep their ids, new ones
    /// are appended, and the device is announced again when anything
    /// changed.
    ///
    /// # Errors
    /// [`SinkError::Conflict`] when another protocol's driver has the id;
    /// [`SinkError::TooManyDevices`]; [`SinkError::Closed`] when stopping.
    pub async fn declare(&self, info: DeviceInfo, tags: &[TagInfo]) -> Result<Declared, SinkError> {
        self.declare_shared(Arc::new(info), tags).await
    }

    /// [`Sink::declare`] with an identity the driver keeps too: the sink
    /// keeps the same `Arc` rather than a copy (a driver of many devices
    /// keeps each identity once).
    ///
    /// # Errors
    /// As [`Sink::declare`].
    pub async fn declare_shared(
        &self,
        info: Arc<DeviceInfo>,
        tags: &[TagInfo],
    ) -> Result<Declared, SinkError> {
        let (declared, announce) = self.merge(info, tags)?;
        if let Some(event) = announce {
            self.events
                .send(event)
                .await
                .map_err(|_| SinkError::Closed)?;
        }
        Ok(declared)
    }

    fn merge(
        &self,
        info: Arc<DeviceInfo>,
        tags: &[TagInfo],
    ) -> Result<(Declared, Option<DriverEvent>), SinkError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let table = &mut *table;
        let mut changed = false;
        let index = match table.by_id.get(&info.id) {
            Some(&index) => index,
            None => {
                changed = true;
                if table.devices.len() >= self.limits.max_devices {
                    return Err(SinkError::TooManyDevices {
                        id: info.id.clone(),
                        limit: self.limits.max_devices,
                    });
                }
                let index =
                    u32::try_from(table.devices.len()).map_err(|_| SinkError::TooManyDevices {
                        id: info.id.clone(),
                        limit: self.limits.max_devices,
                    })?;
                table.by_id.insert(info.id.clone(), index);
                let tags = table.tables.intern(Vec::new());
                table.devices.push(Entry {
                    info: info.clone(),
                    tags,
                });
                index
            }
        };
        let entry = &mut table.devices[index as usize];
        if entry.info.protocol != info.protocol {
            return Err(SinkError::Conflict {
                id: info.id.clone(),
                other: entry.info.protocol,
            });
        }
        if !Arc::ptr_eq(&entry.info, &info) && *entry.info != *info {
            entry.info = info;
            changed = true;
        }
        let mut ids = Vec::with_capacity(tags.len());
        let mut new: Vec<TagInfo> = Vec::new();
        for tag in tags {
            let known = entry.tags.id(&tag.name).or_else(|| {
                new.iter()
                    .position(|t| t.name == tag.name)
                    .map(|i| (entry.tags.len() + i) as TagId)
            });
            let id = match known {
                Some(id) => Some(id),
                // Names come from devices (JSON keys, Sparkplug metrics):
                // bounded here for every driver.
                None if tag.name.is_empty() || tag.name.len() > MAX_TAG_NAME_BYTES => None,
                None if entry.tags.len() + new.len() < self.limits.max_tags_per_device => {
                    // Fits: the table is bounded by max_tags_per_device.
                    let id = (entry.tags.len() + new.len()) as TagId;
                    new.push(tag.clone());
                    Some(id)
                }
                None => None,
            };
            ids.push(id);
        }
        if !new.is_empty() {
            entry.tags = table.tables.grown(&entry.tags, new);
            changed = true;
        }
        let device = DeviceHandle(index);
        let announce = changed.then(|| DriverEvent::Announce {
            device,
            info: entry.info.clone(),
            tags: entry.tags.clone(),
        });
        Ok((
            Declared {
                device,
                table: entry.tags.clone(),
                tags: ids,
            },
            announce,
        ))
    }

    /// Reports that the session with `device` came up (`online`) or went
    /// down, now. Repeating the current state is harmless (the core sends
    /// changes only).
    ///
    /// # Errors
    /// [`SinkError::Closed`] when the gateway is stopping.
    pub async fn status(
        &self,
        device: DeviceHandle,
        online: bool,
        reason: impl Into<String>,
    ) -> Result<(), SinkError> {
        self.status_at(device, online, reason, now_unix_nanos())
            .await
    }

    /// [`Sink::status`] at a given time (nanoseconds since the epoch), for
    /// protocols that stamp their own (a Sparkplug death certificate).
    ///
    /// # Errors
    /// [`SinkError::Closed`] when the gateway is stopping.
    pub async fn status_at(
        &self,
        device: DeviceHandle,
        online: bool,
        reason: impl Into<String>,
        time: i64,
    ) -> Result<(), SinkError> {
        let event = DriverEvent::Status {
            device,
            online,
            reason: reason.into(),
            time,
        };
        self.events.send(event).await.map_err(|_| SinkError::Closed)
    }

    /// Hands over readings (of any devices declared through this gateway).
    /// Waits while the core is busy: a driver that cannot keep up slows its
    /// own input down rather than losing it.
    ///
    /// # Errors
    /// [`SinkError::Closed`] when the gateway is stopping.
    pub async fn push(&self, readings: Vec<Reading>) -> Result<(), SinkError> {
        if readings.is_empty() {
            return Ok(());
        }
        self.events
            .send(DriverEvent::Readings(readings))
            .await
            .map_err(|_| SinkError::Closed)
    }

    /// The counters of a protocol's driver (requests, errors, malformed
    /// input), rendered on the gateway's `/metrics`.
    pub fn metrics(&self, protocol: Protocol) -> &DriverMetrics {
        self.metrics.driver(protocol)
    }

    /// The gateway's metrics.
    pub fn gateway_metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use fieldlink_model::Category;

    use super::*;
    use crate::device::ValueKind;

    fn info(id: &str, protocol: Protocol) -> DeviceInfo {
        DeviceInfo {
            id: id.to_owned(),
            category: Category::Robots,
            protocol,
            device_type: "t".into(),
            name: "n".into(),
            endpoint: String::new(),
            attributes: Default::default(),
        }
    }

    fn sink(max_tags: usize) -> (Sink, mpsc::Receiver<DriverEvent>) {
        let (tx, rx) = mpsc::channel(16);
        let limits = Limits {
            max_devices: 2,
            max_tags_per_device: max_tags,
        };
        (Sink::new(tx, limits, Arc::default()), rx)
    }

    #[tokio::test]
    async fn declaring_again_keeps_ids_appends_tags_and_announces_only_changes() {
        let (sink, mut rx) = sink(3);
        let a = TagInfo::new("a", ValueKind::Double);
        let b = TagInfo::new("b", ValueKind::Int);
        let c = TagInfo::new("c", ValueKind::Bool);
        let d = TagInfo::new("d", ValueKind::Bool);
        let first = sink
            .declare(info("x", Protocol::MqttJson), &[a.clone(), b.clone()])
            .await
            .unwrap();
        assert_eq!(first.tags, [Some(0), Some(1)]);
        assert!(matches!(rx.try_recv(), Ok(DriverEvent::Announce { tags, .. }) if tags.len() == 2));

        let same = sink
            .declare(info("x", Protocol::MqttJson), std::slice::from_ref(&b))
            .await
            .unwrap();
        assert_eq!(
            (same.device, same.tags.clone()),
            (first.device, vec![Some(1)])
        );
        assert!(rx.try_recv().is_err(), "nothing changed, nothing announced");

        let grown = sink
            .declare(info("x", Protocol::MqttJson), &[c, a, d])
            .await
            .unwrap();
        assert_eq!(
            grown.tags,
            [Some(2), Some(0), None],
            "d is over the limit of 3"
        );
        match rx.try_recv() {
            Ok(DriverEvent::Announce { tags, .. }) => {
                let names: Vec<_> = tags.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(names, ["a", "b", "c"]);
            }
            other => panic!("expected an announce, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn devices_with_the_same_tags_share_one_table_and_one_that_adds_a_tag_gets_its_own() {
        let (sink, mut rx) = sink(10);
        let type_tags = [
            TagInfo::new("speed", ValueKind::Double),
            TagInfo::new("temp", ValueKind::Double),
        ];
        let x = sink
            .declare(info("x", Protocol::MqttJson), &type_tags)
            .await
            .unwrap();
        let y = sink
            .declare(info("y", Protocol::MqttJson), &type_tags)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&x.table, &y.table), "one table for both");
        assert_eq!(
            (x.tags.clone(), y.tags.clone()),
            (vec![Some(0), Some(1)], vec![Some(0), Some(1)])
        );

        let extra = TagInfo::new("extra", ValueKind::Int);
        let grown = sink
            .declare(
                info("y", Protocol::MqttJson),
                &[extra, type_tags[1].clone()],
            )
            .await
            .unwrap();
        assert_eq!(
            grown.tags,
            [Some(2), Some(1)],
            "known ids stay, the new tag is appended"
        );
        assert!(!Arc::ptr_eq(&grown.table, &x.table));
        assert_eq!(grown.table.id("extra"), Some(2));
        assert_eq!(x.table.id("extra"), None, "x's table is unchanged");
        let again = sink
            .declare(info("x", Protocol::MqttJson), &type_tags)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&again.table, &x.table));
        assert_eq!(again.tags, [Some(0), Some(1)]);

        let mut announced = Vec::new();
        while let Ok(DriverEvent::Announce { info, tags, .. }) = rx.try_recv() {
            let names: Vec<_> = tags.iter().map(|t| t.name.clone()).collect();
            announced.push((info.id.clone(), names));
        }
        assert_eq!(
            announced,
            [
                ("x".to_owned(), vec!["speed".to_owned(), "temp".to_owned()]),
                ("y".to_owned(), vec!["speed".to_owned(), "temp".to_owned()]),
                (
                    "y".to_owned(),
                    vec!["speed".to_owned(), "temp".to_owned(), "extra".to_owned()]
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_tag_repeated_in_one_declaration_gets_one_id() {
        let (sink, _rx) = sink(10);
        let a = TagInfo::new("a", ValueKind::Int);
        let declared = sink
            .declare(info("x", Protocol::MqttJson), &[a.clone(), a])
            .await
            .unwrap();
        assert_eq!(declared.tags, [Some(0), Some(0)]);
        assert_eq!(declared.table.len(), 1);
    }

    #[tokio::test]
    async fn tag_names_are_bounded() {
        let (sink, _rx) = sink(10);
        let long = TagInfo::new("x".repeat(MAX_TAG_NAME_BYTES + 1), ValueKind::Int);
        let longest = TagInfo::new("y".repeat(MAX_TAG_NAME_BYTES), ValueKind::Int);
        let empty = TagInfo::new("", ValueKind::Int);
        let declared = sink
            .declare(info("x", Protocol::MqttJson), &[long, longest, empty])
            .await
            .unwrap();
        assert_eq!(declared.tags, [None, Some(0), None]);
    }

    #[tokio::test]
    async fn ids_are_unique_across_drivers_and_devices_are_bounded() {
        let (sink, _rx) = sink(3);
        sink.declare(info("x", Protocol::ModbusTcp), &[])
            .await
            .unwrap();
        let err = sink
            .declare(info("x", Protocol::OpcUa), &[])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SinkError::Conflict {
                id: "x".into(),
                other: Protocol::ModbusTcp
            }
        );
        sink.declare(info("y", Protocol::OpcUa), &[]).await.unwrap();
        let err = sink
            .declare(info("z", Protocol::OpcUa), &[])
            .await
            .unwrap_err();
        assert!(
            matches!(err, SinkError::TooManyDevices { limit: 2, .. }),
            "{err}"
        );
    }
}
