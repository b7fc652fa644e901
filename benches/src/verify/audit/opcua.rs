//! The OPC UA probe. An OPC UA device's manifest endpoint is its server
//! and its object, `opc.tcp://HOST:PORT/#ns=2;s=<device id>`; the object's
//! identity properties `<object>/Class`, `/Category`, `/Model` and `/Name`
//! (what the simulator serves, see `fieldlink_sim::opcua::nodes`, and what
//! `fieldlink gateway browse` reads) must be the manifest's class,
//! category, type and name. One session per server, with the gateway's
//! own client (security None; anonymous unless `--opcua-user`), and one
//! Read of every sampled device's properties on it.

use std::collections::BTreeMap;
use std::time::Duration;

use fieldlink_gateway::driver::opcua::config::{OpcUaSection, ServerConfig, parse_node};
use fieldlink_gateway::driver::opcua::session::{self, SessionEvent};
use futures::StreamExt;
use opcua::types::{
    AttributeId, Identifier, NodeId, QualifiedName, ReadValueId, TimestampsToReturn, Variant,
};

use super::{Outcome, Probes, SESSIONS_AT_ONCE, check_identity};
use crate::verify::manifest::Device;

/// The identity properties read, and the manifest field each is.
const PROPERTIES: [(&str, &str); 4] = [
    ("Class", "class"),
    ("Category", "category"),
    ("Model", "type"),
    ("Name", "name"),
];
/// Nodes per Read call.
const NODES_PER_READ: usize = 1000;

/// Probes `devices` (all OPC UA); one outcome per device, in order.
pub(super) async fn probe(devices: &[&Device], probes: &Probes) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = vec![Ok(()); devices.len()];
    // Per server: (row, the device's object).
    let mut servers: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (i, d) in devices.iter().enumerate() {
        match parse_endpoint(&d.endpoint) {
            Ok((url, object)) => servers.entry(url).or_default().push((i, object)),
            Err(why) => outcomes[i] = Err(why),
        }
    }
    if servers.is_empty() {
        return outcomes;
    }
    // One client (and key pair, in a PKI directory of the run's own) for
    // every server.
    let client = match Client::new(probes.timeout).await {
        Ok(c) => c,
        Err(why) => {
            for rows in servers.values() {
                for (i, _) in rows {
                    outcomes[*i] = Err(why.clone());
                }
            }
            return outcomes;
        }
    };
    let client = &client;
    let results = futures::stream::iter(servers.into_iter().map(|(url, rows)| async move {
        let found = read_server(client, &url, &rows, devices, probes).await;
        (rows, found)
    }))
    .buffer_unordered(SESSIONS_AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    for (rows, found) in results {
        match found {
            Ok(per_row) => {
                for ((i, _), o) in rows.iter().zip(per_row) {
                    outcomes[*i] = o;
                }
            }
            Err(why) => {
                for (i, _) in rows {
                    outcomes[i] = Err(why.clone());
                }
            }
        }
    }
    outcomes
}

/// `opc.tcp://HOST:PORT/PATH#NODE` → (server URL, the object's string
/// identifier with its namespace as `ns=N;s=ID`).
fn parse_endpoint(endpoint: &str) -> Result<(String, String), String> {
    let Some((url, node)) = endpoint.split_once('#') else {
        return Err("the endpoint names no node (`opc.tcp://HOST:PORT/#ns=N;s=ID` wanted)".into());
    };
    if !url.starts_with("opc.tcp://") {
        return Err("the endpoint is not an opc.tcp:// URL".into());
    }
    let node = parse_node(node)?;
    if !matches!(node.identifier, Identifier::String(_)) {
        return Err(format!(
            "node `{node}` is not a string NodeId: its properties cannot be named"
        ));
    }
    Ok((url.to_owned(), node.to_string()))
}

/// The property `name` of object `object` (`ns=N;s=ID` → `ns=N;s=ID/name`).
fn property(object: &NodeId, name: &str) -> Option<NodeId> {
    match &object.identifier {
        Identifier::String(s) => Some(NodeId::new(object.namespace, format!("{s}/{name}"))),
        _ => None,
    }
}

/// The gateway's OPC UA client, with a key pair of its own in a
/// temporary PKI directory (removed when it is dropped).
struct Client {
    client: opcua::client::Client,
    section: OpcUaSection,
    _pki: tempfile::TempDir,
}

impl Client {
    async fn new(timeout: Duration) -> Result<Client, String> {
        let pki = tempfile::tempdir().map_err(|e| format!("no temporary PKI directory: {e}"))?;
        let section = OpcUaSection {
            pki_dir: pki.path().to_owned(),
            request_timeout: timeout,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(1),
            application_name: "Fieldlink bench verify".to_owned(),
            ..OpcUaSection::default()
        };
        let client = {
            let section = section.clone();
            // Key generation is CPU work: off the async threads.
            tokio::task::spawn_blocking(move || session::build_client(&section, true))
                .await
                .map_err(|e| format!("OPC UA client: {e}"))?
                .map_err(|e| format!("OPC UA client: {e}"))?
        };
        Ok(Client {
            client,
            section,
            _pki: pki,
        })
    }
}

/// One session on `url`: the properties of every object of `rows`, each
/// compared with its device. `Err` when the server cannot be asked.
async fn read_server(
    client: &Client,
    url: &str,
    rows: &[(usize, String)],
    devices: &[&Device],
    probes: &Probes,
) -> Result<Vec<Outcome>, String> {
    let timeout = probes.timeout;
    let section = &client.section;
    let mut server = serde_json::json!({ "endpoint": url });
    if let Some((user, password)) = &probes.opcua_login {
        server["username"] = user.as_str().into();
        server["password"] = password.as_str().into();
    }
    let server: ServerConfig =
        serde_json::from_value(server).map_err(|e| format!("server config: {e}"))?;
    let mut connected = session::connect(&client.client, &server, section)
        .await
        .map_err(|why| format!("cannot connect to {url}: {why}"))?;
    let up = tokio::time::timeout(timeout * 2, async {
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
    .unwrap_or_else(|_| Err(format!("no session within {:?}", timeout * 2)));
    if let Err(why) = up {
        connected.close(Duration::from_secs(1)).await;
        return Err(format!("no session with {url}: {why}"));
    }

    // Every row's properties, in row order.
    let mut reads = Vec::with_capacity(rows.len() * PROPERTIES.len());
    let mut objects = Vec::with_capacity(rows.len());
    for (_, text) in rows {
        let object = parse_node(text)?;
        for (name, _) in PROPERTIES {
            let node = property(&object, name).ok_or("not a string NodeId")?;
            reads.push(ReadValueId {
                node_id: node,
                attribute_id: AttributeId::Value as u32,
                index_range: Default::default(),
                data_encoding: QualifiedName::null(),
            });
        }
        objects.push(object);
    }
    let mut values = Vec::with_capacity(reads.len());
    for chunk in reads.chunks(NODES_PER_READ) {
        let read = tokio::time::timeout(
            timeout,
            connected
                .session
                .read(chunk, TimestampsToReturn::Neither, 0.0),
        )
        .await;
        match read {
            Ok(Ok(v)) if v.len() == chunk.len() => values.extend(v),
            Ok(Ok(v)) => {
                connected.close(Duration::from_secs(1)).await;
                return Err(format!(
                    "{url} answered {} values to a Read of {}",
                    v.len(),
                    chunk.len()
                ));
            }
            Ok(Err(e)) => {
                connected.close(Duration::from_secs(1)).await;
                return Err(format!("Read on {url} failed: {e}"));
            }
            Err(_) => {
                connected.close(Duration::from_secs(1)).await;
                return Err(format!("no answer to a Read on {url} within {timeout:?}"));
            }
        }
    }
    connected.close(Duration::from_secs(1)).await;

    let outcomes = rows
        .iter()
        .zip(objects)
        .zip(values.chunks(PROPERTIES.len()))
        .map(|(((i, _), object), got)| {
            let mut said = Vec::with_capacity(PROPERTIES.len());
            for ((name, field), dv) in PROPERTIES.iter().zip(got) {
                let status = dv.status.unwrap_or_default();
                if !status.is_good() {
                    let node = property(&object, name).map_or_else(String::new, |n| n.to_string());
                    return Err(format!("reading `{node}`: {status}"));
                }
                let text = match &dv.value {
                    Some(Variant::String(s)) => s.value().clone(),
                    _ => None,
                };
                said.push((*field, text));
            }
            check_identity(devices[*i], said)
        })
        .collect();
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_a_server_and_an_object() {
        assert_eq!(
            parse_endpoint("opc.tcp://127.0.0.1:4840/#ns=2;s=sim-cnc-000001"),
            Ok((
                "opc.tcp://127.0.0.1:4840/".to_owned(),
                "ns=2;s=sim-cnc-000001".to_owned()
            ))
        );
        for bad in [
            "opc.tcp://127.0.0.1:4840/",
            "127.0.0.1:4840#ns=2;s=x",
            "opc.tcp://h:1/#ns=2;i=5",
            "opc.tcp://h:1/#garbage",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        let object = NodeId::new(2, "dev-1");
        assert_eq!(
            property(&object, "Model"),
            Some(NodeId::new(2, "dev-1/Model"))
        );
    }
}
