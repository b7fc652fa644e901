//! OPC UA driver on `async-opcua` (a pushing driver).
//!
//! One session per configured server, shared by every device on it; each
//! device's tags become monitored items of the server's subscriptions, and
//! every data change is pushed with its own status and source time. The
//! parts, each with one job:
//!
//! - [`config`]: `[opcua]`, `[opcua.servers.NAME]` and `[devices.opcua]`,
//!   validated with every bad key named by its path;
//! - [`session`]: the gateway's client (PKI, trust, security, identity)
//!   and the session's event loop (reconnect, transfer or re-create);
//! - [`batch`]: the server's operation limits and calls split to fit them,
//!   halving whatever the server still refuses as too large;
//! - [`items`]: monitored items and the subscriptions carrying them;
//! - [`browse`]: roots, browse paths, variables under a root, DataTypes;
//! - [`quality`]: status code → quality, Variant → point value, timestamps;
//! - [`server`]: the task owning one server's session and devices;
//! - [`discover`]: what `fieldlink gateway browse` prints.

pub mod batch;
pub mod browse;
pub mod config;
pub mod discover;
pub mod items;
pub mod quality;
pub mod server;
pub mod session;

use std::sync::Arc;

use fieldlink_model::Protocol;
use tokio_util::task::TaskTracker;

use self::config::Configured;
use super::{BoxRun, DriverConfig, DriverContext, DriverInstance, DriverKind};

/// The OPC UA protocol family: section `opcua`, protocol `opc-ua`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpcUaKind;

impl DriverKind for OpcUaKind {
    fn section(&self) -> &'static str {
        "opcua"
    }

    fn protocols(&self) -> &'static [Protocol] {
        &[Protocol::OpcUa]
    }

    fn configure(&self, config: DriverConfig<'_>) -> Result<Arc<dyn DriverInstance>, Vec<String>> {
        Ok(Arc::new(OpcUaDriver {
            configured: config::configure(config)?,
        }))
    }
}

/// The configured OPC UA driver.
#[derive(Debug)]
pub struct OpcUaDriver {
    configured: Configured,
}

impl OpcUaDriver {
    /// The validated config.
    pub fn configured(&self) -> &Configured {
        &self.configured
    }
}

impl DriverInstance for OpcUaDriver {
    fn device_count(&self) -> usize {
        self.configured
            .servers
            .iter()
            .map(|s| s.devices.len())
            .sum()
    }

    fn run(self: Arc<Self>, ctx: DriverContext) -> BoxRun {
        Box::pin(async move {
            let servers = self.configured.servers.clone();
            if servers.is_empty() {
                return;
            }
            let section = self.configured.section.clone();
            // The gateway's own certificate: needed for secure channels and
            // X.509 identities, and without it the library logs errors even
            // on channels without security. Created once, before any
            // session, and kept in the data directory.
            let keys = true;
            let build = {
                let section = section.clone();
                tokio::task::spawn_blocking(move || session::build_client(&section, keys))
            };
            let client = match build.await {
                Ok(Ok(client)) => Arc::new(client),
                Ok(Err(e)) => {
                    tracing::error!("opcua: cannot build the client: {e}");
                    return;
                }
                Err(e) => {
                    tracing::error!("opcua: building the client failed: {e}");
                    return;
                }
            };
            let tasks = TaskTracker::new();
            for plan in servers {
                let task = server::ServerTask::new(
                    plan,
                    section.clone(),
                    client.clone(),
                    ctx.sink.clone(),
                );
                tasks.spawn(task.run(ctx.shutdown.clone()));
            }
            tasks.close();
            tasks.wait().await;
        })
    }
}
