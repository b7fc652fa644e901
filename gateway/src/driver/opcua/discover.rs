//! `fieldlink gateway browse`: connects to a server, walks the objects
//! under a root, and prints every object that has variables as a
//! ready-to-paste `[[devices]]` entry (plus the `[opcua.servers.NAME]` it
//! needs). An object's identity comes from its properties when present —
//! `Class`, `Category`, `Model`, `Name`, `Vendor`, `SerialNumber` (what the
//! Fieldlink simulator exposes) — else placeholders the gateway's config
//! validation points at.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use opcua::types::{AttributeId, NodeClass, NodeId, ObjectId, ReferenceTypeId, Variant};

use super::batch::{Batch, read_limits};
use super::browse::{self, Batches};
use super::config::{self, Kind, OpcUaSection, Root, SecurityMode, SecurityPolicy, ServerConfig};
use super::session::{self, SessionEvent};
use crate::device::ValueKind;

/// Most objects looked at.
const MAX_OBJECTS: usize = 100_000;

/// What to browse and how to log in.
#[derive(Debug, Clone)]
pub struct BrowseOptions {
    /// `opc.tcp://HOST:PORT[/PATH]`.
    pub endpoint: String,
    /// Security mode.
    pub security_mode: SecurityMode,
    /// Security policy.
    pub security_policy: SecurityPolicy,
    /// User name and password; anonymous when `None`.
    pub user: Option<(String, String)>,
    /// Where to start: a NodeId or browse path; the Objects folder when `None`.
    pub root: Option<String>,
    /// PKI directory of the browsing client.
    pub pki_dir: PathBuf,
    /// Time allowed for connecting and for each request.
    pub timeout: Duration,
    /// The server's name in the printed config.
    pub server_name: String,
}

/// An object with variables.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundDevice {
    /// Its NodeId.
    pub node: NodeId,
    /// Its browse name.
    pub browse_name: String,
    /// Its properties' values by property browse name.
    pub properties: BTreeMap<String, String>,
    /// Its variables: name, node, kind (`None`: not representable).
    pub variables: Vec<(String, NodeId, Option<ValueKind>)>,
}

/// What browsing found.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The server's section as it will be printed.
    pub server: ServerConfig,
    /// The objects with variables.
    pub devices: Vec<FoundDevice>,
}

/// Why browsing failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// Could not connect.
    #[error("cannot connect to {endpoint}: {why}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        why: String,
    },
    /// A service call failed.
    #[error("browsing {endpoint}: {source}")]
    Call {
        /// The endpoint.
        endpoint: String,
        /// The failure.
        source: opcua::types::Error,
    },
}

fn server_config(o: &BrowseOptions) -> ServerConfig {
    ServerConfig {
        endpoint: o.endpoint.clone(),
        security_mode: o.security_mode,
        security_policy: o.security_policy,
        username: o.user.as_ref().map(|u| u.0.clone()),
        password: o.user.as_ref().map(|u| u.1.clone()),
        user_certificate: None,
        user_key: None,
        mode: config::Mode::Subscribe,
        poll_interval: Duration::from_secs(1),
        max_items_per_subscription: 0,
        publishing_interval: None,
        sampling_interval: None,
        queue_size: None,
        deadband: None,
    }
}

/// Connects and browses.
///
/// # Errors
/// [`DiscoverError`] saying what failed.
pub async fn discover(options: &BrowseOptions) -> Result<Discovery, DiscoverError> {
    let server = server_config(options);
    let section = OpcUaSection {
        pki_dir: options.pki_dir.clone(),
        request_timeout: options.timeout,
        reconnect_min: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(1),
        application_name: "Fieldlink browse".to_owned(),
        ..OpcUaSection::default()
    };
    let keys = options.security_mode != SecurityMode::None;
    let client = {
        let section = section.clone();
        tokio::task::spawn_blocking(move || session::build_client(&section, keys))
            .await
            .map_err(|e| DiscoverError::Options(e.to_string()))?
            .map_err(DiscoverError::Options)?
    };
    let connect_err = |why: String| DiscoverError::Connect {
        endpoint: options.endpoint.clone(),
        why,
    };
    let mut connected = session::connect(&client, &server, &section)
        .await
        .map_err(connect_err)?;
    let up = tokio::time::timeout(options.timeout * 2, async {
        loop {
            match connected.events.recv().await {
                Some(SessionEvent::Up(_)) => return Ok(()),
                Some(SessionEvent::ConnectFailed(s) | SessionEvent::Ended(s)) => {
                    return Err(format!("{s}"));
                }
                Some(SessionEvent::Down(_)) => {}
                None => return Err("the session ended".to_owned()),
            }
        }
    })
    .await
    .map_err(|_| connect_err("no session within the timeout".to_owned()))?;
    up.map_err(connect_err)?;
    let session = connected.session.clone();
    let call_err = |source| DiscoverError::Call {
        endpoint: options.endpoint.clone(),
        source,
    };
    let limits = read_limits(&session).await;
    let mut batches = Batches {
        browse: Batch::new(limits.nodes_per_browse, 1000),
        translate: Batch::new(limits.nodes_per_translate, 1000),
        read: Batch::new(limits.nodes_per_read, 1000),
    };
    let root = match &options.root {
        None => Root::Objects,
        Some(text) => {
            let looks_like_node = ["ns=", "i=", "s=", "g=", "b="]
                .iter()
                .any(|p| text.trim().starts_with(p));
            if looks_like_node {
                Root::Node(config::parse_node(text).map_err(DiscoverError::Options)?)
            } else {
                Root::Path(config::parse_path(text).map_err(DiscoverError::Options)?)
            }
        }
    };
    let root = browse::resolve_root(&session, &root, &mut batches.translate)
        .await
        .map_err(call_err)?;
    let devices = walk(&session, root, &mut batches).await.map_err(call_err)?;
    connected.close(Duration::from_secs(2)).await;
    Ok(Discovery { server, devices })
}

async fn walk(
    session: &opcua::client::Session,
    root: NodeId,
    batches: &mut Batches,
) -> Result<Vec<FoundDevice>, opcua::types::Error> {
    let has_property: NodeId = ReferenceTypeId::HasProperty.into();
    let server_object: NodeId = ObjectId::Server.into();
    let mut seen = HashSet::from([root.clone()]);
    let mut level = vec![root];
    let mut out = Vec::new();
    let mut looked = 0;
    for _ in 0..browse::MAX_DEPTH {
        if level.is_empty() || looked >= MAX_OBJECTS {
            break;
        }
        looked += level.len();
        let refs = browse::children(session, &level, &mut batches.browse, true).await?;
        let mut next = Vec::new();
        for (node, refs) in level.iter().zip(refs) {
            let mut properties = Vec::new();
            let mut variables = Vec::new();
            for r in refs {
                if r.node_id.server_index != 0 {
                    continue;
                }
                let child = r.node_id.node_id.clone();
                match r.node_class {
                    NodeClass::Variable if r.reference_type_id == has_property => {
                        properties.push((r.browse_name.name.as_ref().to_owned(), child));
                    }
                    NodeClass::Variable => {
                        variables.push((r.browse_name.name.as_ref().to_owned(), child))
                    }
                    NodeClass::Object if child != server_object && seen.insert(child.clone()) => {
                        next.push(child);
                    }
                    _ => {}
                }
            }
            if variables.is_empty() {
                continue;
            }
            let prop_nodes: Vec<NodeId> = properties.iter().map(|p| p.1.clone()).collect();
            let values =
                browse::read_attribute(session, &prop_nodes, AttributeId::Value, &mut batches.read)
                    .await?;
            let properties = properties
                .into_iter()
                .zip(values)
                .filter_map(|((name, _), v)| Some((name, text(v.value?)?)))
                .collect();
            let var_nodes: Vec<NodeId> = variables.iter().map(|v| v.1.clone()).collect();
            let kinds = browse::kinds(session, &var_nodes, &mut batches.read).await?;
            let browse_name = browse::read_attribute(
                session,
                std::slice::from_ref(node),
                AttributeId::BrowseName,
                &mut batches.read,
            )
            .await?
            .into_iter()
            .next()
            .and_then(|v| match v.value {
                Some(Variant::QualifiedName(q)) => Some(q.name.as_ref().to_owned()),
                _ => None,
            })
            .unwrap_or_else(|| node.to_string());
            out.push(FoundDevice {
                node: node.clone(),
                browse_name,
                properties,
                variables: variables
                    .into_iter()
                    .zip(kinds)
                    .map(|((name, node), kind)| (name, node, kind))
                    .collect(),
            });
        }
        level = next;
    }
    Ok(out)
}

fn text(v: Variant) -> Option<String> {
    Some(match v {
        Variant::String(s) => s.value().clone()?,
        Variant::LocalizedText(t) => t.text.value().clone()?,
        Variant::Boolean(b) => b.to_string(),
        Variant::Int32(i) => i.to_string(),
        Variant::UInt32(i) => i.to_string(),
        Variant::Int64(i) => i.to_string(),
        Variant::UInt64(i) => i.to_string(),
        Variant::UInt16(i) => i.to_string(),
        Variant::Int16(i) => i.to_string(),
        Variant::Double(d) => d.to_string(),
        _ => return None,
    })
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A device id from a browse name: letters, digits, `-`, `_`, `.` kept,
/// anything else `-`.
fn id_of(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The discovery as gateway config text: the server section, then one
/// `[[devices]]` per object with representable variables.
pub fn render(d: &Discovery, server_name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &d.server;
    let _ = writeln!(out, "[opcua.servers.{server_name}]");
    let _ = writeln!(out, "endpoint = {}", quote(&s.endpoint));
    let mode = toml::Value::try_from(s.security_mode)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let policy = toml::Value::try_from(s.security_policy)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let _ = writeln!(out, "security_mode = {mode}");
    let _ = writeln!(out, "security_policy = {policy}");
    if let Some(user) = &s.username {
        let _ = writeln!(out, "username = {}", quote(user));
        let _ = writeln!(out, "password = \"\" # fill in");
    }
    for dev in &d.devices {
        let tags: Vec<String> = dev
            .variables
            .iter()
            .filter_map(|(name, node, kind)| {
                let kind = toml::Value::try_from(Kind::of((*kind)?)).ok()?;
                Some(format!(
                    "  {{ name = {}, node = {}, type = {kind} }},",
                    quote(name),
                    quote(&node.to_string())
                ))
            })
            .collect();
        if tags.is_empty() {
            continue;
        }
        let p = |k: &str| dev.properties.get(k).map(String::as_str);
        let _ = writeln!(out, "\n[[devices]]");
        let _ = writeln!(out, "id = {}", quote(&id_of(&dev.browse_name)));
        match p("Class") {
            Some(c) => {
                let _ = writeln!(out, "class = {}", quote(c));
            }
            None => {
                let _ = writeln!(
                    out,
                    "class = \"\" # set: operating, processing, mobile or other"
                );
            }
        }
        match p("Category") {
            Some(c) => {
                let _ = writeln!(out, "category = {}", quote(c));
            }
            None => {
                let _ = writeln!(out, "category = \"\" # set: a category code of the class");
            }
        }
        let _ = writeln!(out, "type = {}", quote(p("Model").unwrap_or("unknown")));
        let _ = writeln!(
            out,
            "name = {}",
            quote(p("Name").unwrap_or(&dev.browse_name))
        );
        let _ = writeln!(out, "protocol = \"opc-ua\"");
        let mut attributes = Vec::new();
        if let Some(v) = p("Vendor") {
            attributes.push(format!("vendor = {}", quote(v)));
        }
        if let Some(v) = p("SerialNumber") {
            attributes.push(format!("serial_number = {}", quote(v)));
        }
        if !attributes.is_empty() {
            let _ = writeln!(out, "attributes = {{ {} }}", attributes.join(", "));
        }
        let _ = writeln!(out, "[devices.opcua]");
        let _ = writeln!(out, "server = {}", quote(server_name));
        let _ = writeln!(out, "root = {}", quote(&dev.node.to_string()));
        let _ = writeln!(out, "tags = [\n{}\n]", tags.join("\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_config_parses_and_names_what_is_missing() {
        let d = Discovery {
            server: server_config(&BrowseOptions {
                endpoint: "opc.tcp://127.0.0.1:4840/".into(),
                security_mode: SecurityMode::None,
                security_policy: SecurityPolicy::None,
                user: None,
                root: None,
                pki_dir: "pki".into(),
                timeout: Duration::from_secs(1),
                server_name: "plant".into(),
            }),
            devices: vec![
                FoundDevice {
                    node: NodeId::new(2, "sim-cnc-000001"),
                    browse_name: "sim-cnc-000001".into(),
                    properties: BTreeMap::from([
                        ("Class".into(), "processing".into()),
                        ("Category".into(), "machine-tools".into()),
                        ("Model".into(), "VMC-850".into()),
                        ("Name".into(), "CNC 000001".into()),
                        ("Vendor".into(), "Acme".into()),
                    ]),
                    variables: vec![
                        (
                            "spindle_speed".into(),
                            NodeId::new(2, "sim-cnc-000001/spindle_speed"),
                            Some(ValueKind::Double),
                        ),
                        ("matrix".into(), NodeId::new(2, "m"), None),
                    ],
                },
                FoundDevice {
                    node: NodeId::new(3, 7u32),
                    browse_name: "Boiler 7".into(),
                    properties: BTreeMap::new(),
                    variables: vec![("T".into(), NodeId::new(3, 8u32), Some(ValueKind::Int))],
                },
            ],
        };
        let text = render(&d, "plant");
        let head = "gateway_id = \"g\"\n[uplink]\nregistry = \"http://127.0.0.1:1\"\ntoken = \"0123456789abcdef\"\n";
        let config = crate::GatewayConfig::from_toml(&format!("{head}[opcua]\n{}", text))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.devices.len(), 2);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("devices[1] (Boiler-7).class"), "{err}\n{text}");
        assert!(!err.contains("devices[0]"), "{err}\n{text}");
        assert!(
            text.contains("node = \"ns=2;s=sim-cnc-000001/spindle_speed\", type = \"double\""),
            "{text}"
        );
        assert!(!text.contains("matrix"));
    }
}
