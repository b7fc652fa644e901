//! An external broker through rumqttc: one client, its event loop in a task
//! of its own (so that a slow driver never starves keep-alive pings for
//! long, and publishes go through rumqttc's request queue).
//!
//! rumqttc reconnects when polled after an error; this task waits between
//! attempts (doubling backoff with jitter) and, on every CONNACK, queues the
//! subscriptions and then the driver's births ahead of any other request
//! (they go into the event loop's `pending` queue, which is sent first), so
//! the births are the first messages of every session.

use std::sync::Arc;
use std::time::Duration;

use fieldlink_model::mqtt::{MqttEvent, MqttPublish, OutgoingPublish};
use fieldlink_model::now_unix_nanos;
use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    NetworkOptions, Outgoing, Packet, Publish, QoS, Request, Subscribe, SubscribeFilter,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::{BrokerSettings, External};
use super::{Backoff, SourceError, SourceEvent, SourceOptions};

/// Events buffered between the client task and the driver.
const EVENT_QUEUE: usize = 1024;
/// Requests (publishes) buffered towards the event loop.
const REQUEST_QUEUE: usize = 256;

/// The driver's side of an external connection.
pub(super) struct Handle {
    pub(super) events: mpsc::Receiver<SourceEvent>,
    client: AsyncClient,
    stop: Option<oneshot::Sender<Vec<OutgoingPublish>>>,
    task: JoinHandle<()>,
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn to_publish(message: OutgoingPublish) -> Publish {
    let mut p = Publish::from_bytes(message.topic, qos(message.qos), message.payload);
    p.retain = message.retain;
    p
}

/// Starts the client task.
pub(super) fn start(
    settings: &BrokerSettings,
    target: &External,
    options: SourceOptions,
) -> Handle {
    let mut mqtt = MqttOptions::new(settings.client_id.clone(), target.host.clone(), target.port);
    mqtt.set_keep_alive(settings.keep_alive)
        .set_clean_session(settings.clean_session)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
        .set_request_channel_capacity(REQUEST_QUEUE);
    if let Some((user, password)) = &settings.credentials {
        mqtt.set_credentials(user.clone(), password.clone());
    }
    if let Some(will) = &options.will {
        mqtt.set_last_will(LastWill {
            topic: will.topic.clone(),
            message: will.payload.clone(),
            qos: qos(will.qos),
            retain: will.retain,
        });
    }
    if let Some(tls) = &target.tls {
        mqtt.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::clone(tls),
        )));
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, REQUEST_QUEUE);
    let mut network = NetworkOptions::new();
    network.set_connection_timeout(settings.connect_timeout.as_secs().max(1));
    eventloop.set_network_options(network);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(
        Client {
            eventloop,
            events: events_tx,
            options,
            backoff: Backoff::new(settings.reconnect),
            url: settings.url(),
        }
        .run(stopped),
    );
    Handle {
        events,
        client,
        stop: Some(stop),
        task,
    }
}

impl Handle {
    pub(super) fn try_publish(&self, message: OutgoingPublish) -> Result<(), SourceError> {
        let payload: Vec<u8> = message.payload.to_vec();
        self.client
            .try_publish(message.topic, qos(message.qos), message.retain, payload)
            .map_err(|e| match e {
                ClientError::TryRequest(_) => SourceError::Full,
                ClientError::Request(_) => SourceError::Closed,
            })
    }

    pub(super) async fn close(mut self, farewell: Vec<OutgoingPublish>, timeout: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(farewell);
        }
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Dropped without `close`: the task sees its stop channel close.
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

struct Client {
    eventloop: EventLoop,
    events: mpsc::Sender<SourceEvent>,
    options: SourceOptions,
    backoff: Backoff,
    url: String,
}

enum Step {
    Continue,
    Stop(Vec<OutgoingPublish>),
    Gone,
}

impl Client {
    async fn run(mut self, mut stopped: oneshot::Receiver<Vec<OutgoingPublish>>) {
        let mut up = false;
        loop {
            let polled = tokio::select! {
                biased;
                farewell = &mut stopped => {
                    let farewell = farewell.unwrap_or_default();
                    if up {
                        self.say_goodbye(farewell).await;
                    }
                    return;
                }
                polled = self.eventloop.poll() => polled,
            };
            let step = match polled {
                Ok(event) => self.handle(event, &mut up, &mut stopped).await,
                Err(e) => self.lost(e, &mut up, &mut stopped).await,
            };
            match step {
                Step::Continue => {}
                Step::Gone => return,
                Step::Stop(farewell) => {
                    if up {
                        self.say_goodbye(farewell).await;
                    }
                    return;
                }
            }
        }
    }

    async fn handle(
        &mut self,
        event: Event,
        up: &mut bool,
        stopped: &mut oneshot::Receiver<Vec<OutgoingPublish>>,
    ) -> Step {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                let filters: Vec<SubscribeFilter> = self
                    .options
                    .subscriptions
                    .iter()
                    .map(|s| SubscribeFilter::new(s.filter.clone(), qos(s.qos)))
                    .collect();
                if !filters.is_empty() {
                    let subscribe = Subscribe::new_many(filters);
                    self.eventloop
                        .pending
                        .push_back(Request::Subscribe(subscribe));
                }
                for birth in &self.options.births {
                    self.eventloop
                        .pending
                        .push_back(Request::Publish(to_publish(birth.clone())));
                }
                *up = true;
                self.backoff.reset();
                tracing::info!(broker = %self.url, "connected to the MQTT broker");
                emit(&self.events, SourceEvent::Up, stopped).await
            }
            Event::Incoming(Packet::Publish(p)) => {
                let publish = MqttPublish {
                    client: None,
                    topic: Arc::from(p.topic),
                    payload: p.payload,
                    qos: p.qos as u8,
                    retain: p.retain,
                    received_unix_nano: now_unix_nanos(),
                };
                emit(
                    &self.events,
                    SourceEvent::Mqtt(MqttEvent::Publish(publish)),
                    stopped,
                )
                .await
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                    .count();
                if refused > 0 {
                    tracing::error!(broker = %self.url, refused, "the broker refused subscriptions (check its ACL)");
                }
                Step::Continue
            }
            _ => Step::Continue,
        }
    }

    async fn lost(
        &mut self,
        error: ConnectionError,
        up: &mut bool,
        stopped: &mut oneshot::Receiver<Vec<OutgoingPublish>>,
    ) -> Step {
        let reason = format!("MQTT broker {}: {error}", self.url);
        if std::mem::replace(up, false) {
            tracing::warn!("{reason}");
            match emit(&self.events, SourceEvent::Down { reason }, stopped).await {
                Step::Continue => {}
                other => return other,
            }
        } else {
            tracing::debug!("{reason}");
        }
        let delay = self.backoff.next_delay();
        tokio::select! {
            biased;
            farewell = stopped => Step::Stop(farewell.unwrap_or_default()),
            () = tokio::time::sleep(delay) => Step::Continue,
        }
    }

    /// Publishes the farewell messages, then DISCONNECT, and polls until the
    /// DISCONNECT is written (bounded by the caller's timeout).
    async fn say_goodbye(&mut self, farewell: Vec<OutgoingPublish>) {
        for message in farewell {
            self.eventloop
                .pending
                .push_back(Request::Publish(to_publish(message)));
        }
        self.eventloop
            .pending
            .push_back(Request::Disconnect(rumqttc::Disconnect));
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        let _ = drained.await;
    }
}

/// Sends `event` unless the driver stops first. A free function: the
/// client (its event loop) is not `Sync`, so no `&Client` may live across
/// an await.
async fn emit(
    events: &mpsc::Sender<SourceEvent>,
    event: SourceEvent,
    stopped: &mut oneshot::Receiver<Vec<OutgoingPublish>>,
) -> Step {
    tokio::select! {
        biased;
        farewell = stopped => Step::Stop(farewell.unwrap_or_default()),
        sent = events.send(event) => if sent.is_ok() { Step::Continue } else { Step::Gone },
    }
}
