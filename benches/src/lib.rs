//! Fieldlink load benches. Each bench is a `fieldlink bench <name>`
//! subcommand: it starts what it measures (or targets a running instance),
//! records figures with `hdrhistogram`, prints a summary and writes JSON
//! under `benches/results/`.
//!
//! - [`ingest`]: gateway streams into a registry.
//! - [`modbus`]: one gateway polling simulated Modbus TCP devices, beside pymodbus.
//! - [`opcua`]: one gateway subscribing to a simulated OPC UA server, beside asyncua.
//! - [`mqtt`]: MQTT JSON device clients through `fieldlink broker` into the
//!   gateway and the registry, beside the same through mosquitto.
//!
//! - [`connections`]: a lean fleet of up to a million MQTT devices ramped
//!   and held through the lean ingress, then by mosquitto shards.
//! - [`verify`]: a registry reconciled with a fleet's manifest, exactly.
//!
//! [`fleet_broker`] is the broker config of a simulated fleet, shared with
//! the binary's `sim` and `demo`.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod common;
pub mod connections;
pub mod fleet_broker;
pub mod ingest;
pub mod modbus;
pub mod mqtt;
pub mod opcua;
mod process;
mod prometheus;
mod registry;
pub mod verify;
