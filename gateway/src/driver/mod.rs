//! Drivers: how the gateway talks to devices.
//!
//! The seam has two halves.
//!
//! - **Configuration.** A protocol family is a [`DriverKind`], one folder
//!   under `driver/`. It names its config section (`[modbus]` for driver
//!   settings and `[devices.modbus]` in each device it serves), the protocol
//!   codes it serves, and turns those sections into a [`DriverInstance`],
//!   reporting every bad key by its path. [`KINDS`] lists the kinds compiled
//!   in; the core picks a device's kind by its `protocol`.
//! - **Running.** [`DriverInstance::run`] is one task that serves its devices
//!   until shutdown and pushes what it learns into a [`Sink`]: it declares
//!   devices and their tag tables (configured ones at start, discovered ones
//!   when they appear: a Sparkplug birth, an MQTT device that registers), then
//!   reports session state and [`Reading`]s, each with its tag, value, quality
//!   and source time. Everything after the sink — announces, batching, the
//!   disk spool, the uplink — is the core's, the same for every protocol.
//!
//! Protocols that are asked for values use the core's [`poll`] adapter: the
//! driver implements [`poll::Poller`] and [`poll::PolledSession`], and the
//! adapter schedules poll groups, times reads out, backs off from failing
//! devices and reports online/offline.
//!
//! # Writing a driver
//! `gateway/DRIVERS.md` walks through Modbus (polled) and OPC UA (pushed).
//! The whole contract, for a driver that pushes a constant for each of its
//! configured devices once a second:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use fieldlink_gateway::device::{DeviceInfo, TagInfo, ValueKind};
//! use fieldlink_gateway::driver::{
//!     BoxRun, DriverConfig, DriverContext, DriverInstance, DriverKind, Reading,
//! };
//! use fieldlink_model::Protocol;
//! use fieldlink_model::proto::point::Value;
//!
//! /// `[devices.constant]` has no keys; the kind serves protocol `opc-ua`
//! /// here only because the protocol list is closed.
//! struct ConstKind;
//!
//! #[derive(Debug)]
//! struct ConstDriver {
//!     devices: Vec<DeviceInfo>,
//! }
//!
//! impl DriverKind for ConstKind {
//!     fn section(&self) -> &'static str {
//!         "constant"
//!     }
//!
//!     fn protocols(&self) -> &'static [Protocol] {
//!         &[Protocol::OpcUa]
//!     }
//!
//!     fn configure(&self, config: DriverConfig<'_>) -> Result<Arc<dyn DriverInstance>, Vec<String>> {
//!         // Parse `config.section` and each `device.section` here; name every
//!         // bad key by its path (`device.key`, e.g. "devices[3] (boiler-7).constant").
//!         let devices = config.devices.into_iter().map(|d| d.info).collect();
//!         Ok(Arc::new(ConstDriver { devices }))
//!     }
//! }
//!
//! impl DriverInstance for ConstDriver {
//!     fn device_count(&self) -> usize {
//!         self.devices.len()
//!     }
//!
//!     fn run(self: Arc<Self>, ctx: DriverContext) -> BoxRun {
//!         Box::pin(async move {
//!             let tags = [TagInfo::new("answer", ValueKind::Double)];
//!             let mut declared = Vec::new();
//!             for info in &self.devices {
//!                 match ctx.sink.declare(info.clone(), &tags).await {
//!                     Ok(d) => declared.push(d),
//!                     Err(e) => tracing::error!(error = %e, "cannot declare"),
//!                 }
//!             }
//!             for d in &declared {
//!                 let _ = ctx.sink.status(d.device, true, "session up").await;
//!             }
//!             let mut tick = tokio::time::interval(Duration::from_secs(1));
//!             loop {
//!                 tokio::select! {
//!                     _ = ctx.shutdown.cancelled() => return,
//!                     _ = tick.tick() => {}
//!                 }
//!                 let now = fieldlink_model::now_unix_nanos();
//!                 let readings = declared
//!                     .iter()
//!                     .filter_map(|d| Some(Reading::good(d.device, d.tag(0)?, now, Value::DoubleValue(42.0))))
//!                     .collect();
//!                 if ctx.sink.push(readings).await.is_err() {
//!                     return; // the gateway is stopping
//!                 }
//!             }
//!         })
//!     }
//! }
//! ```

pub mod modbus;
pub mod mqtt;
pub mod mqtt_source;
pub mod opcua;
pub mod poll;
mod sink;
pub mod sparkplug;
mod tag_table;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use fieldlink_model::Protocol;
use fieldlink_model::mqtt::MqttLink;
use tokio_util::sync::CancellationToken;

use crate::device::DeviceInfo;

pub use sink::{Declared, DriverEvent, Limits, MAX_TAG_NAME_BYTES, Reading, Sink, SinkError};
pub use tag_table::TagTable;

/// The future of a running driver.
pub type BoxRun = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A protocol family: its config section and how to build a driver from it.
pub trait DriverKind: Send + Sync + 'static {
    /// The config section the kind owns: `[NAME]` for driver-wide settings
    /// and `[devices.NAME]` in each device it serves.
    fn section(&self) -> &'static str;

    /// The protocol codes it serves (a device's `protocol` picks its kind).
    fn protocols(&self) -> &'static [Protocol];

    /// Validates the kind's sections and builds the driver. Called once per
    /// gateway, also when no device uses the kind (a driver such as MQTT may
    /// serve only devices discovered at run time); return `Ok` with a driver
    /// that serves nothing when there is nothing to do.
    ///
    /// # Errors
    /// Every problem found, each `key.path: what is wrong` with the paths
    /// given in [`DriverConfig`].
    fn configure(&self, config: DriverConfig<'_>) -> Result<Arc<dyn DriverInstance>, Vec<String>>;
}

/// What a kind is configured from.
#[derive(Debug)]
pub struct DriverConfig<'a> {
    /// The driver-wide section `[NAME]`, if present.
    pub section: Option<&'a toml::Value>,
    /// The configured devices whose protocol the kind serves, in file order.
    pub devices: Vec<ConfiguredDevice<'a>>,
    /// The gateway's data directory: a driver keeps files of its own
    /// (certificates, state) under it unless its config says otherwise.
    pub data_dir: &'a std::path::Path,
}

/// A configured device, its common keys already checked.
#[derive(Debug)]
pub struct ConfiguredDevice<'a> {
    /// Its key path for messages: `devices[3] (cnc-7)`.
    pub key: String,
    /// Identity from the common keys; `endpoint` is empty for the driver to
    /// fill in.
    pub info: DeviceInfo,
    /// Its `[devices.NAME]` section, if present.
    pub section: Option<&'a toml::Value>,
}

/// A configured driver, ready to run.
pub trait DriverInstance: Send + Sync + std::fmt::Debug + 'static {
    /// Devices it serves from config (discovered ones come on top).
    fn device_count(&self) -> usize;

    /// In-process links it opens to the embedded broker
    /// ([`Resources::embedded_mqtt`]) once running: a process that hosts
    /// the broker waits for them before it takes device connections, so
    /// that no device's first messages pass before the driver listens.
    fn embedded_links(&self) -> usize {
        0
    }

    /// Serves devices until `ctx.shutdown`; returns once its tasks have
    /// stopped.
    fn run(self: Arc<Self>, ctx: DriverContext) -> BoxRun;
}

/// What a running driver is given.
#[derive(Debug, Clone)]
pub struct DriverContext {
    /// Where it pushes what it learns.
    pub sink: Sink,
    /// Cancelled when the gateway stops.
    pub shutdown: CancellationToken,
    /// Things the process provides beyond the config.
    pub resources: Resources,
}

/// Opens an in-process link to an embedded MQTT broker, for the clients of
/// one tenant (`Some`) or all.
pub type MqttLinkFactory = Arc<dyn Fn(Option<&str>) -> MqttLink + Send + Sync>;

/// What the process running the gateway provides beyond its config: in
/// `fieldlink demo`, the embedded MQTT broker.
#[derive(Clone, Default)]
pub struct Resources {
    /// The embedded broker, for drivers configured with `broker = "embedded"`.
    pub embedded_mqtt: Option<MqttLinkFactory>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("embedded_mqtt", &self.embedded_mqtt.is_some())
            .finish()
    }
}

/// The driver kinds compiled into this gateway.
pub static KINDS: &[&dyn DriverKind] = &[
    &modbus::ModbusKind,
    &opcua::OpcUaKind,
    &mqtt::MqttKind,
    &sparkplug::SparkplugKind,
];

/// The kind serving `protocol`, if any.
pub fn kind_of(protocol: Protocol) -> Option<&'static dyn DriverKind> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.protocols().contains(&protocol))
}

/// Every protocol this gateway has a driver for (what its Hello lists).
pub fn supported_protocols() -> Vec<Protocol> {
    let mut all: Vec<Protocol> = KINDS.iter().flat_map(|k| k.protocols()).copied().collect();
    all.sort();
    all.dedup();
    all
}

/// Parses a driver section into `T`, naming the section's key on error.
///
/// # Errors
/// `key: message` (unknown keys, wrong types, missing keys).
pub fn parse_section<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &toml::Value,
) -> Result<T, String> {
    value
        .clone()
        .try_into::<T>()
        .map_err(|e| format!("{key}: {}", e.message().trim_end()))
}
