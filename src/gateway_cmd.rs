//! `fieldlink gateway`: load and validate the config, run until stopped;
//! `fieldlink gateway browse opc.tcp://HOST:PORT`: print an OPC UA server's
//! objects with variables as ready-to-paste device config.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use fieldlink_gateway::GatewayConfig;
use fieldlink_gateway::driver::opcua::config::{SecurityMode, SecurityPolicy};
use fieldlink_gateway::driver::opcua::discover::{self, BrowseOptions};

/// Flags of `fieldlink gateway`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct GatewayArgs {
    #[command(subcommand)]
    command: Option<GatewayCommand>,
    /// Configuration file (see deploy/gateway.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override `uplink.registry` (gRPC URL of the registry).
    #[arg(long)]
    registry: Option<String>,
    /// Override `data_dir` (where the spool lives).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum GatewayCommand {
    /// Browse an OPC UA server and print its objects with variables as
    /// [opcua.servers.NAME] plus one [[devices]] entry each, ready to paste
    /// into a gateway config.
    Browse(BrowseArgs),
}

/// Flags of `fieldlink gateway browse`.
#[derive(Debug, clap::Args)]
struct BrowseArgs {
    /// The server, opc.tcp://HOST:PORT[/PATH].
    url: String,
    /// none, sign or sign-and-encrypt.
    #[arg(long, default_value = "none")]
    security_mode: SecurityMode,
    /// none, basic256sha256, aes128-sha256-rsaoaep or aes256-sha256-rsapss.
    #[arg(long, default_value = "none")]
    security_policy: SecurityPolicy,
    /// Log in as this user (the password is read from stdin with
    /// --password-stdin); anonymous otherwise.
    #[arg(long)]
    user: Option<String>,
    /// Read the user's password from the first line of stdin.
    #[arg(long, requires = "user")]
    password_stdin: bool,
    /// Start at this node (NodeId or browse path); the Objects folder when
    /// absent.
    #[arg(long)]
    root: Option<String>,
    /// Name of the server in the printed config.
    #[arg(long, default_value = "plant")]
    name: String,
    /// PKI directory of the browsing client (its certificate, created for
    /// secure modes, and trusted server certificates).
    #[arg(long, default_value = "data/gateway/pki")]
    pki_dir: PathBuf,
    /// Time allowed for connecting and for each request.
    #[arg(long, default_value = "10s", value_parser = fieldlink_sim::parse_interval)]
    timeout: Duration,
}

pub(crate) async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if let Some(GatewayCommand::Browse(browse)) = args.command {
        return run_browse(browse).await;
    }
    let Some(path) = args.config else {
        anyhow::bail!("--config FILE is required (or use `fieldlink gateway browse URL`)");
    };
    let mut config = GatewayConfig::from_file(&path)?;
    if let Some(url) = args.registry {
        config.uplink.registry = url;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let settings = config.validate().map_err(|e| e.in_file(&path))?;
    // The parsed file is not needed once validated (a large one is large).
    drop(config);
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

async fn run_browse(args: BrowseArgs) -> anyhow::Result<()> {
    let user = match args.user {
        None => None,
        Some(user) => {
            let mut password = String::new();
            if args.password_stdin {
                std::io::stdin()
                    .lock()
                    .read_line(&mut password)
                    .context("reading the password from stdin")?;
            }
            Some((user, password.trim_end_matches(['\r', '\n']).to_owned()))
        }
    };
    let options = BrowseOptions {
        endpoint: args.url,
        security_mode: args.security_mode,
        security_policy: args.security_policy,
        user,
        root: args.root,
        pki_dir: args.pki_dir,
        timeout: args.timeout,
        server_name: args.name.clone(),
    };
    let found = discover::discover(&options).await?;
    let devices = found.devices.len();
    crate::say(format_args!("{}", discover::render(&found, &args.name)));
    tracing::info!(devices, "browsed {}", options.endpoint);
    Ok(())
}
