//! An in-test stand-in for the embedded broker: an `MqttLinkFactory` whose
//! links the face feeds with client events and publishes, and whose
//! "restart" closes the current link (the driver reopens it).

use std::sync::{Arc, Mutex};

use fieldlink_gateway::driver::{MqttLinkFactory, Resources};
use fieldlink_model::mqtt::{ClientInfo, MqttEvent, MqttLink, MqttPublish, OutgoingPublish};
use tokio::sync::mpsc;

#[derive(Default)]
struct State {
    events: Option<mpsc::Sender<MqttEvent>>,
    publishes: Option<mpsc::Receiver<OutgoingPublish>>,
    generation: u64,
}

/// The broker side of the links handed out.
#[derive(Clone, Default)]
pub struct FakeBroker {
    state: Arc<Mutex<State>>,
    /// The tenant clients belong to.
    pub tenant: Arc<str>,
}

impl FakeBroker {
    pub fn new(tenant: &str) -> FakeBroker {
        FakeBroker {
            state: Arc::default(),
            tenant: tenant.into(),
        }
    }

    /// Resources with this broker as the embedded one.
    pub fn resources(&self) -> Resources {
        let state = self.state.clone();
        let factory: MqttLinkFactory = Arc::new(move |_tenant: Option<&str>| {
            let (events_tx, events) = mpsc::channel(4096);
            let (publish, publishes) = mpsc::channel(1024);
            let mut s = state.lock().unwrap();
            s.events = Some(events_tx);
            s.publishes = Some(publishes);
            s.generation += 1;
            MqttLink { events, publish }
        });
        Resources {
            embedded_mqtt: Some(factory),
        }
    }

    /// The current link's sender and generation (a new one after a restart).
    pub fn current(&self) -> Option<(mpsc::Sender<MqttEvent>, u64)> {
        let s = self.state.lock().unwrap();
        s.events.clone().map(|tx| (tx, s.generation))
    }

    /// What the driver published on the current link since last asked.
    pub fn take_published(&self) -> Vec<OutgoingPublish> {
        let mut s = self.state.lock().unwrap();
        let mut out = Vec::new();
        if let Some(rx) = s.publishes.as_mut() {
            while let Ok(p) = rx.try_recv() {
                out.push(p);
            }
        }
        out
    }

    /// The broker "restarts": the link closes.
    pub fn restart(&self) {
        let mut s = self.state.lock().unwrap();
        s.events = None;
        s.publishes = None;
    }

    pub fn client(&self, id: &str) -> ClientInfo {
        ClientInfo {
            client_id: id.into(),
            username: Some(id.into()),
            tenant: Some(self.tenant.clone()),
            time_unix_nano: fieldlink_model::now_unix_nanos(),
        }
    }

    pub fn publish(
        client: &ClientInfo,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> MqttEvent {
        MqttEvent::Publish(MqttPublish {
            client: Some(client.clone()),
            topic: topic.into(),
            payload: payload.into(),
            qos: 1,
            retain,
            received_unix_nano: fieldlink_model::now_unix_nanos(),
        })
    }
}
