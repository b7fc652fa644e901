//! Fieldlink load benches. Each bench is a `fieldlink bench <name>`
//! subcommand: it starts what it measures (or targets a running instance),
//! records figures with `hdrhistogram`, prints a summary and writes JSON
//! under `benches/results/`.
//!
//! - [`ingest`]: gateway streams into a registry.
//! - [`modbus`]: one gateway polling simulated Modbus TCP devices, beside pymodbus.
//! - [`opcua`]: one gateway subscribing to a simulated OPC UA server, beside asyncua.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod ingest;
pub mod modbus;
pub mod opcua;
mod process;
