//! mosquitto's own figures: a client of the bench subscribed to
//! `$SYS/broker/#`, keeping the latest value of each topic and when it
//! arrived. mosquitto publishes a `$SYS` topic every `sys_interval` (1 s
//! here) when its value changed, so a value's arrival time is, within a
//! loopback hop, when mosquitto read it: a rate between two values is the
//! difference over their arrival times.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;

/// PUBLISH packets received from clients.
pub(crate) const MESSAGES_RECEIVED: &str = "$SYS/broker/publish/messages/received";
/// PUBLISH packets sent to clients.
pub(crate) const MESSAGES_SENT: &str = "$SYS/broker/publish/messages/sent";
/// Clients connected now.
pub(crate) const CLIENTS_CONNECTED: &str = "$SYS/broker/clients/connected";
/// Bytes received from clients.
pub(crate) const BYTES_RECEIVED: &str = "$SYS/broker/bytes/received";
/// The version string.
const VERSION: &str = "$SYS/broker/version";
/// Pause before the observer reconnects.
const RETRY: Duration = Duration::from_millis(250);

/// A `$SYS` value and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SysValue {
    /// The number.
    pub(crate) value: u64,
    /// When it arrived.
    pub(crate) at: Instant,
}

#[derive(Debug, Default)]
struct State {
    values: HashMap<String, SysValue>,
    version: Option<String>,
}

/// The observer client; dropping it disconnects.
#[derive(Debug)]
pub(crate) struct SysObserver {
    state: Arc<Mutex<State>>,
    consumed: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl SysObserver {
    /// Connects as `username` to mosquitto at `addr` and subscribes to
    /// `$SYS/broker/#` (on every session).
    pub(crate) fn start(addr: SocketAddr, username: &str, password: &str) -> SysObserver {
        Self::start_consuming(addr, username, password, None)
    }

    /// Also subscribes to `consume` (QoS 0) and counts what arrives on it,
    /// as the consumer of a broker's messages: a broker that delivers does
    /// the work a broker that drops does not.
    pub(crate) fn start_consuming(
        addr: SocketAddr,
        username: &str,
        password: &str,
        consume: Option<&str>,
    ) -> SysObserver {
        let consume = consume.map(str::to_owned);
        let consumed = Arc::new(AtomicU64::new(0));
        let taken = consumed.clone();
        let mut options = MqttOptions::new(username, addr.ip().to_string(), addr.port());
        options
            .set_credentials(username, password)
            .set_keep_alive(Duration::from_secs(10));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe("$SYS/broker/#", QoS::AtMostOnce);
                        if let Some(filter) = &consume {
                            let _ = client.try_subscribe(filter.as_str(), QoS::AtMostOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if !p.topic.starts_with("$SYS/") => {
                        taken.fetch_add(1, Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let text = String::from_utf8_lossy(&p.payload);
                        let mut state = lock(&shared);
                        if p.topic == VERSION {
                            state.version = Some(text.trim().to_owned());
                        } else if let Ok(value) = text.trim().parse::<u64>() {
                            state.values.insert(
                                p.topic,
                                SysValue {
                                    value,
                                    at: Instant::now(),
                                },
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(RETRY).await,
                }
            }
        });
        SysObserver {
            state,
            consumed,
            task,
        }
    }

    /// Messages that arrived on the `consume` filter so far.
    pub(crate) fn consumed(&self) -> u64 {
        self.consumed.load(Relaxed)
    }

    /// The latest value of `topic`.
    pub(crate) fn get(&self, topic: &str) -> Option<SysValue> {
        lock(&self.state).values.get(topic).copied()
    }

    /// mosquitto's version string, once it arrived.
    pub(crate) fn version(&self) -> Option<String> {
        lock(&self.state).version.clone()
    }

    /// Waits until `topic` holds a value that `ok` accepts; returns it, or
    /// the last value (if any) after `timeout`.
    pub(crate) async fn wait_for(
        &self,
        topic: &str,
        timeout: Duration,
        ok: impl Fn(u64) -> bool,
    ) -> Result<SysValue, Option<SysValue>> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.get(topic);
            if let Some(v) = value.filter(|v| ok(v.value)) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(value);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SysObserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding it only loses figures.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
