//! The MQTT faces' part of the fleet files. Their devices are discovered at
//! run time (MQTT JSON devices register on their meta topic, Sparkplug
//! devices in their births), so the gateway configs list none; they get
//! the driver section that reaches the broker with the gateway's own
//! credentials, and `mqtt-credentials.csv` lists every broker user.
//!
//! Manifest endpoints: `mqtt://HOST:PORT/{tenant}/{device_id}` and
//! `sparkplug://HOST:PORT/{group}/{edge}/{device}`.

use std::path::{Path, PathBuf};

use fieldlink_model::Protocol;

use super::{FaceFiles, to_value};
use crate::error::SimError;
use crate::mqtt::{BrokerAddr, Credentials, gateway_id};
use crate::plan::{FleetPlan, PlannedDevice};
use crate::sparkplug::{NodePlan, node_of, plan_nodes};

/// The MQTT JSON face's files.
#[derive(Debug, Clone)]
pub struct MqttFiles {
    /// The broker the devices and gateways connect to.
    pub broker: BrokerAddr,
    /// Every broker user.
    pub credentials: Credentials,
    /// User name and password every gateway uses instead of its own.
    pub gateway_login: Option<(String, String)>,
    /// The gateways reach the broker over the in-process link
    /// (`broker = "embedded"`: they run in the broker's process, as in
    /// `fieldlink demo`) instead of over MQTT.
    pub gateway_embedded: bool,
}

/// The Sparkplug face's files.
#[derive(Debug, Clone)]
pub struct SparkplugFiles {
    /// The broker.
    pub broker: BrokerAddr,
    /// Every broker user.
    pub credentials: Credentials,
    /// The fleet's edge nodes.
    pub nodes: Vec<NodePlan>,
    /// User name and password every gateway uses instead of its own.
    pub gateway_login: Option<(String, String)>,
    /// The gateways reach the broker over the in-process link (see
    /// [`MqttFiles::gateway_embedded`]).
    pub gateway_embedded: bool,
}

impl SparkplugFiles {
    /// The files of `plan`'s Sparkplug devices in nodes of `per_node`.
    pub fn new(
        broker: BrokerAddr,
        credentials: Credentials,
        plan: &FleetPlan,
        per_node: u32,
    ) -> SparkplugFiles {
        SparkplugFiles {
            broker,
            credentials,
            nodes: plan_nodes(plan, per_node),
            gateway_login: None,
            gateway_embedded: false,
        }
    }
}

/// The client id of tenant `tenant`'s gateway for a driver (`mqtt`,
/// `sparkplug`); the Sparkplug host's id is the same, so that the broker's
/// service ACL (`spBv1.0/STATE/%c`) lets it publish its STATE.
fn gateway_client_id(tenant: &str, suffix: &str) -> String {
    format!("{}-{suffix}", gateway_id(tenant))
}

struct BrokerKeys<'a> {
    broker: &'a BrokerAddr,
    credentials: &'a Credentials,
    login: Option<&'a (String, String)>,
    embedded: bool,
}

fn broker_keys(table: &mut toml::Table, keys: &BrokerKeys<'_>, tenant: &str, suffix: &str) {
    table.insert("tenant".into(), tenant.into());
    if keys.embedded {
        table.insert("broker".into(), "embedded".into());
        return;
    }
    let (broker, credentials, login) = (keys.broker, keys.credentials, keys.login);
    let gw = gateway_id(tenant);
    table.insert("broker".into(), broker.to_string().into());
    table.insert("client_id".into(), gateway_client_id(tenant, suffix).into());
    let (user, password) = match login {
        Some((u, p)) => (u.clone(), p.clone()),
        None => (
            gw.clone(),
            credentials.password(&gw).unwrap_or_default().to_owned(),
        ),
    };
    table.insert("username".into(), user.into());
    table.insert("password".into(), password.into());
}

fn write_credentials(credentials: &Credentials, dir: &Path) -> Result<Vec<PathBuf>, SimError> {
    Ok(vec![credentials.write(dir)?])
}

impl FaceFiles for MqttFiles {
    fn protocol(&self) -> Protocol {
        Protocol::MqttJson
    }

    fn endpoint(&self, plan: &FleetPlan, d: &PlannedDevice) -> String {
        format!(
            "{}/{}/{}",
            self.broker,
            plan.tenants()[d.tenant].name,
            d.id()
        )
    }

    fn gateway_sections(
        &self,
        plan: &FleetPlan,
        tenant: usize,
        _devices: &[PlannedDevice],
    ) -> Result<toml::Table, SimError> {
        let name = &plan.tenants()[tenant].name;
        let mut mqtt = toml::Table::new();
        let keys = BrokerKeys {
            broker: &self.broker,
            credentials: &self.credentials,
            login: self.gateway_login.as_ref(),
            embedded: self.gateway_embedded,
        };
        broker_keys(&mut mqtt, &keys, name, "mqtt");
        let topic = toml::toml! {
            topic = "{tenant}/{device_id}/telemetry"
            tags = "auto"
            timestamp = { pointer = "/ts", format = "epoch_ms" }
        };
        mqtt.insert("topics".into(), to_value("[[mqtt.topics]]", &vec![topic])?);
        let mut table = toml::Table::new();
        table.insert("mqtt".into(), mqtt.into());
        Ok(table)
    }

    fn gateway_device(
        &self,
        _plan: &FleetPlan,
        _d: &PlannedDevice,
    ) -> Result<Option<(String, toml::Value)>, SimError> {
        Ok(None) // registered on its meta topic
    }

    fn extra_files(&self, _plan: &FleetPlan, dir: &Path) -> Result<Vec<PathBuf>, SimError> {
        write_credentials(&self.credentials, dir)
    }
}

impl FaceFiles for SparkplugFiles {
    fn protocol(&self) -> Protocol {
        Protocol::SparkplugB
    }

    fn endpoint(&self, plan: &FleetPlan, d: &PlannedDevice) -> String {
        let edge = node_of(&self.nodes, d.index).map_or("?", |(n, _)| n.edge.as_str());
        format!(
            "sparkplug://{}:{}/{}/{edge}/{}",
            self.broker.host,
            self.broker.port,
            plan.tenants()[d.tenant].name,
            d.id()
        )
    }

    fn gateway_sections(
        &self,
        plan: &FleetPlan,
        tenant: usize,
        _devices: &[PlannedDevice],
    ) -> Result<toml::Table, SimError> {
        let name = &plan.tenants()[tenant].name;
        let mut sp = toml::Table::new();
        let keys = BrokerKeys {
            broker: &self.broker,
            credentials: &self.credentials,
            login: self.gateway_login.as_ref(),
            embedded: self.gateway_embedded,
        };
        broker_keys(&mut sp, &keys, name, "sparkplug");
        if !self.gateway_embedded {
            // Over the in-process link the host keeps the gateway's default
            // id, `fieldlink-<tenant>`, which the service ACL allows too.
            sp.insert(
                "host_id".into(),
                gateway_client_id(name, "sparkplug").into(),
            );
        }
        // Announced ids are the devices' own (the manifest's).
        sp.insert("device_id".into(), "{device}".into());
        sp.insert("nodes_as_devices".into(), "never".into());
        let mut table = toml::Table::new();
        table.insert("sparkplug".into(), sp.into());
        Ok(table)
    }

    fn gateway_device(
        &self,
        _plan: &FleetPlan,
        _d: &PlannedDevice,
    ) -> Result<Option<(String, toml::Value)>, SimError> {
        Ok(None) // born at run time
    }

    fn extra_files(&self, plan: &FleetPlan, dir: &Path) -> Result<Vec<PathBuf>, SimError> {
        // One file for both faces: the MQTT face writes it when the fleet
        // has MQTT JSON devices.
        if plan.protocols().any(|p| p == Protocol::MqttJson) {
            return Ok(Vec::new());
        }
        write_credentials(&self.credentials, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::FleetSpec;

    #[test]
    fn configs_reach_the_broker_and_credentials_cover_every_client() {
        let dir = tempfile::tempdir().unwrap();
        let plan = FleetPlan::new(FleetSpec {
            devices: 60,
            protocols: "mqtt-json=1,sparkplug-b=1".parse().unwrap(),
            ..FleetSpec::default()
        })
        .unwrap();
        let broker: BrokerAddr = "mqtt://127.0.0.1:18830".parse().unwrap();
        let credentials = Credentials::generate(&plan, 4).unwrap();
        let mqtt = MqttFiles {
            broker: broker.clone(),
            credentials: credentials.clone(),
            gateway_login: None,
            gateway_embedded: false,
        };
        let sp = SparkplugFiles::new(broker, credentials.clone(), &plan, 4);
        let files = plan
            .write_files_with(dir.path(), "http://127.0.0.1:7600", &[&mqtt, &sp])
            .unwrap();
        assert_eq!(files.extra.len(), 1);
        let csv = std::fs::read_to_string(&files.extra[0]).unwrap();
        assert_eq!(csv.lines().next(), Some("username,password,tenant,role"));
        assert_eq!(csv.lines().count(), 1 + 30 + sp.nodes.len() + 2);
        let gw: toml::Table =
            toml::from_str(&std::fs::read_to_string(&files.gateways[0]).unwrap()).unwrap();
        assert_eq!(
            gw["mqtt"]["broker"].as_str(),
            Some("mqtt://127.0.0.1:18830")
        );
        assert_eq!(gw["sparkplug"]["tenant"].as_str(), Some("public-a"));
        assert_eq!(
            gw["mqtt"]["password"].as_str(),
            credentials.password("sim-gw-public-a")
        );
        assert!(gw["devices"].as_array().unwrap().is_empty());
        let manifest = std::fs::read_to_string(&files.manifest).unwrap();
        assert!(
            manifest.contains(",mqtt-json,public-a,public,mqtt://127.0.0.1:18830/public-a/sim-")
        );
        assert!(manifest.contains(",sparkplug-b,"));
        assert!(manifest.contains("sparkplug://127.0.0.1:18830/private-b/sim-edge-"));
    }
}
