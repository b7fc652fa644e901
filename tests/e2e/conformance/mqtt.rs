//! The MQTT JSON driver through the conformance kit, twice: against
//! simulated devices (one MQTT client each) at a real mosquitto that the
//! face restarts, and over an `MqttLink` made in the test (the embedded
//! broker's path, with client connection events).

use std::time::Duration;

use fieldlink_gateway::conformance::{self, Face, Growth, KitOptions, Outcome, Report};
use fieldlink_gateway::driver::Resources;
use fieldlink_gateway::driver::mqtt::MqttKind;
use fieldlink_model::{Cloud, Protocol};
use fieldlink_sim::mqtt::{
    BrokerAddr, Credentials, EXTRA_FIELD, MqttFleet, MqttFleetOptions, device_topic, meta_json,
    telemetry_json,
};
use fieldlink_sim::{Controls, FaceFiles, Fault, FleetPlan, FleetSpec, MqttFiles, TenantSpec};

use super::link::FakeBroker;
use crate::support::mosquitto::Mosquitto;

const INTERVAL: Duration = Duration::from_millis(100);

fn plan(devices: u32) -> FleetPlan {
    FleetPlan::new(FleetSpec {
        devices,
        port: 0,
        interval: INTERVAL,
        protocols: fieldlink_sim::ProtocolMix::only(Protocol::MqttJson),
        tenants: vec![TenantSpec::new("kit", Cloud::Public)],
        ..FleetSpec::default()
    })
    .unwrap()
}

fn index(plan: &FleetPlan, id: &str) -> u32 {
    plan.devices()
        .find(|d| d.id() == id)
        .map(|d| d.index)
        .unwrap_or_else(|| panic!("no device {id}"))
}

fn mqtt_section(plan: &FleetPlan, broker: &str, credentials: &Credentials) -> String {
    let files = MqttFiles {
        broker: broker
            .parse()
            .unwrap_or_else(|_| "mqtt://127.0.0.1:1".parse().unwrap()),
        credentials: credentials.clone(),
        gateway_login: None,
        gateway_embedded: false,
    };
    let devices: Vec<_> = plan.devices().collect();
    let mut table = files.gateway_sections(plan, 0, &devices).unwrap();
    let mqtt = table["mqtt"].as_table_mut().unwrap();
    mqtt.insert("broker".into(), broker.into());
    mqtt.insert("reconnect_min".into(), "100ms".into());
    mqtt.insert("reconnect_max".into(), "500ms".into());
    toml::to_string(&table).unwrap()
}

fn assert_all_passed(report: &Report) {
    eprintln!(
        "conformance report ({}): {:?}, {} readings, {} bad",
        report.protocol, report.checks, report.readings, report.bad_readings
    );
    let failed: Vec<_> = report
        .checks
        .iter()
        .filter(|(_, o)| *o != Outcome::Passed)
        .collect();
    assert!(failed.is_empty(), "not applicable or failed: {failed:?}");
    assert_eq!(report.checks.len(), 6);
}

/// Four simulated MQTT devices at a mosquitto of the test's own.
struct BrokerFace {
    broker: Mosquitto,
    plan: FleetPlan,
    controls: Controls,
    credentials: Credentials,
    fleet: Option<MqttFleet>,
}

impl Face for BrokerFace {
    fn config(&self) -> String {
        mqtt_section(&self.plan, &self.broker.url(), &self.credentials)
    }

    fn devices(&self) -> Vec<String> {
        self.plan.devices().map(|d| d.id()).collect()
    }

    async fn stop_device(&mut self, id: &str) {
        self.controls.faults.set(index(&self.plan, id), Fault::Off);
    }

    async fn start_device(&mut self, id: &str) {
        self.controls.faults.set(index(&self.plan, id), Fault::None);
    }

    async fn hang_device(&mut self, id: &str) -> bool {
        self.controls.faults.set(index(&self.plan, id), Fault::Hung);
        true
    }

    async fn malform_device(&mut self, id: &str) -> bool {
        self.controls
            .faults
            .set(index(&self.plan, id), Fault::Garbage);
        true
    }

    async fn heal_device(&mut self, id: &str) {
        self.controls.faults.set(index(&self.plan, id), Fault::None);
    }

    async fn grow(&mut self) -> Option<Growth> {
        let d = self.plan.device(3)?;
        self.controls.add_field(d.index);
        Some(Growth::Tag(d.id(), EXTRA_FIELD.to_owned()))
    }

    async fn restart(&mut self) {
        self.broker.restart();
    }
}

#[tokio::test]
async fn the_mqtt_driver_passes_the_conformance_kit_at_mosquitto() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let plan = plan(4);
    let credentials = Credentials::generate(&plan, 1).unwrap();
    let controls = Controls::default();
    let fleet = MqttFleet::start(
        &plan,
        MqttFleetOptions {
            broker: broker.url().parse::<BrokerAddr>().unwrap(),
            credentials: credentials.clone(),
            interval: INTERVAL,
            controls: controls.clone(),
        },
    );
    let mut face = BrokerFace {
        broker,
        plan,
        controls,
        credentials,
        fleet: Some(fleet),
    };
    let report = conformance::run(&MqttKind, &mut face, &KitOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_all_passed(&report);
    assert!(report.bad_readings == 0, "garbage is refused, not read");
    if let Some(fleet) = face.fleet.take() {
        fleet.stop().await;
    }
}

/// Four simulated devices behind an in-test embedded broker: connection
/// events, client ids and tenants come with every message.
struct LinkFace {
    broker: FakeBroker,
    plan: FleetPlan,
    controls: Controls,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl LinkFace {
    fn start() -> LinkFace {
        let plan = plan(4);
        let broker = FakeBroker::new("kit");
        let controls = Controls::default();
        let tasks = plan
            .devices()
            .map(|d| {
                let broker = broker.clone();
                let controls = controls.clone();
                let sim = plan.sim_device(d.index).unwrap();
                tokio::spawn(async move {
                    let id = d.id();
                    let client = broker.client(&id);
                    let (mut generation, mut up) = (0, false);
                    let mut tick = tokio::time::interval(INTERVAL);
                    let mut body = String::new();
                    loop {
                        tick.tick().await;
                        let Some((tx, g)) = broker.current() else {
                            up = false;
                            continue;
                        };
                        if g != generation {
                            (generation, up) = (g, false);
                        }
                        let fault = controls.faults.get(d.index);
                        let mut events = Vec::new();
                        if fault == fieldlink_sim::Fault::Off {
                            if std::mem::replace(&mut up, false) {
                                events.push(fieldlink_model::mqtt::MqttEvent::Disconnected {
                                    client: client.clone(),
                                    clean: false,
                                    reason: "switched off".into(),
                                });
                            }
                        } else {
                            if !std::mem::replace(&mut up, true) {
                                events.push(fieldlink_model::mqtt::MqttEvent::Connected(
                                    client.clone(),
                                ));
                                let meta = meta_json(&d, "kit").into_bytes();
                                events.push(FakeBroker::publish(
                                    &client,
                                    device_topic("kit", &id, "meta"),
                                    meta,
                                    true,
                                ));
                            }
                            let topic = device_topic("kit", &id, "telemetry");
                            match fault {
                                Fault::Garbage => events.push(FakeBroker::publish(
                                    &client,
                                    topic,
                                    b"\x00garbage{".to_vec(),
                                    false,
                                )),
                                Fault::None => {
                                    body.clear();
                                    let now = fieldlink_model::now_unix_nanos() / 1_000_000;
                                    telemetry_json(
                                        &sim,
                                        now,
                                        controls.has_extra_field(d.index),
                                        &mut body,
                                    );
                                    events.push(FakeBroker::publish(
                                        &client,
                                        topic,
                                        body.clone().into_bytes(),
                                        false,
                                    ));
                                }
                                _ => {}
                            }
                        }
                        for e in events {
                            if tx.send(e).await.is_err() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        LinkFace {
            broker,
            plan,
            controls,
            tasks,
        }
    }
}

impl Drop for LinkFace {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Face for LinkFace {
    fn config(&self) -> String {
        let text = mqtt_section(&self.plan, "embedded", &Credentials::default());
        let mut table: toml::Table = toml::from_str(&text).unwrap();
        let mqtt = table["mqtt"].as_table_mut().unwrap();
        for key in ["client_id", "username", "password"] {
            mqtt.remove(key);
        }
        toml::to_string(&table).unwrap()
    }

    fn devices(&self) -> Vec<String> {
        self.plan.devices().map(|d| d.id()).collect()
    }

    fn resources(&self) -> Resources {
        self.broker.resources()
    }

    async fn stop_device(&mut self, id: &str) {
        self.controls.faults.set(index(&self.plan, id), Fault::Off);
    }

    async fn start_device(&mut self, id: &str) {
        self.controls.faults.set(index(&self.plan, id), Fault::None);
    }

    async fn hang_device(&mut self, id: &str) -> bool {
        self.controls.faults.set(index(&self.plan, id), Fault::Hung);
        true
    }

    async fn malform_device(&mut self, id: &str) -> bool {
        self.controls
            .faults
            .set(index(&self.plan, id), Fault::Garbage);
        true
    }

    async fn heal_device(&mut self, id: &str) {
        self.controls.faults.set(index(&self.plan, id), Fault::None);
    }

    async fn grow(&mut self) -> Option<Growth> {
        let d = self.plan.device(3)?;
        self.controls.add_field(d.index);
        Some(Growth::Tag(d.id(), EXTRA_FIELD.to_owned()))
    }

    async fn restart(&mut self) {
        self.broker.restart();
    }
}

#[tokio::test]
async fn the_mqtt_driver_passes_the_conformance_kit_over_an_embedded_link() {
    let mut face = LinkFace::start();
    let report = conformance::run(&MqttKind, &mut face, &KitOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_all_passed(&report);
}
