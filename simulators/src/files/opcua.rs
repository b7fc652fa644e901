//! The OPC UA face's part of the fleet files: `[opcua]` (publishing and
//! sampling at the plan's interval), one `[opcua.servers.sim-K]` per
//! simulator server the tenant has devices on, and `[devices.opcua]` per
//! device (its server, its object as root, one tag per catalog variable by
//! NodeId with its type). The manifest endpoint is
//! `opc.tcp://HOST:PORT/#ns=2;s=<device id>`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use fieldlink_model::Protocol;
use opcua::types::DataTypeId;
use serde::Serialize;

use super::{FaceFiles, to_value};
use crate::error::SimError;
use crate::opcua::{DEFAULT_BASE_PORT, DEFAULT_DEVICES_PER_SERVER, nodes, server_ranges};
use crate::plan::{FleetPlan, PlannedDevice};

/// The OPC UA face's files.
#[derive(Debug, Clone)]
pub struct OpcUaFiles {
    /// Address of the servers.
    pub host: Ipv4Addr,
    /// Port of server 0.
    pub base_port: u16,
    /// Devices per server (as the fleet was started).
    pub devices_per_server: u32,
    /// `security_mode` and `security_policy` the gateway uses.
    pub security: (&'static str, &'static str),
    /// User and password the gateway logs in with.
    pub user: Option<(String, String)>,
}

impl Default for OpcUaFiles {
    fn default() -> Self {
        OpcUaFiles {
            host: Ipv4Addr::LOCALHOST,
            base_port: DEFAULT_BASE_PORT,
            devices_per_server: DEFAULT_DEVICES_PER_SERVER,
            security: ("none", "none"),
            user: None,
        }
    }
}

#[derive(Serialize)]
struct Section {
    publishing_interval: String,
    sampling_interval: String,
    servers: BTreeMap<String, Server>,
}

#[derive(Serialize)]
struct Server {
    endpoint: String,
    security_mode: &'static str,
    security_policy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

#[derive(Serialize)]
struct Device {
    server: String,
    root: String,
    tags: Vec<Tag>,
}

#[derive(Serialize)]
struct Tag {
    name: &'static str,
    node: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    unit: &'static str,
}

/// The tag kind (`[devices.opcua]` `type`) of a served DataType.
pub(crate) fn kind_of(data_type: DataTypeId) -> &'static str {
    match data_type {
        DataTypeId::Boolean => "bool",
        DataTypeId::String => "string",
        DataTypeId::Double => "double",
        _ => "int",
    }
}

impl OpcUaFiles {
    fn server_index(&self, plan: &FleetPlan, index: u32) -> usize {
        server_ranges(plan, self.devices_per_server)
            .iter()
            .position(|r| r.contains(&index))
            .unwrap_or(0)
    }

    fn port(&self, k: usize) -> u32 {
        u32::from(self.base_port) + k as u32
    }

    /// The endpoint URL of server `k`.
    pub fn endpoint_of(&self, k: usize) -> String {
        format!("opc.tcp://{}:{}/", self.host, self.port(k))
    }
}

impl FaceFiles for OpcUaFiles {
    fn protocol(&self) -> Protocol {
        Protocol::OpcUa
    }

    fn endpoint(&self, plan: &FleetPlan, d: &PlannedDevice) -> String {
        let k = self.server_index(plan, d.index);
        format!("{}#ns={};s={}", self.endpoint_of(k), nodes::NS, d.id())
    }

    fn gateway_sections(
        &self,
        plan: &FleetPlan,
        _tenant: usize,
        devices: &[PlannedDevice],
    ) -> Result<toml::Table, SimError> {
        let interval = humantime::format_duration(plan.spec().interval).to_string();
        let mut servers = BTreeMap::new();
        for d in devices {
            let k = self.server_index(plan, d.index);
            servers.entry(format!("sim-{k}")).or_insert_with(|| Server {
                endpoint: self.endpoint_of(k),
                security_mode: self.security.0,
                security_policy: self.security.1,
                username: self.user.as_ref().map(|u| u.0.clone()),
                password: self.user.as_ref().map(|u| u.1.clone()),
            });
        }
        let section = Section {
            publishing_interval: interval.clone(),
            sampling_interval: interval,
            servers,
        };
        let mut table = toml::Table::new();
        table.insert("opcua".into(), to_value("[opcua]", &section)?);
        Ok(table)
    }

    fn gateway_device(
        &self,
        plan: &FleetPlan,
        d: &PlannedDevice,
    ) -> Result<Option<(String, toml::Value)>, SimError> {
        let id = d.id();
        let device = Device {
            server: format!("sim-{}", self.server_index(plan, d.index)),
            root: nodes::device_node(&id).to_string(),
            tags: d
                .device_type
                .all_tags()
                .map(|t| Tag {
                    name: t.name,
                    node: nodes::tag_node(&id, t.name).to_string(),
                    kind: kind_of(nodes::data_type(t)),
                    unit: t.unit,
                })
                .collect(),
        };
        Ok(Some((
            "opcua".into(),
            to_value("[devices.opcua]", &device)?,
        )))
    }
}
