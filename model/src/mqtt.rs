//! MQTT traffic as a broker hands it to the gateway's MQTT drivers.
//!
//! The MQTT JSON and Sparkplug B drivers read a plain, ordered stream of
//! [`MqttEvent`]s — who connected, who went away, what was published — and
//! may publish back ([`OutgoingPublish`]: Sparkplug rebirth commands, host
//! STATE). The stream comes from whoever terminates MQTT: the embedded
//! `fieldlink broker` in the same process (an [`MqttLink`] of channels, with
//! the client id and tenant of every message), an external broker such as
//! mosquitto or EMQX through an MQTT client (no client ids: online state then
//! comes from wills and status topics), or later the lean ingress for a
//! million connections. The broker and the gateway meet only through these
//! types.

use std::sync::Arc;

use prost::bytes::Bytes;
use tokio::sync::mpsc;

/// One thing that happened on a broker, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum MqttEvent {
    /// A client completed CONNECT (authenticated when the broker checks).
    Connected(ClientInfo),
    /// A client's connection ended.
    Disconnected {
        /// The client.
        client: ClientInfo,
        /// `true` when the client sent DISCONNECT; `false` for a lost
        /// connection (keep-alive timeout, reset), when its will fires.
        clean: bool,
        /// Why, for logs (`keep-alive timeout`, `taken over`, ...).
        reason: String,
    },
    /// A message was published.
    Publish(MqttPublish),
}

/// Who a client is, as the broker authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// MQTT client id.
    pub client_id: Arc<str>,
    /// User name it authenticated with, if any.
    pub username: Option<Arc<str>>,
    /// Tenant the broker assigned it to, if the broker has tenants.
    pub tenant: Option<Arc<str>>,
    /// When it happened, nanoseconds since the Unix epoch.
    pub time_unix_nano: i64,
}

/// A message as it arrived at the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttPublish {
    /// The publishing client; `None` when the source cannot tell (a message
    /// received from an external broker through a subscription).
    pub client: Option<ClientInfo>,
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS it was published with (0, 1 or 2).
    pub qos: u8,
    /// Retain flag (also set on retained messages delivered on subscribe).
    pub retain: bool,
    /// When the broker received it, nanoseconds since the Unix epoch.
    pub received_unix_nano: i64,
}

/// A message a driver publishes through the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPublish {
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS 0 or 1.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
}

/// An in-process link to a broker: its events in, publishes out.
#[derive(Debug)]
pub struct MqttLink {
    /// Events in order; closed when the broker stops.
    pub events: mpsc::Receiver<MqttEvent>,
    /// Publishes into the broker, as a client of the link's tenant would.
    pub publish: mpsc::Sender<OutgoingPublish>,
}
