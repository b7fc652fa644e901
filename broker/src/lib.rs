//! The Fieldlink MQTT broker: rumqttd's router behind a front end of our own.
//!
//! rumqttd has no ACL hook, no connection events and does not tell who
//! published a forwarded message, so it is used as the pub/sub router only
//! (no rumqttd listener runs) and this crate terminates MQTT itself:
//!
//! ```text
//!  TCP / TLS listener ──► connection task ──► router link ──► rumqttd router ──► subscribers
//!  (accept only:          CONNECT, auth,     (one per          (commit logs,       (their own
//!   permit, backoff)      ACL, QoS, will)     client)           retained)           router links)
//!                               │
//!                               └──► in-process links (MqttEvent: Connected, Publish, Disconnected)
//!                                      ▲ ... and OutgoingPublish back, as a service of the tenant
//! ```
//!
//! - [`Broker::run`] takes listeners the caller bound and a shutdown future.
//!   The accept loops only accept: a connection slot first (past
//!   `limits.max_connections` the socket is closed at once and counted),
//!   backing off on errors. The TLS handshake and the wait for CONNECT run in
//!   the connection's own task, under `limits.connect_timeout`.
//! - [`connection`] (per client): [`frame`] decodes packets with rumqttd's
//!   v4/v5 codecs after checking the declared length; [`auth`] checks the
//!   password hash; [`acl`] expands the tenant's patterns for the client and
//!   checks every publish, subscription and will; the client gets a router
//!   link of its own (`rumqttd::Broker::link`). A second connection with the
//!   same client id (in the same tenant) takes over: the first is closed and
//!   its events emitted before the new one's.
//! - [`links`]: [`BrokerHandle::link`] gives an [`MqttLink`] of one tenant's
//!   (or every tenant's) events, in order, with backpressure; what a driver
//!   publishes on it goes through the service ACL into the router.
//! - [`metrics`]: Prometheus text on `/metrics`, `/healthz`.
//! - [`config`]: the TOML file and its validation; [`tls`] the rustls server
//!   configuration; [`certs`] test certificates for `fieldlink certs`.
//!
//! - [`ingress`]: the lean device ingress, a separate MQTT termination for
//!   very many telemetry connections (no router, no subscriptions), run as
//!   `SO_REUSEPORT` shard processes that feed the same in-process links.
//!
//! Sessions are not persisted (every CONNACK says session present 0) and the
//! router forwards at the subscription's granted QoS (at most 1).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod accept;
pub mod acl;
pub mod auth;
pub mod certs;
pub mod config;
mod connection;
pub mod error;
pub mod frame;
pub mod ingress;
pub mod links;
pub mod metrics;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldlink_model::mqtt::MqttLink;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::{BrokerConfig, Settings};
pub use error::{BrokerError, CertsError, ConfigError, TlsError};
pub use links::LinkFilter;
pub use metrics::{Metrics, Refusal};

use acl::{ClientAcl, Identity};

/// How long a stopping broker waits for its connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Router connections kept beyond `limits.max_connections`: in-process
/// links and connections being taken over.
const ROUTER_SPARE: usize = 1024;

/// Connections the kernel queues for an MQTT listener before they are
/// accepted (capped by `net.core.somaxconn`, 4096 on current kernels): a
/// fleet reconnecting at once after a restart overflows tokio's default of
/// 1024, and every dropped SYN costs its client a second or more.
const MQTT_BACKLOG: u32 = 4096;
/// The same for `/metrics`.
const HTTP_BACKLOG: u32 = 128;

/// The listeners the broker serves; the caller binds them (port 0 in tests).
#[derive(Debug)]
pub struct Listeners {
    /// MQTT over TCP.
    pub mqtt: TcpListener,
    /// MQTT over TLS (needs `[tls]` in the settings).
    pub tls: Option<TcpListener>,
    /// `/metrics` and `/healthz`.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `settings`.
    ///
    /// # Errors
    /// `BrokerError::Listen` naming the address.
    pub async fn bind(settings: &Settings) -> Result<Listeners, BrokerError> {
        let bind = |addr, backlog| bind_listener(addr, backlog, false);
        Ok(Listeners {
            mqtt: bind(settings.listen, MQTT_BACKLOG)?,
            tls: match &settings.tls {
                Some(t) => Some(bind(t.listen, MQTT_BACKLOG)?),
                None => None,
            },
            metrics: match settings.metrics {
                Some(addr) => Some(bind(addr, HTTP_BACKLOG)?),
                None => None,
            },
        })
    }
}

/// Binds and listens on `addr` with `backlog`; with `reuse_port`, other
/// processes may bind it too (the ingress's shards).
pub(crate) fn bind_listener(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> Result<TcpListener, BrokerError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if reuse_port {
            socket.set_reuseport(true)?;
        }
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    listen().map_err(|source| BrokerError::Listen { addr, source })
}

/// The end of a stop, after the accept loops ended and the connections were
/// told: waits up to [`DRAIN_TIMEOUT`] for the connection tasks, ends the
/// links, then waits for the metrics server.
pub(crate) async fn drain(
    tasks: &TaskTracker,
    links: &links::Links,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    who: &str,
) {
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "{who} connections still closing after the drain timeout"
        );
    }
    links.clear();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
}

/// A live connection holding a (tenant, client id).
#[derive(Debug, Clone)]
struct Session {
    conn: u64,
    kick: CancellationToken,
    finished: CancellationToken,
}

/// What every task of the broker shares.
struct Shared {
    settings: Settings,
    router: Arc<rumqttd::Broker>,
    metrics: Arc<Metrics>,
    links: links::Links,
    sessions: Mutex<HashMap<(Arc<str>, String), Session>>,
    auth_slots: Semaphore,
    stop: CancellationToken,
    tasks: TaskTracker,
    next_conn: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("listen", &self.settings.listen)
            .field("stopped", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// The broker, before it runs: take [`Broker::handle`]s (and links from
/// them) first, then [`Broker::run`].
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
}

/// A cheap handle to a broker: in-process links and metrics.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
}

impl Broker {
    /// Starts the rumqttd router (a thread of its own) for validated
    /// settings. Needs no runtime; nothing listens until [`Broker::run`].
    pub fn new(settings: Settings) -> Broker {
        let router = rumqttd::Config {
            router: rumqttd::RouterConfig {
                max_connections: settings.limits.max_connections + ROUTER_SPARE,
                max_outgoing_packet_count: 200,
                max_segment_size: settings.router.segment_bytes,
                max_segment_count: settings.router.segments,
                // Without a filter matching a topic, the router drops the
                // publisher's link; `#` matches every topic we let through.
                initialized_filters: Some(vec!["#".to_owned()]),
                ..rumqttd::RouterConfig::default()
            },
            ..rumqttd::Config::default()
        };
        let router = Arc::new(rumqttd::Broker::new(router));
        let auth_slots = Semaphore::new(settings.limits.auth_concurrency);
        Broker {
            shared: Arc::new(Shared {
                settings,
                router,
                metrics: Arc::new(Metrics::default()),
                links: links::Links::default(),
                sessions: Mutex::new(HashMap::new()),
                auth_slots,
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                next_conn: AtomicU64::new(1),
            }),
        }
    }

    /// A handle for links and metrics; valid before and while it runs.
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` completes: then closes the listeners,
    /// disconnects every client (no wills: they did not lose their
    /// connection, the broker went), ends the links, and waits up to 5 s
    /// for the connection tasks.
    ///
    /// (rumqttd's router thread has no stop; it stays idle, holding no
    /// connection.)
    ///
    /// # Errors
    /// None yet; the `Result` is for listeners that fail for good.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BrokerError> {
        let shared = self.shared;
        let slots = Arc::new(Semaphore::new(shared.settings.limits.max_connections));
        let mut loops = Vec::new();
        loops.push(tokio::spawn(accept_loop(
            listeners.mqtt,
            None,
            shared.clone(),
            slots.clone(),
        )));
        match (listeners.tls, &shared.settings.tls) {
            (Some(listener), Some(tls)) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
                loops.push(tokio::spawn(accept_loop(
                    listener,
                    Some(acceptor),
                    shared.clone(),
                    slots.clone(),
                )));
            }
            (Some(_), None) => {
                tracing::warn!("a TLS listener was given without [tls] settings; not served");
            }
            _ => {}
        }
        let metrics_task = listeners
            .metrics
            .map(|listener| metrics::serve(listener, shared.metrics.clone(), shared.stop.clone()));

        shutdown.await;
        tracing::info!("broker stopping");
        shared.stop.cancel();
        for l in loops {
            let _ = l.await;
        }
        crate::drain(&shared.tasks, &shared.links, metrics_task, "broker").await;
        tracing::info!("broker stopped");
        Ok(())
    }
}

impl BrokerHandle {
    /// An in-process link: events of the clients of `filter.tenant` (every
    /// tenant's for `None`) in order, and a sender whose publishes enter the
    /// broker as a service client of that tenant (service ACL; QoS 0 or 1).
    /// Several links may exist at once; each gets every matching event.
    /// When its `events` is full, publishing clients wait. The events end
    /// when the broker stops; dropping the link's receiver unregisters it.
    ///
    /// # Errors
    /// `UnknownTenant` for a tenant the settings lack; `Stopped` after the
    /// broker stopped.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns the link's publish task).
    pub fn link(&self, filter: LinkFilter) -> Result<MqttLink, BrokerError> {
        let shared = &self.shared;
        if shared.stop.is_cancelled() {
            return Err(BrokerError::Stopped);
        }
        let (tenant, acl) = match &filter.tenant {
            Some(name) => {
                let tenant = shared
                    .settings
                    .tenants
                    .get(name.as_str())
                    .ok_or_else(|| BrokerError::UnknownTenant(name.clone()))?;
                (Some(tenant.name.clone()), Some(tenant.service.clone()))
            }
            None => (None, None),
        };
        let capacity = shared.settings.limits.link_capacity;
        let (publish, publish_rx) = mpsc::channel(capacity);
        let (id, events) = shared.links.add(tenant.clone(), capacity);
        let client_id = format!("fieldlink-link-{id}");
        let acl = match acl {
            Some(patterns) => patterns.expand(&Identity {
                username: None,
                client_id: Some(&client_id),
                tenant: tenant.as_deref(),
            }),
            None => ClientAcl::allow_all(),
        };
        let publisher = links::LinkPublisher {
            id,
            tenant,
            acl,
            rx: publish_rx,
        };
        shared.tasks.spawn(publisher.run(shared.clone()));
        Ok(MqttLink { events, publish })
    }

    /// The broker's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }
}

/// Accepts connections until the broker stops. Only accepts: the TLS
/// handshake and CONNECT happen in the connection's task.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
) {
    let metrics = shared.metrics.clone();
    let stop = shared.stop.clone();
    accept::accept_loop(listener, slots, metrics, stop, |stream, peer, permit| {
        let deadline = Instant::now() + shared.settings.limits.connect_timeout;
        let span = tracing::info_span!("mqtt", %peer, client_id = tracing::field::Empty);
        let task_shared = shared.clone();
        let tls = tls.clone();
        shared.tasks.spawn(
            async move {
                serve(stream, peer, tls, deadline, task_shared).await;
                drop(permit);
            }
            .instrument(span),
        );
    })
    .await;
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    deadline: Instant,
    shared: Arc<Shared>,
) {
    let Some(acceptor) = tls else {
        return connection::serve(stream, peer, deadline, shared).await;
    };
    let handshake = tokio::select! {
        _ = shared.stop.cancelled() => return,
        handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => connection::serve(stream, peer, deadline, shared).await,
        Ok(Err(e)) => {
            shared.metrics.refuse(Refusal::TlsHandshake);
            tracing::info!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shared.metrics.refuse(Refusal::ConnectTimeout);
            tracing::info!(%peer, "TLS handshake not done in time");
        }
    }
}
