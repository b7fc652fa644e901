//! `fieldlink registry`: load and validate the config, bind, serve.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use fieldlink_registry::{Registry, RegistryConfig};
use tokio::net::TcpListener;

/// Flags of `fieldlink registry`.
#[derive(Debug, clap::Args)]
pub(crate) struct RegistryArgs {
    /// Configuration file (see deploy/registry.example.toml). Without it, defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Extra `[[tenants]]` files, as `fieldlink sim` writes; may repeat.
    #[arg(long)]
    tenants: Vec<PathBuf>,
    /// Override `listen.grpc` (port 0 picks a free port).
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Override `listen.http` (port 0 picks a free port).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Override `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => RegistryConfig::from_file(path)?,
        None => RegistryConfig::default(),
    };
    for file in &args.tenants {
        config.add_tenants_file(file)?;
    }
    if let Some(addr) = args.grpc {
        config.listen.grpc = addr;
    }
    if let Some(addr) = args.http {
        config.listen.http = addr;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let settings = config.validate().map_err(|e| match &args.config {
        Some(path) => e.in_file(path),
        None => e,
    })?;
    if settings.tenants.is_empty() {
        tracing::warn!("no tenants configured: every gateway stream will be refused");
    }
    let grpc = TcpListener::bind(settings.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on listen.grpc {}", settings.grpc_addr))?;
    let http = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen on listen.http {}", settings.http_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;
    let data_dir = settings.data_dir.clone();
    let registry = Registry::open(settings)
        .with_context(|| format!("cannot open the device store in {}", data_dir.display()))?;
    // One line for people and scripts alike.
    crate::say(format_args!(
        "registry listening: grpc={grpc_addr} http=http://{http_addr}/"
    ));
    registry
        .serve(grpc, http, crate::shutdown_signal())
        .await
        .context("registry failed")?;
    crate::say(format_args!("registry stopped"));
    Ok(())
}
