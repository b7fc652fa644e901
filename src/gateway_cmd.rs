//! `fieldlink gateway`: load and validate the config, run until stopped.

use std::path::PathBuf;

use anyhow::Context;
use fieldlink_gateway::GatewayConfig;

/// Flags of `fieldlink gateway`.
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    /// Configuration file (see deploy/gateway.example.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// Override `uplink.registry` (gRPC URL of the registry).
    #[arg(long)]
    registry: Option<String>,
    /// Override `data_dir` (where the spool lives).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let mut config = GatewayConfig::from_file(&args.config)?;
    if let Some(url) = args.registry {
        config.uplink.registry = url;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let settings = config.validate().map_err(|e| e.in_file(&args.config))?;
    crate::say(format_args!(
        "gateway {}: {} configured devices over {} driver(s), registry {}",
        settings.gateway_id,
        settings.configured_devices,
        settings.drivers.len(),
        settings.uplink.registry
    ));
    fieldlink_gateway::run(settings, crate::shutdown_signal())
        .await
        .context("gateway failed")?;
    crate::say(format_args!("gateway stopped"));
    Ok(())
}
