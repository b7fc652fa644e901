//! Every driver through the conformance kit (`fieldlink_gateway::conformance`)
//! against its simulator face, one module per protocol.

mod link;
mod modbus;
mod mqtt;
mod opcua;
mod sparkplug;
