//! The `fieldlink broker` a simulated fleet brings when no `--broker` is
//! given (`fieldlink sim mqtt|sparkplug|fleet`, `fieldlink demo`): one
//! tenant per fleet tenant with the default ACLs, one user per device, edge
//! node and gateway of the fleet's credentials (fast salted SHA-256 hashes of
//! their random passwords), written to `DIR/broker.toml` so that the same
//! broker can be run on its own with `fieldlink broker --config`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fieldlink_broker::auth::{HashKind, PasswordHash};
use fieldlink_broker::config::{LimitsConfig, Role, TenantConfig, UserConfig};
use fieldlink_broker::{Broker, BrokerConfig, BrokerHandle, Listeners};
use fieldlink_sim::FleetPlan;
use fieldlink_sim::mqtt::{Credentials, Role as SimRole};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The broker config of a fleet, listening on `listen`.
///
/// # Errors
/// When a password cannot be hashed.
pub(crate) fn broker_config(
    plan: &FleetPlan,
    credentials: &Credentials,
    listen: SocketAddr,
) -> anyhow::Result<BrokerConfig> {
    let tenants = plan
        .tenants()
        .iter()
        .map(|t| TenantConfig {
            name: t.name.clone(),
            device: Default::default(),
            service: Default::default(),
        })
        .collect();
    let mut users = Vec::with_capacity(credentials.all().len());
    for c in credentials.all() {
        let hash = PasswordHash::generate(HashKind::Sha256, c.password.as_bytes())
            .with_context(|| format!("cannot hash the password of {}", c.username))?;
        let role = match c.role {
            SimRole::Device | SimRole::EdgeNode => Role::Device,
            SimRole::Gateway => Role::Service,
        };
        users.push(UserConfig {
            username: c.username.clone(),
            password_hash: hash.to_string(),
            tenant: c.tenant.clone(),
            role,
            client_id_must_match: None,
        });
    }
    let limits = LimitsConfig {
        // Every client of the fleet at once, and room for a few more.
        max_connections: users.len() + 256,
        ..LimitsConfig::default()
    };
    Ok(BrokerConfig {
        listen,
        tls: None,
        limits,
        router: Default::default(),
        metrics: None,
        tenants,
        users,
    })
}

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
}

impl FleetBroker {
    /// Validates `config`, binds and starts the broker.
    ///
    /// # Errors
    /// A bad config (naming the key) or an address that cannot be bound.
    pub(crate) async fn start(config: &BrokerConfig) -> anyhow::Result<FleetBroker> {
        let settings = config.validate()?;
        let listeners = Listeners::bind(&settings).await.with_context(|| {
            format!(
                "cannot start the fleet's MQTT broker on {} (in use? pick another with --broker-listen)",
                settings.listen
            )
        })?;
        let addr = listeners.mqtt.local_addr()?;
        let broker = Broker::new(settings);
        let handle = broker.handle();
        let stop = CancellationToken::new();
        let task = tokio::spawn(broker.run(listeners, stop.clone().cancelled_owned()));
        Ok(FleetBroker {
            addr,
            handle,
            stop,
            task,
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
        self.task.await?.context("the fleet's MQTT broker failed")
    }
}

#[cfg(test)]
mod tests {
    use fieldlink_sim::{FleetSpec, ProtocolMix};

    use super::*;

    #[test]
    fn a_fleets_broker_config_has_every_client_and_validates() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 40,
            protocols: "mqtt-json=1,sparkplug-b=1".parse::<ProtocolMix>().unwrap(),
            ..FleetSpec::default()
        })
        .unwrap();
        let credentials = Credentials::generate(&plan, 5).unwrap();
        let config = broker_config(&plan, &credentials, "127.0.0.1:0".parse().unwrap()).unwrap();
        // 20 JSON devices, 4 edge nodes of 5 devices, 2 gateways.
        assert_eq!(config.users.len(), 20 + 4 + 2);
        assert_eq!(config.tenants.len(), 2);
        let settings = config.validate().unwrap();
        assert!(settings.limits.max_connections >= 26);
        let text = toml::to_string(&config).unwrap();
        let back = BrokerConfig::from_toml(&text).unwrap();
        assert_eq!(back.users.len(), config.users.len());
    }
}
