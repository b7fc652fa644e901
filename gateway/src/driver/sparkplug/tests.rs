//! The Sparkplug host over an `MqttLink` made here (the embedded path).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fieldlink_model::Protocol;
use fieldlink_model::mqtt::{MqttEvent, MqttLink, MqttPublish, OutgoingPublish};
use fieldlink_model::proto::Quality;
use fieldlink_model::proto::point::Value as PointValue;
use fieldlink_model::sparkplug::proto::payload::{
    Metric, PropertySet, PropertyValue, metric, property_value,
};
use fieldlink_model::sparkplug::proto::{DataType, Payload};
use fieldlink_model::sparkplug::{
    BD_SEQ, CATEGORY_KEY, CLASS_KEY, MessageType, REBIRTH, device_topic, node_topic,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::SparkplugKind;
use crate::config::GatewayConfig;
use crate::driver::{DriverContext, DriverEvent, DriverKind, Limits, Resources, Sink};
use crate::metrics::Metrics;

const HEAD: &str = "gateway_id = \"gw\"\n[uplink]\nregistry = \"http://127.0.0.1:1\"\ntoken = \"0123456789abcdef\"\n";

const CONFIG: &str = r#"
[sparkplug]
broker = "embedded"
tenant = "acme"
host_id = "fl-host"
rebirth_interval = "100ms"
max_metrics = 1000
[[sparkplug.devices]]
edge = "line-*"
device = "press-*"
class = "processing"
category = "light-industry"
type = "HP-200"
"#;

struct Harness {
    link: mpsc::Sender<MqttEvent>,
    out: mpsc::Receiver<OutgoingPublish>,
    events: mpsc::Receiver<DriverEvent>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    ids: std::collections::HashMap<u32, String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Announce(String, Vec<String>),
    Status(String, bool),
    Reading(String, u32, Option<PointValue>),
}

async fn start(text: &str) -> Harness {
    let config = GatewayConfig::from_toml(&format!("{HEAD}{text}")).unwrap();
    let driver = SparkplugKind
        .configure(config.driver_config(&SparkplugKind).unwrap())
        .unwrap();
    let (link, events_rx) = mpsc::channel(64);
    let (publish, out) = mpsc::channel(64);
    let slot = std::sync::Mutex::new(Some(MqttLink {
        events: events_rx,
        publish,
    }));
    let factory = Arc::new(move |_: Option<&str>| {
        slot.lock().unwrap().take().unwrap_or_else(|| {
            let (_tx, events) = mpsc::channel(1);
            let (publish, _rx) = mpsc::channel(1);
            MqttLink { events, publish }
        })
    });
    let metrics = Arc::new(Metrics::default());
    let limits = Limits {
        max_devices: 100,
        max_tags_per_device: 100,
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
        out,
        events,
        metrics,
        shutdown,
        task,
        ids: Default::default(),
    }
}

fn now_ms() -> u64 {
    (fieldlink_model::now_unix_nanos() / 1_000_000) as u64
}

fn m(name: &str, alias: u64, dt: DataType, value: metric::Value) -> Metric {
    Metric {
        name: Some(name.into()),
        alias: Some(alias),
        timestamp: Some(now_ms()),
        datatype: Some(dt as u32),
        value: Some(value),
        ..Metric::default()
    }
}

fn by_alias(alias: u64, value: metric::Value) -> Metric {
    Metric {
        alias: Some(alias),
        timestamp: Some(now_ms()),
        value: Some(value),
        ..Metric::default()
    }
}

fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(now_ms()),
        seq,
        metrics,
        ..Payload::default()
    }
    .encode_to_vec()
}

fn event(topic: String, payload: Vec<u8>) -> MqttEvent {
    MqttEvent::Publish(MqttPublish {
        client: None,
        topic: topic.into(),
        payload: payload.into(),
        qos: 0,
        retain: false,
        received_unix_nano: fieldlink_model::now_unix_nanos(),
    })
}

fn nbirth(bd: u64) -> Vec<u8> {
    payload(
        Some(0),
        vec![
            m(BD_SEQ, 0, DataType::Int64, metric::Value::LongValue(bd)),
            m(
                REBIRTH,
                1,
                DataType::Boolean,
                metric::Value::BooleanValue(false),
            ),
        ],
    )
}

fn dbirth(seq: u64) -> Vec<u8> {
    payload(
        Some(seq),
        vec![
            m("force", 10, DataType::Float, metric::Value::FloatValue(1.5)),
            m(
                "count",
                11,
                DataType::Int32,
                metric::Value::IntValue(u32::MAX),
            ),
        ],
    )
}

impl Harness {
    async fn send(&self, e: MqttEvent) {
        self.link.send(e).await.unwrap();
    }

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
                        let v = if r.quality == Quality::Bad {
                            None
                        } else {
                            r.value
                        };
                        Seen::Reading(self.ids[&r.device.index()].clone(), r.tag, v)
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

    /// The next message the host published.
    async fn published(&mut self) -> OutgoingPublish {
        tokio::time::timeout(Duration::from_secs(10), self.out.recv())
            .await
            .expect("the host published")
            .expect("link open")
    }

    async fn stop(mut self) -> Vec<OutgoingPublish> {
        self.shutdown.cancel();
        let mut events = self.events;
        let drain = async move { while events.recv().await.is_some() {} };
        let (_, r) = tokio::join!(drain, self.task);
        r.expect("the host stopped without panicking");
        let mut rest = Vec::new();
        while let Ok(p) = self.out.try_recv() {
            rest.push(p);
        }
        rest
    }
}

fn is_rebirth(p: &OutgoingPublish, edge: &str) -> bool {
    let Ok(payload) = Payload::decode(p.payload.clone()) else {
        return false;
    };
    p.topic == node_topic("acme", MessageType::NCmd, edge)
        && payload.metrics.iter().any(|m| {
            m.name.as_deref() == Some(REBIRTH) && m.value == Some(metric::Value::BooleanValue(true))
        })
}

#[tokio::test]
async fn births_data_deaths_state_and_rebirth() {
    let mut h = start(CONFIG).await;
    let state = h.published().await;
    assert_eq!(state.topic, "spBv1.0/STATE/fl-host");
    assert!(state.retain && state.qos == 1);
    let json: serde_json::Value = serde_json::from_slice(&state.payload).unwrap();
    assert_eq!(json["online"], true);
    assert!(json["timestamp"].as_i64().unwrap() > 0);

    h.send(event(
        node_topic("acme", MessageType::NBirth, "line-1"),
        nbirth(7),
    ))
    .await;
    h.send(event(
        device_topic("acme", MessageType::DBirth, "line-1", "press-1"),
        dbirth(1),
    ))
    .await;
    let seen = h.until(|s| matches!(s, Seen::Reading(_, 1, _))).await;
    let id = "acme/line-1/press-1".to_owned();
    assert!(seen.contains(&Seen::Announce(
        id.clone(),
        vec!["force".into(), "count".into()]
    )));
    assert!(seen.contains(&Seen::Status(id.clone(), true)));
    assert!(seen.contains(&Seen::Reading(
        id.clone(),
        0,
        Some(PointValue::DoubleValue(1.5))
    )));
    assert!(
        seen.contains(&Seen::Reading(
            id.clone(),
            1,
            Some(PointValue::IntValue(-1))
        )),
        "Int32 two's complement"
    );
    assert!(
        !seen
            .iter()
            .any(|s| matches!(s, Seen::Announce(id, _) if id == "acme/line-1")),
        "an edge node with only control metrics is not a device"
    );

    // Data by alias; is_null is bad quality.
    let null = Metric {
        alias: Some(10),
        is_null: Some(true),
        timestamp: Some(now_ms()),
        ..Metric::default()
    };
    h.send(event(
        device_topic("acme", MessageType::DData, "line-1", "press-1"),
        payload(
            Some(2),
            vec![by_alias(11, metric::Value::IntValue(5)), null],
        ),
    ))
    .await;
    let seen = h.until(|s| *s == Seen::Reading(id.clone(), 0, None)).await;
    assert!(seen.contains(&Seen::Reading(id.clone(), 1, Some(PointValue::IntValue(5)))));

    // A sequence gap: a rebirth request.
    h.send(event(
        device_topic("acme", MessageType::DData, "line-1", "press-1"),
        payload(Some(9), vec![by_alias(11, metric::Value::IntValue(6))]),
    ))
    .await;
    let ncmd = h.published().await;
    assert!(is_rebirth(&ncmd, "line-1"), "{ncmd:?}");

    // A stale NDEATH is ignored, the matching one takes all offline.
    let death = |bd| {
        payload(
            None,
            vec![m(BD_SEQ, 0, DataType::Int64, metric::Value::LongValue(bd))],
        )
    };
    h.send(event(
        node_topic("acme", MessageType::NDeath, "line-1"),
        death(6),
    ))
    .await;
    h.send(event(
        node_topic("acme", MessageType::NDeath, "line-1"),
        death(7),
    ))
    .await;
    h.until(|s| *s == Seen::Status(id.clone(), false)).await;
    assert_eq!(
        h.metrics.driver(Protocol::SparkplugB).ignored.load(Relaxed),
        1
    );

    // Data from a node that is not born: a rebirth request (rate-limited).
    tokio::time::sleep(Duration::from_millis(150)).await; // past rebirth_interval, not an assertion
    h.send(event(
        node_topic("acme", MessageType::NData, "line-1"),
        payload(Some(3), vec![]),
    ))
    .await;
    let ncmd = h.published().await;
    assert!(is_rebirth(&ncmd, "line-1"));

    // The node rebirths; the device comes back online.
    h.send(event(
        node_topic("acme", MessageType::NBirth, "line-1"),
        nbirth(8),
    ))
    .await;
    h.send(event(
        device_topic("acme", MessageType::DBirth, "line-1", "press-1"),
        dbirth(1),
    ))
    .await;
    h.until(|s| *s == Seen::Status(id.clone(), true)).await;
    h.send(event(
        device_topic("acme", MessageType::DDeath, "line-1", "press-1"),
        payload(Some(2), vec![]),
    ))
    .await;
    h.until(|s| *s == Seen::Status(id.clone(), false)).await;

    let rest = h.stop().await;
    let last = rest.last().expect("an offline STATE at shutdown");
    assert_eq!(last.topic, "spBv1.0/STATE/fl-host");
    let json: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(json["online"], false);
}

#[tokio::test]
async fn identity_from_birth_properties_and_nodes_with_metrics() {
    let mut h = start(CONFIG).await;
    let props = PropertySet {
        keys: vec![CLASS_KEY.into(), CATEGORY_KEY.into()],
        values: ["mobile", "logistics"]
            .iter()
            .map(|v| PropertyValue {
                r#type: Some(DataType::String as u32),
                value: Some(property_value::Value::StringValue((*v).into())),
                ..PropertyValue::default()
            })
            .collect(),
    };
    let mut speed = m(
        "speed",
        2,
        DataType::Double,
        metric::Value::DoubleValue(3.0),
    );
    speed.properties = Some(props);
    let mut birth = Payload::decode(nbirth(1).as_slice()).unwrap();
    birth.metrics.push(speed);
    h.send(event(
        node_topic("acme", MessageType::NBirth, "agv-7"),
        birth.encode_to_vec(),
    ))
    .await;
    let seen = h.until(|s| matches!(s, Seen::Reading(..))).await;
    assert!(seen.contains(&Seen::Announce("acme/agv-7".into(), vec!["speed".into()])));
    // NDATA by name works too.
    let by_name = Metric {
        name: Some("speed".into()),
        timestamp: Some(now_ms()),
        value: Some(metric::Value::DoubleValue(4.0)),
        ..Metric::default()
    };
    h.send(event(
        node_topic("acme", MessageType::NData, "agv-7"),
        payload(Some(1), vec![by_name]),
    ))
    .await;
    h.until(|s| *s == Seen::Reading("acme/agv-7".into(), 0, Some(PointValue::DoubleValue(4.0))))
        .await;
    h.stop().await;
}

#[tokio::test]
async fn hostile_input_is_counted_and_never_stops_the_host() {
    let mut h = start(CONFIG).await;
    let _state = h.published().await;
    let million = {
        // 1 000 000 metrics of two bytes each: counted, never decoded.
        let mut b = Vec::with_capacity(2_000_010);
        b.extend_from_slice(&[0x18, 0x00]); // seq = 0
        for _ in 0..1_000_000 {
            b.extend_from_slice(&[0x12, 0x00]);
        }
        b
    };
    let colliding = payload(
        Some(1),
        vec![
            m("a", 5, DataType::Double, metric::Value::DoubleValue(1.0)),
            m("b", 5, DataType::Double, metric::Value::DoubleValue(2.0)),
        ],
    );
    let garbage: Vec<u8> = (0..2048u32).map(|i| (i * 131 % 256) as u8).collect();
    let no_class = dbirth(2);
    for e in [
        event(node_topic("acme", MessageType::NBirth, "line-2"), million),
        event(node_topic("acme", MessageType::NBirth, "line-2"), garbage),
        event(
            node_topic("acme", MessageType::NBirth, "line-2"),
            vec![0u8; 5 << 20],
        ),
        event(node_topic("acme", MessageType::NBirth, "line-2"), nbirth(1)),
        event(
            device_topic("acme", MessageType::DBirth, "line-2", "press-x"),
            colliding,
        ),
        event(
            device_topic("acme", MessageType::DBirth, "line-2", "drill\u{7}"),
            dbirth(2),
        ),
        event(
            device_topic("acme", MessageType::DBirth, "line-2", "mystery"),
            no_class,
        ),
        event(
            node_topic("other", MessageType::NBirth, "line-2"),
            nbirth(1),
        ),
        event("spBv1.0/acme/NBIRTH".to_owned(), nbirth(1)),
    ] {
        h.send(e).await;
    }
    h.send(event(
        device_topic("acme", MessageType::DBirth, "line-2", "press-2"),
        dbirth(3),
    ))
    .await;
    h.until(|s| matches!(s, Seen::Reading(id, 1, _) if id == "acme/line-2/press-2"))
        .await;
    let d = h.metrics.driver(Protocol::SparkplugB);
    assert_eq!(
        d.malformed.load(Relaxed),
        6,
        "a million metrics, garbage, 5 MB, colliding aliases, a bad id, a bad topic"
    );
    assert_eq!(
        d.ignored.load(Relaxed),
        2,
        "no identity, another tenant's group"
    );
    h.stop().await;
}

#[test]
fn config_problems_name_their_keys() {
    let text = format!(
        "{HEAD}[sparkplug]\nbroker = \"mqtt://h\"\nclean_session = false\nhost_id = \"a/b\"\ngroups = [\"x#\"]\ndevice_id = \"{{group}}\"\nrebirth_interval = \"1ms\"\n[[sparkplug.devices]]\ncategory = \"mining\"\nclass = \"mobile\"\n"
    );
    let err = GatewayConfig::from_toml(&text)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    for key in [
        "sparkplug.clean_session",
        "sparkplug.host_id",
        "sparkplug.groups",
        "sparkplug.device_id",
        "sparkplug.rebirth_interval",
        "sparkplug.devices[0].category",
    ] {
        assert!(err.contains(key), "{key} missing in {err}");
    }
}

#[tokio::test]
async fn a_gap_filled_within_the_reorder_timeout_needs_no_rebirth_and_our_offline_state_is_answered()
 {
    let text = CONFIG.replace(
        "max_metrics = 1000",
        "max_metrics = 1000\nreorder_timeout = \"300ms\"",
    );
    let mut h = start(&text).await;
    let state = h.published().await;
    h.send(event(
        node_topic("acme", MessageType::NBirth, "line-1"),
        nbirth(1),
    ))
    .await;
    h.send(event(
        device_topic("acme", MessageType::DBirth, "line-1", "press-1"),
        dbirth(1),
    ))
    .await;
    let data = |seq, v| {
        event(
            device_topic("acme", MessageType::DData, "line-1", "press-1"),
            payload(Some(seq), vec![by_alias(11, metric::Value::IntValue(v))]),
        )
    };
    // 3 before 2: out of order, but 2 arrives in time.
    h.send(data(3, 30)).await;
    h.send(data(2, 20)).await;
    h.send(data(4, 40)).await;
    let id = "acme/line-1/press-1".to_owned();
    h.until(|s| *s == Seen::Reading(id.clone(), 1, Some(PointValue::IntValue(40))))
        .await;
    // Someone (a broker restart, a stale retained message) says we are
    // offline: the host says online again.
    h.send(event(
        "spBv1.0/STATE/fl-host".to_owned(),
        br#"{"online":false,"timestamp":1}"#.to_vec(),
    ))
    .await;
    let again = h.published().await;
    assert_eq!(again, state, "the same birth, not a rebirth request");
    // 6 never comes after 5's gap: a rebirth once the timeout passes.
    h.send(data(6, 60)).await;
    let ncmd = h.published().await;
    assert!(is_rebirth(&ncmd, "line-1"), "{ncmd:?}");
    assert_eq!(
        h.metrics
            .driver(Protocol::SparkplugB)
            .requests
            .load(Relaxed),
        1
    );
    h.stop().await;
}
