//! The lean device ingress: MQTT 3.1.1 and 5 terminated for very many,
//! mostly idle device connections, feeding in-process links exactly like
//! the broker's ([`crate::BrokerHandle::link`]), so the gateway's MQTT
//! drivers read it as their embedded broker.
//!
//! ```text
//!  SO_REUSEPORT listener ──► accept loop ──► one task per connection ──► links (MqttEvent)
//!  (shared by every shard    (slot first)     CONNECT, auth, ACL, QoS 0/1/2,     Connected, Publish,
//!   process on the port)                      keep-alive, will                   Disconnected
//! ```
//!
//! It is not a broker: nothing can be subscribed (SUBSCRIBE is answered
//! with refusals) and nothing is routed back to devices; what a link
//! publishes is dropped and counted. Commands, Sparkplug and general
//! pub/sub stay on the rumqttd broker. In exchange an idle connection costs
//! only its task (136 bytes of state awaiting nothing but the socket's
//! readiness: no buffer, no stack, no timer; reads and their handling run
//! in boxed futures, and a heap buffer exists only while a packet is split
//! across reads), the socket's registration, and its `Presence`, which
//! the session table points to. Keep-alives are one timer per shard, which
//! looks only at connections whose silence may have run out (deadlines.rs);
//! takeovers, keep-alive drops and shutdown wake a connection by shutting
//! its socket's read side. Measured: 0.87 KB of RSS per idle connection
//! (15 000 on one shard).
//!
//! - Auth and ACL are the broker's: the same `[[users]]` (a fleet may share
//!   one user per tenant with `client_id_must_match = false`; the device's
//!   identity is then its client id, `%c` in the tenant's patterns), the
//!   same tenant patterns, checked per publish without expanding them.
//! - A second connection with the same (tenant, client id) takes over;
//!   the first's `Disconnected` is emitted before the second's `Connected`.
//! - A client silent for 1.5× its keep-alive is dropped and its will
//!   published; so is one whose connection is lost without DISCONNECT.
//! - Bad input (malformed packets, declared lengths over
//!   `limits.max_packet_size`, forbidden packets) closes only that
//!   connection, with an MQTT 5 reason code where the version has one, a
//!   refusal counted by reason and a log line (rate-limited).
//!
//! - The shard's metrics server also answers `GET /clients/{tenant}/{id}`
//!   from the session table (`clients.rs`), for checks against a manifest.
//!
//! [`shard`] binds the shared port; `fieldlink broker` starts and
//! supervises the shard processes.

mod clients;
pub mod codec;
mod deadlines;
mod session;
pub mod shard;
mod table;

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldlink_model::mqtt::{ClientInfo, MqttEvent, MqttLink, OutgoingPublish};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::BrokerError;
use crate::acl::AclPatterns;
use crate::config::{Role, Settings};
use crate::links::{LinkFilter, Links};
use crate::metrics::Metrics;
use deadlines::Deadlines;
use table::SessionTable;

/// How long a new connection waits for the one it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Refusal log lines per second, beyond which they are only counted.
const LOG_LINES_PER_SEC: u64 = 20;
/// How often the shard looks for clients silent past their keep-alive.
const KEEP_ALIVE_SWEEP: Duration = Duration::from_millis(250);

/// Why a connection was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kick {
    /// Not told.
    None = 0,
    /// Its client id connected again.
    TakenOver = 1,
    /// The ingress stops.
    Shutdown = 2,
    /// Silent for 1.5× its keep-alive.
    KeepAlive = 3,
}

/// A connected client, as its task, the session table and whoever stops it
/// see it. An idle connection waits only for its socket to be readable:
/// being told to stop (taken over, keep-alive, shutdown) is a reason stored
/// here and the read side of its socket shut, which wakes it.
#[derive(Debug)]
struct Presence {
    /// Who (the `Connected` event's client).
    info: ClientInfo,
    /// The connection's socket, open while it is in the session table.
    fd: RawFd,
    /// [`Kick`] as a byte: the first reason told wins.
    why: AtomicU8,
    /// When bytes last came, in milliseconds of the shard's clock.
    last_read_ms: AtomicU64,
    /// 1.5× the keep-alive granted, in milliseconds.
    silence_ms: u64,
    /// Its `Connected` was handed to the links (set and cleared under the
    /// links' lock, so a new link is told of it exactly once).
    announced: AtomicBool,
}

impl Presence {
    /// Tells the connection to stop. Only called with the session table
    /// locked and the connection in it, so `fd` is still its socket (a
    /// connection leaves the table before its socket closes).
    fn kick(&self, why: Kick) {
        if self
            .why
            .compare_exchange(Kick::None as u8, why as u8, Relaxed, Relaxed)
            .is_ok()
        {
            // SAFETY: shutdown(2) touches no memory; `fd` is open and this
            // connection's (see above), so no other socket is affected.
            unsafe {
                libc::shutdown(self.fd, libc::SHUT_RD);
            }
        }
    }

    fn kicked(&self) -> Kick {
        match self.why.load(Relaxed) {
            1 => Kick::TakenOver,
            2 => Kick::Shutdown,
            3 => Kick::KeepAlive,
            _ => Kick::None,
        }
    }
}

/// Log lines of refusals, at most [`LOG_LINES_PER_SEC`] a second.
#[derive(Debug, Default)]
struct LogBudget {
    second: AtomicU64,
    used: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// Whether a line may be logged now; a line saying how many were
    /// suppressed is logged first when a new second starts.
    fn allow(&self) -> bool {
        let now = fieldlink_model::now_unix_nanos().max(0) as u64 / 1_000_000_000;
        if self.second.swap(now, Relaxed) != now {
            self.used.store(0, Relaxed);
            let suppressed = self.suppressed.swap(0, Relaxed);
            if suppressed > 0 {
                tracing::info!(
                    suppressed,
                    "ingress refusals not logged in the last second (see fieldlink_broker_refusals_total)"
                );
            }
        }
        if self.used.fetch_add(1, Relaxed) < LOG_LINES_PER_SEC {
            true
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            false
        }
    }
}

/// What every connection of an ingress shares.
struct Shared {
    settings: Settings,
    metrics: Arc<Metrics>,
    links: Links,
    sessions: Mutex<SessionTable>,
    /// When each connection's keep-alive may run out.
    deadlines: Mutex<Deadlines>,
    /// Told when a connection leaves the session table (takeovers wait on it).
    released: Notify,
    /// The shard's clock for keep-alives.
    started: Instant,
    acls: HashMap<(Arc<str>, Role), Arc<AclPatterns>>,
    auth_slots: Semaphore,
    /// One permit per connection `max_connections` allows.
    conn_slots: Arc<Semaphore>,
    stop: CancellationToken,
    tasks: TaskTracker,
    next_conn: AtomicU64,
    log: LogBudget,
}

impl Shared {
    /// The keep-alive deadlines, locked.
    fn deadlines(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `presence`'s keep-alive (it has just joined the
    /// session table).
    fn watch_silence(&self, presence: &Arc<Presence>) {
        let due = self.now_ms().saturating_add(presence.silence_ms);
        self.deadlines().watch(due, Arc::downgrade(presence));
    }

    /// Milliseconds of the shard's clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Tells clients silent for 1.5× their keep-alive to stop, looking every
/// [`KEEP_ALIVE_SWEEP`] at those whose silence may have run out by then
/// ([`Deadlines`]), until the ingress stops: one timer for the shard
/// instead of one per connection, and no pass over every connection.
async fn sweep_keep_alive(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(KEEP_ALIVE_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = shared.now_ms();
        let due = shared.deadlines().take_due(now);
        if due.is_empty() {
            continue;
        }
        let mut later = Vec::new();
        {
            let sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            for weak in due {
                let Some(held) = weak.upgrade() else { continue };
                // Only a connection in the table is kicked: its fd is still
                // its socket (see `Presence::kick`).
                if !sessions
                    .holder(&held)
                    .is_some_and(|h| Arc::ptr_eq(h, &held))
                {
                    continue;
                }
                let until = held
                    .last_read_ms
                    .load(Relaxed)
                    .saturating_add(held.silence_ms);
                if now > until {
                    held.kick(Kick::KeepAlive);
                } else {
                    later.push((until, weak));
                }
            }
        }
        let mut deadlines = shared.deadlines();
        for (until, weak) in later {
            deadlines.watch(until, weak);
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("stopped", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// The lean ingress, before it runs: take [`Ingress::handle`]s (and links
/// from them) first, then [`Ingress::run`].
#[derive(Debug)]
pub struct Ingress {
    shared: Arc<Shared>,
}

/// A cheap handle to an ingress: in-process links and metrics.
#[derive(Debug, Clone)]
pub struct IngressHandle {
    shared: Arc<Shared>,
}

impl Ingress {
    /// An ingress for validated broker settings (users, tenants, limits)
    /// holding at most `max_connections` client connections.
    pub fn new(settings: Settings, max_connections: usize) -> Ingress {
        let mut acls = HashMap::new();
        for tenant in settings.tenants.values() {
            acls.insert(
                (tenant.name.clone(), Role::Device),
                Arc::new(tenant.device.clone()),
            );
            acls.insert(
                (tenant.name.clone(), Role::Service),
                Arc::new(tenant.service.clone()),
            );
        }
        let auth_slots = Semaphore::new(settings.limits.auth_concurrency);
        Ingress {
            shared: Arc::new(Shared {
                settings,
                metrics: Arc::new(Metrics::default()),
                links: Links::owner_tracked(),
                sessions: Mutex::new(SessionTable::default()),
                deadlines: Mutex::new(Deadlines::new(KEEP_ALIVE_SWEEP.as_millis() as u64)),
                released: Notify::new(),
                started: Instant::now(),
                acls,
                auth_slots,
                conn_slots: Arc::new(Semaphore::new(max_connections)),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                next_conn: AtomicU64::new(1),
                log: LogBudget::default(),
            }),
        }
    }

    /// A handle for links and metrics; valid before and while it runs.
    pub fn handle(&self) -> IngressHandle {
        IngressHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves `listener` (and `/metrics` and the client lookup
    /// `/clients/{tenant}/{client_id}` on `metrics`) until `shutdown`
    /// completes; then stops accepting, closes every connection (MQTT 5
    /// clients are told 0x8B; no wills: they did not lose their
    /// connection, the ingress went), waits up to 5 s for them and ends
    /// the links.
    ///
    /// # Errors
    /// None yet; the `Result` is for listeners that fail for good.
    pub async fn run(
        self,
        listener: TcpListener,
        metrics: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), BrokerError> {
        let shared = self.shared;
        let accept = {
            let shared = shared.clone();
            tokio::spawn(crate::accept::accept_loop(
                listener,
                shared.conn_slots.clone(),
                shared.metrics.clone(),
                shared.stop.clone(),
                move |stream, peer, permit| {
                    let task_shared = shared.clone();
                    shared
                        .tasks
                        .spawn(session::serve(stream, peer, task_shared, permit));
                },
            ))
        };
        let metrics_task = metrics.map(|l| {
            let clients = clients::routes(shared.clone());
            crate::metrics::serve_with(l, shared.metrics.clone(), clients, shared.stop.clone())
        });
        shared.tasks.spawn(sweep_keep_alive(shared.clone()));

        shutdown.await;
        tracing::info!("ingress stopping");
        shared.stop.cancel();
        let _ = accept.await;
        for held in shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            held.kick(Kick::Shutdown);
        }
        crate::drain(&shared.tasks, &shared.links, metrics_task, "ingress").await;
        tracing::info!("ingress stopped");
        Ok(())
    }
}

impl IngressHandle {
    /// An in-process link: events of the clients of `filter.tenant` (every
    /// tenant's for `None`) in order, as [`crate::BrokerHandle::link`]
    /// gives them (a new link is first told who is connected; no retained
    /// messages are kept). What is sent on its `publish` is dropped and
    /// counted in `fieldlink_broker_link_refused_total`: nothing can be
    /// subscribed at the ingress.
    ///
    /// # Errors
    /// `UnknownTenant` for a tenant the settings lack; `Stopped` after the
    /// ingress stopped.
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns the link's publish drain).
    pub fn link(&self, filter: LinkFilter) -> Result<MqttLink, BrokerError> {
        let shared = &self.shared;
        if shared.stop.is_cancelled() {
            return Err(BrokerError::Stopped);
        }
        let tenant = match &filter.tenant {
            Some(name) => Some(
                shared
                    .settings
                    .tenants
                    .get(name.as_str())
                    .ok_or_else(|| BrokerError::UnknownTenant(name.clone()))?
                    .name
                    .clone(),
            ),
            None => None,
        };
        let capacity = shared.settings.limits.link_capacity;
        // Told first who is connected now: the announced entries of the
        // session table.
        let (_, events) = shared.links.add_told(tenant.clone(), capacity, |tenant| {
            let sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions
                .iter()
                .filter(|p| p.announced.load(Relaxed))
                .filter(|p| tenant.is_none() || p.info.tenant.as_deref() == tenant)
                .map(|p| MqttEvent::Connected(p.info.clone()))
                .collect()
        });
        let (publish, mut publish_rx) = mpsc::channel::<OutgoingPublish>(64);
        let metrics = shared.metrics.clone();
        let stop = shared.stop.clone();
        shared.tasks.spawn(async move {
            let mut warned = false;
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break,
                    next = publish_rx.recv() => next,
                };
                let Some(outgoing) = next else { break };
                metrics.link_refused.fetch_add(1, Relaxed);
                if !warned {
                    warned = true;
                    tracing::warn!(tenant = ?tenant, topic = %outgoing.topic,
                        "the lean ingress routes nothing to devices: publishes from its links are dropped (use the broker for commands)");
                }
            }
        });
        Ok(MqttLink { events, publish })
    }

    /// The ingress's counters (the broker's metric names).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }
}
