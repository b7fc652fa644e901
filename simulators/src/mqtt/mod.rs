//! The MQTT JSON face: every simulated device is its own MQTT client (client
//! id and user name = device id, its own password) at a broker — mosquitto,
//! EMQX or `fieldlink broker`.
//!
//! On every connection a device publishes its registration on
//! `{tenant}/{device_id}/meta` (retained JSON: class, category, type, name,
//! attributes) and `online` on `{tenant}/{device_id}/status` (retained; its
//! Last Will there says `offline`), then its process tags every interval
//! on `{tenant}/{device_id}/telemetry` as JSON (`{"ts": <unix ms>,
//! "<tag>": value, ...}`, booleans for bits, numbers for the rest, the
//! values [`crate::SimDevice::value`] gives).
//!
//! Faults ([`Controls`]): `Off` drops the connection without DISCONNECT so
//! the broker fires the will; `Hung` stays connected and silent; `Garbage`
//! publishes payloads that are not JSON; a restart
//! ([`crate::Faults::restart`]) reconnects every client. rumqttc cannot bind
//! a source address, so clients connect from the host's default address.

mod broker;
mod driven;
mod json;
pub mod lean;
pub mod lean_run;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fieldlink_model::Protocol;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::task::JoinSet;

pub use broker::{BrokerAddr, Credential, Credentials, Role, fleet_user, gateway_id};
pub use json::{EXTRA_FIELD, meta_json, telemetry_json};

pub(crate) use driven::Driven;

use crate::control::Controls;
use crate::faults::Fault;
use crate::plan::{FleetPlan, PlannedDevice};
use crate::signal::SimDevice;
use crate::stop::Stop;

/// `{tenant}/{device_id}/{leaf}`.
pub fn device_topic(tenant: &str, device_id: &str, leaf: &str) -> String {
    format!("{tenant}/{device_id}/{leaf}")
}

/// How an MQTT fleet runs.
#[derive(Debug, Clone)]
pub struct MqttFleetOptions {
    /// The broker.
    pub broker: BrokerAddr,
    /// Every device's password.
    pub credentials: Credentials,
    /// Telemetry interval.
    pub interval: Duration,
    /// Faults and growth.
    pub controls: Controls,
}

/// What a fleet's clients did so far, all together (for benches and
/// progress lines).
#[derive(Debug, Default)]
pub struct MqttFleetStats {
    /// Clients whose session is up now: CONNACK received and not lost since.
    pub connected: AtomicI64,
    /// Sessions established (CONNACKs received) since the start.
    pub sessions: AtomicU64,
    /// Telemetry messages handed to the clients' queues to publish.
    pub published: AtomicU64,
    /// Telemetry messages not published because a client's queue was full.
    pub dropped: AtomicU64,
}

/// A running MQTT JSON fleet (a task per device).
#[derive(Debug)]
pub struct MqttFleet {
    stop: Stop,
    tasks: JoinSet<()>,
    devices: u32,
    stats: Arc<MqttFleetStats>,
}

impl MqttFleet {
    /// Starts a client for every MQTT JSON device of `plan`; returns at
    /// once (clients connect in the background and retry).
    pub fn start(plan: &FleetPlan, options: MqttFleetOptions) -> MqttFleet {
        let stop = Stop::default();
        let stats = Arc::new(MqttFleetStats::default());
        let mut tasks = JoinSet::new();
        let mut devices = 0;
        for d in plan.devices().filter(|d| d.protocol == Protocol::MqttJson) {
            let Ok(sim) = plan.sim_device(d.index) else {
                continue;
            };
            let tenant = plan.tenants()[d.tenant].name.clone();
            let password = options
                .credentials
                .password(&d.id())
                .unwrap_or_default()
                .to_owned();
            devices += 1;
            tasks.spawn(
                Client {
                    planned: d,
                    sim,
                    tenant,
                    password,
                    options: options.clone(),
                    stats: stats.clone(),
                }
                .run(stop.clone()),
            );
        }
        MqttFleet {
            stop,
            tasks,
            devices,
            stats,
        }
    }

    /// Devices served.
    pub fn devices(&self) -> u32 {
        self.devices
    }

    /// What the clients did so far.
    pub fn stats(&self) -> Arc<MqttFleetStats> {
        self.stats.clone()
    }

    /// Disconnects every client cleanly (no will) and waits.
    pub async fn stop(mut self) {
        self.stop.stop();
        while self.tasks.join_next().await.is_some() {}
    }
}

struct Client {
    planned: PlannedDevice,
    sim: SimDevice,
    tenant: String,
    password: String,
    options: MqttFleetOptions,
    stats: Arc<MqttFleetStats>,
}

enum End {
    /// Stop for good.
    Stop,
    /// Reconnect (off then on again, or a restart).
    Reconnect,
}

impl Client {
    async fn run(self, stop: Stop) {
        let index = self.planned.index;
        let faults = &self.options.controls.faults;
        loop {
            while faults.get(index) == Fault::Off {
                tokio::select! {
                    () = stop.wait() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            let mut connected = false;
            let end = self.session(&stop, &mut connected).await;
            if connected {
                self.stats.connected.fetch_sub(1, Relaxed);
            }
            if let End::Stop = end {
                return;
            }
        }
    }

    /// One client connection, until a fault or a restart ends it;
    /// `connected` says whether its session is up (and counted in
    /// [`MqttFleetStats::connected`]) when it returns.
    async fn session(&self, stop: &Stop, connected: &mut bool) -> End {
        let id = self.planned.id();
        let index = self.planned.index;
        let controls = &self.options.controls;
        let status = device_topic(&self.tenant, &id, "status");
        let telemetry = device_topic(&self.tenant, &id, "telemetry");
        let mut mqtt = MqttOptions::new(
            id.clone(),
            self.options.broker.host.clone(),
            self.options.broker.port,
        );
        mqtt.set_keep_alive(Duration::from_secs(10))
            .set_credentials(id.clone(), self.password.clone())
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_last_will(LastWill::new(
                status.clone(),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        let (client, eventloop) = AsyncClient::new(mqtt, 64);
        let mut driven = Driven::start(eventloop);
        let generation = controls.faults.generation();
        let mut tick = tokio::time::interval(self.options.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stats = &self.stats;
        let mut body = String::with_capacity(512);
        loop {
            tokio::select! {
                () = stop.wait() => {
                    if *connected {
                        // Clean: no will, the status says offline.
                        let _ = client.try_publish(status.clone(), QoS::AtLeastOnce, true, "offline");
                        let _ = client.try_disconnect();
                        driven.flush_disconnect().await;
                    }
                    return End::Stop;
                }
                Some(polled) = driven.events.recv() => match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if !std::mem::replace(connected, true) {
                            stats.connected.fetch_add(1, Relaxed);
                        }
                        stats.sessions.fetch_add(1, Relaxed);
                        let meta = meta_json(&self.planned, &self.tenant);
                        let _ = client.try_publish(device_topic(&self.tenant, &id, "meta"), QoS::AtLeastOnce, true, meta);
                        let _ = client.try_publish(status.clone(), QoS::AtLeastOnce, true, "online");
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // The driver retries.
                        if std::mem::replace(connected, false) {
                            stats.connected.fetch_sub(1, Relaxed);
                        }
                    }
                },
                _ = tick.tick() => {
                    if controls.faults.generation() != generation {
                        return End::Reconnect; // dropped: no DISCONNECT
                    }
                    match controls.faults.get(index) {
                        Fault::Off => return End::Reconnect, // dropped: the will fires
                        Fault::Hung => {}
                        Fault::Garbage if *connected => {
                            let _ = client.try_publish(telemetry.clone(), QoS::AtMostOnce, false, &b"\xff\xfe{\"not\": json"[..]);
                        }
                        Fault::None if *connected => {
                            let now = crate::server::Clock::System.now_ms();
                            body.clear();
                            telemetry_json(&self.sim, now, controls.has_extra_field(index), &mut body);
                            match client.try_publish(telemetry.clone(), QoS::AtMostOnce, false, body.as_bytes()) {
                                Ok(()) => stats.published.fetch_add(1, Relaxed),
                                Err(_) => stats.dropped.fetch_add(1, Relaxed),
                            };
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
