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
