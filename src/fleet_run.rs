//! Running a simulated fleet of any mix of protocols: its files (one
//! manifest, `tenants.toml`, one gateway config per tenant covering every
//! protocol), each protocol's simulator face, and the MQTT broker the MQTT
//! faces need (`--broker`, or a `fieldlink broker` of the fleet's own).
//! `fieldlink sim ...` and `fieldlink demo` start fleets through it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fieldlink_model::Protocol;
use fieldlink_sim::mqtt::lean::{FLEET_CONNECTING, LeanOptions};
use fieldlink_sim::mqtt::lean_run::{LEAN_SHARD_SIZE, LeanRun, LeanRunOptions};
use fieldlink_sim::mqtt::{BrokerAddr, Credentials, MqttFleet, MqttFleetOptions};
use fieldlink_sim::opcua::{OpcUaFleet, OpcUaOptions};
use fieldlink_sim::sparkplug::{SparkplugFleet, SparkplugFleetOptions};
use fieldlink_sim::{
    Controls, FaceFiles, FleetPlan, ModbusFiles, MqttFiles, OpcUaFiles, RunOptions, RunningFleet,
    ShardCommand, SimError, SparkplugFiles, WrittenFiles,
};

use crate::fleet_broker::{self, FleetBroker};

/// What to start, besides the plan.
#[derive(Debug, Clone)]
pub(crate) struct FleetSetup {
    /// Where the files go.
    pub(crate) out: PathBuf,
    /// gRPC URL of the registry, written into the gateway configs.
    pub(crate) registry_url: String,
    /// An external broker for the MQTT faces; `None`: a broker of the
    /// fleet's own on `broker_listen`.
    pub(crate) broker: Option<BrokerAddr>,
    /// Where the fleet's own broker listens.
    pub(crate) broker_listen: SocketAddr,
    /// User and password the gateway configs log in to the broker with,
    /// instead of each gateway's own.
    pub(crate) gateway_login: Option<(String, String)>,
    /// The gateways run in this process and reach the fleet's own broker
    /// over the in-process link.
    pub(crate) gateway_embedded: bool,
    /// Devices per Sparkplug edge node.
    pub(crate) devices_per_node: u32,
    /// How the Modbus face runs (shards).
    pub(crate) modbus: RunOptions,
    /// How the OPC UA face runs (servers, ports, security, user); its
    /// `pki_dir` is taken relative to `out` when relative.
    pub(crate) opcua: OpcUaOptions,
    /// Faults and growth of the MQTT faces' devices.
    pub(crate) controls: Controls,
    /// MQTT JSON devices are lean clients (one login per tenant, in shard
    /// processes of [`LEAN_SHARD_SIZE`] devices), and the fleet's own broker
    /// brings the lean ingress on `ingress_listen`, whose shards run the
    /// gateways.
    pub(crate) lean: bool,
    /// Where the fleet's own lean ingress listens.
    pub(crate) ingress_listen: SocketAddr,
    /// Metrics and client API of the ingress's shard K: this port + K.
    pub(crate) ingress_metrics: Option<SocketAddr>,
    /// Most lean devices per process.
    pub(crate) lean_shard_size: u32,
}

impl FleetSetup {
    /// Defaults for a fleet written to `out` for the registry at
    /// `registry_url`.
    pub(crate) fn new(out: PathBuf, registry_url: String) -> FleetSetup {
        FleetSetup {
            out,
            registry_url,
            broker: None,
            broker_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            gateway_login: None,
            gateway_embedded: false,
            devices_per_node: fieldlink_sim::sparkplug::DEFAULT_DEVICES_PER_NODE,
            modbus: RunOptions::default(),
            opcua: OpcUaOptions::default(),
            controls: Controls::default(),
            lean: false,
            ingress_listen: SocketAddr::from(([127, 0, 0, 1], 1884)),
            ingress_metrics: None,
            lean_shard_size: LEAN_SHARD_SIZE,
        }
    }
}

/// A fleet being served.
#[derive(Debug)]
pub(crate) struct RunningFaces {
    /// The files written.
    pub(crate) files: WrittenFiles,
    /// The fleet's own broker, if it runs one.
    pub(crate) broker: Option<FleetBroker>,
    /// Where the MQTT faces' devices connect, if the fleet has any.
    pub(crate) broker_url: Option<String>,
    modbus: Option<RunningFleet>,
    opcua: Option<OpcUaFleet>,
    mqtt: Option<MqttFleet>,
    lean: Option<LeanRun>,
    /// Shards of the fleet's own lean ingress.
    ingress_shards: usize,
    /// Their client APIs (`http://HOST:PORT`), when they serve one.
    ingress_apis: Vec<String>,
    sparkplug: Option<SparkplugFleet>,
}

/// The file writers of a fleet's protocols.
struct Faces {
    modbus: ModbusFiles,
    opcua: OpcUaFiles,
    mqtt: Option<MqttFiles>,
    sparkplug: Option<SparkplugFiles>,
}

impl Faces {
    fn all(&self) -> Vec<&dyn FaceFiles> {
        let mut all: Vec<&dyn FaceFiles> = vec![&self.modbus, &self.opcua];
        if let Some(f) = &self.mqtt {
            all.push(f);
        }
        if let Some(f) = &self.sparkplug {
            all.push(f);
        }
        all
    }
}

fn has(plan: &FleetPlan, protocol: Protocol) -> bool {
    plan.protocols().any(|p| p == protocol)
}

impl RunningFaces {
    /// Writes the files and starts every face of `plan` (and the broker).
    ///
    /// # Errors
    /// Files that cannot be written, a broker or face that cannot start;
    /// what was started is stopped again.
    pub(crate) async fn start(plan: &FleetPlan, setup: FleetSetup) -> anyhow::Result<RunningFaces> {
        let needs_broker = has(plan, Protocol::MqttJson) || has(plan, Protocol::SparkplugB);
        let lean = setup.lean && has(plan, Protocol::MqttJson);
        if lean && plan.protocols().any(|p| p != Protocol::MqttJson) {
            anyhow::bail!("lean MQTT clients are for fleets of MQTT JSON devices only");
        }
        let credentials = if lean {
            Credentials::generate_lean(plan)?
        } else {
            Credentials::generate(plan, setup.devices_per_node)?
        };
        std::fs::create_dir_all(&setup.out).map_err(|e| SimError::Io {
            path: setup.out.clone(),
            source: e,
        })?;
        // A lean fleet's own broker starts once the gateway configs its
        // ingress shards run are written.
        let own_ingress = lean && setup.broker.is_none();
        let (broker_addr, broker) = match (&setup.broker, needs_broker) {
            (_, false) => (None, None),
            (Some(addr), true) => (Some(addr.clone()), None),
            (None, true) if own_ingress => {
                let at = setup.ingress_listen;
                let addr = format!("mqtt://{at}").parse::<BrokerAddr>()?;
                (Some(addr), None)
            }
            (None, true) => {
                let config = fleet_broker::broker_config(plan, &credentials, setup.broker_listen)?;
                let written = fleet_broker::write_config(&config, &setup.out)?;
                let broker = FleetBroker::start(&config, &written).await?;
                (Some(broker.url().parse::<BrokerAddr>()?), Some(broker))
            }
        };
        let gateway_embedded = setup.gateway_embedded || own_ingress;
        let mqtt_face = |addr: &BrokerAddr| MqttFiles {
            broker: addr.clone(),
            credentials: credentials.clone(),
            gateway_login: setup.gateway_login.clone(),
            gateway_embedded,
        };
        let sparkplug_face = |addr: &BrokerAddr| {
            let mut face = SparkplugFiles::new(
                addr.clone(),
                credentials.clone(),
                plan,
                setup.devices_per_node,
            );
            face.gateway_login = setup.gateway_login.clone();
            face.gateway_embedded = setup.gateway_embedded;
            face
        };
        let mut opcua = setup.opcua.clone();
        if opcua.pki_dir.is_relative() {
            opcua.pki_dir = setup.out.join(&opcua.pki_dir);
        }
        let faces = Faces {
            modbus: ModbusFiles,
            opcua: OpcUaFiles {
                host: opcua.host,
                base_port: opcua.base_port,
                devices_per_server: opcua.devices_per_server,
                security: if opcua.security {
                    ("sign-and-encrypt", "basic256sha256")
                } else {
                    ("none", "none")
                },
                user: opcua.user.clone(),
            },
            mqtt: broker_addr
                .as_ref()
                .filter(|_| has(plan, Protocol::MqttJson))
                .map(mqtt_face),
            sparkplug: broker_addr
                .as_ref()
                .filter(|_| has(plan, Protocol::SparkplugB))
                .map(sparkplug_face),
        };
        let mut running = RunningFaces {
            files: plan.write_files_with(&setup.out, &setup.registry_url, &faces.all())?,
            broker_url: broker_addr.as_ref().map(ToString::to_string),
            broker,
            modbus: None,
            opcua: None,
            mqtt: None,
            lean: None,
            ingress_shards: 0,
            ingress_apis: Vec::new(),
            sparkplug: None,
        };
        if own_ingress {
            let config = fleet_broker::lean_broker_config(
                plan,
                &credentials,
                setup.broker_listen,
                setup.ingress_listen,
                running.files.gateways.clone(),
            )?;
            let mut config = config;
            if let Some(i) = config.ingress.as_mut() {
                i.metrics = setup.ingress_metrics;
            }
            let written = fleet_broker::write_config(&config, &setup.out)?;
            running.ingress_shards = config.ingress.as_ref().map_or(0, |i| i.shards);
            running.ingress_apis = config.ingress.as_ref().map_or_else(Vec::new, |i| {
                i.metrics
                    .map(|base| {
                        (0..i.shards)
                            .filter_map(|k| fieldlink_broker::ingress::shard::metrics_addr(base, k))
                            .map(|a| format!("http://{a}"))
                            .collect()
                    })
                    .unwrap_or_default()
            });
            running.broker = Some(FleetBroker::start(&config, &written).await?);
        }
        if has(plan, Protocol::ModbusTcp) {
            match RunningFleet::start(plan, setup.modbus.clone()).await {
                Ok(fleet) => running.modbus = Some(fleet),
                Err(e) => {
                    running.stop().await;
                    return Err(e.into());
                }
            }
        }
        if has(plan, Protocol::OpcUa) {
            match OpcUaFleet::start(plan, opcua).await {
                Ok(fleet) => running.opcua = Some(fleet),
                Err(e) => {
                    running.stop().await;
                    return Err(e.into());
                }
            }
        }
        if let Some(addr) = &broker_addr {
            let interval = plan.spec().interval;
            if lean {
                let started = start_lean(plan, addr, &credentials, &setup).await;
                match started {
                    Ok(fleet) => running.lean = Some(fleet),
                    Err(e) => {
                        running.stop().await;
                        return Err(e);
                    }
                }
            } else if has(plan, Protocol::MqttJson) {
                running.mqtt = Some(MqttFleet::start(
                    plan,
                    MqttFleetOptions {
                        broker: addr.clone(),
                        credentials: credentials.clone(),
                        interval,
                        controls: setup.controls.clone(),
                    },
                ));
            }
            if has(plan, Protocol::SparkplugB) {
                running.sparkplug = Some(SparkplugFleet::start(
                    plan,
                    SparkplugFleetOptions {
                        broker: addr.clone(),
                        credentials,
                        per_node: setup.devices_per_node,
                        interval,
                        controls: setup.controls,
                    },
                ));
            }
        }
        Ok(running)
    }

    /// One line per running face, for the console.
    pub(crate) fn describe(&self, plan: &FleetPlan) -> Vec<String> {
        let mut lines = Vec::new();
        let count = |p: Protocol| {
            let r = plan.range_of(p);
            r.end - r.start
        };
        if let Some(m) = &self.modbus {
            let r = plan.range_of(Protocol::ModbusTcp);
            let at = |i: u32| plan.endpoint(i).map(|e| e.to_string()).unwrap_or_default();
            lines.push(format!(
                "modbus-tcp: {} devices on {}..{} ({} process(es))",
                count(Protocol::ModbusTcp),
                at(r.start),
                at(r.end.saturating_sub(1)),
                m.processes()
            ));
        }
        if let Some(o) = &self.opcua {
            let ports = o.ports();
            let first = ports.first().copied().unwrap_or_default();
            let last = ports.last().copied().unwrap_or_default();
            let servers = match o.len() {
                1 => format!("1 server, opc.tcp://127.0.0.1:{first}"),
                n => format!("{n} servers, opc.tcp://127.0.0.1:{first}..{last}"),
            };
            lines.push(format!(
                "opc-ua: {} devices on {servers}",
                count(Protocol::OpcUa)
            ));
        }
        let broker = self.broker_url.as_deref().unwrap_or("?");
        if let Some(m) = &self.mqtt {
            lines.push(format!(
                "mqtt-json: {} devices, each its own client of {broker}",
                m.devices()
            ));
        }
        if let Some(l) = &self.lean {
            let via = match self.ingress_shards {
                0 => format!("at {broker}"),
                n if self.ingress_apis.is_empty() => format!(
                    "through the lean ingress at {broker} ({n} shard process(es), which run the gateway configs)"
                ),
                n => format!(
                    "through the lean ingress at {broker} ({n} shard process(es), which run the gateway configs; for bench verify: {})",
                    self.ingress_apis
                        .iter()
                        .map(|a| format!("--mqtt-api {a}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            };
            lines.push(format!(
                "mqtt-json: {} lean devices in {} process(es), each its own connection from its own 127.x.y.z address, {via}",
                l.devices(),
                l.processes()
            ));
        }
        if let Some(s) = &self.sparkplug {
            lines.push(format!(
                "sparkplug-b: {} devices on {} edge nodes at {broker}",
                count(Protocol::SparkplugB),
                s.nodes().len()
            ));
        }
        lines
    }

    /// Completes when a face fails for good (a Modbus shard exits).
    pub(crate) async fn failed(&mut self) -> anyhow::Error {
        let modbus = async {
            match &mut self.modbus {
                Some(m) => m.failed().await,
                None => std::future::pending().await,
            }
        };
        let lean = async {
            match &mut self.lean {
                Some(l) => l.failed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = modbus => e.into(),
            e = lean => e.into(),
        }
    }

    /// Stops every face, then the broker.
    pub(crate) async fn stop(self) {
        if let Some(m) = self.mqtt {
            m.stop().await;
        }
        if let Some(l) = self.lean {
            l.stop().await;
        }
        if let Some(s) = self.sparkplug {
            s.stop().await;
        }
        if let Some(m) = self.modbus {
            m.stop().await;
        }
        if let Some(o) = self.opcua {
            o.stop().await;
        }
        if let Some(b) = self.broker
            && let Err(e) = tokio::time::timeout(Duration::from_secs(10), b.stop())
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("did not stop in 10 s")))
        {
            tracing::warn!(error = %e, "the fleet's broker");
        }
    }
}

/// Starts the lean devices of `plan` against `broker`, in shards of this
/// binary (`sim mqtt-shard`) of at most `lean_shard_size` devices each.
async fn start_lean(
    plan: &FleetPlan,
    broker: &BrokerAddr,
    credentials: &Credentials,
    setup: &FleetSetup,
) -> anyhow::Result<LeanRun> {
    let brokers: Vec<SocketAddr> = tokio::net::lookup_host((broker.host.as_str(), broker.port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve the broker {broker}: {e}"))?
        .filter(SocketAddr::is_ipv4)
        .take(1)
        .collect();
    if brokers.is_empty() {
        anyhow::bail!(
            "the broker {broker} has no IPv4 address (lean devices connect from 127.x.y.z)"
        );
    }
    let options = LeanRunOptions {
        lean: LeanOptions {
            brokers,
            logins: credentials.fleet_logins(),
            interval: plan.spec().interval,
            connecting: FLEET_CONNECTING,
        },
        credentials_file: setup.out.join("mqtt-credentials.csv"),
        shard_size: setup.lean_shard_size,
        shard_command: Some(ShardCommand::current_exe(["sim", "mqtt-shard"])?),
    };
    Ok(LeanRun::start(plan, options).await?)
}
