//! The OPC UA driver's config: `[opcua]` (the gateway's client identity, PKI,
//! timeouts, reconnect backoff and subscription defaults), named servers
//! `[opcua.servers.NAME]` (endpoint, security, identity, subscribe or poll,
//! overrides) and `[devices.opcua]` (which server, the device's root node,
//! its tags by NodeId or browse path, or `browse = true`). [`configure`]
//! validates all of them and names every bad key by its path.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use opcua::types::NodeId;
use serde::{Deserialize, Serialize};

use crate::device::{DeviceInfo, ValueKind};
use crate::driver::{ConfiguredDevice, DriverConfig, parse_section};

/// `[opcua]`: driver defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaSection {
    /// Application name the gateway presents to servers.
    #[serde(default = "default_app_name")]
    pub application_name: String,
    /// Application URI (also in the gateway's certificate).
    #[serde(default = "default_app_uri")]
    pub application_uri: String,
    /// Directory of the gateway's own certificate and key (`own/`,
    /// `private/`, created on first run) and of server certificates
    /// (`trusted/`, `rejected/`); `<data_dir>/opcua-pki` when absent.
    #[serde(default, skip_serializing_if = "is_unset")]
    pub pki_dir: PathBuf,
    /// How server certificates are trusted: `first-use` stores an unknown
    /// server's certificate in `trusted/` and accepts it; `trusted-dir`
    /// accepts only certificates already in `trusted/` (others go to
    /// `rejected/`).
    #[serde(default)]
    pub server_trust: Trust,
    /// Session timeout asked of servers.
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Time allowed for one request (and for connecting).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First delay before reconnecting; doubles up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Interval of session keep-alive reads; a session whose keep-alives
    /// fail three times in a row is dropped and reconnected.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// Publishing interval of the subscriptions (default 1s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub publishing_interval: Option<Duration>,
    /// Sampling interval of monitored items (default 1s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sampling_interval: Option<Duration>,
    /// Queue size of monitored items (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
    /// Data-change deadband: a number (absolute) or `"N%"` (percent of the
    /// variable's EURange); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<Deadband>,
    /// Most monitored items (or nodes) asked for in one call when the server
    /// states no limit; halved whenever a server refuses a call as too large.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The servers, by name.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
}

/// Subscription settings of one level (`[opcua]`, a server, a tag).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionDefaults {
    /// Publishing interval of the subscriptions.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub publishing_interval: Option<Duration>,
    /// Sampling interval of monitored items.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sampling_interval: Option<Duration>,
    /// Queue size of monitored items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
    /// Data-change deadband: a number (absolute) or `"N%"` (percent of the
    /// variable's EURange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<Deadband>,
}

/// How server certificates are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// Trust on first use.
    #[default]
    FirstUse,
    /// Only certificates in `pki_dir/trusted`.
    TrustedDir,
}

/// Message security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityMode {
    /// No security.
    #[default]
    None,
    /// Messages signed.
    Sign,
    /// Messages signed and encrypted.
    SignAndEncrypt,
}

/// Security policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityPolicy {
    /// No security (with mode `none`).
    #[default]
    None,
    /// Basic256Sha256.
    #[serde(rename = "basic256sha256")]
    Basic256Sha256,
    /// Aes128_Sha256_RsaOaep.
    #[serde(rename = "aes128-sha256-rsaoaep")]
    Aes128Sha256RsaOaep,
    /// Aes256_Sha256_RsaPss.
    #[serde(rename = "aes256-sha256-rsapss")]
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    /// The library's policy.
    pub fn to_opcua(self) -> opcua::crypto::SecurityPolicy {
        use opcua::crypto::SecurityPolicy as P;
        match self {
            SecurityPolicy::None => P::None,
            SecurityPolicy::Basic256Sha256 => P::Basic256Sha256,
            SecurityPolicy::Aes128Sha256RsaOaep => P::Aes128Sha256RsaOaep,
            SecurityPolicy::Aes256Sha256RsaPss => P::Aes256Sha256RsaPss,
        }
    }
}

impl SecurityMode {
    /// The library's mode.
    pub fn to_opcua(self) -> opcua::types::MessageSecurityMode {
        use opcua::types::MessageSecurityMode as M;
        match self {
            SecurityMode::None => M::None,
            SecurityMode::Sign => M::Sign,
            SecurityMode::SignAndEncrypt => M::SignAndEncrypt,
        }
    }
}

impl FromStr for SecurityMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(SecurityMode::None),
            "sign" => Ok(SecurityMode::Sign),
            "sign-and-encrypt" => Ok(SecurityMode::SignAndEncrypt),
            other => Err(format!(
                "`{other}` is not a security mode (none, sign, sign-and-encrypt)"
            )),
        }
    }
}

impl FromStr for SecurityPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(SecurityPolicy::None),
            "basic256sha256" => Ok(SecurityPolicy::Basic256Sha256),
            "aes128-sha256-rsaoaep" => Ok(SecurityPolicy::Aes128Sha256RsaOaep),
            "aes256-sha256-rsapss" => Ok(SecurityPolicy::Aes256Sha256RsaPss),
            other => Err(format!(
                "`{other}` is not a security policy (none, basic256sha256, aes128-sha256-rsaoaep, aes256-sha256-rsapss)"
            )),
        }
    }
}

/// How values are obtained from a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Subscriptions with monitored items (falls back to polling when the
    /// server refuses subscriptions).
    #[default]
    Subscribe,
    /// Cyclic reads every `poll_interval`.
    Poll,
}

/// A data-change deadband.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Deadband {
    /// Absolute, in the variable's unit.
    Absolute(f64),
    /// `"N%"` of the EURange.
    Text(DeadbandText),
}

/// `"N%"`, kept as text for serde and parsed by [`Deadband::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeadbandText(pub f64);

impl TryFrom<String> for DeadbandText {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let number = s
            .trim()
            .strip_suffix('%')
            .ok_or_else(|| format!("`{s}` is neither a number nor a percentage like \"2.5%\""))?;
        number
            .trim()
            .parse::<f64>()
            .map(DeadbandText)
            .map_err(|_| format!("`{s}` is not a percentage like \"2.5%\""))
    }
}

impl From<DeadbandText> for String {
    fn from(d: DeadbandText) -> String {
        format!("{}%", d.0)
    }
}

/// A resolved deadband.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeadbandKind {
    /// No deadband.
    None,
    /// Absolute.
    Absolute(f64),
    /// Percent of the EURange.
    Percent(f64),
}

impl Deadband {
    /// The deadband as a kind.
    pub fn resolve(self) -> DeadbandKind {
        match self {
            Deadband::Absolute(0.0) => DeadbandKind::None,
            Deadband::Absolute(v) => DeadbandKind::Absolute(v),
            Deadband::Text(DeadbandText(p)) => DeadbandKind::Percent(p),
        }
    }

    fn check(self, key: &str, problems: &mut Vec<String>) {
        match self.resolve() {
            DeadbandKind::Absolute(v) if !v.is_finite() || v < 0.0 => {
                problems.push(format!("{key}.deadband: must be finite and at least 0"));
            }
            DeadbandKind::Percent(p) if !(0.0..=100.0).contains(&p) => {
                problems.push(format!("{key}.deadband: a percentage must be 0..=100"));
            }
            _ => {}
        }
    }
}

/// `[opcua.servers.NAME]`: one OPC UA server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `opc.tcp://HOST:PORT[/PATH]`.
    pub endpoint: String,
    /// `none`, `sign` or `sign-and-encrypt`.
    #[serde(default)]
    pub security_mode: SecurityMode,
    /// `none`, `basic256sha256`, `aes128-sha256-rsaoaep`, `aes256-sha256-rsapss`.
    #[serde(default)]
    pub security_policy: SecurityPolicy,
    /// User name (with `password`); anonymous when neither a user nor a
    /// certificate is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password of `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// X.509 user certificate (DER or PEM), with `user_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_certificate: Option<PathBuf>,
    /// Private key (PEM) of `user_certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<PathBuf>,
    /// `subscribe` or `poll`.
    #[serde(default)]
    pub mode: Mode,
    /// Interval of the cyclic reads (mode `poll`, or when the server refuses
    /// subscriptions).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Most monitored items per subscription (0: the server's limit, if it
    /// states one); items are spread over several subscriptions.
    #[serde(default)]
    pub max_items_per_subscription: usize,
    /// Publishing interval of the subscriptions (overrides `[opcua]`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub publishing_interval: Option<Duration>,
    /// Sampling interval of monitored items (overrides `[opcua]`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sampling_interval: Option<Duration>,
    /// Queue size of monitored items (overrides `[opcua]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
    /// Data-change deadband: a number (absolute) or `"N%"` (percent of the
    /// variable's EURange), overriding `[opcua]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<Deadband>,
}

/// `[devices.opcua]`: one device on a server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaDeviceConfig {
    /// Name of its `[opcua.servers.NAME]`.
    pub server: String,
    /// The device object: a NodeId (`ns=2;s=Boiler7`) or a browse path from
    /// the Objects folder (`2:Devices/2:Boiler7`). Tag paths are relative to
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Take every variable under `root` as a tag (named by its browse path
    /// under the root), and browse again every `rebrowse_interval` so
    /// variables added at run time are declared.
    #[serde(default)]
    pub browse: bool,
    /// How often a `browse` device is browsed again.
    #[serde(default = "default_rebrowse", with = "humantime_serde")]
    pub rebrowse_interval: Duration,
    /// Configured tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagConfig>,
}

/// One tag: a variable by NodeId (`node`) or browse path (`path`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Tag name, unique within the device.
    pub name: String,
    /// NodeId of the variable, e.g. `ns=2;s=Boiler7.Temperature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Browse path from the device's root (or the Objects folder), e.g.
    /// `2:Temperature` or `2:Boiler7/2:Temperature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Value kind (`double`, `int`, `bool`, `string`, `bytes`); read from the
    /// variable's DataType on connect when absent.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// Engineering unit, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    /// Override of the sampling interval.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sampling_interval: Option<Duration>,
    /// Override of the deadband.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<Deadband>,
    /// Override of the queue size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
}

/// A tag's value kind in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Floating point.
    Double,
    /// Signed integer.
    Int,
    /// Boolean.
    Bool,
    /// Text.
    String,
    /// Raw bytes.
    Bytes,
}

impl Kind {
    /// The value kind.
    pub fn value_kind(self) -> ValueKind {
        match self {
            Kind::Double => ValueKind::Double,
            Kind::Int => ValueKind::Int,
            Kind::Bool => ValueKind::Bool,
            Kind::String => ValueKind::String,
            Kind::Bytes => ValueKind::Bytes,
        }
    }

    /// The config kind of a value kind.
    pub fn of(kind: ValueKind) -> Kind {
        match kind {
            ValueKind::Double => Kind::Double,
            ValueKind::Int => Kind::Int,
            ValueKind::Bool => Kind::Bool,
            ValueKind::String => Kind::String,
            ValueKind::Bytes => Kind::Bytes,
        }
    }
}

fn default_app_name() -> String {
    "Fieldlink gateway".to_owned()
}
fn default_app_uri() -> String {
    "urn:fieldlink:gateway".to_owned()
}
fn is_unset(path: &std::path::Path) -> bool {
    path.as_os_str().is_empty()
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(5)
}
fn default_max_batch() -> usize {
    5000
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_rebrowse() -> Duration {
    Duration::from_secs(60)
}

/// Default publishing interval.
pub const DEFAULT_PUBLISHING: Duration = Duration::from_secs(1);
/// Default sampling interval.
pub const DEFAULT_SAMPLING: Duration = Duration::from_secs(1);
/// Default queue size.
pub const DEFAULT_QUEUE: u32 = 1;

impl OpcUaSection {
    fn subscription(&self) -> SubscriptionDefaults {
        SubscriptionDefaults {
            publishing_interval: self.publishing_interval,
            sampling_interval: self.sampling_interval,
            queue_size: self.queue_size,
            deadband: self.deadband,
        }
    }
}

impl ServerConfig {
    fn subscription(&self) -> SubscriptionDefaults {
        SubscriptionDefaults {
            publishing_interval: self.publishing_interval,
            sampling_interval: self.sampling_interval,
            queue_size: self.queue_size,
            deadband: self.deadband,
        }
    }
}

impl Default for OpcUaSection {
    fn default() -> Self {
        OpcUaSection {
            application_name: default_app_name(),
            application_uri: default_app_uri(),
            pki_dir: PathBuf::new(),
            server_trust: Trust::default(),
            session_timeout: default_session_timeout(),
            request_timeout: default_request_timeout(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            keep_alive_interval: default_keep_alive(),
            publishing_interval: None,
            sampling_interval: None,
            queue_size: None,
            deadband: None,
            max_batch: default_max_batch(),
            servers: BTreeMap::new(),
        }
    }
}

/// Subscription settings after defaults and overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemSettings {
    /// Sampling interval.
    pub sampling_interval: Duration,
    /// Queue size.
    pub queue_size: u32,
    /// Deadband.
    pub deadband: DeadbandKind,
}

/// Where a tag's variable is.
#[derive(Debug, Clone, PartialEq)]
pub enum Address {
    /// A NodeId.
    Node(NodeId),
    /// A browse path relative to the device root (or Objects).
    Path(Vec<(u16, String)>),
}

/// A validated tag.
#[derive(Debug, Clone)]
pub struct TagPlan {
    /// Name.
    pub name: String,
    /// Where it is.
    pub address: Address,
    /// Kind, when configured.
    pub kind: Option<ValueKind>,
    /// Unit.
    pub unit: String,
    /// Monitored-item settings.
    pub settings: ItemSettings,
}

/// Where a device's root is.
#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    /// The Objects folder.
    Objects,
    /// A NodeId.
    Node(NodeId),
    /// A browse path from the Objects folder.
    Path(Vec<(u16, String)>),
}

/// A validated device.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    /// Identity (endpoint filled in).
    pub info: DeviceInfo,
    /// Its root.
    pub root: Root,
    /// Browse the root for tags.
    pub browse: bool,
    /// Rebrowse interval.
    pub rebrowse_interval: Duration,
    /// Settings of browsed tags.
    pub defaults: ItemSettings,
    /// Configured tags.
    pub tags: Vec<TagPlan>,
}

/// A validated server with its devices.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// Its name in `[opcua.servers]`.
    pub name: String,
    /// Its config.
    pub config: ServerConfig,
    /// Publishing interval.
    pub publishing_interval: Duration,
    /// Its devices.
    pub devices: Vec<DevicePlan>,
}

/// The validated driver config.
#[derive(Debug, Clone)]
pub struct Configured {
    /// `[opcua]`.
    pub section: Arc<OpcUaSection>,
    /// Servers with at least one device.
    pub servers: Vec<ServerPlan>,
}

/// Parses a browse path: `ns:Name` segments separated by `/` (a segment
/// without `ns:` is in namespace 0).
///
/// # Errors
/// A message naming the bad segment.
pub fn parse_path(text: &str) -> Result<Vec<(u16, String)>, String> {
    let text = text.trim().trim_start_matches('/');
    if text.is_empty() {
        return Err("an empty browse path".to_owned());
    }
    text.split('/')
        .map(|segment| {
            let (ns, name) = match segment.split_once(':') {
                Some((ns, name)) if !ns.is_empty() && ns.bytes().all(|b| b.is_ascii_digit()) => (
                    ns.parse::<u16>()
                        .map_err(|_| format!("`{segment}`: namespace index over 65535"))?,
                    name,
                ),
                _ => (0, segment),
            };
            if name.is_empty() {
                return Err(format!("`{segment}`: empty browse name"));
            }
            Ok((ns, name.to_owned()))
        })
        .collect()
}

/// Parses a NodeId (`ns=2;s=Boiler7`, `i=85`, ...).
///
/// # Errors
/// A message naming the text.
pub fn parse_node(text: &str) -> Result<NodeId, String> {
    NodeId::from_str(text.trim())
        .map_err(|_| format!("`{text}` is not a NodeId (like ns=2;s=Boiler7, ns=3;i=1001 or i=85)"))
}

/// Parses a root: a NodeId when it looks like one (`ns=`, `i=`, `s=`,
/// `g=`, `b=`), else a browse path.
fn parse_root(text: &str) -> Result<Root, String> {
    let t = text.trim();
    let looks_like_node = ["ns=", "i=", "s=", "g=", "b="]
        .iter()
        .any(|p| t.starts_with(p));
    if looks_like_node {
        parse_node(t).map(Root::Node)
    } else {
        parse_path(t).map(Root::Path)
    }
}

/// Validates `[opcua]` and every `[devices.opcua]`.
///
/// # Errors
/// Every problem, each naming its key path.
pub fn configure(config: DriverConfig<'_>) -> Result<Configured, Vec<String>> {
    let mut problems = Vec::new();
    let section: OpcUaSection = match config.section {
        Some(value) => parse_section("opcua", value).unwrap_or_else(|e| {
            problems.push(e);
            OpcUaSection::default()
        }),
        None => OpcUaSection::default(),
    };
    let mut section = section;
    if is_unset(&section.pki_dir) {
        section.pki_dir = config.data_dir.join("opcua-pki");
    }
    check_section(&section, &mut problems);
    let mut servers: Vec<ServerPlan> = section
        .servers
        .iter()
        .map(|(name, s)| ServerPlan {
            name: name.clone(),
            config: s.clone(),
            publishing_interval: s
                .publishing_interval
                .or(section.publishing_interval)
                .unwrap_or(DEFAULT_PUBLISHING),
            devices: Vec::new(),
        })
        .collect();
    for device in config.devices {
        if let Some((server, plan)) = check_device(device, &section, &mut problems)
            && let Some(s) = servers.iter_mut().find(|s| s.name == server)
        {
            s.devices.push(plan);
        }
    }
    servers.retain(|s| !s.devices.is_empty());
    if problems.is_empty() {
        Ok(Configured {
            section: Arc::new(section),
            servers,
        })
    } else {
        Err(problems)
    }
}

fn check_section(s: &OpcUaSection, problems: &mut Vec<String>) {
    if s.application_uri.trim().is_empty() {
        problems.push("opcua.application_uri: must not be empty".to_owned());
    }
    for (key, d) in [
        ("request_timeout", s.request_timeout),
        ("reconnect_min", s.reconnect_min),
        ("keep_alive_interval", s.keep_alive_interval),
        ("session_timeout", s.session_timeout),
    ] {
        if d < Duration::from_millis(10) {
            problems.push(format!("opcua.{key}: must be at least 10ms"));
        }
    }
    if s.reconnect_min > s.reconnect_max {
        problems.push("opcua.reconnect_max: must be at least reconnect_min".to_owned());
    }
    if !(1..=100_000).contains(&s.max_batch) {
        problems.push(format!(
            "opcua.max_batch: must be 1..=100000, got {}",
            s.max_batch
        ));
    }
    check_subscription("opcua", &s.subscription(), problems);
    for (name, server) in &s.servers {
        let key = format!("opcua.servers.{name}");
        check_server(&key, server, problems);
    }
}

fn check_subscription(key: &str, s: &SubscriptionDefaults, problems: &mut Vec<String>) {
    if let Some(p) = s.publishing_interval
        && p < Duration::from_millis(10)
    {
        problems.push(format!("{key}.publishing_interval: must be at least 10ms"));
    }
    if let Some(d) = s.deadband {
        d.check(key, problems);
    }
    if let Some(q) = s.queue_size
        && !(1..=10_000).contains(&q)
    {
        problems.push(format!("{key}.queue_size: must be 1..=10000"));
    }
}

fn check_server(key: &str, s: &ServerConfig, problems: &mut Vec<String>) {
    if !s.endpoint.starts_with("opc.tcp://") || s.endpoint.len() <= "opc.tcp://".len() {
        problems.push(format!(
            "{key}.endpoint: `{}` is not an opc.tcp://HOST:PORT URL",
            s.endpoint
        ));
    }
    match (s.security_mode, s.security_policy) {
        (SecurityMode::None, SecurityPolicy::None) => {}
        (SecurityMode::None, _) => problems.push(format!(
            "{key}.security_policy: security_mode `none` takes security_policy `none`"
        )),
        (_, SecurityPolicy::None) => problems.push(format!(
            "{key}.security_policy: security_mode `sign` or `sign-and-encrypt` needs a policy (basic256sha256, ...)"
        )),
        _ => {}
    }
    match (&s.username, &s.password, &s.user_certificate, &s.user_key) {
        (None, None, None, None)
        | (Some(_), Some(_), None, None)
        | (None, None, Some(_), Some(_)) => {}
        (Some(_), None, _, _) | (None, Some(_), _, _) => {
            problems.push(format!("{key}: `username` and `password` go together"))
        }
        (Some(_), Some(_), _, _) => problems.push(format!(
            "{key}: give a user name or a user certificate, not both"
        )),
        _ => problems.push(format!(
            "{key}: `user_certificate` and `user_key` go together"
        )),
    }
    if s.poll_interval < Duration::from_millis(10) {
        problems.push(format!("{key}.poll_interval: must be at least 10ms"));
    }
    check_subscription(key, &s.subscription(), problems);
}

fn check_device(
    device: ConfiguredDevice<'_>,
    section: &OpcUaSection,
    problems: &mut Vec<String>,
) -> Option<(String, DevicePlan)> {
    let key = format!("{}.opcua", device.key);
    let Some(value) = device.section else {
        problems.push(format!(
            "{}: an opc-ua device needs a [devices.opcua] section with `server`",
            device.key
        ));
        return None;
    };
    let d: OpcUaDeviceConfig = parse_section(&key, value)
        .map_err(|e| problems.push(e))
        .ok()?;
    let before = problems.len();
    let server = section.servers.get(&d.server);
    if server.is_none() {
        let known: Vec<&str> = section.servers.keys().map(String::as_str).collect();
        problems.push(format!(
            "{key}.server: no server `{}` in [opcua.servers] (known: {})",
            d.server,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ));
    }
    let root = match &d.root {
        None => Root::Objects,
        Some(text) => match parse_root(text) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{key}.root: {e}"));
                Root::Objects
            }
        },
    };
    if d.browse && d.rebrowse_interval < Duration::from_millis(100) {
        problems.push(format!("{key}.rebrowse_interval: must be at least 100ms"));
    }
    if !d.browse && d.tags.is_empty() {
        problems.push(format!("{key}: no tags (set `tags`, or `browse = true`)"));
    }
    let server_sub = server.map(ServerConfig::subscription).unwrap_or_default();
    let section_sub = section.subscription();
    let pick = |tag: &SubscriptionDefaults| ItemSettings {
        sampling_interval: tag
            .sampling_interval
            .or(server_sub.sampling_interval)
            .or(section_sub.sampling_interval)
            .unwrap_or(DEFAULT_SAMPLING),
        queue_size: tag
            .queue_size
            .or(server_sub.queue_size)
            .or(section_sub.queue_size)
            .unwrap_or(DEFAULT_QUEUE),
        deadband: tag
            .deadband
            .or(server_sub.deadband)
            .or(section_sub.deadband)
            .map_or(DeadbandKind::None, Deadband::resolve),
    };
    let defaults = pick(&SubscriptionDefaults::default());
    let mut names = HashSet::new();
    let mut tags = Vec::with_capacity(d.tags.len());
    for (t, tag) in d.tags.iter().enumerate() {
        let tkey = format!("{key}.tags[{t}] ({})", tag.name);
        if tag.name.is_empty() || tag.name.len() > 128 {
            problems.push(format!("{tkey}.name: must be 1 to 128 bytes"));
        }
        if !names.insert(tag.name.as_str()) {
            problems.push(format!("{tkey}.name: `{}` is defined twice", tag.name));
        }
        let address = match (&tag.node, &tag.path) {
            (Some(node), None) => parse_node(node)
                .map(Address::Node)
                .map_err(|e| problems.push(format!("{tkey}.node: {e}")))
                .ok(),
            (None, Some(path)) => parse_path(path)
                .map(Address::Path)
                .map_err(|e| problems.push(format!("{tkey}.path: {e}")))
                .ok(),
            _ => {
                problems.push(format!("{tkey}: give exactly one of `node` and `path`"));
                None
            }
        };
        let overrides = SubscriptionDefaults {
            publishing_interval: None,
            sampling_interval: tag.sampling_interval,
            queue_size: tag.queue_size,
            deadband: tag.deadband,
        };
        check_subscription(&tkey, &overrides, problems);
        if let Some(address) = address {
            tags.push(TagPlan {
                name: tag.name.clone(),
                address,
                kind: tag.kind.map(Kind::value_kind),
                unit: tag.unit.clone(),
                settings: pick(&overrides),
            });
        }
    }
    if problems.len() > before {
        return None;
    }
    let server = server?;
    let anchor = match (&d.root, d.tags.first()) {
        (Some(root), _) => root.clone(),
        (None, Some(t)) => t.node.clone().or(t.path.clone()).unwrap_or_default(),
        (None, None) => String::new(),
    };
    let info = DeviceInfo {
        endpoint: format!("{}#{anchor}", server.endpoint),
        ..device.info
    };
    Some((
        d.server.clone(),
        DevicePlan {
            info,
            root,
            browse: d.browse,
            rebrowse_interval: d.rebrowse_interval,
            defaults,
            tags,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GatewayConfig;

    const HEAD: &str = "gateway_id = \"g\"\n[uplink]\nregistry = \"http://127.0.0.1:1\"\ntoken = \"0123456789abcdef\"\n";

    fn problems(text: &str) -> String {
        GatewayConfig::from_toml(&format!("{HEAD}{text}"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_keys_are_named_by_path() {
        let err = problems(
            r#"
            [opcua]
            max_batch = 0
            deadband = "120%"
            [opcua.servers.a]
            endpoint = "http://x"
            security_mode = "sign"
            username = "u"
            [[devices]]
            id = "b7"
            class = "operating"
            category = "power"
            type = "t"
            name = "n"
            protocol = "opc-ua"
            [devices.opcua]
            server = "nope"
            root = "ns=x;s="
            tags = [
              { name = "ok", node = "ns=2;s=B.T" },
              { name = "x", node = "not a node" },
              { name = "y", path = "2:" },
              { name = "z" },
              { name = "ok", node = "ns=2;s=B.T", queue_size = 0 },
            ]
            "#,
        );
        for want in [
            "opcua.max_batch: must be 1..=100000",
            "opcua.deadband: a percentage must be 0..=100",
            "opcua.servers.a.endpoint: `http://x` is not an opc.tcp://HOST:PORT URL",
            "opcua.servers.a.security_policy: security_mode `sign` or `sign-and-encrypt` needs a policy",
            "opcua.servers.a: `username` and `password` go together",
            "devices[0] (b7).opcua.server: no server `nope` in [opcua.servers] (known: a)",
            "devices[0] (b7).opcua.root: `ns=x;s=` is not a NodeId",
            "devices[0] (b7).opcua.tags[1] (x).node: `not a node` is not a NodeId",
            "devices[0] (b7).opcua.tags[2] (y).path: `2:`: empty browse name",
            "devices[0] (b7).opcua.tags[3] (z): give exactly one of `node` and `path`",
            "devices[0] (b7).opcua.tags[4] (ok).name: `ok` is defined twice",
            "devices[0] (b7).opcua.tags[4] (ok).queue_size: must be 1..=10000",
        ] {
            assert!(err.contains(want), "missing `{want}` in:\n{err}");
        }
        let err = problems(
            "[[devices]]\nid = \"d\"\nclass = \"operating\"\ncategory = \"power\"\ntype = \"t\"\nname = \"n\"\nprotocol = \"opc-ua\"\n[devices.opcua]\nserver = \"a\"\nbogus = 1\n",
        );
        assert!(
            err.contains("devices[0] (d).opcua: unknown field `bogus`"),
            "{err}"
        );
    }

    #[test]
    fn overrides_resolve_tag_over_server_over_driver() {
        let text = format!(
            "{HEAD}{}",
            r#"
            [opcua]
            sampling_interval = "2s"
            queue_size = 3
            [opcua.servers.a]
            endpoint = "opc.tcp://127.0.0.1:4840/"
            sampling_interval = "500ms"
            publishing_interval = "250ms"
            [[devices]]
            id = "d"
            class = "operating"
            category = "power"
            type = "t"
            name = "n"
            protocol = "opc-ua"
            [devices.opcua]
            server = "a"
            root = "2:Devices/2:D"
            tags = [
              { name = "t", path = "2:T", deadband = "5%" },
              { name = "u", node = "ns=2;i=7", sampling_interval = "100ms", type = "int" },
            ]
            "#
        );
        let config = GatewayConfig::from_toml(&text).unwrap();
        let input = config.driver_config(&super::super::OpcUaKind).unwrap();
        let c = configure(input).unwrap();
        let server = &c.servers[0];
        assert_eq!(server.publishing_interval, Duration::from_millis(250));
        let d = &server.devices[0];
        assert_eq!(
            d.root,
            Root::Path(vec![(2, "Devices".into()), (2, "D".into())])
        );
        assert_eq!(d.info.endpoint, "opc.tcp://127.0.0.1:4840/#2:Devices/2:D");
        let t = &d.tags[0].settings;
        assert_eq!(
            (t.sampling_interval, t.queue_size, t.deadband),
            (Duration::from_millis(500), 3, DeadbandKind::Percent(5.0))
        );
        assert_eq!(
            d.tags[1].settings.sampling_interval,
            Duration::from_millis(100)
        );
        assert_eq!(d.tags[1].kind, Some(ValueKind::Int));
        assert_eq!(d.tags[1].address, Address::Node(NodeId::new(2, 7u32)));
    }

    #[test]
    fn paths_and_deadbands_parse() {
        assert_eq!(
            parse_path("2:Devices/2:Boiler7").unwrap(),
            vec![(2, "Devices".to_owned()), (2, "Boiler7".to_owned())]
        );
        assert_eq!(parse_path("Server").unwrap(), vec![(0, "Server".into())]);
        assert!(parse_path("2:").is_err());
        assert!(parse_path("").is_err());
        assert_eq!(
            parse_root("ns=2;s=Boiler7").unwrap(),
            Root::Node(NodeId::new(2, "Boiler7"))
        );
        let d: SubscriptionDefaults = toml::from_str("deadband = \"2.5%\"").unwrap();
        assert_eq!(d.deadband.unwrap().resolve(), DeadbandKind::Percent(2.5));
        let d: SubscriptionDefaults = toml::from_str("deadband = 0.5").unwrap();
        assert_eq!(d.deadband.unwrap().resolve(), DeadbandKind::Absolute(0.5));
        assert!(toml::from_str::<SubscriptionDefaults>("deadband = \"x\"").is_err());
    }
}
