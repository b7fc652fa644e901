//! End-to-end tests of the `fieldlink` binary and the registry, over real
//! loopback sockets: one test binary of modules.

mod support;

mod bench_connections;
mod bench_ingest;
mod bench_modbus;
mod bench_mqtt;
mod bench_verify;
mod broker_cli;
mod config_errors;
mod conformance;
mod fleet_counts;
mod gateway_modbus;
mod gateway_opcua;
mod gateway_restart;
mod ingress_shards;
mod interop;
mod interop_broker;
mod interop_mbpoll;
mod interop_mqtt;
mod interop_opcua;
mod interop_sparkplug;
mod registry_api;
mod registry_counting;
mod registry_input;
mod registry_restart;
mod report_cli;
