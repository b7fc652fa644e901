//! Simulated industrial devices for Fieldlink.
//!
//! - [`catalog`]: device types for every category of the four classes, with
//!   Modbus register maps and a static identification block (holding
//!   registers 0..=15, see the module docs).
//! - [`signal`]: deterministic signal models; [`SimDevice::words`] is the
//!   pure function behind every register the server answers.
//! - [`server`]: the Modbus TCP face, one loopback listener per device;
//!   besides its catalog map every device serves the [`scan`] block (125
//!   input registers, for whole-block reads).
//! - [`opcua`]: the OPC UA face, devices as objects on `async-opcua`
//!   servers.
//! - [`plan`]: which device has which type, tenant and endpoint.
//! - [`files`]: `manifest.csv`, `tenants.toml` and per-tenant gateway configs.
//! - [`fleet`]: serving a plan in this process or in shard processes.
//! - [`faults`]: switching devices off, hanging them or making them send
//!   garbage, per device, for the conformance kit and the demo;
//!   [`control`] adds run-time growth for the MQTT faces.
//! - [`mqtt`]: the MQTT JSON face (an MQTT client per device) and the
//!   broker credentials of MQTT fleets; [`sparkplug`]: the Sparkplug B face
//!   (an MQTT client per edge node).
//!
//! Typical use (what `fieldlink sim modbus` and `fieldlink demo` do):
//!
//! ```no_run
//! # async fn demo() -> Result<(), fieldlink_sim::SimError> {
//! use fieldlink_sim::{FleetPlan, FleetSpec, RunOptions, RunningFleet, ShardCommand};
//!
//! let plan = FleetPlan::new(FleetSpec { devices: 1000, ..FleetSpec::default() })?;
//! let files = plan.write_files("fleet".as_ref(), "http://127.0.0.1:7600")?;
//! let options = RunOptions {
//!     shard_command: Some(ShardCommand::current_exe(["sim", "modbus-shard"])?),
//!     ..RunOptions::default()
//! };
//! let fleet = RunningFleet::start(&plan, options).await?;
//! // ... run gateways from files.gateways ...
//! fleet.stop().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod catalog;
pub mod control;
pub mod error;
pub mod faults;
pub mod files;
pub mod fleet;
pub mod mqtt;
pub mod opcua;
pub mod plan;
pub mod scan;
pub mod server;
pub mod signal;
pub mod sparkplug;
mod stop;

pub use catalog::{CATALOG, DeviceType, TagDef};
pub use control::Controls;
pub use error::SimError;
pub use faults::{Fault, FaultProxy, Faults};
pub use files::{
    DEFAULT_REGISTRY_URL, FaceFiles, MANIFEST_HEADER, ModbusFiles, MqttFiles, OpcUaFiles,
    SparkplugFiles, WrittenFiles,
};
pub use fleet::{
    DEFAULT_SHARD_SIZE, RunOptions, RunningFleet, ShardArgs, ShardCommand, run_shard, stdin_closed,
};
pub use opcua::{OpcUaFaults, OpcUaFleet, OpcUaOptions};
pub use plan::{
    DEFAULT_PORT, DEFAULT_SEED, DEFAULT_TENANTS, FleetPlan, FleetSpec, Mix, PlannedDevice,
    ProtocolMix, Tenant, TenantSpec, device_addr, parse_interval,
};
pub use server::{BoundFleet, Clock, ServeOptions, serve};
pub use signal::{DeviceState, SimDevice, Words};
