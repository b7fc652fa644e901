//! The shared vocabulary of Fieldlink: no I/O, only types.
//!
//! - [`proto`]: the protobuf schema of the gateway → registry stream
//!   (`proto/fieldlink/v1/ingest.proto`), generated with prost and tonic.
//! - [`taxonomy`]: [`DeviceClass`], [`Category`], [`Protocol`] and [`Cloud`]
//!   with the stable codes of the API and the names the platform form uses.
//! - [`time`]: [`UtcOffset`], [`Day`] and [`LocalTime`], the day arithmetic
//!   behind 日运行数量 (devices reporting per day).
//! - [`id`]: what a device id may be.
//! - [`register`]: the Modbus register vocabulary (areas, data types, byte
//!   and word order) of the gateway and the simulators.
//! - [`mqtt`]: MQTT traffic as a broker hands it to the gateway's MQTT
//!   drivers (the in-process link between `broker` and `gateway`).
//! - [`sparkplug`]: the Sparkplug B 3.0 payload schema, topic namespace and
//!   Fieldlink's identity convention for Sparkplug devices.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod error;
pub mod id;
pub mod mqtt;
pub mod register;
pub mod sparkplug;
pub mod taxonomy;
pub mod time;

/// Generated protobuf types and gRPC stubs of `fieldlink.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("fieldlink.v1");
}

pub use error::{ConfigError, InvalidDeviceId, TimeError, UnknownCode};
pub use id::{MAX_DEVICE_ID_BYTES, validate_device_id};
pub use taxonomy::{Category, Cloud, DeviceClass, Protocol};
pub use time::{Day, LocalTime, NANOS_PER_SEC, UtcOffset, now_unix_nanos};
