//! The `fieldlink broker` configuration of a simulated fleet: one tenant per
//! fleet tenant with the default ACLs, and one user per device, edge node
//! and gateway of the fleet's [`Credentials`] (fast salted SHA-256 hashes of
//! their random passwords, `$sha256$`).
//!
//! One copy for every user of it: `fieldlink sim mqtt|sparkplug|fleet` and
//! `fieldlink demo` (the broker a fleet brings when no `--broker` is given)
//! and `fieldlink bench mqtt` (the broker under test). It lives here because
//! the benches may not depend on the binary, and the broker crate may not
//! depend on the simulators.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use fieldlink_broker::BrokerConfig;
use fieldlink_broker::auth::{HashKind, PasswordHash};
use fieldlink_broker::config::{
    AclConfig, IngressConfig, LimitsConfig, MAX_SHARD_CONNECTIONS, Role, TenantConfig, UserConfig,
};
use fieldlink_sim::FleetPlan;
use fieldlink_sim::mqtt::{Credentials, Role as SimRole};

/// Connection slots kept beyond the fleet's users (the bench's observers,
/// a reconnecting client whose old connection is not yet closed, ...).
const SPARE_CONNECTIONS: usize = 256;

/// The broker config of a fleet, listening on `listen`, without metrics
/// or TLS.
///
/// # Errors
/// When a password cannot be hashed.
pub fn broker_config(
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
        let (role, client_id_must_match) = match c.role {
            SimRole::Device | SimRole::EdgeNode => (Role::Device, None),
            // One login for many devices: the client id is the device.
            SimRole::Fleet => (Role::Device, Some(false)),
            SimRole::Gateway => (Role::Service, None),
        };
        users.push(UserConfig {
            username: c.username.clone(),
            password_hash: hash.to_string(),
            tenant: c.tenant.clone(),
            role,
            client_id_must_match,
        });
    }
    let limits = LimitsConfig {
        // Every client of the fleet at once, and room for a few more.
        max_connections: users.len() + SPARE_CONNECTIONS,
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
        ingress: None,
    })
}

/// Devices one ingress shard is planned for: the kernel spreads
/// SO_REUSEPORT connections by hash, so shards get uneven shares; at this
/// mean the fullest stays well under [`MAX_SHARD_CONNECTIONS`].
pub const INGRESS_DEVICES_PER_SHARD: u32 = 15_000;

/// The broker config of a lean fleet ([`Credentials::generate_lean`]):
/// the broker itself on `listen` (for the gateways' and operators'
/// clients), and the lean ingress on `ingress_listen` in
/// `ceil(devices / INGRESS_DEVICES_PER_SHARD)` shards that run `gateways`
/// (paths relative to where the config is written). Devices of a tenant
/// share its fleet login, so its device ACL is their own subtree by
/// client id, `%t/%c/#`.
///
/// # Errors
/// When a password cannot be hashed.
pub fn lean_broker_config(
    plan: &FleetPlan,
    credentials: &Credentials,
    listen: SocketAddr,
    ingress_listen: SocketAddr,
    gateways: Vec<PathBuf>,
) -> anyhow::Result<BrokerConfig> {
    let mut config = broker_config(plan, credentials, listen)?;
    let own = vec!["%t/%c/#".to_owned()];
    for t in &mut config.tenants {
        t.device = AclConfig {
            publish: Some(own.clone()),
            subscribe: Some(own.clone()),
        };
    }
    let devices = plan.range_of(fieldlink_model::Protocol::MqttJson).len() as u32;
    config.ingress = Some(IngressConfig {
        listen: ingress_listen,
        shards: devices.div_ceil(INGRESS_DEVICES_PER_SHARD).max(1) as usize,
        max_connections: MAX_SHARD_CONNECTIONS,
        gateways,
        metrics: None,
    });
    Ok(config)
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

    #[test]
    fn a_lean_fleets_config_has_one_login_per_tenant_and_enough_shards() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 40_000,
            protocols: ProtocolMix::only(fieldlink_model::Protocol::MqttJson),
            ..FleetSpec::default()
        })
        .unwrap();
        let credentials = Credentials::generate_lean(&plan).unwrap();
        let config = lean_broker_config(
            &plan,
            &credentials,
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:1884".parse().unwrap(),
            vec!["gateways/acme.toml".into()],
        )
        .unwrap();
        // A fleet login and a gateway per tenant.
        assert_eq!(config.users.len(), 2 * plan.tenants().len());
        let ingress = config.ingress.as_ref().unwrap();
        assert_eq!(ingress.shards, 3);
        let settings = config.validate().unwrap();
        let fleet = settings
            .users
            .values()
            .find(|u| u.role == Role::Device)
            .unwrap();
        assert!(!fleet.client_id_must_match);
    }
}
