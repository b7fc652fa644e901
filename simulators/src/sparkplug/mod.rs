//! The Sparkplug B face: edge nodes of up to `per_node` devices each (one
//! MQTT client per node, client id and user name = edge node id), following
//! the 3.0 rules: the will is NDEATH with the session's bdSeq, bdSeq grows
//! by one per new session, seq runs 0..=255 and wraps, NBIRTH (seq 0) comes
//! before the DBIRTHs and they before any data, and a `Node Control/Rebirth`
//! NCMD makes the node send its births again. Each device's class,
//! category, type and name go as properties `fieldlink/class`, ... of its
//! first DBIRTH metric. Group id = tenant name; edge node ids are
//! `sim-edge-<index of its first device>`.
//!
//! Faults ([`Controls`]): a device `Off` sends DDEATH and stops, `None`
//! again sends DBIRTH; `Hung` stays silent; `Garbage` publishes an
//! undecodable DDATA payload; a node `Off` ([`Controls::node_faults`], by
//! node number) drops its connection without DISCONNECT (the broker sends
//! its NDEATH); a restart reconnects every node with a new bdSeq; a hidden
//! device ([`Controls::hide`]) is born when revealed.

mod node;

use std::time::Duration;

use fieldlink_model::Protocol;
use fieldlink_model::sparkplug::{MessageType, node_topic};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::task::JoinSet;

pub use node::{EdgeNode, NodeDevice};

use crate::control::Controls;
use crate::faults::Fault;
use crate::mqtt::{BrokerAddr, Credentials, Driven};
use crate::plan::FleetPlan;
use crate::server::Clock;
use crate::stop::Stop;

/// Default devices per edge node.
pub const DEFAULT_DEVICES_PER_NODE: u32 = 10;

/// One planned edge node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// Node number (for [`Controls::node_faults`]).
    pub number: u32,
    /// Index into the plan's tenants (its group).
    pub tenant: usize,
    /// Edge node id.
    pub edge: String,
    /// Its devices' indexes.
    pub devices: Vec<u32>,
}

/// The Sparkplug devices of `plan` grouped into edge nodes of at most
/// `per_node` devices, tenant by tenant, in index order.
pub fn plan_nodes(plan: &FleetPlan, per_node: u32) -> Vec<NodePlan> {
    let per_node = per_node.max(1) as usize;
    let mut nodes = Vec::new();
    for tenant in 0..plan.tenants().len() {
        let devices: Vec<u32> = plan
            .devices_of_tenant(tenant)
            .filter(|d| d.protocol == Protocol::SparkplugB)
            .map(|d| d.index)
            .collect();
        for chunk in devices.chunks(per_node) {
            nodes.push(NodePlan {
                number: 0,
                tenant,
                edge: format!("sim-edge-{:06}", chunk[0]),
                devices: chunk.to_vec(),
            });
        }
    }
    nodes.sort_by_key(|n| n.devices[0]);
    for (i, n) in nodes.iter_mut().enumerate() {
        n.number = i as u32;
    }
    nodes
}

/// The edge node serving device `index`, with its position in the node.
pub fn node_of(nodes: &[NodePlan], index: u32) -> Option<(&NodePlan, usize)> {
    nodes.iter().find_map(|n| {
        n.devices
            .iter()
            .position(|&d| d == index)
            .map(|slot| (n, slot))
    })
}

/// How a Sparkplug fleet runs.
#[derive(Debug, Clone)]
pub struct SparkplugFleetOptions {
    /// The broker.
    pub broker: BrokerAddr,
    /// Every edge node's password.
    pub credentials: Credentials,
    /// Devices per edge node.
    pub per_node: u32,
    /// Data interval.
    pub interval: Duration,
    /// Faults and growth.
    pub controls: Controls,
}

/// A running Sparkplug fleet (a task per edge node).
#[derive(Debug)]
pub struct SparkplugFleet {
    stop: Stop,
    tasks: JoinSet<()>,
    nodes: Vec<NodePlan>,
}

impl SparkplugFleet {
    /// Starts every edge node of `plan`; returns at once (nodes connect in
    /// the background and retry).
    pub fn start(plan: &FleetPlan, options: SparkplugFleetOptions) -> SparkplugFleet {
        let stop = Stop::default();
        let nodes = plan_nodes(plan, options.per_node);
        let mut tasks = JoinSet::new();
        for n in &nodes {
            let devices = n
                .devices
                .iter()
                .filter_map(|&i| {
                    Some(NodeDevice {
                        planned: plan.device(i)?,
                        sim: plan.sim_device(i).ok()?,
                    })
                })
                .collect();
            let group = plan.tenants()[n.tenant].name.clone();
            let state = EdgeNode::new(group, n.edge.clone(), devices);
            let password = options
                .credentials
                .password(&n.edge)
                .unwrap_or_default()
                .to_owned();
            tasks.spawn(
                NodeClient {
                    number: n.number,
                    state,
                    password,
                    options: options.clone(),
                }
                .run(stop.clone()),
            );
        }
        SparkplugFleet { stop, tasks, nodes }
    }

    /// The edge nodes.
    pub fn nodes(&self) -> &[NodePlan] {
        &self.nodes
    }

    /// Sends every node's NDEATH, disconnects cleanly and waits.
    pub async fn stop(mut self) {
        self.stop.stop();
        while self.tasks.join_next().await.is_some() {}
    }
}

struct NodeClient {
    number: u32,
    state: EdgeNode,
    password: String,
    options: SparkplugFleetOptions,
}

enum End {
    Stop,
    Reconnect,
}

fn now_ms() -> i64 {
    Clock::System.now_ms()
}

/// Bytes that are no protobuf message (a field longer than the payload).
const GARBAGE: &[u8] = &[0x12, 0xff, 0xff, 0xff, 0x0f, 0x00];

impl NodeClient {
    async fn run(mut self, stop: Stop) {
        loop {
            while self.options.controls.node_faults.get(self.number) == Fault::Off {
                tokio::select! {
                    () = stop.wait() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            if let End::Stop = self.session(&stop).await {
                return;
            }
        }
    }

    fn publish(client: &AsyncClient, (topic, payload): (String, Vec<u8>)) {
        let _ = client.try_publish(topic, QoS::AtMostOnce, false, payload);
    }

    /// NBIRTH, then DBIRTH of every device that is not hidden or off.
    fn births(&mut self, client: &AsyncClient, born: &mut [bool]) {
        let ms = now_ms();
        Self::publish(client, self.state.nbirth(ms));
        for (slot, is_born) in born.iter_mut().enumerate() {
            let index = self.state.devices[slot].planned.index;
            let controls = &self.options.controls;
            *is_born = !controls.is_hidden(index) && controls.faults.get(index) != Fault::Off;
            if *is_born && let Some(m) = self.state.dbirth(slot, ms) {
                Self::publish(client, m);
            }
        }
    }

    async fn session(&mut self, stop: &Stop) -> End {
        self.state.new_session();
        let edge = self.state.edge.clone();
        let group = self.state.group.clone();
        let (will_topic, will) = self.state.ndeath(now_ms());
        let broker = &self.options.broker;
        let mut mqtt = MqttOptions::new(edge.clone(), broker.host.clone(), broker.port);
        mqtt.set_keep_alive(Duration::from_secs(10))
            .set_clean_session(true)
            .set_credentials(edge.clone(), self.password.clone())
            .set_max_packet_size(1 << 20, 4 << 20)
            .set_last_will(LastWill::new(
                will_topic.clone(),
                will,
                QoS::AtLeastOnce,
                false,
            ));
        let capacity = self.state.devices.len() * 3 + 16;
        let (client, eventloop) = AsyncClient::new(mqtt, capacity);
        let mut driven = Driven::start(eventloop);
        let generation = self.options.controls.faults.generation();
        let mut tick = tokio::time::interval(self.options.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected = false;
        let mut born = vec![false; self.state.devices.len()];
        let ncmd = node_topic(&group, MessageType::NCmd, &edge);
        loop {
            tokio::select! {
                () = stop.wait() => {
                    if connected {
                        // An intentional disconnect: NDEATH, then DISCONNECT.
                        Self::publish(&client, self.state.ndeath(now_ms()));
                        let _ = client.try_disconnect();
                        driven.flush_disconnect().await;
                    }
                    return End::Stop;
                }
                Some(polled) = driven.events.recv() => match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        let _ = client.try_subscribe(ncmd.clone(), QoS::AtLeastOnce);
                        self.births(&client, &mut born);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == ncmd && EdgeNode::is_rebirth(&p.payload) {
                            self.births(&client, &mut born);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // A new MQTT session gets a new bdSeq (and will).
                        tokio::select! {
                            () = stop.wait() => return End::Stop,
                            () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        }
                        return End::Reconnect;
                    }
                },
                _ = tick.tick() => {
                    let controls = &self.options.controls;
                    if controls.faults.generation() != generation
                        || controls.node_faults.get(self.number) == Fault::Off
                    {
                        return End::Reconnect; // dropped: the broker sends the NDEATH
                    }
                    if !connected {
                        continue;
                    }
                    let ms = now_ms();
                    for (slot, is_born) in born.iter_mut().enumerate() {
                        let index = self.state.devices[slot].planned.index;
                        if controls.is_hidden(index) {
                            continue;
                        }
                        match controls.faults.get(index) {
                            Fault::Off => {
                                if std::mem::replace(is_born, false)
                                    && let Some(m) = self.state.ddeath(slot, ms)
                                {
                                    Self::publish(&client, m);
                                }
                            }
                            Fault::Hung => {}
                            Fault::Garbage => {
                                if let Some((topic, _)) = self.state.ddata(slot, ms) {
                                    self.state.unskip_seq();
                                    let _ = client.try_publish(topic, QoS::AtMostOnce, false, GARBAGE);
                                }
                            }
                            Fault::None => {
                                if !std::mem::replace(is_born, true)
                                    && let Some(m) = self.state.dbirth(slot, ms)
                                {
                                    Self::publish(&client, m);
                                }
                                if let Some(m) = self.state.ddata(slot, ms) {
                                    Self::publish(&client, m);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
