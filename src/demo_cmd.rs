//! `fieldlink demo`: a registry, a simulated fleet of all four device classes
//! over a public and a private tenant speaking every protocol the gateway
//! adapts (Modbus TCP devices, OPC UA servers, MQTT JSON devices and
//! Sparkplug B edge nodes on an embedded `fieldlink broker`), and one gateway
//! per tenant serving them all, in one process on embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fieldlink_gateway::GatewayConfig;
use fieldlink_gateway::driver::Resources;
use fieldlink_model::{Cloud, now_unix_nanos};
use fieldlink_registry::tally::{Dimension, Tally};
use fieldlink_registry::{Registry, RegistryConfig, Shared};
use fieldlink_sim::{FleetPlan, FleetSpec, ProtocolMix, RunOptions, ShardCommand};

use crate::fleet_run::{FleetSetup, RunningFaces};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Flags of `fieldlink demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Simulated devices, spread over the four classes and two tenants.
    #[arg(long, default_value_t = 300)]
    devices: u32,
    /// Where the registry's store, the fleet files and the gateway spools go
    /// (default: a temporary directory removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP address of the registry (API and, later, the dashboard).
    #[arg(long, default_value = "127.0.0.1:7680")]
    http: SocketAddr,
    /// Port every simulated Modbus device listens on, each on its own
    /// 127.x.y.z address.
    #[arg(long, default_value_t = 5020)]
    device_port: u16,
    /// Protocols of the fleet, as protocol=share (a bare protocol has share
    /// 1); each gets a block of the devices, covering every class.
    #[arg(long, default_value = "modbus-tcp,opc-ua,mqtt-json,sparkplug-b")]
    protocols: ProtocolMix,
    /// Port of the first simulated OPC UA server (server k listens on
    /// PORT + k, on 127.0.0.1).
    #[arg(long, default_value_t = fieldlink_sim::opcua::DEFAULT_BASE_PORT)]
    opcua_port: u16,
    /// Where the embedded MQTT broker listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    broker_listen: SocketAddr,
    /// How often the live counts line is printed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    every: Duration,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("fieldlink-demo-")
                .tempdir()?;
            temp.path().to_owned()
        }
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_url = format!("http://{}", grpc.local_addr()?);
    let http = TcpListener::bind(args.http).await.with_context(|| {
        format!(
            "cannot listen on --http {} (in use? pick another)",
            args.http
        )
    })?;
    let http_addr = http.local_addr()?;

    let plan = FleetPlan::new(FleetSpec {
        devices: args.devices,
        port: args.device_port,
        protocols: args.protocols.clone(),
        ..FleetSpec::default()
    })?;
    let mut setup = FleetSetup::new(dir.join("fleet"), grpc_url.clone());
    setup.broker_listen = args.broker_listen;
    setup.gateway_embedded = true;
    setup.devices_per_node = 5;
    setup.opcua.base_port = args.opcua_port;
    setup.modbus = RunOptions {
        shard_command: Some(ShardCommand::current_exe(["sim", "modbus-shard"])?),
        ..RunOptions::default()
    };
    // The fleet first: its files carry the tenants (and tokens) the registry takes.
    let fleet = RunningFaces::start(&plan, setup)
        .await
        .context("cannot start the simulated fleet")?;
    let files = fleet.files.clone();

    let mut config = RegistryConfig {
        data_dir: dir.join("registry"),
        ..RegistryConfig::default()
    };
    config.add_tenants_file(&files.tenants)?;
    let registry = Registry::open(config.validate()?).context("cannot open the registry store")?;
    let shared = registry.shared().clone();
    let stop_registry = CancellationToken::new();
    let registry =
        tokio::spawn(registry.serve(grpc, http, stop_registry.clone().cancelled_owned()));

    let resources = Resources {
        embedded_mqtt: fleet.broker.as_ref().map(|b| {
            let handle = b.handle.clone();
            crate::broker_cmd::link_factory(move |filter| handle.link(filter))
        }),
    };
    let stop_gateways = CancellationToken::new();
    let mut gateways = Vec::new();
    for path in &files.gateways {
        let settings = GatewayConfig::from_file(path)?
            .validate()
            .map_err(|e| e.in_file(path))?;
        gateways.push(tokio::spawn(fieldlink_gateway::run_with(
            settings,
            resources.clone(),
            stop_gateways.clone().cancelled_owned(),
        )));
    }

    crate::say(format_args!(
        "demo: {} simulated devices ({} tenants: public and private cloud), {} gateway(s) serving every protocol, data in {}",
        plan.len(),
        plan.tenants().len(),
        gateways.len(),
        dir.display()
    ));
    for line in fleet.describe(&plan) {
        crate::say(format_args!("  {line}"));
    }
    crate::say(format_args!("dashboard: http://{http_addr}/"));
    crate::say(format_args!(
        "api: http://{http_addr}/api/v1/summary · report: fieldlink report --registry http://{http_addr}"
    ));

    let mut tick = tokio::time::interval(args.every);
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => crate::say(format_args!("{}", counts_line(&shared))),
        }
    }
    crate::say(format_args!("demo: stopping"));
    stop_gateways.cancel();
    for gateway in gateways {
        gateway.await?.context("gateway failed")?;
    }
    fleet.stop().await;
    stop_registry.cancel();
    registry.await?.context("registry failed")?;
    crate::say(format_args!("demo: stopped"));
    Ok(())
}

/// `registered 300 (public 150, private 150) · online 300 · reporting today 298 · by class ...`
fn counts_line(shared: &Arc<Shared>) -> String {
    let day = shared.today();
    let tally = {
        let counters = shared.read_counters();
        Tally::count(&counters, day, now_unix_nanos())
    };
    let total = tally.sum(|_| true);
    let cloud = |c: Cloud| tally.sum(|k| k.cloud == c);
    let protocols: Vec<String> = tally
        .group_by(&[Dimension::Protocol])
        .into_iter()
        .filter(|(_, f)| f.registered > 0)
        .map(|(keys, f)| format!("{} {}", keys[0].1, f.registered))
        .collect();
    let by_class: Vec<String> = tally
        .group_by(&[Dimension::Class])
        .into_iter()
        .map(|(keys, f)| format!("{} {}/{}", keys[0].1, f.reporting, f.registered))
        .collect();
    format!(
        "{day}: registered {} (public {}, private {}) · online {} · reporting {} (public {}, private {}) · by class reporting/registered: {} · {} protocols: {}",
        total.registered,
        cloud(Cloud::Public).registered,
        cloud(Cloud::Private).registered,
        total.online,
        total.reporting,
        cloud(Cloud::Public).reporting,
        cloud(Cloud::Private).reporting,
        by_class.join(", "),
        protocols.len(),
        protocols.join(", ")
    )
}
