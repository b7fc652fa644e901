//! `fieldlink sim`: simulated device fleets and their ground-truth files.
//! Every subcommand plans a fleet, writes its files and serves it until
//! Ctrl-C through [`crate::fleet_run`]; `sim fleet` mixes protocols.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fieldlink_model::Protocol;
use fieldlink_sim::fleet::DEFAULT_SHARD_SIZE;
use fieldlink_sim::mqtt::BrokerAddr;
use fieldlink_sim::opcua::OpcUaOptions;
use fieldlink_sim::{
    DEFAULT_PORT, DEFAULT_REGISTRY_URL, DEFAULT_SEED, DEFAULT_TENANTS, FleetPlan, FleetSpec, Mix,
    ProtocolMix, RunOptions, ShardArgs, ShardCommand, TenantSpec,
};

use crate::fleet_run::{FleetSetup, RunningFaces};

/// Flags of `fieldlink sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct SimArgs {
    #[command(subcommand)]
    protocol: SimProtocol,
}

#[derive(Debug, clap::Subcommand)]
enum SimProtocol {
    /// Simulated Modbus TCP devices, each on its own 127.x.y.z address; writes
    /// DIR/manifest.csv, DIR/tenants.toml and DIR/gateways/<tenant>.toml, then
    /// serves until Ctrl-C.
    Modbus(ModbusArgs),
    /// Serves one shard of a Modbus fleet (started by `sim modbus`).
    #[command(hide = true)]
    ModbusShard(ShardArgs),
    /// Simulated MQTT JSON devices, each its own MQTT client (registration
    /// and status topics, Last Will, JSON telemetry) at --broker or at a
    /// `fieldlink broker` of the simulator's own; writes the three files and
    /// DIR/mqtt-credentials.csv (and DIR/broker.toml), then runs until Ctrl-C.
    /// Past 10 000 devices the clients are lean (see --client): a million
    /// devices run in shard processes of 18 000 connections, through the
    /// broker's lean ingress.
    Mqtt(MqttArgs),
    /// Runs one shard of a lean MQTT fleet (started by `sim mqtt`).
    #[command(hide = true)]
    MqttShard(fieldlink_sim::mqtt::lean_run::LeanShardArgs),
    /// Simulated Sparkplug B 3.0 edge nodes with devices (births, data,
    /// NDEATH will with bdSeq, rebirth on NCMD) at --broker or at a
    /// `fieldlink broker` of the simulator's own; writes the three files and
    /// DIR/mqtt-credentials.csv (and DIR/broker.toml), then runs until Ctrl-C.
    Sparkplug(SparkplugArgs),
    /// Simulated OPC UA devices: each device an object Objects/Devices/<id>
    /// with its variables, on as many servers as needed (server k on
    /// 127.0.0.1:PORT+k); writes the three files, then serves until Ctrl-C.
    Opcua(OpcUaArgs),
    /// A fleet of several protocols (--protocols), one manifest, one gateway
    /// config per tenant serving them all.
    Fleet(MixedArgs),
}

/// Flags every fleet has.
#[derive(Debug, clap::Args)]
struct CommonArgs {
    /// Number of simulated devices; from 21 per protocol, every category of
    /// the four classes has at least one device (for classes with a share).
    #[arg(long)]
    devices: u32,
    /// Directory for manifest.csv, tenants.toml and gateways/; created when
    /// missing, files in it overwritten.
    #[arg(long)]
    out: PathBuf,
    /// gRPC URL of the registry, written into the gateway configs.
    #[arg(long, default_value = DEFAULT_REGISTRY_URL)]
    registry: String,
    /// Seed of device types, ids and signal values: same seed, same fleet.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Tenants as name:cloud[:weight], comma-separated; cloud is `public` or
    /// `private`; devices are dealt round-robin by weight (default 1).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_TENANTS)]
    tenants: Vec<TenantSpec>,
    /// Class shares as class=share, comma-separated; classes not named get
    /// none.
    #[arg(long, default_value = "operating=40,processing=30,mobile=20,other=10")]
    mix: Mix,
    /// How often devices are read or publish (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = fieldlink_sim::parse_interval)]
    interval: Duration,
}

/// Flags of the Modbus face.
#[derive(Debug, clap::Args)]
struct ModbusFlags {
    /// TCP port of every Modbus device (each device has its own address).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Most Modbus devices served by one process; more run in
    /// ceil(devices / shard-size) shard processes (two file descriptors per
    /// device, 20 000 per process).
    #[arg(long, default_value_t = DEFAULT_SHARD_SIZE)]
    shard_size: u32,
}

/// Flags of the MQTT faces' broker.
#[derive(Debug, clap::Args)]
struct BrokerFlags {
    /// The broker every MQTT device (and the written gateway configs)
    /// connects to: mosquitto, EMQX or `fieldlink broker`. Without it the
    /// simulator runs a `fieldlink broker` of its own on --broker-listen,
    /// with the fleet's users (DIR/broker.toml).
    #[arg(long)]
    broker: Option<BrokerAddr>,
    /// Where the simulator's own broker listens (without --broker).
    #[arg(long, default_value = "127.0.0.1:1883", conflicts_with = "broker")]
    broker_listen: SocketAddr,
    /// User name the written gateway configs log in with (instead of each
    /// gateway's own from mqtt-credentials.csv).
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Password for --username.
    #[arg(long, requires = "username")]
    password: Option<String>,
}

/// Flags of the OPC UA face.
#[derive(Debug, clap::Args)]
struct OpcUaFlags {
    /// Port of OPC UA server 0; server k listens on PORT + k.
    #[arg(long = "opcua-port", default_value_t = fieldlink_sim::opcua::DEFAULT_BASE_PORT)]
    opcua_port: u16,
    /// OPC UA devices per server.
    #[arg(long, default_value_t = fieldlink_sim::opcua::DEFAULT_DEVICES_PER_SERVER)]
    devices_per_server: u32,
    /// Also offer Basic256Sha256 Sign and SignAndEncrypt endpoints (the
    /// gateway configs then use SignAndEncrypt).
    #[arg(long)]
    secure: bool,
    /// Accept this user besides anonymous, as USER:PASSWORD (the gateway
    /// configs then log in with it).
    #[arg(long)]
    user: Option<String>,
}

impl OpcUaFlags {
    fn options(&self, out: &std::path::Path) -> anyhow::Result<OpcUaOptions> {
        let user = match &self.user {
            None => None,
            Some(text) => match text.split_once(':') {
                Some((u, p)) if !u.is_empty() => Some((u.to_owned(), p.to_owned())),
                _ => anyhow::bail!("--user: `{text}` is not USER:PASSWORD"),
            },
        };
        Ok(OpcUaOptions {
            base_port: self.opcua_port,
            devices_per_server: self.devices_per_server,
            security: self.secure,
            user,
            pki_dir: out.join("opcua-pki"),
            ..OpcUaOptions::default()
        })
    }
}

/// Flags of the Sparkplug face.
#[derive(Debug, clap::Args)]
struct SparkplugFlags {
    /// Devices per edge node.
    #[arg(long, default_value_t = fieldlink_sim::sparkplug::DEFAULT_DEVICES_PER_NODE)]
    devices_per_node: u32,
}

/// Flags of `fieldlink sim modbus`.
#[derive(Debug, clap::Args)]
struct ModbusArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    modbus: ModbusFlags,
}

/// Flags of `fieldlink sim mqtt`.
#[derive(Debug, clap::Args)]
struct MqttArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    broker: BrokerFlags,
    #[command(flatten)]
    lean: LeanFlags,
}

/// Which MQTT client the devices are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientKind {
    /// `lean` past 10 000 devices, else `full`.
    Auto,
    /// rumqttc, one login per device (mqtt-credentials.csv), faults and
    /// growth controls; tens of KB per device.
    Full,
    /// The simulator's own MQTT 3.1.1 client, about a kilobyte per device:
    /// one login per tenant (`sim-fleet-<tenant>`, client id = device id),
    /// shard processes of 18 000 devices; without --broker the fleet's
    /// broker brings its lean ingress (--ingress-listen), whose shards run
    /// the gateway configs.
    Lean,
}

/// Devices from which `auto` picks lean clients.
const LEAN_ABOVE: u32 = 10_000;

/// Flags of the lean MQTT fleet.
#[derive(Debug, clap::Args)]
struct LeanFlags {
    /// Which MQTT client the devices are.
    #[arg(long, value_enum, default_value_t = ClientKind::Auto)]
    client: ClientKind,
    /// Where the fleet's own lean ingress listens (lean clients, without
    /// --broker); --broker-listen is then the broker's own listener.
    #[arg(long, default_value = "127.0.0.1:1884", conflicts_with = "broker")]
    ingress_listen: SocketAddr,
    /// Where shard K of that ingress serves /metrics and its client API
    /// (`GET /clients/<tenant>/<client id>`, which `bench verify
    /// --mqtt-api` asks): this address's port + K.
    #[arg(long, default_value = "127.0.0.1:9400", conflicts_with = "broker")]
    ingress_metrics: SocketAddr,
    /// Most lean devices per process (for tests; a process may open 20 000
    /// files).
    #[arg(long, hide = true, default_value_t = fieldlink_sim::mqtt::lean_run::LEAN_SHARD_SIZE)]
    lean_shard_size: u32,
}

impl LeanFlags {
    fn is_lean(&self, devices: u32) -> bool {
        match self.client {
            ClientKind::Auto => devices > LEAN_ABOVE,
            ClientKind::Full => false,
            ClientKind::Lean => true,
        }
    }
}

/// Flags of `fieldlink sim sparkplug`.
#[derive(Debug, clap::Args)]
struct SparkplugArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    broker: BrokerFlags,
    #[command(flatten)]
    sparkplug: SparkplugFlags,
}

/// Flags of `fieldlink sim opcua`.
#[derive(Debug, clap::Args)]
struct OpcUaArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    opcua: OpcUaFlags,
}

/// Flags of `fieldlink sim fleet`.
#[derive(Debug, clap::Args)]
struct MixedArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Protocol shares as protocol=share, comma-separated (a bare protocol
    /// has share 1); each protocol gets a block of the devices.
    #[arg(long, default_value = "modbus-tcp,opc-ua,mqtt-json,sparkplug-b")]
    protocols: ProtocolMix,
    #[command(flatten)]
    modbus: ModbusFlags,
    #[command(flatten)]
    opcua: OpcUaFlags,
    #[command(flatten)]
    broker: BrokerFlags,
    #[command(flatten)]
    sparkplug: SparkplugFlags,
}

impl SimArgs {
    /// Whether this is a lean MQTT fleet shard: one thread each (many
    /// shards share the cores).
    pub(crate) fn is_lean_shard(&self) -> bool {
        matches!(self.protocol, SimProtocol::MqttShard(_))
    }
}

pub(crate) async fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.protocol {
        SimProtocol::ModbusShard(args) => {
            fieldlink_sim::run_shard(&args, crate::shutdown_signal()).await?;
            Ok(())
        }
        SimProtocol::Modbus(a) => {
            let protocols = ProtocolMix::only(Protocol::ModbusTcp);
            let faces = Flags {
                modbus: Some(&a.modbus),
                ..Flags::default()
            };
            serve(&a.common, protocols, faces).await
        }
        SimProtocol::Opcua(a) => {
            let protocols = ProtocolMix::only(Protocol::OpcUa);
            let faces = Flags {
                opcua: Some(&a.opcua),
                ..Flags::default()
            };
            serve(&a.common, protocols, faces).await
        }
        SimProtocol::MqttShard(args) => {
            fieldlink_sim::mqtt::lean_run::run_lean_shard(&args, crate::shutdown_signal()).await?;
            Ok(())
        }
        SimProtocol::Mqtt(a) => {
            let protocols = ProtocolMix::only(Protocol::MqttJson);
            let faces = Flags {
                broker: Some(&a.broker),
                lean: Some(&a.lean),
                ..Flags::default()
            };
            serve(&a.common, protocols, faces).await
        }
        SimProtocol::Sparkplug(a) => {
            let protocols = ProtocolMix::only(Protocol::SparkplugB);
            let faces = Flags {
                broker: Some(&a.broker),
                sparkplug: Some(&a.sparkplug),
                ..Flags::default()
            };
            serve(&a.common, protocols, faces).await
        }
        SimProtocol::Fleet(a) => {
            let faces = Flags {
                modbus: Some(&a.modbus),
                opcua: Some(&a.opcua),
                broker: Some(&a.broker),
                sparkplug: Some(&a.sparkplug),
                lean: None,
            };
            serve(&a.common, a.protocols.clone(), faces).await
        }
    }
}

/// The face flags a subcommand has.
#[derive(Debug, Default)]
struct Flags<'a> {
    modbus: Option<&'a ModbusFlags>,
    opcua: Option<&'a OpcUaFlags>,
    broker: Option<&'a BrokerFlags>,
    sparkplug: Option<&'a SparkplugFlags>,
    lean: Option<&'a LeanFlags>,
}

/// Plans the fleet, writes its files, serves it until Ctrl-C (or a face
/// fails).
async fn serve(
    common: &CommonArgs,
    protocols: ProtocolMix,
    faces: Flags<'_>,
) -> anyhow::Result<()> {
    let Flags {
        modbus,
        opcua,
        broker,
        sparkplug,
        lean,
    } = faces;
    let plan = FleetPlan::new(FleetSpec {
        devices: common.devices,
        seed: common.seed,
        tenants: common.tenants.clone(),
        mix: common.mix,
        protocols,
        port: modbus.map_or(DEFAULT_PORT, |m| m.port),
        interval: common.interval,
    })?;
    let mut setup = FleetSetup::new(common.out.clone(), common.registry.clone());
    if let Some(m) = modbus {
        setup.modbus = RunOptions {
            shard_size: m.shard_size,
            shard_command: Some(ShardCommand::current_exe(["sim", "modbus-shard"])?),
            ..RunOptions::default()
        };
    }
    if let Some(b) = broker {
        setup.broker = b.broker.clone();
        setup.broker_listen = b.broker_listen;
        setup.gateway_login = b.username.clone().zip(b.password.clone());
    }
    if let Some(s) = sparkplug {
        setup.devices_per_node = s.devices_per_node;
    }
    if let Some(l) = lean {
        setup.lean = l.is_lean(common.devices);
        setup.ingress_listen = l.ingress_listen;
        setup.ingress_metrics = Some(l.ingress_metrics);
        setup.lean_shard_size = l.lean_shard_size;
    }
    if let Some(o) = opcua {
        setup.opcua = o.options(&common.out)?;
    }
    let mut fleet = RunningFaces::start(&plan, setup).await?;
    report(&plan, &fleet);
    let failure = tokio::select! {
        () = crate::shutdown_signal() => None,
        e = fleet.failed() => Some(e),
    };
    fleet.stop().await;
    match failure {
        None => {
            crate::say(format_args!("fleet: stopped"));
            Ok(())
        }
        Some(e) => Err(e),
    }
}

/// The console lines of a started fleet; the last starts with `fleet:`.
fn report(plan: &FleetPlan, fleet: &RunningFaces) {
    let files = &fleet.files;
    let list = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let (Some(url), true) = (&fleet.broker_url, fleet.broker.is_some()) {
        crate::say(format_args!(
            "broker: fieldlink broker of the fleet on {url} (config {})",
            fleet.files.manifest.with_file_name("broker.toml").display()
        ));
    }
    crate::say(format_args!(
        "files: tenants {}; gateways {}{}",
        files.tenants.display(),
        list(&files.gateways),
        if files.extra.is_empty() {
            String::new()
        } else {
            format!("; also {}", list(&files.extra))
        }
    ));
    for line in fleet.describe(plan) {
        crate::say(format_args!("{line}"));
    }
    crate::say(format_args!(
        "fleet: {} devices ({}); manifest {}",
        plan.len(),
        plan.protocols()
            .map(|p| p.code())
            .collect::<Vec<_>>()
            .join(", "),
        files.manifest.display()
    ));
}
