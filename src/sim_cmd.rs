//! `fieldlink sim`: simulated device fleets and their ground-truth files.

use std::path::PathBuf;
use std::time::Duration;

use fieldlink_sim::fleet::DEFAULT_SHARD_SIZE;
use fieldlink_sim::{
    DEFAULT_PORT, DEFAULT_REGISTRY_URL, DEFAULT_SEED, DEFAULT_TENANTS, FleetPlan, FleetSpec, Mix,
    RunOptions, RunningFleet, ShardArgs, ShardCommand, TenantSpec,
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
    /// Simulated OPC UA devices: each device an object Objects/Devices/<id>
    /// with its variables, on as many servers as needed (server k on
    /// 127.0.0.1:PORT+k); writes DIR/manifest.csv, DIR/tenants.toml and
    /// DIR/gateways/<tenant>.toml, then serves until Ctrl-C.
    Opcua(OpcUaArgs),
}

/// Flags of `fieldlink sim opcua`.
#[derive(Debug, clap::Args)]
struct OpcUaArgs {
    /// Number of simulated devices; from 21 on every category of the four
    /// classes has at least one device (for classes with a share).
    #[arg(long)]
    devices: u32,
    /// Directory for manifest.csv, tenants.toml and gateways/ (and the
    /// servers' certificate in opcua-pki/); created when missing.
    #[arg(long)]
    out: PathBuf,
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
    /// Publishing and sampling interval written into the gateway configs.
    #[arg(long, default_value = "1s", value_parser = fieldlink_sim::parse_interval)]
    interval: Duration,
    /// Port of server 0; server k listens on PORT + k.
    #[arg(long, default_value_t = fieldlink_sim::opcua::DEFAULT_BASE_PORT)]
    port: u16,
    /// Devices per server.
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
        SimProtocol::Opcua(args) => run_opcua(args).await,
    }
}

async fn run_opcua(args: OpcUaArgs) -> anyhow::Result<()> {
    let user = match &args.user {
        None => None,
        Some(text) => match text.split_once(':') {
            Some((u, p)) if !u.is_empty() => Some((u.to_owned(), p.to_owned())),
            _ => anyhow::bail!("--user: `{text}` is not USER:PASSWORD"),
        },
    };
    let plan = FleetPlan::new(FleetSpec {
        devices: args.devices,
        seed: args.seed,
        tenants: args.tenants,
        mix: args.mix,
        protocols: fieldlink_sim::ProtocolMix::only(fieldlink_model::Protocol::OpcUa),
        port: DEFAULT_PORT,
        interval: args.interval,
    })?;
    let face = fieldlink_sim::OpcUaFiles {
        base_port: args.port,
        devices_per_server: args.devices_per_server,
        security: if args.secure {
            ("sign-and-encrypt", "basic256sha256")
        } else {
            ("none", "none")
        },
        user: user.clone(),
        ..fieldlink_sim::OpcUaFiles::default()
    };
    let files = plan.write_files_with(&args.out, &args.registry, &[&face])?;
    let options = fieldlink_sim::OpcUaOptions {
        base_port: args.port,
        devices_per_server: args.devices_per_server,
        security: args.secure,
        user,
        pki_dir: args.out.join("opcua-pki"),
        ..fieldlink_sim::OpcUaOptions::default()
    };
    let fleet = fieldlink_sim::OpcUaFleet::start(&plan, options).await?;
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
    let ports = fleet.ports();
    crate::say(format_args!(
        "fleet: {} OPC UA devices on {} servers, opc.tcp://127.0.0.1:{}..{}; manifest {}",
        plan.len(),
        fleet.len(),
        ports.first().copied().unwrap_or(args.port),
        ports.last().copied().unwrap_or(args.port),
        files.manifest.display()
    ));
    crate::shutdown_signal().await;
    fleet.stop().await;
    crate::say(format_args!("fleet: stopped"));
    Ok(())
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
