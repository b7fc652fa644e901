//! Where the MQTT faces' clients connect, and the credentials they and the
//! gateways use there.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use fieldlink_model::Protocol;

use crate::error::SimError;
use crate::plan::FleetPlan;
use crate::sparkplug::plan_nodes;

/// `mqtt://HOST:PORT` of a broker (`--broker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl FromStr for BrokerAddr {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SimError::spec("--broker", format!("`{s}` is not mqtt://HOST:PORT"));
        let rest = s.strip_prefix("mqtt://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(bad());
        }
        Ok(BrokerAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)
    }
}

/// What a broker user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An MQTT JSON device: user name = device id.
    Device,
    /// A Sparkplug edge node: user name = edge node id.
    EdgeNode,
    /// A gateway's own client: user name = gateway id.
    Gateway,
    /// The one login all of a tenant's lean-fleet devices share (user name
    /// [`fleet_user`]; the broker lets its client ids differ from it).
    Fleet,
}

impl Role {
    /// The code in `mqtt-credentials.csv`.
    pub const fn code(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::EdgeNode => "edge-node",
            Role::Gateway => "gateway",
            Role::Fleet => "fleet",
        }
    }

    fn from_code(code: &str) -> Option<Role> {
        [Role::Device, Role::EdgeNode, Role::Gateway, Role::Fleet]
            .into_iter()
            .find(|r| r.code() == code)
    }
}

/// User name of tenant `tenant`'s fleet login.
pub fn fleet_user(tenant: &str) -> String {
    format!("sim-fleet-{tenant}")
}

/// One broker user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// User name (and client id).
    pub username: String,
    /// Password.
    pub password: String,
    /// Tenant name.
    pub tenant: String,
    /// Role.
    pub role: Role,
}

/// Every broker user of a fleet: its MQTT JSON devices, Sparkplug edge
/// nodes and each tenant's gateway, with random passwords.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    list: Vec<Credential>,
    by_user: HashMap<String, usize>,
}

/// Gateway id of tenant `name` in the written configs.
pub fn gateway_id(tenant: &str) -> String {
    format!("sim-gw-{tenant}")
}

fn password() -> Result<String, SimError> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| SimError::Random(e.to_string()))?;
    Ok(bytes
        .iter()
        .map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect())
}

impl Credentials {
    /// Random passwords for every MQTT JSON device, every Sparkplug edge
    /// node (`per_node` devices each) and each tenant's gateway.
    ///
    /// # Errors
    /// [`SimError::Random`].
    pub fn generate(plan: &FleetPlan, per_node: u32) -> Result<Credentials, SimError> {
        let mut c = Credentials::default();
        for d in plan.devices().filter(|d| d.protocol == Protocol::MqttJson) {
            let tenant = plan.tenants()[d.tenant].name.clone();
            c.push(d.id(), tenant, Role::Device)?;
        }
        for node in plan_nodes(plan, per_node) {
            let tenant = plan.tenants()[node.tenant].name.clone();
            c.push(node.edge.clone(), tenant, Role::EdgeNode)?;
        }
        for t in plan.tenants() {
            c.push(gateway_id(&t.name), t.name.clone(), Role::Gateway)?;
        }
        Ok(c)
    }

    /// Random passwords for a lean fleet: one [`Role::Fleet`] login per
    /// tenant with MQTT JSON devices (shared by all of them) and each
    /// tenant's gateway. A million devices need two users, not a million.
    ///
    /// # Errors
    /// [`SimError::Random`].
    pub fn generate_lean(plan: &FleetPlan) -> Result<Credentials, SimError> {
        let mut c = Credentials::default();
        for (i, t) in plan.tenants().iter().enumerate() {
            let has_devices = plan
                .devices()
                .any(|d| d.tenant == i && d.protocol == Protocol::MqttJson);
            if has_devices {
                c.push(fleet_user(&t.name), t.name.clone(), Role::Fleet)?;
            }
        }
        for t in plan.tenants() {
            c.push(gateway_id(&t.name), t.name.clone(), Role::Gateway)?;
        }
        Ok(c)
    }

    fn push(&mut self, username: String, tenant: String, role: Role) -> Result<(), SimError> {
        self.insert(Credential {
            username,
            password: password()?,
            tenant,
            role,
        });
        Ok(())
    }

    fn insert(&mut self, credential: Credential) {
        self.by_user
            .insert(credential.username.clone(), self.list.len());
        self.list.push(credential);
    }

    /// The fleet logins ([`Role::Fleet`]), by tenant name.
    pub fn fleet_logins(&self) -> HashMap<String, super::lean::FleetLogin> {
        self.list
            .iter()
            .filter(|c| c.role == Role::Fleet)
            .map(|c| {
                let login = super::lean::FleetLogin {
                    username: c.username.clone(),
                    password: c.password.clone(),
                };
                (c.tenant.clone(), login)
            })
            .collect()
    }

    /// Reads a `mqtt-credentials.csv` that [`Credentials::write`] wrote.
    ///
    /// # Errors
    /// [`SimError::Io`] when it cannot be read, [`SimError::Spec`] naming
    /// the line that is not `username,password,tenant,role`.
    pub fn read(path: &Path) -> Result<Credentials, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::io(path, e))?;
        let mut c = Credentials::default();
        for (n, line) in text.lines().enumerate().skip(1) {
            let bad = || {
                SimError::spec(
                    "credentials",
                    format!(
                        "{} line {}: not username,password,tenant,role",
                        path.display(),
                        n + 1
                    ),
                )
            };
            let fields: Vec<&str> = line.split(',').collect();
            let [username, password, tenant, role] = fields[..] else {
                return Err(bad());
            };
            let role = Role::from_code(role).ok_or_else(bad)?;
            c.insert(Credential {
                username: username.to_owned(),
                password: password.to_owned(),
                tenant: tenant.to_owned(),
                role,
            });
        }
        Ok(c)
    }

    /// The password of `username`.
    pub fn password(&self, username: &str) -> Option<&str> {
        self.by_user
            .get(username)
            .map(|&i| self.list[i].password.as_str())
    }

    /// Every user.
    pub fn all(&self) -> &[Credential] {
        &self.list
    }

    /// Writes `dir/mqtt-credentials.csv`: `username,password,tenant,role`.
    ///
    /// # Errors
    /// [`SimError::Io`] naming the path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, SimError> {
        let path = dir.join("mqtt-credentials.csv");
        let io = |e| SimError::io(&path, e);
        let file = std::fs::File::create(&path).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "username,password,tenant,role").map_err(io)?;
        for c in &self.list {
            // Ids, tenant names and passwords have no commas or quotes.
            writeln!(
                out,
                "{},{},{},{}",
                c.username,
                c.password,
                c.tenant,
                c.role.code()
            )
            .map_err(io)?;
        }
        out.flush().map_err(io)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lean_credentials_are_one_login_per_tenant_and_read_back() {
        let plan = FleetPlan::new(crate::FleetSpec {
            devices: 30,
            protocols: crate::ProtocolMix::only(Protocol::MqttJson),
            ..crate::FleetSpec::default()
        })
        .unwrap();
        let c = Credentials::generate_lean(&plan).unwrap();
        let logins = c.fleet_logins();
        assert_eq!(logins.len(), plan.tenants().len());
        for t in plan.tenants() {
            assert_eq!(logins[&t.name].username, fleet_user(&t.name));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = c.write(dir.path()).unwrap();
        let back = Credentials::read(&path).unwrap();
        assert_eq!(back.all(), c.all());
        std::fs::write(&path, "username,password,tenant,role\na,b,c,wizard\n").unwrap();
        let err = Credentials::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn broker_addresses_parse() {
        let b: BrokerAddr = "mqtt://127.0.0.1:1883".parse().unwrap();
        assert_eq!(b.to_string(), "mqtt://127.0.0.1:1883");
        for bad in [
            "127.0.0.1:1883",
            "mqtt://h",
            "mqtt://:1",
            "mqtt://h:0",
            "tcp://h:1",
        ] {
            assert!(bad.parse::<BrokerAddr>().is_err(), "{bad}");
        }
    }
}
