//! The Fieldlink registry: receives gateway streams and keeps the device
//! registry and its exact counts.
//!
//! Flow: [`ingest`] (gRPC streams, one per gateway session: authenticate by
//! tenant token, decode each message leanly — of a point only its tag id,
//! time and quality — and check each batch) → the committer (group commits into the
//! [`store::Store`], exactly once per stream sequence) → [`counters`] (dense
//! device index, session state, per-day bitmaps, and the [`read_model`] of
//! figures it keeps up to date) → [`tally`] (figures by class, category,
//! protocol and cloud) → [`http`] (JSON/CSV API, metrics).
//!
//! [`Registry::open`] loads the store into memory; [`Registry::serve`] runs
//! both listeners until its shutdown future completes.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod config;
pub mod counters;
pub mod error;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod read_model;
pub mod store;
pub mod tally;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use fieldlink_model::{Day, now_unix_nanos};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{RegistryConfig, Settings, Tenant};
pub use error::{ConfigError, RegistryError, StoreError, WireError};

use counters::Counters;
use metrics::Metrics;
use store::{RedbStore, Store};

/// How long shutdown waits for open streams to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often old per-day figures are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// State shared by the ingest streams, the committer and the HTTP API.
#[derive(Debug)]
pub struct Shared {
    /// Validated settings.
    pub settings: Settings,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Ingest metrics.
    pub metrics: Metrics,
    counters: RwLock<Counters>,
    tokens: HashMap<String, Tenant>,
}

impl Shared {
    /// Shared read access to the live state.
    pub fn read_counters(&self) -> RwLockReadGuard<'_, Counters> {
        // A panic while holding the lock leaves consistent data: every writer
        // applies a plan that is already durable, field by field.
        self.counters.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access to the live state.
    pub fn write_counters(&self) -> RwLockWriteGuard<'_, Counters> {
        self.counters.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The tenant a token belongs to.
    pub fn tenant_by_token(&self, token: &str) -> Option<&Tenant> {
        self.tokens.get(token)
    }

    /// Today in the registry's time zone.
    pub fn today(&self) -> Day {
        Day::today(self.settings.utc_offset)
    }

    /// The oldest day kept.
    pub fn oldest_day(&self) -> Day {
        self.today()
            .plus(1 - i32::try_from(self.settings.retention_days).unwrap_or(i32::MAX))
    }
}

/// A registry ready to serve.
#[derive(Debug)]
pub struct Registry {
    shared: Arc<Shared>,
}

impl Registry {
    /// Opens the embedded store in `settings.data_dir` and loads it.
    ///
    /// # Errors
    /// `RegistryError::Store` when the store cannot be opened or read.
    pub fn open(settings: Settings) -> Result<Self, RegistryError> {
        let store = RedbStore::open(&settings.data_dir, settings.store_cache_bytes)?;
        Self::with_store(settings, Arc::new(store))
    }

    /// Loads the registry from any store backend.
    ///
    /// # Errors
    /// `RegistryError::Store` when the store cannot be read.
    pub fn with_store(settings: Settings, store: Arc<dyn Store>) -> Result<Self, RegistryError> {
        let counters = load(&*store, &settings)?;
        let tokens = settings
            .tenants
            .iter()
            .map(|t| (t.token.clone(), t.clone()))
            .collect();
        let shared = Arc::new(Shared {
            settings,
            store,
            metrics: Metrics::default(),
            counters: RwLock::new(counters),
            tokens,
        });
        Ok(Registry { shared })
    }

    /// The shared state (for embedding and tests).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves gRPC ingest on `grpc` and the HTTP API on `http` until
    /// `shutdown` completes; then ends streams, drains and returns.
    ///
    /// # Errors
    /// `RegistryError` when a server fails.
    pub async fn serve(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RegistryError> {
        let shared = self.shared;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (commit_tx, commit_rx) = mpsc::channel(shared.settings.commit_max_batches * 2);
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("registry-committer".into())
                .spawn(move || ingest::committer::run(commit_rx, shared))
                .map_err(|source| RegistryError::Io {
                    what: "committer thread",
                    source,
                })?
        };
        let service =
            ingest::IngestService::new(shared.clone(), commit_tx, cancel.clone(), tasks.clone());
        let max = shared.settings.max_message_bytes;
        let grpc_server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ingest::IngestServer::new(service, max))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(grpc),
                cancel.clone().cancelled_owned(),
            );
        let http_thread =
            http::own_runtime::serve(http, shared.clone(), cancel.clone(), DRAIN_TIMEOUT)?;
        tasks.spawn(prune_periodically(shared.clone(), cancel.clone()));

        let grpc_task = tokio::spawn(grpc_server);
        shutdown.await;
        tracing::info!("registry shutting down");
        cancel.cancel();
        tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("streams did not finish within {DRAIN_TIMEOUT:?}");
        }
        // Servers wait for their connections to close; a peer that never
        // closes must not hold the process.
        let grpc_result = finish_within(grpc_task, "gRPC server").await;
        let http_result = match tokio::task::spawn_blocking(move || http_thread.join()).await {
            Ok(Ok(result)) => Some(result),
            _ => {
                tracing::error!("the HTTP server thread panicked");
                None
            }
        };
        // Every committer sender lives in the gRPC service, now dropped.
        let _ = tokio::task::spawn_blocking(move || committer.join()).await;
        if let Some(result) = grpc_result {
            result?;
        }
        if let Some(result) = http_result {
            result.map_err(|source| RegistryError::Io {
                what: "HTTP server",
                source,
            })?;
        }
        Ok(())
    }
}

/// The task's result if it finishes within [`DRAIN_TIMEOUT`]; otherwise it
/// is aborted (and logged) and `None` returned.
async fn finish_within<T>(mut task: tokio::task::JoinHandle<T>, what: &str) -> Option<T> {
    match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "{what} task failed");
            None
        }
        Err(_) => {
            tracing::warn!("{what}: connections still open after {DRAIN_TIMEOUT:?}; closing them");
            task.abort();
            None
        }
    }
}

/// Rebuilds the live state from the store.
fn load(store: &dyn Store, settings: &Settings) -> Result<Counters, StoreError> {
    let now = now_unix_nanos();
    let grace = i64::try_from(settings.offline_grace.as_nanos()).unwrap_or(i64::MAX);
    let mut counters = Counters::new(settings.utc_offset, grace, now);
    let mut count = 0u64;
    store.scan_devices(None, &mut |record| {
        counters.load_device(&record, now);
        count += 1;
        true
    })?;
    store.scan_statuses(&mut |index, status| counters.load_status(index, &status))?;
    let today = Day::today(settings.utc_offset);
    let oldest = today.plus(1 - i32::try_from(settings.retention_days).unwrap_or(i32::MAX));
    // Points may be stamped up to the clock skew ahead: tomorrow at most.
    store.scan_days(oldest, today.plus(1), &mut |delta| {
        counters.mark_reported(&delta);
    })?;
    for (key, sequence) in store.streams()? {
        counters.set_stream_sequence(&key, sequence);
    }
    tracing::info!(devices = count, "registry state loaded");
    Ok(counters)
}

async fn prune_periodically(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let oldest = shared.oldest_day();
        let store = shared.store.clone();
        match tokio::task::spawn_blocking(move || store.prune_days_before(oldest)).await {
            Ok(Ok(removed)) => {
                shared.write_counters().prune_days_before(oldest);
                if removed > 0 {
                    tracing::info!(removed, before = %oldest, "pruned per-day figures");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "pruning per-day figures failed"),
            Err(e) => tracing::error!(error = %e, "pruning task failed"),
        }
    }
}
