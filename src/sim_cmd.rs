//! `fieldlink sim`: simulated device fleets and their ground-truth files.

use std::path::PathBuf;
use std::time::Duration;

use fieldlink_model::Protocol;
use fieldlink_sim::fleet::DEFAULT_SHARD_SIZE;
use fieldlink_sim::mqtt::{BrokerAddr, Credentials, MqttFleet, MqttFleetOptions};

use crate::fleet_broker::FleetBroker;
use fieldlink_sim::sparkplug::{SparkplugFleet, SparkplugFleetOptions};
use fieldlink_sim::{
    Controls, DEFAULT_PORT, DEFAULT_REGISTRY_URL, DEFAULT_SEED, DEFAULT_TENANTS, FleetPlan,
    FleetSpec, Mix, MqttFiles, RunOptions, RunningFleet, ShardArgs, ShardCommand, SparkplugFiles,
    TenantSpec,
};

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
    /// Simulated MQTT JSON devices, each its own MQTT client at --broker
    /// (registration and status topics, Last Will, JSON telemetry); writes
    /// the three files and DIR/mqtt-credentials.csv, then runs until Ctrl-C.
    Mqtt(MqttArgs),
    /// Simulated Sparkplug B 3.0 edge nodes with devices at --broker
    /// (births, data, NDEATH will with bdSeq, rebirth on NCMD); writes the
    /// three files and DIR/mqtt-credentials.csv, then runs until Ctrl-C.
    Sparkplug(SparkplugArgs),
}

/// Flags of `fieldlink sim modbus`.
#[derive(Debug, clap::Args)]
struct ModbusArgs {
    /// Number of simulated devices; from 21 on every category of the four
    /// classes has at least one device (for classes with a share).
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
    /// TCP port of every device (each device has its own address).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Poll interval written into the gateway configs (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = fieldlink_sim::parse_interval)]
    interval: Duration,
    /// Most devices served by one process; a larger fleet runs in
    /// ceil(devices / shard-size) shard processes (two file descriptors per
    /// device, 20 000 per process).
    #[arg(long, default_value_t = DEFAULT_SHARD_SIZE)]
    shard_size: u32,
}

pub(crate) async fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.protocol {
        SimProtocol::Modbus(args) => run_modbus(args).await,
        SimProtocol::ModbusShard(args) => {
            fieldlink_sim::run_shard(&args, crate::shutdown_signal()).await?;
            Ok(())
        }
        SimProtocol::Mqtt(args) => run_mqtt(args).await,
        SimProtocol::Sparkplug(args) => run_sparkplug(args).await,
    }
}

async fn run_modbus(args: ModbusArgs) -> anyhow::Result<()> {
    let plan = FleetPlan::new(FleetSpec {
        devices: args.devices,
        seed: args.seed,
        tenants: args.tenants,
        mix: args.mix,
        protocols: fieldlink_sim::ProtocolMix::default(),
        port: args.port,
        interval: args.interval,
    })?;
    let files = plan.write_files(&args.out, &args.registry)?;
    let options = RunOptions {
        shard_size: args.shard_size,
        shard_command: Some(ShardCommand::current_exe(["sim", "modbus-shard"])?),
        ..RunOptions::default()
    };
    let mut fleet = RunningFleet::start(&plan, options).await?;
    let gateways: Vec<String> = files
        .gateways
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    crate::say(format_args!(
        "files: tenants {}; gateways {}",
        files.tenants.display(),
        gateways.join(", ")
    ));
    crate::say(format_args!(
        "fleet: {} devices serving on {}..{} ({} processes); manifest {}",
        plan.len(),
        plan.endpoint(0)?,
        plan.endpoint(plan.len() - 1)?,
        fleet.processes(),
        files.manifest.display()
    ));
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
        Some(e) => Err(e.into()),
    }
}

/// Flags shared by `fieldlink sim mqtt` and `fieldlink sim sparkplug`.
#[derive(Debug, clap::Args)]
struct BrokerFleetArgs {
    /// Number of simulated devices.
    #[arg(long)]
    devices: u32,
    /// Directory for manifest.csv, tenants.toml, gateways/ and
    /// mqtt-credentials.csv; created when missing, files in it overwritten.
    #[arg(long)]
    out: PathBuf,
    /// The broker every device (and the written gateway configs) connects
    /// to: mosquitto, EMQX or `fieldlink broker`. Without it the simulator
    /// runs a `fieldlink broker` of its own on --broker-listen, with the
    /// fleet's users (DIR/broker.toml).
    #[arg(long)]
    broker: Option<fieldlink_sim::mqtt::BrokerAddr>,
    /// Where the simulator's own broker listens (without --broker).
    #[arg(long, default_value = "127.0.0.1:1883", conflicts_with = "broker")]
    broker_listen: std::net::SocketAddr,
    /// User name the written gateway configs log in with (instead of each
    /// gateway's own from mqtt-credentials.csv).
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Password for --username.
    #[arg(long, requires = "username")]
    password: Option<String>,
    /// gRPC URL of the registry, written into the gateway configs.
    #[arg(long, default_value = DEFAULT_REGISTRY_URL)]
    registry: String,
    /// Seed of device types, ids and signal values: same seed, same fleet.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Tenants as name:cloud[:weight], comma-separated.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_TENANTS)]
    tenants: Vec<TenantSpec>,
    /// Class shares as class=share, comma-separated.
    #[arg(long, default_value = "operating=40,processing=30,mobile=20,other=10")]
    mix: Mix,
    /// How often devices publish (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = fieldlink_sim::parse_interval)]
    interval: Duration,
}

/// Flags of `fieldlink sim mqtt`.
#[derive(Debug, clap::Args)]
pub(crate) struct MqttArgs {
    #[command(flatten)]
    fleet: BrokerFleetArgs,
}

/// Flags of `fieldlink sim sparkplug`.
#[derive(Debug, clap::Args)]
pub(crate) struct SparkplugArgs {
    #[command(flatten)]
    fleet: BrokerFleetArgs,
    /// Devices per edge node.
    #[arg(long, default_value_t = fieldlink_sim::sparkplug::DEFAULT_DEVICES_PER_NODE)]
    devices_per_node: u32,
}

fn broker_plan(args: &BrokerFleetArgs, protocol: Protocol) -> anyhow::Result<FleetPlan> {
    Ok(FleetPlan::new(FleetSpec {
        devices: args.devices,
        seed: args.seed,
        tenants: args.tenants.clone(),
        mix: args.mix,
        protocols: fieldlink_sim::ProtocolMix::only(protocol),
        port: 0,
        interval: args.interval,
    })?)
}

fn login(args: &BrokerFleetArgs) -> Option<(String, String)> {
    args.username.clone().zip(args.password.clone())
}

fn report_files(files: &fieldlink_sim::WrittenFiles) {
    let gateways: Vec<String> = files
        .gateways
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let extra: Vec<String> = files
        .extra
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    crate::say(format_args!(
        "files: tenants {}; gateways {}; broker users {}",
        files.tenants.display(),
        gateways.join(", "),
        extra.join(", ")
    ));
}

/// The broker of `--broker`, or one of the simulator's own with the fleet's
/// users (written to `out/broker.toml`).
async fn fleet_broker(
    a: &BrokerFleetArgs,
    plan: &FleetPlan,
    credentials: &Credentials,
) -> anyhow::Result<(BrokerAddr, Option<FleetBroker>)> {
    if let Some(broker) = &a.broker {
        return Ok((broker.clone(), None));
    }
    let config = crate::fleet_broker::broker_config(plan, credentials, a.broker_listen)?;
    std::fs::create_dir_all(&a.out)?;
    let path = crate::fleet_broker::write_config(&config, &a.out)?;
    let broker = FleetBroker::start(&config).await?;
    crate::say(format_args!(
        "broker: fieldlink broker on {} ({} users; config {})",
        broker.url(),
        config.users.len(),
        path.display()
    ));
    let addr = broker.url().parse()?;
    Ok((addr, Some(broker)))
}

async fn stop_broker(broker: Option<FleetBroker>) -> anyhow::Result<()> {
    match broker {
        Some(b) => b.stop().await,
        None => Ok(()),
    }
}

async fn run_mqtt(args: MqttArgs) -> anyhow::Result<()> {
    let a = &args.fleet;
    let plan = broker_plan(a, Protocol::MqttJson)?;
    let credentials = Credentials::generate(&plan, 1)?;
    let (broker, own) = fleet_broker(a, &plan, &credentials).await?;
    let face = MqttFiles {
        broker: broker.clone(),
        credentials: credentials.clone(),
        gateway_login: login(a),
        gateway_embedded: false,
    };
    let files = plan.write_files_with(&a.out, &a.registry, &[&face])?;
    report_files(&files);
    let fleet = MqttFleet::start(
        &plan,
        MqttFleetOptions {
            broker: broker.clone(),
            credentials,
            interval: a.interval,
            controls: Controls::default(),
        },
    );
    crate::say(format_args!(
        "fleet: {} MQTT JSON devices publishing to {}; manifest {}",
        fleet.devices(),
        broker,
        files.manifest.display()
    ));
    crate::shutdown_signal().await;
    fleet.stop().await;
    stop_broker(own).await?;
    crate::say(format_args!("fleet: stopped"));
    Ok(())
}

async fn run_sparkplug(args: SparkplugArgs) -> anyhow::Result<()> {
    let a = &args.fleet;
    let plan = broker_plan(a, Protocol::SparkplugB)?;
    let credentials = Credentials::generate(&plan, args.devices_per_node)?;
    let (broker, own) = fleet_broker(a, &plan, &credentials).await?;
    let mut face = SparkplugFiles::new(
        broker.clone(),
        credentials.clone(),
        &plan,
        args.devices_per_node,
    );
    face.gateway_login = login(a);
    let files = plan.write_files_with(&a.out, &a.registry, &[&face])?;
    report_files(&files);
    let fleet = SparkplugFleet::start(
        &plan,
        SparkplugFleetOptions {
            broker: broker.clone(),
            credentials,
            per_node: args.devices_per_node,
            interval: a.interval,
            controls: Controls::default(),
        },
    );
    crate::say(format_args!(
        "fleet: {} Sparkplug B devices on {} edge nodes publishing to {}; manifest {}",
        plan.len(),
        fleet.nodes().len(),
        broker,
        files.manifest.display()
    ));
    crate::shutdown_signal().await;
    fleet.stop().await;
    stop_broker(own).await?;
    crate::say(format_args!("fleet: stopped"));
    Ok(())
}
