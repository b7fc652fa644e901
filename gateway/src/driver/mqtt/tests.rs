//! The MQTT JSON driver over an `MqttLink` made here (the embedded path):
//! what it declares, reports and refuses.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fieldlink_model::mqtt::{ClientInfo, MqttEvent, MqttLink, MqttPublish, OutgoingPublish};
use fieldlink_model::proto::Quality;
use fieldlink_model::proto::point::Value as PointValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::MqttKind;
use crate::config::GatewayConfig;
use crate::driver::{DriverContext, DriverEvent, DriverKind, Limits, Resources, Sink};
use crate::metrics::Metrics;

const HEAD: &str = "gateway_id = \"gw\"\n[uplink]\nregistry = \"http://127.0.0.1:1\"\ntoken = \"0123456789abcdef\"\n";

struct Harness {
    link: mpsc::Sender<MqttEvent>,
    _publish: mpsc::Receiver<OutgoingPublish>,
    events: mpsc::Receiver<DriverEvent>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    ids: std::collections::HashMap<u32, String>,
}

fn problems(text: &str) -> Vec<String> {
    let config = GatewayConfig::from_toml(&format!("{HEAD}{text}")).unwrap();
    match config.validate() {
        Ok(_) => Vec::new(),
        Err(crate::ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => vec![e.to_string()],
    }
}

async fn start(text: &str, max_tags: usize) -> Harness {
    let config = GatewayConfig::from_toml(&format!("{HEAD}{text}")).unwrap();
    let driver = MqttKind
        .configure(config.driver_config(&MqttKind).unwrap())
        .unwrap();
    let (link, events_rx) = mpsc::channel(64);
    let (publish_tx, publish) = mpsc::channel(64);
    let slot = std::sync::Mutex::new(Some(MqttLink {
        events: events_rx,
        publish: publish_tx,
    }));
    let factory = Arc::new(move |tenant: Option<&str>| {
        assert_eq!(tenant, Some("acme"), "the link is opened for the tenant");
        slot.lock().unwrap().take().unwrap_or_else(|| {
            let (_tx, events) = mpsc::channel(1);
            let (publish, _rx) = mpsc::channel(1);
            MqttLink { events, publish }
        })
    });
    let metrics = Arc::new(Metrics::default());
    let limits = Limits {
        max_devices: 100,
        max_tags_per_device: max_tags,
    };
    let (sink, events) = Sink::channel(1024, limits, metrics.clone());
    let shutdown = CancellationToken::new();
    let ctx = DriverContext {
        sink,
        shutdown: shutdown.clone(),
        resources: Resources {
            embedded_mqtt: Some(factory),
        },
    };
    let task = tokio::spawn(driver.run(ctx));
    Harness {
        link,
        _publish: publish,
        events,
        metrics,
        shutdown,
        task,
        ids: Default::default(),
    }
}

fn client(id: &str, tenant: &str) -> ClientInfo {
    ClientInfo {
        client_id: id.into(),
        username: Some(id.into()),
        tenant: Some(tenant.into()),
        time_unix_nano: fieldlink_model::now_unix_nanos(),
    }
}

fn publish(
    topic: &str,
    payload: impl Into<bytes::Bytes>,
    from: Option<ClientInfo>,
    retain: bool,
) -> MqttEvent {
    MqttEvent::Publish(MqttPublish {
        client: from,
        topic: topic.into(),
        payload: payload.into(),
        qos: 1,
        retain,
        received_unix_nano: fieldlink_model::now_unix_nanos(),
    })
}

/// What the driver reported, folded for assertions.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Announce(String, Vec<String>),
    Status(String, bool),
    Reading(String, u32, Option<PointValue>, i64),
}

impl Harness {
    async fn send(&self, event: MqttEvent) {
        self.link.send(event).await.unwrap();
    }

    /// Waits for an event satisfying `want`, returning everything seen
    /// until then.
    async fn until(&mut self, mut want: impl FnMut(&Seen) -> bool) -> Vec<Seen> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out; seen {seen:#?}"))
                .expect("driver running");
            let folded: Vec<Seen> = match event {
                DriverEvent::Announce { device, info, tags } => {
                    self.ids.insert(device.index(), info.id.clone());
                    vec![Seen::Announce(
                        info.id.clone(),
                        tags.iter().map(|t| t.name.clone()).collect(),
                    )]
                }
                DriverEvent::Status { device, online, .. } => {
                    vec![Seen::Status(self.ids[&device.index()].clone(), online)]
                }
                DriverEvent::Readings(rs) => rs
                    .into_iter()
                    .map(|r| {
                        let value = if r.quality == Quality::Bad {
                            None
                        } else {
                            r.value
                        };
                        Seen::Reading(self.ids[&r.device.index()].clone(), r.tag, value, r.time)
                    })
                    .collect(),
            };
            for s in folded {
                let done = want(&s);
                seen.push(s);
                if done {
                    return seen;
                }
            }
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let mut events = self.events;
        let drain = async move { while events.recv().await.is_some() {} };
        let (_, r) = tokio::join!(drain, self.task);
        r.expect("the driver stopped without panicking");
    }
}

const AUTO: &str = r#"
[mqtt]
broker = "embedded"
tenant = "acme"
[[mqtt.topics]]
topic = "{tenant}/{device_id}/telemetry"
tags = "auto"
timestamp = { pointer = "/ts", format = "epoch_ms" }
"#;

#[tokio::test]
async fn registration_auto_tags_discovery_and_connection_state() {
    let mut h = start(AUTO, 100).await;
    let c = client("press-1", "acme");
    h.send(publish(
        "acme/press-1/meta",
        r#"{"class":"processing","category":"light-industry","type":"HP-200","name":"Press 1","attributes":{"site":"A"}}"#,
        Some(c.clone()),
        true,
    ))
    .await;
    let seen = h
        .until(|s| matches!(s, Seen::Announce(id, _) if id == "press-1"))
        .await;
    assert_eq!(seen, [Seen::Announce("press-1".into(), vec![])]);

    let ts = fieldlink_model::now_unix_nanos() / 1_000_000;
    h.send(publish(
        "acme/press-1/telemetry",
        format!(r#"{{"ts":{ts},"force":12.5,"running":true,"label":"x"}}"#),
        Some(c.clone()),
        false,
    ))
    .await;
    let seen = h.until(|s| matches!(s, Seen::Reading(_, 1, _, _))).await;
    assert!(seen.contains(&Seen::Status("press-1".into(), true)));
    assert!(seen.contains(&Seen::Announce(
        "press-1".into(),
        vec!["force".into(), "running".into()]
    )));
    assert!(seen.contains(&Seen::Reading(
        "press-1".into(),
        0,
        Some(PointValue::DoubleValue(12.5)),
        ts * 1_000_000
    )));

    // A new field is a new tag, announced with the table so far.
    h.send(publish(
        "acme/press-1/telemetry",
        format!(r#"{{"ts":{ts},"force":13,"temp":40}}"#),
        Some(c.clone()),
        false,
    ))
    .await;
    let seen = h.until(|s| matches!(s, Seen::Reading(_, 2, _, _))).await;
    assert!(seen.contains(&Seen::Announce(
        "press-1".into(),
        vec!["force".into(), "running".into(), "temp".into()]
    )));

    // The client's connection ends: its device goes offline.
    h.send(MqttEvent::Disconnected {
        client: c.clone(),
        clean: false,
        reason: "keep-alive timeout".into(),
    })
    .await;
    h.until(|s| *s == Seen::Status("press-1".into(), false))
        .await;
    h.send(MqttEvent::Connected(c)).await;
    h.until(|s| *s == Seen::Status("press-1".into(), true))
        .await;
    assert_eq!(
        h.metrics
            .driver(fieldlink_model::Protocol::MqttJson)
            .discovered
            .load(Relaxed),
        1
    );
    h.stop().await;
}

const LISTED: &str = r#"
[mqtt]
broker = "embedded"
tenant = "acme"
status_topic = "{tenant}/{device_id}/status"
[[mqtt.topics]]
name = "meters"
topic = "{tenant}/{device_id}/data"
timestamp = { pointer = "/time", format = "rfc3339", required = true }
tags = [
  { name = "power", pointer = "/sensors/0/value", type = "double", scale = 0.1, unit = "kW" },
  { name = "count", pointer = "/count", type = "int" },
  { name = "alarm", pointer = "/alarm", type = "bool", optional = true },
]
[mqtt.topics.auto_register]
class = "operating"
category = "power"
type = "PM-3"
name = "Meter {device_id}"

[[devices]]
id = "meter-9"
class = "operating"
category = "power"
type = "PM-9"
name = "Meter nine"
protocol = "mqtt-json"
[devices.mqtt]
topic = "{tenant}/line1/meter"
template = "meters"
"#;

#[tokio::test]
async fn pointers_types_scale_times_and_refusals() {
    let mut h = start(LISTED, 100).await;
    // The configured device is declared at start with the template's tags.
    let seen = h.until(|s| matches!(s, Seen::Announce(..))).await;
    assert_eq!(
        seen,
        [Seen::Announce(
            "meter-9".into(),
            vec!["power".into(), "count".into(), "alarm".into()]
        )]
    );
    let good = r#"{"time":"2026-05-29T08:00:00.5+08:00","sensors":[{"value":1234}],"count":7}"#;
    let t = 1_780_012_800_500_000_000;
    h.send(publish("acme/line1/meter", good, None, false)).await;
    let seen = h.until(|s| matches!(s, Seen::Reading(_, 1, _, _))).await;
    assert!(seen.contains(&Seen::Reading(
        "meter-9".into(),
        0,
        Some(PointValue::DoubleValue(123.4)),
        t
    )));
    assert!(seen.contains(&Seen::Reading(
        "meter-9".into(),
        1,
        Some(PointValue::IntValue(7)),
        t
    )));

    // A device first seen on the template is auto-registered.
    h.send(publish("acme/m-2/data", good, None, false)).await;
    h.until(|s| matches!(s, Seen::Reading(id, 1, _, _) if id == "m-2"))
        .await;

    // Wrong type: bad quality and counted; missing time: counted, dropped.
    h.send(publish(
        "acme/m-2/data",
        r#"{"time":"2026-05-29T08:00:00Z","sensors":[{"value":"high"}],"count":3}"#,
        None,
        false,
    ))
    .await;
    let seen = h
        .until(|s| matches!(s, Seen::Reading(id, 1, _, _) if id == "m-2"))
        .await;
    assert!(
        seen.iter()
            .any(|s| matches!(s, Seen::Reading(id, 0, None, _) if id == "m-2"))
    );
    let metrics = h.metrics.clone();
    let malformed = || {
        metrics
            .driver(fieldlink_model::Protocol::MqttJson)
            .malformed
            .load(Relaxed)
    };
    assert_eq!(malformed(), 1);
    for bad in [
        r#"{"sensors":[{"value":1}],"count":1}"#.to_owned(),
        r#"{"time":"1999-12-31T23:59:59Z","sensors":[{"value":1}],"count":1}"#.to_owned(),
        r#"{"time":"2026-05-29T08:00:00Z","count":1}"#.to_owned(),
    ] {
        h.send(publish("acme/m-2/data", bad, None, false)).await;
    }
    // Status from the device's topic.
    h.send(publish("acme/m-2/status", "offline", None, true))
        .await;
    h.until(|s| *s == Seen::Status("m-2".into(), false)).await;
    assert_eq!(
        malformed(),
        4,
        "no time, a time before 2000, a missing pointer"
    );
    h.send(publish("acme/m-2/status", r#"{"online":true}"#, None, true))
        .await;
    h.until(|s| *s == Seen::Status("m-2".into(), true)).await;
    h.stop().await;
}

#[tokio::test]
async fn hostile_input_is_counted_and_never_stops_the_driver() {
    let text = r#"
[mqtt]
broker = "embedded"
tenant = "acme"
max_tags_per_device = 20
[[mqtt.topics]]
topic = "{tenant}/{device_id}/telemetry"
tags = "auto"
[mqtt.topics.auto_register]
category = "safety"
"#;
    let mut h = start(text, 50).await;
    let mine = client("d-1", "acme");
    let theirs = client("d-1", "other");
    let huge = vec![b' '; 10 << 20];
    let nested = "[".repeat(100_000);
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let mut wide = String::from("{");
    for i in 0..5000 {
        wide.push_str(&format!("\"f{i}\":{i},"));
    }
    wide.push_str("\"last\":1}");
    let events = vec![
        publish("acme/d-1/telemetry", huge, Some(mine.clone()), false),
        publish("acme/d-1/telemetry", nested, Some(mine.clone()), false),
        publish("acme/d-1/telemetry", garbage, Some(mine.clone()), false),
        publish("acme/d-1/telemetry", "[1,2,3]", Some(mine.clone()), false),
        publish("acme/bad\u{1}id/telemetry", "{\"x\":1}", None, false),
        publish("acme/d-1/telemetry", "{\"x\":1}", Some(theirs), false),
        publish("other/d-1/telemetry", "{\"x\":1}", None, false),
        publish("acme/d-1/telemetry", wide, Some(mine.clone()), false),
        publish(
            "acme/d-1/meta",
            "{\"category\":\"mining\",\"class\":\"mobile\"}",
            None,
            true,
        ),
        publish("acme/d-1/status", "maybe", None, true),
    ];
    for e in events {
        h.send(e).await;
    }
    h.send(publish(
        "acme/d-1/telemetry",
        "{\"f3\":2.5}",
        Some(mine),
        false,
    ))
    .await;
    let seen = h
        .until(
            |s| matches!(s, Seen::Reading(_, _, Some(PointValue::DoubleValue(v)), _) if *v == 2.5),
        )
        .await;
    let tables: Vec<&Vec<String>> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Announce(_, tags) => Some(tags),
            _ => None,
        })
        .collect();
    assert!(
        tables.iter().all(|t| t.len() <= 20),
        "the automatic tag limit holds: {:?}",
        tables.iter().map(|t| t.len()).collect::<Vec<_>>()
    );
    let d = h.metrics.driver(fieldlink_model::Protocol::MqttJson);
    assert_eq!(
        d.malformed.load(Relaxed),
        7,
        "10 MB, nesting, garbage, not an object, bad id, bad meta, bad status"
    );
    assert_eq!(
        d.ignored.load(Relaxed),
        3,
        "another tenant's client, another tenant's topic, fields over the tag limit"
    );
    assert_eq!(
        d.messages.load(Relaxed),
        11,
        "every publish is a message handled, refused or not"
    );
    h.stop().await;
}

#[tokio::test]
async fn unknown_devices_without_auto_register_are_ignored() {
    let mut h = start(AUTO, 10).await;
    h.send(publish("acme/ghost/telemetry", "{\"x\":1}", None, false))
        .await;
    h.send(publish(
        "acme/known/meta",
        "{\"category\":\"robots\"}",
        None,
        true,
    ))
    .await;
    h.send(publish("acme/known/telemetry", "{\"x\":1}", None, false))
        .await;
    let seen = h.until(|s| matches!(s, Seen::Reading(..))).await;
    assert!(
        !seen
            .iter()
            .any(|s| matches!(s, Seen::Announce(id, _) if id == "ghost"))
    );
    assert_eq!(
        h.metrics
            .driver(fieldlink_model::Protocol::MqttJson)
            .ignored
            .load(Relaxed),
        1
    );
    h.stop().await;
}

#[test]
fn config_problems_name_their_keys() {
    let p = problems(
        r#"
[mqtt]
broker = "mqtt://h:1883"
qos = 3
max_payload_bytes = 1
[[mqtt.topics]]
topic = "a/b"
tags = [{ name = "x", pointer = "x", scale = 0.0 }]
"#,
    );
    let text = p.join("\n");
    for key in [
        "mqtt.qos",
        "mqtt.max_payload_bytes",
        "mqtt.topics[0].topic",
        "mqtt.topics[0].tags[0] (x).pointer",
        "mqtt.topics[0].tags[0] (x).scale",
    ] {
        assert!(text.contains(key), "{key} missing in:\n{text}");
    }
    let p = problems(
        "[mqtt]\nbroker = \"mqtt://h\"\n[[mqtt.topics]]\ntopic = \"{device_id}\"\ntags = \"everything\"\n",
    );
    assert!(
        p.join("\n").contains("expected \"auto\" or a list of tags"),
        "{p:?}"
    );
    let p = problems(
        "[mqtt]\nbroker = \"mqtt://h\"\n[[mqtt.topics]]\ntopic = \"{device_id}\"\ntags = \"auto\"\nunknown = \"register\"\n",
    );
    assert!(p.join("\n").contains("mqtt.topics[0].unknown"), "{p:?}");
    let p = problems(
        "[mqtt]\nbroker = \"mqtt://h\"\n[[mqtt.topics]]\ntopic = \"{device_id}\"\ntags = \"auto\"\n[[devices]]\nid = \"x\"\nclass = \"other\"\ncategory = \"safety\"\ntype = \"t\"\nname = \"n\"\nprotocol = \"mqtt-json\"\n[devices.mqtt]\ntemplate = \"nope\"\nkey = 1\n",
    );
    assert!(p.join("\n").contains("devices[0] (x).mqtt"), "{p:?}");
}

#[tokio::test]
async fn silent_devices_expire_after_offline_after() {
    let text = AUTO.replace(
        "tenant = \"acme\"",
        "tenant = \"acme\"\noffline_after = \"1s\"",
    );
    let mut h = start(&text, 10).await;
    h.send(publish(
        "acme/quiet/meta",
        "{\"category\":\"robots\"}",
        None,
        true,
    ))
    .await;
    h.send(publish("acme/quiet/telemetry", "{\"x\":1}", None, false))
        .await;
    h.until(|s| *s == Seen::Status("quiet".into(), true)).await;
    h.until(|s| *s == Seen::Status("quiet".into(), false)).await;
    h.stop().await;
}

#[tokio::test]
async fn a_status_that_arrives_before_the_registration_is_applied_by_it() {
    // A broker keeps a log per topic (rumqttd does): a device's retained
    // status may reach the driver before its retained meta.
    let text = AUTO.replace(
        "[[mqtt.topics]]",
        "status_topic = \"{tenant}/{device_id}/status\"\n[[mqtt.topics]]",
    );
    let mut h = start(&text, 10).await;
    let meta = "{\"category\":\"robots\"}";
    h.send(publish("acme/early/status", "online", None, true))
        .await;
    h.send(publish("acme/early/meta", meta, None, true)).await;
    let seen = h.until(|s| *s == Seen::Status("early".into(), true)).await;
    assert_eq!(
        seen,
        [
            Seen::Announce("early".into(), vec![]),
            Seen::Status("early".into(), true)
        ]
    );
    // The latest status wins: online then offline before the registration
    // leaves the device offline.
    h.send(publish("acme/flaky/status", "online", None, true))
        .await;
    h.send(publish("acme/flaky/status", "offline", None, true))
        .await;
    h.send(publish("acme/flaky/meta", meta, None, true)).await;
    h.send(publish("acme/marker/status", "online", None, true))
        .await;
    h.send(publish("acme/marker/meta", meta, None, true)).await;
    let seen = h.until(|s| *s == Seen::Status("marker".into(), true)).await;
    assert!(seen.contains(&Seen::Announce("flaky".into(), vec![])));
    assert!(
        !seen.contains(&Seen::Status("flaky".into(), true)),
        "{seen:?}"
    );
    let d = h.metrics.driver(fieldlink_model::Protocol::MqttJson);
    assert_eq!(d.ignored.load(Relaxed), 0);
    assert_eq!(d.malformed.load(Relaxed), 0);
    h.stop().await;
}

#[test]
fn registrations_are_read_field_by_field_and_refused_with_what_is_wrong() {
    let meta = super::parse_meta(
        br#"{"class":"processing","category":"robots","type":"arm","name":"R1","attributes":{"line":3,"hot":true,"site":"A"},"extra":[1]}"#,
    )
    .unwrap();
    assert_eq!(meta.category, fieldlink_model::Category::Robots);
    assert_eq!(meta.device_type.as_deref(), Some("arm"));
    assert_eq!(meta.name.as_deref(), Some("R1"));
    let attributes: Vec<(&str, &str)> = meta
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(attributes, [("hot", "true"), ("line", "3"), ("site", "A")]);
    // Null fields are absent ones.
    let meta =
        super::parse_meta(br#"{"category":"robots","name":null,"attributes":null}"#).unwrap();
    assert_eq!((meta.name, meta.attributes.len()), (None, 0));

    let refused = |payload: &[u8]| super::parse_meta(payload).unwrap_err();
    assert!(refused(b"{\"category\":").starts_with("not JSON"));
    assert!(refused(b"[1,2]").starts_with("not a JSON object"));
    assert!(
        refused(br#"{"category":"robots","category":"pumps"}"#)
            .contains("duplicate field `category`")
    );
    assert_eq!(refused(br#"{"name":"x"}"#), "no `category`");
    assert_eq!(
        refused(br#"{"category":"robots","name":7}"#),
        "`name` must be a string of at most 256 bytes"
    );
    assert!(
        refused(br#"{"category":"robots","class":"mobile"}"#)
            .contains("belongs to class `processing`")
    );
    assert_eq!(
        refused(br#"{"category":"robots","attributes":[1]}"#),
        "`attributes` must be an object"
    );
    assert_eq!(
        refused(br#"{"category":"robots","attributes":{"a":{"b":1}}}"#),
        "attribute `a` must be a string, number or boolean"
    );
}
