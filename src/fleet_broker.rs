//! The `fieldlink broker` a simulated fleet brings when no `--broker` is
//! given (`fieldlink sim mqtt|sparkplug|fleet`, `fieldlink demo`): its
//! config is [`broker_config`] (one tenant per fleet tenant with the default
//! ACLs, one user per device, edge node and gateway of the fleet's
//! credentials; shared with `fieldlink bench mqtt`), written to
//! `DIR/broker.toml` so that the same broker can be run on its own with
//! `fieldlink broker --config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fieldlink_broker::{Broker, BrokerConfig, BrokerHandle, Listeners};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) use fieldlink_bench::fleet_broker::{broker_config, lean_broker_config};

/// Writes `config` to `dir/broker.toml`.
///
/// # Errors
/// When it does not serialize or cannot be written.
pub(crate) fn write_config(config: &BrokerConfig, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("broker.toml");
    let text = toml::to_string(config).context("cannot write the broker config as TOML")?;
    let header = "# The fleet's MQTT broker: run it on its own with `fieldlink broker --config broker.toml`.\n# Users are the fleet's devices, edge nodes and gateways (mqtt-credentials.csv).\n";
    std::fs::write(&path, format!("{header}{text}"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A broker running in this process.
#[derive(Debug)]
pub(crate) struct FleetBroker {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// In-process links to it.
    pub(crate) handle: BrokerHandle,
    stop: CancellationToken,
    task: JoinHandle<Result<(), fieldlink_broker::BrokerError>>,
    /// The ingress shards' supervisor, when the config has `[ingress]`.
    ingress: Option<JoinHandle<()>>,
}

impl FleetBroker {
    /// Validates `config`, binds and starts the broker; with an `[ingress]`
    /// section also its shard processes, which read the config from
    /// `written` (where [`write_config`] put it) and stop with the broker
    /// (or when this process dies: they watch their stdin).
    ///
    /// # Errors
    /// A bad config (naming the key) or an address that cannot be bound.
    pub(crate) async fn start(
        config: &BrokerConfig,
        written: &Path,
    ) -> anyhow::Result<FleetBroker> {
        let settings = config.validate()?;
        let listeners = Listeners::bind(&settings).await.with_context(|| {
            format!(
                "cannot start the fleet's MQTT broker on {} (in use? pick another with --broker-listen)",
                settings.listen
            )
        })?;
        let addr = listeners.mqtt.local_addr()?;
        let shards = settings.ingress.as_ref().map(|i| i.shards);
        let broker = Broker::new(settings);
        let handle = broker.handle();
        let stop = CancellationToken::new();
        let task = tokio::spawn(broker.run(listeners, stop.clone().cancelled_owned()));
        let ingress = shards.map(|n| {
            tokio::spawn(crate::ingress_cmd::supervise(
                written.to_path_buf(),
                n,
                stop.clone(),
            ))
        });
        Ok(FleetBroker {
            addr,
            handle,
            stop,
            task,
            ingress,
        })
    }

    /// The broker's `mqtt://HOST:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Stops it and waits.
    ///
    /// # Errors
    /// When the broker failed.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        if let Some(ingress) = self.ingress {
            let _ = ingress.await;
        }
        self.task.await?.context("the fleet's MQTT broker failed")
    }
}
