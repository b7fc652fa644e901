//! MQTT plumbing shared by the MQTT JSON and Sparkplug B drivers: one
//! ordered stream of [`MqttEvent`]s and a way to publish, whichever broker
//! the driver is configured for.
//!
//! - **Embedded** (`broker = "embedded"`): the process provides an
//!   [`MqttLinkFactory`] ([`Resources::embedded_mqtt`]); the source opens a
//!   link for the configured tenant and reads it directly (client ids,
//!   connection events and tenants included). A link that closes is
//!   reported [`SourceEvent::Down`] and reopened with backoff.
//! - **External** (`mqtt://`, `mqtts://`): [`external`] runs a rumqttc
//!   client in a task of its own — clean session, credentials, keep-alive,
//!   the driver's Last Will, TLS through rustls, reconnect with backoff —
//!   and subscribes again on every new session. Messages carry no client:
//!   online state then comes from status topics and wills (MQTT JSON) or
//!   births and deaths (Sparkplug).
//!
//! On every new session the source subscribes, then publishes the driver's
//! *birth* messages (a Sparkplug host's STATE), before anything else, and
//! reports [`SourceEvent::Up`]. [`MqttSource::close`] publishes farewell
//! messages and disconnects cleanly, so the broker does not fire the will.
//! [`LogLimiter`] keeps logs of hostile input bounded.

pub mod config;
mod external;

use std::time::Duration;

use fieldlink_model::mqtt::{MqttEvent, MqttLink, OutgoingPublish};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use config::{BrokerSection, BrokerSettings, Target};

use super::{MqttLinkFactory, Resources};

/// What the source reports, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// A session with the broker is up, subscriptions and births sent.
    Up,
    /// The session is gone; a new one is being attempted.
    Down {
        /// Why, for logs and status reasons.
        reason: String,
    },
    /// Something happened on the broker.
    Mqtt(MqttEvent),
}

/// A topic filter to subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The filter (`+` and `#` allowed).
    pub filter: String,
    /// QoS 0, 1 or 2.
    pub qos: u8,
}

/// What a driver asks of its source.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Filters subscribed on every new session (an external broker only:
    /// the embedded link hands over everything of its tenant).
    pub subscriptions: Vec<Subscription>,
    /// The client's Last Will at an external broker.
    pub will: Option<OutgoingPublish>,
    /// Published on every new session, after subscribing and before
    /// anything else.
    pub births: Vec<OutgoingPublish>,
}

/// Why a source cannot start or publish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// `broker = "embedded"` but this process runs no embedded broker.
    #[error(
        "broker = \"embedded\" but this process has no embedded broker (run the gateway with `fieldlink broker` or `fieldlink demo`)"
    )]
    NoEmbeddedBroker,
    /// The outgoing queue is full (the broker is slow or gone).
    #[error("the outgoing queue to the broker is full")]
    Full,
    /// The session is being torn down.
    #[error("the broker connection is closed")]
    Closed,
}

enum Inner {
    Link {
        factory: MqttLinkFactory,
        tenant: Option<String>,
        link: Option<MqttLink>,
        reopen_at: Instant,
        backoff: Backoff,
    },
    External(external::Handle),
}

/// One broker connection as a stream of events; see the module docs.
pub struct MqttSource {
    inner: Inner,
    births: Vec<OutgoingPublish>,
}

impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            Inner::Link { .. } => "embedded",
            Inner::External(_) => "external",
        };
        f.debug_struct("MqttSource").field("kind", &kind).finish()
    }
}

impl MqttSource {
    /// Opens the source: an external connection starts in the background,
    /// an embedded link opens on the first [`MqttSource::next`].
    ///
    /// # Errors
    /// [`SourceError::NoEmbeddedBroker`].
    pub fn start(
        settings: &BrokerSettings,
        options: SourceOptions,
        resources: &Resources,
    ) -> Result<MqttSource, SourceError> {
        let inner = match &settings.target {
            Target::Embedded => Inner::Link {
                factory: resources
                    .embedded_mqtt
                    .clone()
                    .ok_or(SourceError::NoEmbeddedBroker)?,
                tenant: settings.tenant.clone(),
                link: None,
                reopen_at: Instant::now(),
                backoff: Backoff::new(settings.reconnect),
            },
            Target::External(target) => {
                Inner::External(external::start(settings, target, options.clone()))
            }
        };
        Ok(MqttSource {
            inner,
            births: options.births,
        })
    }

    /// The next event; `None` once the source has stopped for good (an
    /// external client's task ended).
    ///
    /// # Cancel safety
    /// Cancel-safe: no event is lost when the future is dropped.
    pub async fn next(&mut self) -> Option<SourceEvent> {
        match &mut self.inner {
            Inner::External(handle) => handle.events.recv().await,
            Inner::Link {
                factory,
                tenant,
                link,
                reopen_at,
                backoff,
            } => {
                if let Some(open) = link {
                    return match open.events.recv().await {
                        Some(event) => {
                            backoff.reset();
                            Some(SourceEvent::Mqtt(event))
                        }
                        None => {
                            *link = None;
                            *reopen_at = Instant::now() + backoff.next_delay();
                            Some(SourceEvent::Down {
                                reason: "the embedded broker closed the link".to_owned(),
                            })
                        }
                    };
                }
                tokio::time::sleep_until(*reopen_at).await;
                let opened = factory(tenant.as_deref());
                for birth in &self.births {
                    if opened.publish.try_send(birth.clone()).is_err() {
                        tracing::warn!(topic = %birth.topic, "cannot publish a birth message into the embedded broker");
                    }
                }
                *link = Some(opened);
                Some(SourceEvent::Up)
            }
        }
    }

    /// Publishes without waiting.
    ///
    /// # Errors
    /// [`SourceError::Full`] when the queue is full, [`SourceError::Closed`]
    /// when there is no session.
    pub fn try_publish(&self, message: OutgoingPublish) -> Result<(), SourceError> {
        match &self.inner {
            Inner::External(handle) => handle.try_publish(message),
            Inner::Link { link, .. } => match link {
                Some(link) => link.publish.try_send(message).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => SourceError::Full,
                    mpsc::error::TrySendError::Closed(_) => SourceError::Closed,
                }),
                None => Err(SourceError::Closed),
            },
        }
    }

    /// Publishes `farewell` (a Sparkplug host's offline STATE) and
    /// disconnects cleanly, waiting at most `timeout`.
    pub async fn close(self, farewell: Vec<OutgoingPublish>, timeout: Duration) {
        match self.inner {
            Inner::External(handle) => handle.close(farewell, timeout).await,
            Inner::Link { link, .. } => {
                if let Some(link) = link {
                    for message in farewell {
                        let sent = tokio::time::timeout(timeout, link.publish.send(message)).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Doubling delays with jitter between `min` and `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new((min, max): (Duration, Duration)) -> Backoff {
        Backoff {
            min,
            max,
            current: Duration::ZERO,
        }
    }

    /// The next delay: `min` the first time, then doubling, each with up to
    /// 25 % jitter.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.current = if self.current.is_zero() {
            self.min
        } else {
            (self.current * 2).min(self.max)
        };
        let jitter = self.current.mul_f64(rand::random::<f64>() * 0.25);
        (self.current + jitter).min(self.max.max(self.min))
    }

    pub(crate) fn reset(&mut self) {
        self.current = Duration::ZERO;
    }
}

/// Lets through at most `burst` log lines per `window` and counts the rest,
/// so that a device sending garbage in a loop cannot flood the log.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    window: Duration,
    burst: u32,
    started: Instant,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// At most `burst` lines per `window`.
    pub fn new(window: Duration, burst: u32) -> LogLimiter {
        LogLimiter {
            window,
            burst,
            started: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a line may be logged now, `n` the lines suppressed
    /// since the last one that was; `None` when this one is suppressed.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if now.duration_since(self.started) >= self.window {
            self.started = now;
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl Default for LogLimiter {
    /// Ten lines per ten seconds.
    fn default() -> Self {
        LogLimiter::new(Duration::from_secs(10), 10)
    }
}

/// Whether a topic name (no wildcards) matches an MQTT filter.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fieldlink_model::mqtt::{ClientInfo, MqttPublish};

    use super::*;

    #[test]
    fn filters_match_like_a_broker() {
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("#", "a"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(!filter_matches("a/b", "a/c"));
        assert!(filter_matches("spBv1.0/STATE/+", "spBv1.0/STATE/h"));
    }

    #[test]
    fn the_limiter_bounds_lines_per_window() {
        let mut l = LogLimiter::new(Duration::from_secs(3600), 2);
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        l.started -= Duration::from_secs(3601);
        assert_eq!(l.allow(), Some(2), "says how many it swallowed");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let mut b = Backoff::new((Duration::from_millis(100), Duration::from_millis(350)));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
        let _ = b.next_delay();
        assert!(b.next_delay() <= Duration::from_millis(350));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[tokio::test]
    async fn an_embedded_link_is_read_and_reopened_when_it_closes() {
        let (events_tx, events_rx) = mpsc::channel(8);
        let (publish_tx, mut publish_rx) = mpsc::channel(8);
        let slot = Arc::new(std::sync::Mutex::new(Some(MqttLink {
            events: events_rx,
            publish: publish_tx,
        })));
        let opened = Arc::new(std::sync::Mutex::new(Vec::new()));
        let factory: MqttLinkFactory = {
            let slot = slot.clone();
            let opened = opened.clone();
            Arc::new(move |tenant: Option<&str>| {
                opened.lock().unwrap().push(tenant.map(str::to_owned));
                slot.lock().unwrap().take().unwrap_or_else(|| {
                    let (_tx, events) = mpsc::channel(1);
                    let (publish, _rx) = mpsc::channel(1);
                    MqttLink { events, publish }
                })
            })
        };
        let settings = BrokerSection {
            tenant: Some("acme".into()),
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(20),
            ..toml::from_str("broker = \"embedded\"").unwrap()
        }
        .validate("mqtt")
        .unwrap();
        let birth = OutgoingPublish {
            topic: "spBv1.0/STATE/h".into(),
            payload: "{}".into(),
            qos: 1,
            retain: true,
        };
        let resources = Resources {
            embedded_mqtt: Some(factory),
        };
        let options = SourceOptions {
            births: vec![birth.clone()],
            ..SourceOptions::default()
        };
        let mut source = MqttSource::start(&settings, options, &resources).unwrap();
        assert_eq!(source.next().await, Some(SourceEvent::Up));
        assert_eq!(publish_rx.recv().await, Some(birth));
        let publish = MqttEvent::Publish(MqttPublish {
            client: Some(ClientInfo {
                client_id: "d1".into(),
                username: None,
                tenant: Some("acme".into()),
                time_unix_nano: 1,
            }),
            topic: "acme/d1/telemetry".into(),
            payload: "{}".into(),
            qos: 0,
            retain: false,
            received_unix_nano: 1,
        });
        events_tx.send(publish.clone()).await.unwrap();
        assert_eq!(source.next().await, Some(SourceEvent::Mqtt(publish)));
        drop(events_tx);
        assert!(matches!(
            source.next().await,
            Some(SourceEvent::Down { .. })
        ));
        assert_eq!(source.next().await, Some(SourceEvent::Up), "reopened");
        assert_eq!(
            *opened.lock().unwrap(),
            [Some("acme".to_owned()), Some("acme".to_owned())]
        );
    }
}
