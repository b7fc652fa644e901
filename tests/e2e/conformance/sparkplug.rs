//! The Sparkplug host through the conformance kit, twice: against simulated
//! edge nodes at a real mosquitto that the face restarts, and over an
//! `MqttLink` made in the test (the embedded broker's path), where the face
//! plays the edge node and answers the host's rebirth requests.

use std::time::Duration;

use fieldlink_gateway::conformance::{self, Face, Growth, KitOptions, Outcome, Report};
use fieldlink_gateway::driver::Resources;
use fieldlink_gateway::driver::sparkplug::SparkplugKind;
use fieldlink_model::sparkplug::{MessageType, node_topic};
use fieldlink_model::{Cloud, Protocol};
use fieldlink_sim::mqtt::{BrokerAddr, Credentials};
use fieldlink_sim::sparkplug::{EdgeNode, NodeDevice, SparkplugFleet, SparkplugFleetOptions};
use fieldlink_sim::{Controls, FaceFiles, Fault, FleetPlan, FleetSpec, SparkplugFiles, TenantSpec};

use super::link::FakeBroker;
use crate::support::mosquitto::Mosquitto;

const INTERVAL: Duration = Duration::from_millis(100);
const DEVICES: u32 = 4;

fn plan() -> FleetPlan {
    FleetPlan::new(FleetSpec {
        devices: DEVICES,
        port: 0,
        interval: INTERVAL,
        protocols: fieldlink_sim::ProtocolMix::only(Protocol::SparkplugB),
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

/// The device born at run time (discovery): the last one.
fn grown(plan: &FleetPlan) -> u32 {
    plan.len() - 1
}

fn section(plan: &FleetPlan, broker: &str, credentials: &Credentials) -> String {
    let files = SparkplugFiles::new(
        "mqtt://127.0.0.1:1".parse::<BrokerAddr>().unwrap(),
        credentials.clone(),
        plan,
        DEVICES,
    );
    let devices: Vec<_> = plan.devices().collect();
    let mut table = files.gateway_sections(plan, 0, &devices).unwrap();
    let sp = table["sparkplug"].as_table_mut().unwrap();
    sp.insert("broker".into(), broker.into());
    sp.insert("reconnect_min".into(), "100ms".into());
    sp.insert("reconnect_max".into(), "500ms".into());
    sp.insert("rebirth_interval".into(), "500ms".into());
    if broker == "embedded" {
        for key in ["client_id", "username", "password"] {
            sp.remove(key);
        }
    }
    toml::to_string(&table).unwrap()
}

fn assert_all_passed(report: &Report) {
    eprintln!(
        "conformance report ({}): {:?}, {} readings, {} bad",
        report.protocol, report.checks, report.readings, report.bad_readings
    );
    assert_eq!(report.checks.len(), 6);
    assert!(
        report.checks.iter().all(|(_, o)| *o == Outcome::Passed),
        "{:?}",
        report.checks
    );
}

macro_rules! faults_by_device {
    () => {
        fn devices(&self) -> Vec<String> {
            let hidden = grown(&self.plan);
            self.plan
                .devices()
                .filter(|d| d.index != hidden)
                .map(|d| d.id())
                .collect()
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
            let d = self.plan.device(grown(&self.plan))?;
            self.controls.reveal(d.index);
            Some(Growth::Device(d.id()))
        }
    };
}

/// One simulated edge node with four devices at a mosquitto of the test's
/// own; the fourth device is born at run time.
struct BrokerFace {
    broker: Mosquitto,
    plan: FleetPlan,
    controls: Controls,
    credentials: Credentials,
}

impl Face for BrokerFace {
    fn config(&self) -> String {
        section(&self.plan, &self.broker.url(), &self.credentials)
    }

    faults_by_device!();

    async fn restart(&mut self) {
        self.broker.restart();
    }
}

#[tokio::test]
async fn the_sparkplug_host_passes_the_conformance_kit_at_mosquitto() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let plan = plan();
    let credentials = Credentials::generate(&plan, DEVICES).unwrap();
    let controls = Controls::default();
    controls.hide(grown(&plan));
    let fleet = SparkplugFleet::start(
        &plan,
        SparkplugFleetOptions {
            broker: broker.url().parse().unwrap(),
            credentials: credentials.clone(),
            per_node: DEVICES,
            interval: INTERVAL,
            controls: controls.clone(),
        },
    );
    let mut face = BrokerFace {
        broker,
        plan,
        controls,
        credentials,
    };
    let report = conformance::run(&SparkplugKind, &mut face, &KitOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_all_passed(&report);
    fleet.stop().await;
}

/// The same edge node over an in-test embedded link: the face publishes
/// its messages into the link and reads the host's NCMDs from it.
struct LinkFace {
    broker: FakeBroker,
    plan: FleetPlan,
    controls: Controls,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkFace {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkFace {
    fn start() -> LinkFace {
        let plan = plan();
        let broker = FakeBroker::new("kit");
        let controls = Controls::default();
        controls.hide(grown(&plan));
        let devices = plan
            .devices()
            .map(|planned| NodeDevice {
                sim: plan.sim_device(planned.index).unwrap(),
                planned,
            })
            .collect();
        let mut node = EdgeNode::new("kit".into(), "sim-edge-000000".into(), devices);
        let task = {
            let broker = broker.clone();
            let controls = controls.clone();
            tokio::spawn(async move {
                let client = broker.client("sim-edge-000000");
                let ncmd = node_topic("kit", MessageType::NCmd, "sim-edge-000000");
                let mut generation = 0;
                let mut born = vec![false; DEVICES as usize];
                let mut tick = tokio::time::interval(INTERVAL);
                loop {
                    tick.tick().await;
                    let Some((tx, g)) = broker.current() else {
                        continue;
                    };
                    let ms = fieldlink_model::now_unix_nanos() / 1_000_000;
                    let mut out = Vec::new();
                    let rebirth = broker
                        .take_published()
                        .iter()
                        .any(|p| p.topic == ncmd && EdgeNode::is_rebirth(&p.payload));
                    if g != generation || rebirth {
                        if g != generation {
                            node.new_session();
                            generation = g;
                        }
                        out.push(node.nbirth(ms));
                        for (slot, b) in born.iter_mut().enumerate() {
                            let i = slot as u32;
                            *b = !controls.is_hidden(i) && controls.faults.get(i) != Fault::Off;
                            if *b {
                                out.extend(node.dbirth(slot, ms));
                            }
                        }
                    }
                    for (slot, b) in born.iter_mut().enumerate() {
                        let i = slot as u32;
                        if controls.is_hidden(i) {
                            continue;
                        }
                        match controls.faults.get(i) {
                            Fault::Off => {
                                if std::mem::replace(b, false) {
                                    out.extend(node.ddeath(slot, ms));
                                }
                            }
                            Fault::Hung => {}
                            Fault::Garbage => {
                                if let Some((topic, _)) = node.ddata(slot, ms) {
                                    node.unskip_seq();
                                    out.push((topic, vec![0x12, 0xff, 0xff, 0xff, 0x0f]));
                                }
                            }
                            Fault::None => {
                                if !std::mem::replace(b, true) {
                                    out.extend(node.dbirth(slot, ms));
                                }
                                out.extend(node.ddata(slot, ms));
                            }
                        }
                    }
                    for (topic, payload) in out {
                        if tx
                            .send(FakeBroker::publish(&client, topic, payload, false))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            })
        };
        LinkFace {
            broker,
            plan,
            controls,
            task,
        }
    }
}

impl Face for LinkFace {
    fn config(&self) -> String {
        section(&self.plan, "embedded", &Credentials::default())
    }

    fn resources(&self) -> Resources {
        self.broker.resources()
    }

    faults_by_device!();

    async fn restart(&mut self) {
        self.broker.restart();
    }
}

#[tokio::test]
async fn the_sparkplug_host_passes_the_conformance_kit_over_an_embedded_link() {
    let mut face = LinkFace::start();
    let report = conformance::run(&SparkplugKind, &mut face, &KitOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_all_passed(&report);
}
