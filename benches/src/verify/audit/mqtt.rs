//! The MQTT probes, for MQTT JSON devices
//! (`mqtt://HOST:PORT/<tenant>/<device>`) and Sparkplug devices
//! (`sparkplug://HOST:PORT/<group>/<edge>/<device>`).
//!
//! At a broker (the one the endpoint names), one client per tenant and
//! per few dozen devices (brokers cap subscriptions per client), logged in
//! as `--mqtt-user`, else as the tenant's gateway from the fleet's
//! `mqtt-credentials.csv` (it may read the whole tenant), else
//! anonymously:
//! - an MQTT JSON device's retained `<tenant>/<device>/status` must say
//!   `online` (its will says `offline`), and its retained
//!   `<tenant>/<device>/meta`, when there is one, must carry the
//!   manifest's class, category, type and name;
//! - a Sparkplug device must be heard on `spBv1.0/<group>/+/<edge>/<device>`
//!   within the timeout: a DBIRTH (whose identity, when it carries one,
//!   must be the manifest's) or a DDATA proves it is live at the edge node
//!   the endpoint names; a DDEATH, or silence, fails it. Sparkplug keeps
//!   nothing retained, so the timeout must exceed the fleet's data
//!   interval.
//!
//! With `--mqtt-api` (the lean ingress, which keeps nothing retained), the
//! client the endpoint names — the MQTT JSON device itself, or the
//! Sparkplug device's edge node — must be connected on one of the shards:
//! `GET <api>/clients/<tenant>/<client id>` answers 200
//! `{"connected":true,...}` there (404 elsewhere).

use std::collections::BTreeMap;
use std::time::Duration;

use fieldlink_gateway::driver::sparkplug::decode::Identity;
use fieldlink_model::sparkplug::proto::Payload;
use fieldlink_model::sparkplug::{MessageType, NAMESPACE, Topic};
use futures::StreamExt;
use prost::Message;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, SubscribeReasonCode,
};
use tokio::time::Instant;

use super::{Outcome, Probes, SESSIONS_AT_ONCE, check_identity};
use crate::verify::manifest::Device;

/// Subscription filters per client (brokers cap them: `fieldlink broker`
/// at 64 by default).
const FILTERS_PER_CLIENT: usize = 60;
/// Ingress lookups at once.
const LOOKUPS_AT_ONCE: usize = 16;

/// Where a device is, from its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
    target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// An MQTT JSON device.
    Json { tenant: String, device: String },
    /// A Sparkplug device of an edge node.
    Sparkplug {
        group: String,
        edge: String,
        device: String,
    },
}

impl Target {
    /// (tenant, client id) of the MQTT client that carries the device.
    fn client(&self) -> (&str, &str) {
        match self {
            Target::Json { tenant, device } => (tenant, device),
            Target::Sparkplug { group, edge, .. } => (group, edge),
        }
    }

    fn tenant(&self) -> &str {
        self.client().0
    }

    /// The filters that hear the device.
    fn filters(&self) -> Vec<String> {
        match self {
            Target::Json { tenant, device } => vec![
                format!("{tenant}/{device}/status"),
                format!("{tenant}/{device}/meta"),
            ],
            Target::Sparkplug {
                group,
                edge,
                device,
            } => vec![format!("{NAMESPACE}/{group}/+/{edge}/{device}")],
        }
    }
}

/// Parses an MQTT JSON or Sparkplug endpoint.
fn parse_endpoint(protocol: &str, endpoint: &str) -> Result<Endpoint, String> {
    let (scheme, levels) = match protocol {
        "mqtt-json" => ("mqtt://", 2),
        _ => ("sparkplug://", 3),
    };
    let shape = || {
        if levels == 2 {
            "mqtt://HOST:PORT/TENANT/DEVICE"
        } else {
            "sparkplug://HOST:PORT/GROUP/EDGE/DEVICE"
        }
    };
    let bad = || format!("the endpoint is not {}", shape());
    let rest = endpoint.strip_prefix(scheme).ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let authority = parts.next().ok_or_else(bad)?;
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let ids: Vec<&str> = parts.collect();
    if host.is_empty()
        || ids.len() != levels
        || ids
            .iter()
            .any(|id| !fieldlink_model::sparkplug::valid_id(id))
    {
        return Err(bad());
    }
    let target = if levels == 2 {
        Target::Json {
            tenant: ids[0].to_owned(),
            device: ids[1].to_owned(),
        }
    } else {
        Target::Sparkplug {
            group: ids[0].to_owned(),
            edge: ids[1].to_owned(),
            device: ids[2].to_owned(),
        }
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
        target,
    })
}

/// Probes `devices` (MQTT JSON and Sparkplug); one outcome per device, in
/// order.
pub(super) async fn probe(devices: &[&Device], probes: &Probes) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = vec![Ok(()); devices.len()];
    let mut parsed = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        match parse_endpoint(&d.protocol, &d.endpoint) {
            Ok(e) => parsed.push((i, e)),
            Err(why) => outcomes[i] = Err(why),
        }
    }
    if !probes.mqtt_api.is_empty() {
        let http = match reqwest::Client::builder().timeout(probes.timeout).build() {
            Ok(c) => c,
            Err(e) => {
                for (i, _) in parsed {
                    outcomes[i] = Err(format!("no HTTP client: {e}"));
                }
                return outcomes;
            }
        };
        let found = futures::stream::iter(parsed.iter().map(|(i, e)| {
            let http = &http;
            async move { (*i, lookup(http, &probes.mqtt_api, &e.target).await) }
        }))
        .buffer_unordered(LOOKUPS_AT_ONCE)
        .collect::<Vec<_>>()
        .await;
        for (i, o) in found {
            outcomes[i] = o;
        }
        return outcomes;
    }

    // Per (host, port, tenant): the devices, in chunks a client may
    // subscribe to.
    let mut groups: BTreeMap<(String, u16, String), Vec<(usize, Target)>> = BTreeMap::new();
    for (i, e) in parsed {
        groups
            .entry((e.host, e.port, e.target.tenant().to_owned()))
            .or_default()
            .push((i, e.target));
    }
    let mut sessions = Vec::new();
    for ((host, port, tenant), targets) in groups {
        let per_client = FILTERS_PER_CLIENT / 2;
        for chunk in targets.chunks(per_client) {
            sessions.push((host.clone(), port, tenant.clone(), chunk.to_vec()));
        }
    }
    let results = futures::stream::iter(sessions.into_iter().enumerate().map(
        |(n, (host, port, tenant, chunk))| async move {
            let login = probes.mqtt_login(&tenant);
            let found = at_broker(n, &host, port, login, &chunk, devices, probes.timeout).await;
            chunk
                .into_iter()
                .map(|(i, _)| i)
                .zip(found)
                .collect::<Vec<_>>()
        },
    ))
    .buffer_unordered(SESSIONS_AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    for (i, o) in results.into_iter().flatten() {
        outcomes[i] = o;
    }
    outcomes
}

/// Asks every ingress API whether the client carrying `target` is
/// connected there.
async fn lookup(http: &reqwest::Client, apis: &[String], target: &Target) -> Outcome {
    let (tenant, client) = target.client();
    let mut problems = Vec::new();
    for api in apis {
        let url = format!(
            "{api}clients/{}/{}",
            crate::verify::percent_encode(tenant),
            crate::verify::percent_encode(client)
        );
        let answer = match http.get(&url).send().await {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{url}: {e}"));
                continue;
            }
        };
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        let connected = body.get("connected").and_then(serde_json::Value::as_bool);
        match (status.as_u16(), connected) {
            (200, Some(true)) => return Ok(()),
            (404, _) | (200, Some(false)) => {}
            (code, _) => problems.push(format!("{url}: HTTP {code} {body}")),
        }
    }
    let who = match target {
        Target::Json { .. } => format!("client `{client}` of tenant `{tenant}`"),
        Target::Sparkplug { .. } => format!("edge node `{client}` of group `{tenant}`"),
    };
    if problems.is_empty() {
        Err(format!(
            "{who} is not connected on any of the {} ingress shard(s) of --mqtt-api",
            apis.len()
        ))
    } else {
        Err(format!(
            "{who} is not connected on the ingress shards that answered ({})",
            problems.join("; ")
        ))
    }
}

/// What was heard of one device.
#[derive(Debug, Default)]
struct Heard {
    /// JSON: the retained status.
    status: Option<String>,
    /// JSON: the retained meta (the device's identity), parsed.
    meta: Option<Result<serde_json::Value, String>>,
    /// Sparkplug: the last verb heard (DBIRTH, DDATA, DDEATH, ...).
    verb: Option<MessageType>,
    /// Sparkplug: what the last DBIRTH said of the device.
    birth: Option<Result<Identity, String>>,
    /// A filter of the device was refused.
    refused: Option<String>,
}

impl Heard {
    /// Whether nothing more is awaited of the device.
    fn settled(&self, target: &Target) -> bool {
        if self.refused.is_some() {
            return true;
        }
        match target {
            Target::Json { .. } => self.status.is_some() && self.meta.is_some(),
            Target::Sparkplug { .. } => self.verb.is_some(),
        }
    }

    /// The outcome for `d` at `target` after `waited`.
    fn outcome(&self, d: &Device, target: &Target, waited: Duration) -> Outcome {
        if let Some(why) = &self.refused {
            return Err(why.clone());
        }
        match target {
            Target::Json { tenant, device } => {
                let topic = format!("{tenant}/{device}/status");
                match self.status.as_deref() {
                    None => {
                        return Err(format!(
                            "no retained status on `{topic}` within {waited:?}: not connected to this broker"
                        ));
                    }
                    Some("online") => {}
                    Some(other) => return Err(format!("its status on `{topic}` is `{other}`")),
                }
                match &self.meta {
                    // No registration retained: online, identity unproven.
                    None => Ok(()),
                    Some(Err(why)) => Err(format!("its meta on `{tenant}/{device}/meta`: {why}")),
                    Some(Ok(meta)) => {
                        let field =
                            |k: &str| meta.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                        check_identity(
                            d,
                            ["class", "category", "type", "name"].map(|k| (k, field(k))),
                        )
                    }
                }
            }
            Target::Sparkplug {
                group,
                edge,
                device,
            } => {
                let at = format!("`{group}/{edge}/{device}`");
                match self.verb {
                    None => Err(format!(
                        "no DBIRTH or DDATA from {at} within {waited:?}: not live at that edge node"
                    )),
                    Some(MessageType::DDeath) => Err(format!("{at} sent DDEATH: it is offline")),
                    Some(_) => match &self.birth {
                        None => Ok(()),
                        Some(Err(why)) => Err(format!("its DBIRTH: {why}")),
                        Some(Ok(id)) => check_identity(
                            d,
                            [
                                ("class", id.class.clone()),
                                ("category", id.category.clone()),
                                ("type", id.device_type.clone()),
                                ("name", id.name.clone()),
                            ]
                            .into_iter()
                            .filter(|(_, v)| v.is_some()),
                        ),
                    },
                }
            }
        }
    }

    /// Takes in a message on `topic` for `target`.
    fn take(&mut self, target: &Target, topic: &str, payload: &[u8]) {
        match target {
            Target::Json { .. } => {
                if topic.ends_with("/status") {
                    self.status = Some(String::from_utf8_lossy(payload).trim().to_owned());
                } else if topic.ends_with("/meta") {
                    self.meta =
                        Some(serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}")));
                }
            }
            Target::Sparkplug { .. } => {
                let Ok(Topic::Device { kind, .. }) = Topic::parse(topic) else {
                    return;
                };
                match kind {
                    MessageType::DBirth => {
                        self.birth = Some(
                            Payload::decode(payload)
                                .map(|p| Identity::of_birth(&p.metrics))
                                .map_err(|e| format!("not a Sparkplug payload: {e}")),
                        );
                        self.verb = Some(kind);
                    }
                    MessageType::DData | MessageType::DDeath => self.verb = Some(kind),
                    _ => {}
                }
            }
        }
    }
}

/// One client at `host:port`: subscribes to what hears `targets`, listens
/// until each is settled or `timeout` after the subscription, then
/// judges each (in order).
async fn at_broker(
    n: usize,
    host: &str,
    port: u16,
    login: Option<(String, String)>,
    targets: &[(usize, Target)],
    devices: &[&Device],
    timeout: Duration,
) -> Vec<Outcome> {
    let all = |why: String| targets.iter().map(|_| Err(why.clone())).collect();
    let client_id = format!("fieldlink-verify-{}-{n}", std::process::id());
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(4 << 20, 64 << 10);
    if let Some((user, password)) = &login {
        options.set_credentials(user.clone(), password.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 16);
    // filter → the target it hears.
    let mut filters: Vec<(String, usize)> = Vec::new();
    for (k, (_, t)) in targets.iter().enumerate() {
        filters.extend(t.filters().into_iter().map(|f| (f, k)));
    }
    let mut heard: Vec<Heard> = targets.iter().map(|_| Heard::default()).collect();
    let start = Instant::now();
    let mut deadline = start + timeout * 2; // connecting
    let mut subscribed_at = None;
    let who = login
        .as_ref()
        .map_or_else(|| "anonymously".to_owned(), |(u, _)| format!("as `{u}`"));
    loop {
        if heard.iter().zip(targets).all(|(h, (_, t))| h.settled(t)) {
            break;
        }
        let polled = match tokio::time::timeout_at(deadline, events.poll()).await {
            Err(_) if subscribed_at.is_none() => {
                return all(format!(
                    "the broker mqtt://{host}:{port} did not take the subscription {who} within {:?}",
                    timeout * 2
                ));
            }
            Err(_) => break,
            Ok(p) => p,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    return all(format!(
                        "the broker mqtt://{host}:{port} refused the probe {who}: {:?}",
                        ack.code
                    ));
                }
                let subscriptions = filters
                    .iter()
                    .map(|(f, _)| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtMostOnce));
                if let Err(e) = client.try_subscribe_many(subscriptions) {
                    return all(format!("cannot subscribe: {e}"));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                for (code, (filter, k)) in ack.return_codes.iter().zip(&filters) {
                    if *code == SubscribeReasonCode::Failure {
                        heard[*k].refused = Some(format!(
                            "the broker mqtt://{host}:{port} refused the subscription to `{filter}` {who} (--mqtt-user, or mqtt-credentials.csv beside the manifest)"
                        ));
                    }
                }
                subscribed_at = Some(Instant::now());
                deadline = Instant::now() + timeout;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                for (k, (_, t)) in targets.iter().enumerate() {
                    if hears(t, &p.topic) {
                        heard[k].take(t, &p.topic, &p.payload);
                    }
                }
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                return all(format!(
                    "the broker mqtt://{host}:{port} refused the probe {who}: {code:?}"
                ));
            }
            Err(e) => {
                return all(format!(
                    "no session with the broker mqtt://{host}:{port}: {e}"
                ));
            }
        }
    }
    let waited = subscribed_at.map_or(timeout, |at| at.elapsed().min(timeout));
    // Leave cleanly (bounded: the answers are in).
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while events.poll().await.is_ok() {}
    })
    .await;
    heard
        .iter()
        .zip(targets)
        .map(|(h, (i, t))| h.outcome(devices[*i], t, waited))
        .collect()
}

/// Whether `topic` is one of `target`'s.
fn hears(target: &Target, topic: &str) -> bool {
    match target {
        Target::Json { tenant, device } => topic
            .strip_prefix(tenant.as_str())
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_prefix(device.as_str()))
            .is_some_and(|leaf| leaf == "/status" || leaf == "/meta"),
        Target::Sparkplug {
            group,
            edge,
            device,
        } => matches!(
            Topic::parse(topic),
            Ok(Topic::Device { group: g, edge: e, device: d, .. })
                if g == group && e == edge && d == device
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(protocol: &str) -> Device {
        Device {
            id: "sim-1".into(),
            class: "operating".into(),
            category: "power".into(),
            device_type: "PM-3".into(),
            name: "Meter 1".into(),
            protocol: protocol.into(),
            tenant: "acme".into(),
            cloud: "public".into(),
            endpoint: String::new(),
        }
    }

    #[test]
    fn endpoints_name_the_broker_and_the_device() {
        assert_eq!(
            parse_endpoint("mqtt-json", "mqtt://127.0.0.1:1883/acme/sim-1"),
            Ok(Endpoint {
                host: "127.0.0.1".into(),
                port: 1883,
                target: Target::Json {
                    tenant: "acme".into(),
                    device: "sim-1".into()
                }
            })
        );
        let sp = parse_endpoint("sparkplug-b", "sparkplug://h:1/g/sim-edge-000004/sim-5").unwrap();
        assert_eq!(sp.target.client(), ("g", "sim-edge-000004"));
        assert_eq!(sp.target.filters(), ["spBv1.0/g/+/sim-edge-000004/sim-5"]);
        for (p, bad) in [
            ("mqtt-json", "mqtt://h:1/acme"),
            ("mqtt-json", "mqtt://h/acme/d"),
            ("mqtt-json", "mqtt://h:1/acme/d/x"),
            ("mqtt-json", "mqtt://h:1/acme/+"),
            ("mqtt-json", "sparkplug://h:1/g/e/d"),
            ("sparkplug-b", "sparkplug://h:1/g/e"),
        ] {
            assert!(parse_endpoint(p, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_devices_need_an_online_status_and_their_own_meta() {
        let d = device("mqtt-json");
        let t = Target::Json {
            tenant: "acme".into(),
            device: "sim-1".into(),
        };
        let wait = Duration::from_secs(1);
        let mut h = Heard::default();
        assert!(
            h.outcome(&d, &t, wait)
                .unwrap_err()
                .contains("no retained status")
        );
        assert!(hears(&t, "acme/sim-1/status") && !hears(&t, "acme/sim-10/status"));
        assert!(!hears(&t, "acme/sim-1/telemetry"));
        h.take(&t, "acme/sim-1/status", b"offline");
        assert!(
            h.outcome(&d, &t, wait)
                .unwrap_err()
                .contains("is `offline`")
        );
        h.take(&t, "acme/sim-1/status", b"online");
        assert_eq!(h.outcome(&d, &t, wait), Ok(()));
        assert!(!h.settled(&t));
        h.take(
            &t,
            "acme/sim-1/meta",
            br#"{"class":"operating","category":"power","type":"PM-3","name":"Meter 2"}"#,
        );
        assert!(h.settled(&t));
        assert_eq!(
            h.outcome(&d, &t, wait),
            Err("it says name `Meter 2`, the manifest `Meter 1`".to_owned())
        );
    }

    #[test]
    fn sparkplug_devices_must_be_heard_and_not_dead() {
        let d = device("sparkplug-b");
        let t = Target::Sparkplug {
            group: "acme".into(),
            edge: "e1".into(),
            device: "sim-1".into(),
        };
        let wait = Duration::from_secs(1);
        let mut h = Heard::default();
        assert!(
            h.outcome(&d, &t, wait)
                .unwrap_err()
                .contains("no DBIRTH or DDATA")
        );
        assert!(hears(&t, "spBv1.0/acme/DDATA/e1/sim-1"));
        assert!(!hears(&t, "spBv1.0/acme/DDATA/e2/sim-1"));
        h.take(&t, "spBv1.0/acme/DDATA/e1/sim-1", b"");
        assert_eq!(h.outcome(&d, &t, wait), Ok(()));
        h.take(&t, "spBv1.0/acme/DDEATH/e1/sim-1", b"");
        assert!(h.outcome(&d, &t, wait).unwrap_err().contains("DDEATH"));
        h.take(&t, "spBv1.0/acme/DBIRTH/e1/sim-1", b"\x12\xff\xff\xff\x0f");
        assert!(h.outcome(&d, &t, wait).unwrap_err().contains("its DBIRTH"));
    }
}
