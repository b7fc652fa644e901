//! Fleet planning: which device has which type, tenant and endpoint.
//!
//! A plan is a pure function of (device count, seed, class mix): the same
//! flags give the same device ids, types and endpoints in every process, so
//! shard processes rebuild it instead of receiving it. Tenants are dealt
//! round-robin (weighted); tokens are random unless given.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;
use std::time::Duration;

use fieldlink_model::{Cloud, DeviceClass, Protocol};

use crate::catalog::{self, DeviceType};
use crate::error::SimError;
use crate::signal::{SimDevice, mix};

/// Default port of every simulated device.
pub const DEFAULT_PORT: u16 = 5020;
/// Default seed.
pub const DEFAULT_SEED: u64 = 1;
/// Devices that fit the address scheme of [`device_addr`].
pub const MAX_DEVICES: u32 = 254 * 256 * 254;
/// Default tenants (`--tenants`).
pub const DEFAULT_TENANTS: &str = "public-a:public,private-b:private";
/// Length of generated tenant tokens.
pub const TOKEN_LEN: usize = 32;

/// The loopback address of device `index`: `127.X.Y.Z` with X from 1, Y
/// 0..=255 and Z 1..=254 (device 0 is 127.1.0.1, device 254 is 127.1.1.1);
/// never 127.0.0.1 and never a host byte of 0 or 255. `None` past
/// [`MAX_DEVICES`].
pub fn device_addr(index: u32) -> Option<Ipv4Addr> {
    if index >= MAX_DEVICES {
        return None;
    }
    let x = 1 + index / (256 * 254);
    let y = (index / 254) % 256;
    let z = 1 + index % 254;
    Some(Ipv4Addr::new(127, x as u8, y as u8, z as u8))
}

/// Parses a duration such as `1s`, `500ms` or `2m` (for `--interval`).
///
/// # Errors
/// A message naming the text.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration: {e}"))
}

/// Shares of the four classes (`operating=40,processing=30,mobile=20,other=10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    shares: [u32; 4],
}

impl Mix {
    /// A mix from shares per [`DeviceClass::index`].
    pub fn new(shares: [u32; 4]) -> Result<Mix, SimError> {
        if shares.iter().all(|&s| s == 0) {
            return Err(SimError::spec(
                "--mix",
                "at least one share must be above 0",
            ));
        }
        if shares.iter().any(|&s| s > 1_000_000) {
            return Err(SimError::spec("--mix", "shares must be at most 1000000"));
        }
        Ok(Mix { shares })
    }

    /// The share of a class.
    pub fn share(&self, class: DeviceClass) -> u32 {
        self.shares[class.index()]
    }
}

impl Default for Mix {
    /// 40 % operating, 30 % processing, 20 % mobile, 10 % other.
    fn default() -> Self {
        Mix {
            shares: [40, 30, 20, 10],
        }
    }
}

impl FromStr for Mix {
    type Err = SimError;

    /// `class=share` pairs separated by commas; classes not named get 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut shares = [0u32; 4];
        let mut seen = [false; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (class, share) = part
                .split_once('=')
                .ok_or_else(|| SimError::spec("--mix", format!("`{part}` is not class=share")))?;
            let class: DeviceClass = class
                .trim()
                .parse()
                .map_err(|e| SimError::spec("--mix", format!("{e}")))?;
            let share: u32 = share
                .trim()
                .parse()
                .map_err(|_| SimError::spec("--mix", format!("`{share}` is not a whole number")))?;
            if std::mem::replace(&mut seen[class.index()], true) {
                return Err(SimError::spec("--mix", format!("`{class}` is given twice")));
            }
            shares[class.index()] = share;
        }
        Mix::new(shares)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, class) in DeviceClass::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", class.code(), self.shares[i])?;
        }
        Ok(())
    }
}

/// Shares of the protocols the devices speak (`modbus-tcp=1,opc-ua=1`).
/// Each protocol gets a contiguous block of device indexes, in the order of
/// [`Protocol::ALL`], and the class mix is applied within each block, so
/// every protocol covers every class and category when it has devices
/// enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolMix {
    shares: Vec<(Protocol, u32)>,
}

impl ProtocolMix {
    /// Only `protocol`.
    pub fn only(protocol: Protocol) -> ProtocolMix {
        ProtocolMix {
            shares: vec![(protocol, 1)],
        }
    }

    /// A mix from `(protocol, share)` pairs; protocols given twice or all
    /// shares zero are refused.
    ///
    /// # Errors
    /// [`SimError::Spec`] naming `--protocols`.
    pub fn new(shares: &[(Protocol, u32)]) -> Result<ProtocolMix, SimError> {
        let mut out: Vec<(Protocol, u32)> = Vec::new();
        for &(p, share) in shares {
            if out.iter().any(|(q, _)| *q == p) {
                return Err(SimError::spec(
                    "--protocols",
                    format!("`{p}` is given twice"),
                ));
            }
            if share > 1_000_000 {
                return Err(SimError::spec(
                    "--protocols",
                    "shares must be at most 1000000",
                ));
            }
            out.push((p, share));
        }
        if out.iter().all(|(_, s)| *s == 0) {
            return Err(SimError::spec(
                "--protocols",
                "at least one share must be above 0",
            ));
        }
        out.sort_by_key(|(p, _)| *p);
        Ok(ProtocolMix { shares: out })
    }

    /// The protocols with a share, in block order.
    pub fn protocols(&self) -> impl Iterator<Item = Protocol> + '_ {
        self.shares.iter().filter(|(_, s)| *s > 0).map(|(p, _)| *p)
    }
}

impl Default for ProtocolMix {
    /// Modbus TCP only.
    fn default() -> Self {
        ProtocolMix::only(Protocol::ModbusTcp)
    }
}

impl FromStr for ProtocolMix {
    type Err = SimError;

    /// `protocol=share` pairs (or bare protocols, share 1) separated by
    /// commas.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut shares = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (protocol, share) = part.split_once('=').unwrap_or((part, "1"));
            let protocol: Protocol = protocol
                .trim()
                .parse()
                .map_err(|e| SimError::spec("--protocols", format!("{e}")))?;
            let share: u32 = share.trim().parse().map_err(|_| {
                SimError::spec("--protocols", format!("`{share}` is not a whole number"))
            })?;
            shares.push((protocol, share));
        }
        ProtocolMix::new(&shares)
    }
}

impl fmt::Display for ProtocolMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (p, share)) in self.shares.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}={share}")?;
        }
        Ok(())
    }
}

/// A tenant of the fleet as asked for (`name:cloud[:weight]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    /// Name: 1 to 64 letters, digits, `-` or `_`.
    pub name: String,
    /// The cloud its devices count under.
    pub cloud: Cloud,
    /// Relative share of the devices (default 1).
    pub weight: u32,
    /// Bearer token; a random one when `None`.
    pub token: Option<String>,
}

impl TenantSpec {
    /// A tenant of weight 1 with a random token.
    pub fn new(name: impl Into<String>, cloud: Cloud) -> TenantSpec {
        TenantSpec {
            name: name.into(),
            cloud,
            weight: 1,
            token: None,
        }
    }

    /// Parses a comma-separated list (`public-a:public,private-b:private`).
    ///
    /// # Errors
    /// [`SimError::Spec`] naming `--tenants`.
    pub fn parse_list(s: &str) -> Result<Vec<TenantSpec>, SimError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect()
    }

    /// The default tenants: `public-a` on the public cloud and `private-b`
    /// on a private one.
    pub fn defaults() -> Vec<TenantSpec> {
        vec![
            TenantSpec::new("public-a", Cloud::Public),
            TenantSpec::new("private-b", Cloud::Private),
        ]
    }
}

/// `name:cloud:weight`, as `--tenants` parses it (the token is not shown).
impl fmt::Display for TenantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.name, self.cloud.code(), self.weight)
    }
}

impl FromStr for TenantSpec {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split(':');
        let name = parts.next().unwrap_or_default().trim();
        let cloud = parts.next().ok_or_else(|| {
            SimError::spec("--tenants", format!("`{s}` is not name:cloud[:weight]"))
        })?;
        let cloud: Cloud = cloud
            .trim()
            .parse()
            .map_err(|e| SimError::spec("--tenants", format!("{e}")))?;
        let weight = match parts.next() {
            None => 1,
            Some(w) => w.trim().parse().map_err(|_| {
                SimError::spec("--tenants", format!("weight `{w}` is not a whole number"))
            })?,
        };
        if parts.next().is_some() {
            return Err(SimError::spec(
                "--tenants",
                format!("`{s}` is not name:cloud[:weight]"),
            ));
        }
        Ok(TenantSpec {
            name: name.to_owned(),
            cloud,
            weight,
            token: None,
        })
    }
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    /// Number of devices.
    pub devices: u32,
    /// Seed of type assignment and signals.
    pub seed: u64,
    /// Tenants the devices are dealt to.
    pub tenants: Vec<TenantSpec>,
    /// Class shares (within each protocol's block).
    pub mix: Mix,
    /// Protocol shares.
    pub protocols: ProtocolMix,
    /// TCP port of every device (0: any free port, for tests; the written
    /// files then carry port 0).
    pub port: u16,
    /// Poll interval written into the gateway configs.
    pub interval: Duration,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            devices: 100,
            seed: DEFAULT_SEED,
            tenants: TenantSpec::defaults(),
            mix: Mix::default(),
            protocols: ProtocolMix::default(),
            port: DEFAULT_PORT,
            interval: Duration::from_secs(1),
        }
    }
}

/// A tenant of a plan, with its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Name.
    pub name: String,
    /// Cloud.
    pub cloud: Cloud,
    /// Bearer token.
    pub token: String,
}

/// One device of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedDevice {
    /// Index in the fleet (dense, from 0).
    pub index: u32,
    /// Position of the type in [`catalog::CATALOG`].
    pub type_index: usize,
    /// The type.
    pub device_type: &'static DeviceType,
    /// Index into [`FleetPlan::tenants`].
    pub tenant: usize,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// Its own loopback address and the fleet's port: where a Modbus device
    /// listens, and the source address other faces connect from.
    pub endpoint: SocketAddrV4,
}

impl PlannedDevice {
    /// Device id: `sim-<type key>-<index, 6 digits>`, e.g. `sim-cnc-000017`.
    pub fn id(&self) -> String {
        format!("sim-{}-{:06}", self.device_type.key, self.index)
    }

    /// Human name: `<label> <index>`.
    pub fn name(&self) -> String {
        format!("{} {:06}", self.device_type.label, self.index)
    }

    /// Serial number (holding registers 2..=3).
    pub fn serial(&self) -> u32 {
        catalog::SERIAL_BASE.wrapping_add(self.index)
    }
}

/// A planned fleet: every device's type, tenant and endpoint.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    spec: FleetSpec,
    types: Vec<u16>,
    tenants: Vec<Tenant>,
    tenant_cycle: Vec<u16>,
    /// `(protocol, first index, end)` per protocol with devices.
    blocks: Vec<(Protocol, u32, u32)>,
}

impl FleetPlan {
    /// Plans a fleet.
    ///
    /// Every class with a share gets at least one device of each of its
    /// types when there are devices enough; the rest go by share (largest
    /// remainder), round-robin over the class's types, then shuffled by the
    /// seed. Tenants are dealt in a smooth weighted round-robin.
    ///
    /// # Errors
    /// [`SimError::Spec`] naming the bad field; [`SimError::Random`] when no
    /// token can be generated.
    pub fn new(spec: FleetSpec) -> Result<FleetPlan, SimError> {
        if spec.devices == 0 || spec.devices > MAX_DEVICES {
            return Err(SimError::spec(
                "--devices",
                format!("must be 1..={MAX_DEVICES}, got {}", spec.devices),
            ));
        }
        if spec.interval < Duration::from_millis(10) {
            return Err(SimError::spec("--interval", "must be at least 10ms"));
        }
        let tenants = make_tenants(&spec.tenants)?;
        let tenant_cycle = weighted_cycle(&spec.tenants);
        let shares: Vec<u32> = spec.protocols.shares.iter().map(|(_, s)| *s).collect();
        let counts = split(spec.devices, &shares);
        let mut blocks = Vec::new();
        let mut types = Vec::with_capacity(spec.devices as usize);
        for (k, (&(protocol, _), &count)) in spec.protocols.shares.iter().zip(&counts).enumerate() {
            if count == 0 {
                continue;
            }
            let first = types.len() as u32;
            // The first block keeps the plain seed: a single-protocol fleet
            // is the fleet it always was.
            types.extend(assign_types(count, &spec.mix, spec.seed ^ (k as u64)));
            blocks.push((protocol, first, types.len() as u32));
        }
        Ok(FleetPlan {
            spec,
            types,
            tenants,
            tenant_cycle,
            blocks,
        })
    }

    /// The specification.
    pub fn spec(&self) -> &FleetSpec {
        &self.spec
    }

    /// Number of devices.
    pub fn len(&self) -> u32 {
        self.spec.devices
    }

    /// Always false: a plan has at least one device.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The tenants, with tokens.
    pub fn tenants(&self) -> &[Tenant] {
        &self.tenants
    }

    /// Device `index`.
    pub fn device(&self, index: u32) -> Option<PlannedDevice> {
        let type_index = usize::from(*self.types.get(index as usize)?);
        Some(PlannedDevice {
            index,
            type_index,
            device_type: &catalog::CATALOG[type_index],
            tenant: usize::from(self.tenant_cycle[index as usize % self.tenant_cycle.len()]),
            protocol: self.protocol_of(index)?,
            endpoint: SocketAddrV4::new(device_addr(index)?, self.spec.port),
        })
    }

    /// Every device, by index.
    pub fn devices(&self) -> impl Iterator<Item = PlannedDevice> + '_ {
        (0..self.len()).filter_map(|i| self.device(i))
    }

    /// The protocol of device `index`.
    pub fn protocol_of(&self, index: u32) -> Option<Protocol> {
        self.blocks
            .iter()
            .find(|(_, from, to)| (*from..*to).contains(&index))
            .map(|(p, _, _)| *p)
    }

    /// The device indexes that speak `protocol` (empty if none).
    pub fn range_of(&self, protocol: Protocol) -> std::ops::Range<u32> {
        self.blocks
            .iter()
            .find(|(p, _, _)| *p == protocol)
            .map_or(0..0, |(_, from, to)| *from..*to)
    }

    /// The protocols of the fleet, in block order.
    pub fn protocols(&self) -> impl Iterator<Item = Protocol> + '_ {
        self.blocks.iter().map(|(p, _, _)| *p)
    }

    /// The devices of tenant `tenant`.
    pub fn devices_of_tenant(&self, tenant: usize) -> impl Iterator<Item = PlannedDevice> + '_ {
        self.devices().filter(move |d| d.tenant == tenant)
    }

    /// The endpoint of device `index`.
    ///
    /// # Errors
    /// [`SimError::Spec`] when there is no such device.
    pub fn endpoint(&self, index: u32) -> Result<SocketAddrV4, SimError> {
        self.device(index)
            .map(|d| d.endpoint)
            .ok_or_else(|| SimError::spec("device", format!("no device {index}")))
    }

    /// The signal model of device `index`.
    ///
    /// # Errors
    /// [`SimError::Spec`] when there is no such device.
    pub fn sim_device(&self, index: u32) -> Result<SimDevice, SimError> {
        self.device(index)
            .and_then(|d| SimDevice::new(self.spec.seed, index, d.type_index))
            .ok_or_else(|| SimError::spec("device", format!("no device {index}")))
    }
}

/// Validates tenants and fills in tokens.
fn make_tenants(specs: &[TenantSpec]) -> Result<Vec<Tenant>, SimError> {
    if specs.is_empty() {
        return Err(SimError::spec("--tenants", "at least one tenant is needed"));
    }
    let mut out: Vec<Tenant> = Vec::with_capacity(specs.len());
    let mut total = 0u64;
    for t in specs {
        let name_ok = !t.name.is_empty()
            && t.name.len() <= 64
            && t.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(SimError::spec(
                "--tenants",
                format!("`{}` must be 1 to 64 letters, digits, `-` or `_`", t.name),
            ));
        }
        if out.iter().any(|o| o.name == t.name) {
            return Err(SimError::spec(
                "--tenants",
                format!("`{}` is listed twice", t.name),
            ));
        }
        if t.weight == 0 {
            return Err(SimError::spec(
                "--tenants",
                format!("`{}` has weight 0", t.name),
            ));
        }
        total += u64::from(t.weight);
        let token = match &t.token {
            Some(token) if token.len() >= 16 && !token.chars().any(char::is_whitespace) => {
                token.clone()
            }
            Some(_) => {
                return Err(SimError::spec(
                    "--tenants",
                    format!(
                        "token of `{}` must be at least 16 characters without white space",
                        t.name
                    ),
                ));
            }
            None => random_token()?,
        };
        out.push(Tenant {
            name: t.name.clone(),
            cloud: t.cloud,
            token,
        });
    }
    if total > 10_000 {
        return Err(SimError::spec(
            "--tenants",
            "weights must add up to at most 10000",
        ));
    }
    Ok(out)
}

/// A random token of [`TOKEN_LEN`] URL-safe characters.
fn random_token() -> Result<String, SimError> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; TOKEN_LEN];
    getrandom::fill(&mut bytes).map_err(|e| SimError::Random(e.to_string()))?;
    Ok(bytes
        .iter()
        .map(|&b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect())
}

/// One period of a smooth weighted round-robin over the tenants.
fn weighted_cycle(specs: &[TenantSpec]) -> Vec<u16> {
    let total: i64 = specs.iter().map(|t| i64::from(t.weight)).sum();
    let mut current = vec![0i64; specs.len()];
    let mut cycle = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, t) in current.iter_mut().zip(specs) {
            *c += i64::from(t.weight);
        }
        let best = (0..specs.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        current[best] -= total;
        cycle.push(best as u16);
    }
    if cycle.is_empty() {
        cycle.push(0);
    }
    cycle
}

/// Largest-remainder split of `n` by `shares`.
fn split(n: u32, shares: &[u32]) -> Vec<u32> {
    let total: u64 = shares.iter().map(|&s| u64::from(s)).sum();
    if total == 0 {
        return vec![0; shares.len()];
    }
    let exact: Vec<u64> = shares
        .iter()
        .map(|&s| u64::from(n) * u64::from(s))
        .collect();
    let mut counts: Vec<u32> = exact.iter().map(|e| (e / total) as u32).collect();
    let mut left = n - counts.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(exact[i] % total), i));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        if shares[i] > 0 {
            counts[i] += 1;
            left -= 1;
        }
    }
    counts
}

/// Type index of every device.
fn assign_types(n: u32, class_mix: &Mix, seed: u64) -> Vec<u16> {
    let classes = DeviceClass::ALL;
    let by_class: Vec<Vec<usize>> = classes
        .iter()
        .map(|&c| catalog::types_of_class(c))
        .collect();
    let shares: Vec<u32> = classes.iter().map(|&c| class_mix.share(c)).collect();
    let mut counts = split(n, &shares);
    // Cover every type of every class that has a share, when n allows.
    let need: Vec<u32> = (0..classes.len())
        .map(|c| {
            if shares[c] > 0 {
                by_class[c].len() as u32
            } else {
                0
            }
        })
        .collect();
    if n >= need.iter().sum::<u32>() {
        for c in 0..classes.len() {
            while counts[c] < need[c] {
                let donor = (0..classes.len())
                    .filter(|&k| counts[k] > need[k])
                    .max_by_key(|&k| counts[k] - need[k]);
                let Some(donor) = donor else { break };
                counts[donor] -= 1;
                counts[c] += 1;
            }
        }
    }
    let mut types = Vec::with_capacity(n as usize);
    for (c, &count) in counts.iter().enumerate() {
        let of_class = &by_class[c];
        if of_class.is_empty() {
            continue;
        }
        for j in 0..count as usize {
            types.push(of_class[j % of_class.len()] as u16);
        }
    }
    // Fisher-Yates with a splitmix64 stream.
    let mut state = mix(seed ^ 0xF1EE_7000);
    for i in (1..types.len()).rev() {
        state = mix(state);
        let j = (state % (i as u64 + 1)) as usize;
        types.swap(i, j);
    }
    types
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use fieldlink_model::Category;

    use super::*;

    fn plan(devices: u32, seed: u64) -> FleetPlan {
        FleetPlan::new(FleetSpec {
            devices,
            seed,
            ..FleetSpec::default()
        })
        .unwrap()
    }

    #[test]
    fn addresses_skip_zero_and_broadcast_host_bytes() {
        assert_eq!(device_addr(0), Some(Ipv4Addr::new(127, 1, 0, 1)));
        assert_eq!(device_addr(253), Some(Ipv4Addr::new(127, 1, 0, 254)));
        assert_eq!(device_addr(254), Some(Ipv4Addr::new(127, 1, 1, 1)));
        assert_eq!(
            device_addr(MAX_DEVICES - 1),
            Some(Ipv4Addr::new(127, 254, 255, 254))
        );
        assert_eq!(device_addr(MAX_DEVICES), None);
        let mut seen = HashSet::new();
        for i in 0..100_000 {
            let a = device_addr(i).unwrap();
            let o = a.octets();
            assert!(o[3] != 0 && o[3] != 255 && a != Ipv4Addr::LOCALHOST);
            assert!(seen.insert(a));
        }
    }

    #[test]
    fn every_category_is_covered_once_there_are_enough_devices() {
        let p = plan(catalog::CATALOG.len() as u32, 1);
        let types: HashSet<usize> = p.devices().map(|d| d.type_index).collect();
        assert_eq!(types.len(), catalog::CATALOG.len());
        let cats: HashSet<Category> = p.devices().map(|d| d.device_type.category).collect();
        assert_eq!(cats.len(), Category::ALL.len());
    }

    #[test]
    fn mix_sets_class_shares() {
        let p = plan(10_000, 5);
        let mut per_class = [0u32; 4];
        for d in p.devices() {
            per_class[d.device_type.class().index()] += 1;
        }
        assert_eq!(per_class, [4000, 3000, 2000, 1000]);
        let p = FleetPlan::new(FleetSpec {
            devices: 50,
            mix: "mobile=1".parse().unwrap(),
            ..FleetSpec::default()
        })
        .unwrap();
        assert!(
            p.devices()
                .all(|d| d.device_type.class() == DeviceClass::Mobile)
        );
    }

    #[test]
    fn plans_are_deterministic_by_seed() {
        let ids = |p: &FleetPlan| p.devices().map(|d| d.id()).collect::<Vec<_>>();
        assert_eq!(ids(&plan(500, 9)), ids(&plan(500, 9)));
        assert_ne!(ids(&plan(500, 9)), ids(&plan(500, 10)));
        let p = plan(500, 9);
        let unique: HashSet<String> = ids(&p).into_iter().collect();
        assert_eq!(unique.len(), 500);
        assert!(p.device(17).unwrap().id().ends_with("-000017"));
    }

    #[test]
    fn tenants_are_dealt_by_weight_with_random_tokens() {
        let p = FleetPlan::new(FleetSpec {
            devices: 400,
            tenants: TenantSpec::parse_list("a:public:3, b:private").unwrap(),
            ..FleetSpec::default()
        })
        .unwrap();
        assert_eq!(p.devices_of_tenant(0).count(), 300);
        assert_eq!(p.devices_of_tenant(1).count(), 100);
        let t = p.tenants();
        assert_eq!(t[1].cloud, Cloud::Private);
        assert!(t[0].token.len() >= 24 && t[0].token != t[1].token);
        let q = plan(400, 1);
        assert_eq!(q.devices_of_tenant(0).count(), 200);
    }

    #[test]
    fn protocols_get_blocks_each_covering_every_category_and_both_tenants() {
        let p = FleetPlan::new(FleetSpec {
            devices: 200,
            protocols: "opc-ua=1,modbus-tcp=1,sparkplug-b=2".parse().unwrap(),
            ..FleetSpec::default()
        })
        .unwrap();
        assert_eq!(
            p.protocols().collect::<Vec<_>>(),
            [Protocol::ModbusTcp, Protocol::OpcUa, Protocol::SparkplugB]
        );
        assert_eq!(p.range_of(Protocol::ModbusTcp), 0..50);
        assert_eq!(p.range_of(Protocol::OpcUa), 50..100);
        assert_eq!(p.range_of(Protocol::SparkplugB), 100..200);
        assert_eq!(p.range_of(Protocol::MqttJson), 0..0);
        for protocol in p.protocols() {
            let of: Vec<PlannedDevice> = p.devices().filter(|d| d.protocol == protocol).collect();
            let cats: HashSet<Category> = of.iter().map(|d| d.device_type.category).collect();
            assert_eq!(cats.len(), Category::ALL.len(), "{protocol}");
            let tenants: HashSet<usize> = of.iter().map(|d| d.tenant).collect();
            assert_eq!(tenants.len(), 2, "{protocol}");
        }
        let single = plan(300, 1);
        assert!(single.devices().all(|d| d.protocol == Protocol::ModbusTcp));
        assert_eq!(
            "opc-ua,mqtt-json=3"
                .parse::<ProtocolMix>()
                .unwrap()
                .to_string(),
            "opc-ua=1,mqtt-json=3"
        );
        for bad in ["modbus", "opc-ua=x", "opc-ua=0", "opc-ua,opc-ua=2"] {
            let err = bad.parse::<ProtocolMix>().unwrap_err().to_string();
            assert!(err.starts_with("--protocols"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_specs_name_their_flag() {
        for (text, flag) in [
            ("operating=x", "--mix"),
            ("robots=3", "--mix"),
            ("operating=0", "--mix"),
        ] {
            let err = text.parse::<Mix>().unwrap_err().to_string();
            assert!(err.starts_with(flag), "{err}");
        }
        for text in ["a", "a:hybrid", "a:public:x", "a:public:1:2"] {
            let err = text.parse::<TenantSpec>().unwrap_err().to_string();
            assert!(err.starts_with("--tenants"), "{err}");
        }
        let err = FleetPlan::new(FleetSpec {
            devices: 0,
            ..FleetSpec::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("--devices"), "{err}");
        let err = FleetPlan::new(FleetSpec {
            tenants: TenantSpec::parse_list("a b:public").unwrap(),
            ..FleetSpec::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("letters"), "{err}");
        assert_eq!(
            Mix::default().to_string(),
            "operating=40,processing=30,mobile=20,other=10"
        );
    }
}
