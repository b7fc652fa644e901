//! The Fieldlink edge gateway.
//!
//! Flow: [`driver`] (one task per device: connect, poll, back off; the
//! [`driver::Driver`] trait and the Modbus TCP driver) → [`normalize`]
//! (readings into protobuf batches, grouped by device) → [`spool`] (every
//! batch on disk before it is sent) → [`uplink`] (gRPC stream to the
//! registry with the tenant token; acks remove batches from the spool).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod config;
pub mod driver;
pub mod error;
pub mod metrics;
pub mod spool;

pub use config::{GatewayConfig, Settings};
pub use error::{ConfigError, DriverError, SpoolError};
