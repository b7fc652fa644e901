//! The OPC UA face: the OPC UA devices of a plan served by `async-opcua`
//! servers, [`OpcUaOptions::devices_per_server`] devices each, server `k`
//! on port `base_port + k` of the host (127.0.0.1).
//!
//! Each device is an object `Objects/Devices/<device id>` (NodeId
//! `ns=2;s=<device id>`) with one variable per catalog tag
//! (`ns=2;s=<device id>/<tag>`, values from [`crate::SimDevice::value`]
//! computed at every read or sample, source timestamp = the instant used)
//! and the properties `Class`, `Category`, `Model`, `Name`, `Vendor`,
//! `SerialNumber` (see [`nodes`]). Endpoints: None, and with `security`
//! Basic256Sha256 Sign and SignAndEncrypt (the servers share one
//! certificate in `pki_dir`, and trust every client certificate); anonymous
//! login, plus a user and password when `user` is set.
//!
//! Faults ([`OpcUaFaults`]): a device switched off answers
//! `BadNoCommunication` on its variables; a hung or garbage device affects
//! the server it is on (it sits behind a [`FaultProxy`] that stops relaying
//! or corrupts what the server answers); [`OpcUaFleet::restart`] replaces
//! every server by a new one (sessions and subscriptions are gone, as after
//! a real restart); [`OpcUaFleet::grow`] adds a variable to a device at run
//! time.

pub mod nodes;

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use fieldlink_model::Protocol;
use opcua::crypto::SecurityPolicy;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{
    ANONYMOUS_USER_TOKEN_ID, Limits, ServerBuilder, ServerHandle, ServerUserToken,
    diagnostics::NamespaceMetadata,
};
use opcua::types::MessageSecurityMode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::SimError;
use crate::faults::{Fault, FaultProxy, Faults};
use crate::plan::FleetPlan;
use crate::server::Clock;

/// Port of server 0.
pub const DEFAULT_BASE_PORT: u16 = 4840;
/// Devices per server. Measured here: one server with 364 catalog devices
/// (10 000 variables) makes the simulator process 70 MB RSS; the address
/// space grows by about 5 KB per variable, so 500 devices cost about 90 MB
/// and a 1 000-device fleet runs on two servers in well under 200 MB.
pub const DEFAULT_DEVICES_PER_SERVER: u32 = 500;
/// User token id of the optional user.
const USER_TOKEN: &str = "fieldlink-user";

/// Limits the servers state (and enforce).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimLimits {
    /// MaxMonitoredItemsPerCall.
    pub items_per_call: usize,
    /// MaxMonitoredItemsPerSubscription.
    pub items_per_subscription: usize,
    /// MaxNodesPerRead.
    pub nodes_per_read: usize,
    /// Longest array the server decodes (a server whose decoder is
    /// stricter than its stated operation limits answers larger calls with
    /// `BadDecodingError`).
    pub max_array_length: usize,
}

impl Default for SimLimits {
    fn default() -> Self {
        SimLimits {
            items_per_call: 5000,
            items_per_subscription: 50_000,
            nodes_per_read: 10_000,
            max_array_length: 200_000,
        }
    }
}

/// Options of the OPC UA face.
#[derive(Debug, Clone)]
pub struct OpcUaOptions {
    /// Address of every server.
    pub host: Ipv4Addr,
    /// Port of server 0 (server k: base + k); 0 for ports the OS picks.
    pub base_port: u16,
    /// Devices per server.
    pub devices_per_server: u32,
    /// Offer Basic256Sha256 Sign and SignAndEncrypt endpoints.
    pub security: bool,
    /// A user and password the servers accept besides anonymous.
    pub user: Option<(String, String)>,
    /// Where the servers' certificate lives (created when missing).
    pub pki_dir: PathBuf,
    /// Time of the signals.
    pub clock: Clock,
    /// Faults under control: each server behind a [`FaultProxy`].
    pub faults: Option<OpcUaFaults>,
    /// Server limits.
    pub limits: SimLimits,
}

impl Default for OpcUaOptions {
    fn default() -> Self {
        OpcUaOptions {
            host: Ipv4Addr::LOCALHOST,
            base_port: DEFAULT_BASE_PORT,
            devices_per_server: DEFAULT_DEVICES_PER_SERVER,
            security: false,
            user: None,
            pki_dir: PathBuf::from("opcua-pki"),
            clock: Clock::System,
            faults: None,
            limits: SimLimits::default(),
        }
    }
}

/// Faults of an OPC UA fleet: device faults (off) and server faults (hung,
/// garbage, restart), set by device index.
#[derive(Debug, Clone, Default)]
pub struct OpcUaFaults {
    devices: Faults,
    servers: Faults,
    per_server: Arc<std::sync::atomic::AtomicU32>,
    first: Arc<std::sync::atomic::AtomicU32>,
}

impl OpcUaFaults {
    /// Sets device `index`'s fault: `Off` switches its variables bad;
    /// `Hung` and `Garbage` apply to its server; `None` clears both.
    pub fn set(&self, index: u32, fault: Fault) {
        use std::sync::atomic::Ordering::Relaxed;
        let per = self.per_server.load(Relaxed).max(1);
        let server = index.saturating_sub(self.first.load(Relaxed)) / per;
        match fault {
            Fault::Off => self.devices.set(index, Fault::Off),
            Fault::Hung | Fault::Garbage => self.servers.set(server, fault),
            Fault::None => {
                self.devices.set(index, Fault::None);
                self.servers.set(server, Fault::None);
            }
        }
    }
}

struct Running {
    handle: ServerHandle,
    nm: Arc<SimpleNodeManager>,
    task: JoinHandle<()>,
}

/// One server of the fleet.
struct SimServer {
    devices: Range<u32>,
    port: u16,
    proxy: Option<FaultProxy>,
    running: Running,
}

/// The OPC UA devices of a plan, served.
pub struct OpcUaFleet {
    plan: FleetPlan,
    options: OpcUaOptions,
    servers: Vec<SimServer>,
    grown: u32,
}

impl std::fmt::Debug for OpcUaFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcUaFleet")
            .field("servers", &self.servers.len())
            .field("ports", &self.ports())
            .finish_non_exhaustive()
    }
}

/// The device ranges of the servers for the plan's OPC UA devices.
pub fn server_ranges(plan: &FleetPlan, per_server: u32) -> Vec<Range<u32>> {
    let range = plan.range_of(Protocol::OpcUa);
    let per = per_server.max(1);
    let mut out = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let end = (at + per).min(range.end);
        out.push(at..end);
        at = end;
    }
    out
}

fn server_err(message: impl Into<String>) -> SimError {
    SimError::Server(message.into())
}

fn build(
    plan: &FleetPlan,
    devices: Range<u32>,
    port: u16,
    options: &OpcUaOptions,
) -> Result<(opcua::server::Server, ServerHandle, Arc<SimpleNodeManager>), SimError> {
    let mut ids = vec![ANONYMOUS_USER_TOKEN_ID.to_owned()];
    let mut builder = ServerBuilder::new()
        .application_name("Fieldlink simulator")
        .application_uri("urn:fieldlink:sim:server")
        .product_uri("urn:fieldlink:sim")
        .host(options.host.to_string())
        .port(port)
        .pki_dir(options.pki_dir.clone())
        .create_sample_keypair(true)
        .trust_client_certs(true)
        .diagnostics_enabled(false)
        .max_sessions(64)
        // Room for the stated operation limits in one message.
        .max_array_length(options.limits.max_array_length)
        .max_message_size(32 << 20)
        .max_chunk_count(600)
        .with_node_manager(simple_node_manager(
            NamespaceMetadata {
                namespace_uri: nodes::NAMESPACE_URI.to_owned(),
                ..Default::default()
            },
            "fieldlink-sim",
        ));
    if let Some((user, pass)) = &options.user {
        builder = builder.add_user_token(
            USER_TOKEN,
            ServerUserToken::user_pass(user.as_str(), pass.as_str()),
        );
        ids.push(USER_TOKEN.to_owned());
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    builder = builder.add_endpoint(
        "none",
        (
            "/",
            SecurityPolicy::None,
            MessageSecurityMode::None,
            &ids as &[&str],
        ),
    );
    if options.security {
        builder = builder
            .add_endpoint(
                "basic256sha256_sign",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::Sign,
                    &ids as &[&str],
                ),
            )
            .add_endpoint(
                "basic256sha256_sign_encrypt",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                    &ids as &[&str],
                ),
            );
    }
    builder = builder.discovery_urls(vec!["/".to_owned()]);
    let limits: &mut Limits = builder.limits_mut();
    limits.operational.max_monitored_items_per_call = options.limits.items_per_call;
    limits.operational.max_nodes_per_read = options.limits.nodes_per_read;
    limits.subscriptions.max_monitored_items_per_sub = options.limits.items_per_subscription;
    limits.subscriptions.max_subscriptions_per_session = 100;
    limits.subscriptions.max_queued_notifications = 200;
    limits.subscriptions.max_pending_publish_requests = 100;
    let (server, handle) = builder.build().map_err(server_err)?;
    let nm = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .ok_or_else(|| server_err("no simple node manager"))?;
    if handle.get_namespace_index(nodes::NAMESPACE_URI) != Some(nodes::NS) {
        return Err(server_err(format!(
            "the simulator's namespace got index {:?}, not {}",
            handle.get_namespace_index(nodes::NAMESPACE_URI),
            nodes::NS
        )));
    }
    let source = nodes::Source {
        clock: options.clock,
        faults: options
            .faults
            .as_ref()
            .map(|f| f.devices.clone())
            .unwrap_or_default(),
    };
    {
        let mut space = nm.address_space().write();
        nodes::add_folder(&mut space);
        for index in devices {
            let d = plan
                .device(index)
                .ok_or_else(|| SimError::spec("device", format!("no device {index}")))?;
            let sim = plan.sim_device(index)?;
            nodes::add_device(&nm, &mut space, &d, sim, &source);
        }
    }
    Ok((server, handle, nm))
}

fn spawn(server: opcua::server::Server, listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = server.run_with(listener).await {
            tracing::warn!("opc ua server ended: {e}");
        }
    })
}

impl OpcUaFleet {
    /// Builds and starts a server per [`server_ranges`] block of the plan's
    /// OPC UA devices.
    ///
    /// # Errors
    /// [`SimError::Bind`] naming the address; [`SimError::Server`] when a
    /// server cannot be built.
    pub async fn start(plan: &FleetPlan, options: OpcUaOptions) -> Result<OpcUaFleet, SimError> {
        let ranges = server_ranges(plan, options.devices_per_server);
        if let Some(f) = &options.faults {
            use std::sync::atomic::Ordering::Relaxed;
            f.per_server
                .store(options.devices_per_server.max(1), Relaxed);
            f.first.store(plan.range_of(Protocol::OpcUa).start, Relaxed);
        }
        // A certificate even without security endpoints: without one the
        // library logs errors on every plain channel.
        std::fs::create_dir_all(&options.pki_dir).map_err(|e| SimError::io(&options.pki_dir, e))?;
        let mut servers = Vec::with_capacity(ranges.len());
        for (k, devices) in ranges.into_iter().enumerate() {
            let want = if options.base_port == 0 {
                0
            } else {
                u16::try_from(u32::from(options.base_port) + k as u32).map_err(|_| {
                    SimError::spec("--opcua-port", "base port + servers passes 65535")
                })?
            };
            let addr = SocketAddr::from((options.host, want));
            let public = TcpListener::bind(addr)
                .await
                .map_err(|source| SimError::Bind { addr, source })?;
            let port = public.local_addr().map_or(want, |a| a.port());
            let (server, handle, nm) = build(plan, devices.clone(), port, &options)?;
            let (proxy, listener) = match &options.faults {
                Some(f) => {
                    let inner_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                    let inner =
                        TcpListener::bind(inner_addr)
                            .await
                            .map_err(|source| SimError::Bind {
                                addr: inner_addr,
                                source,
                            })?;
                    let target = inner.local_addr().map_err(|source| SimError::Bind {
                        addr: inner_addr,
                        source,
                    })?;
                    (
                        Some(FaultProxy::start(
                            public,
                            target,
                            f.servers.clone(),
                            k as u32,
                        )),
                        inner,
                    )
                }
                None => (None, public),
            };
            let task = spawn(server, listener);
            servers.push(SimServer {
                devices,
                port,
                proxy,
                running: Running { handle, nm, task },
            });
        }
        Ok(OpcUaFleet {
            plan: plan.clone(),
            options,
            servers,
            grown: 0,
        })
    }

    /// The servers' ports, in server order.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.iter().map(|s| s.port).collect()
    }

    /// The endpoint URL of server `k`.
    pub fn endpoint(&self, k: usize) -> Option<String> {
        self.servers
            .get(k)
            .map(|s| format!("opc.tcp://{}:{}/", self.options.host, s.port))
    }

    /// The server of device `index`.
    pub fn server_of(&self, index: u32) -> Option<usize> {
        self.servers.iter().position(|s| s.devices.contains(&index))
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// True without servers.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Adds a variable to device `index` at run time; returns its name.
    ///
    /// # Errors
    /// [`SimError::Spec`] when the device is not served here.
    pub fn grow(&mut self, index: u32) -> Result<String, SimError> {
        let k = self
            .server_of(index)
            .ok_or_else(|| SimError::spec("device", format!("device {index} is not served")))?;
        let d = self
            .plan
            .device(index)
            .ok_or_else(|| SimError::spec("device", format!("no device {index}")))?;
        self.grown += 1;
        let name = format!("extra_{}", self.grown);
        let source = nodes::Source {
            clock: self.options.clock,
            faults: self
                .options
                .faults
                .as_ref()
                .map(|f| f.devices.clone())
                .unwrap_or_default(),
        };
        let nm = &self.servers[k].running.nm;
        let mut space = nm.address_space().write();
        nodes::add_extra(nm, &mut space, &d.id(), index, &name, &source);
        Ok(name)
    }

    /// Replaces every server by a new one on the same port: connections,
    /// sessions and subscriptions are gone, as after a real restart.
    /// Variables added by [`OpcUaFleet::grow`] are gone too.
    ///
    /// # Errors
    /// [`SimError::Bind`] or [`SimError::Server`].
    pub async fn restart(&mut self) -> Result<(), SimError> {
        if let Some(f) = &self.options.faults {
            f.servers.restart();
        }
        for s in &mut self.servers {
            s.running.handle.cancel();
            s.running.task.abort();
            let (server, handle, nm) = build(&self.plan, s.devices.clone(), s.port, &self.options)?;
            let listener = match &s.proxy {
                Some(proxy) => {
                    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                    let inner = TcpListener::bind(addr)
                        .await
                        .map_err(|source| SimError::Bind { addr, source })?;
                    let target = inner
                        .local_addr()
                        .map_err(|source| SimError::Bind { addr, source })?;
                    proxy.retarget(target);
                    inner
                }
                None => {
                    let _ = (&mut s.running.task).await;
                    let addr = SocketAddr::from((self.options.host, s.port));
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| SimError::Bind { addr, source })?
                }
            };
            s.running = Running {
                handle,
                nm,
                task: spawn(server, listener),
            };
        }
        Ok(())
    }

    /// Stops every server.
    pub async fn stop(self) {
        for s in self.servers {
            s.running.handle.cancel();
            s.running.task.abort();
            let _ = s.running.task.await;
        }
    }
}
