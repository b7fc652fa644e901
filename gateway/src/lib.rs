//! The Fieldlink edge gateway.
//!
//! Flow: [`driver`] (one driver per protocol family, chosen by each
//! device's protocol, all in one process — Modbus TCP, MQTT JSON, Sparkplug
//! B; drivers declare devices and tag tables — also ones discovered at run
//! time — and push readings into a [`driver::Sink`]; polled protocols such
//! as Modbus run on the core's poller; the MQTT drivers share
//! [`driver::mqtt_source`]) → [`normalize`] (announces, status changes and points into
//! protobuf batches) → [`spool`] (every batch on disk before it is sent) →
//! [`uplink`] (gRPC streams to the registry with the tenant token, on a
//! thread of its own; acks remove batches from the spool). [`run`] wires them for a validated
//! [`Settings`]; [`device`] holds what is announced.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod config;
pub mod conformance;
pub mod device;
pub mod driver;
pub mod error;
pub mod metrics;
pub mod normalize;
pub mod spool;
pub mod uplink;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{GatewayConfig, Settings};
pub use error::{ConfigError, DriverError, GatewayError, SpoolError};

use driver::{DriverContext, Resources, Sink};
use metrics::Metrics;
use spool::Spool;

/// How long a stopping gateway keeps sending what is spooled.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the gateway until `shutdown` completes: device tasks stop first,
/// their last readings are spooled, the uplink gets a moment to deliver them
/// (what it cannot deliver stays in the spool for the next start).
///
/// # Errors
/// `GatewayError` when the spool or the metrics listener cannot be opened.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    run_with(settings, Resources::default(), shutdown).await
}

/// [`run`] with resources the process provides beyond the config (the
/// embedded MQTT broker of `fieldlink demo`).
///
/// # Errors
/// `GatewayError` when the spool or the metrics listener cannot be opened.
pub async fn run_with(
    settings: Settings,
    resources: Resources,
    shutdown: impl Future<Output = ()>,
) -> Result<(), GatewayError> {
    let metrics = Arc::new(Metrics::default());
    let spool = Spool::open(
        &settings.data_dir,
        settings.spool.max_bytes,
        settings.spool.segment_bytes,
        settings.spool.fsync,
    )?;
    tracing::info!(
        gateway = %settings.gateway_id,
        devices = settings.configured_devices,
        drivers = settings.drivers.len(),
        backlog = spool.batches(),
        "gateway starting"
    );
    let spool = Arc::new(Mutex::new(spool));
    let wake = Arc::new(Notify::new());
    let tasks = TaskTracker::new();
    let stop_metrics = CancellationToken::new();

    if let Some(addr) = settings.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Metrics { addr, source })?;
        let m = metrics.clone();
        let stop = stop_metrics.clone();
        let app = axum::Router::new()
            .route("/metrics", get(move || async move { m.render() }))
            .route("/healthz", get(|| async { "ok\n" }));
        tasks.spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }

    let stop_devices = CancellationToken::new();
    let (events_tx, events_rx) = mpsc::channel(8192);
    let sink = Sink::new(events_tx, settings.limits, metrics.clone());
    let device_tasks = TaskTracker::new();
    for driver in &settings.drivers {
        let ctx = DriverContext {
            sink: sink.clone(),
            shutdown: stop_devices.clone(),
            resources: resources.clone(),
        };
        device_tasks.spawn(driver.clone().run(ctx));
    }
    device_tasks.close();
    drop(sink);

    let announces = Arc::new(normalize::Announcements::default());
    let normalizer = normalize::Normalizer::new(
        announces.clone(),
        spool.clone(),
        wake.clone(),
        metrics.clone(),
        settings.uplink.batch_max_points,
        settings.uplink.batch_max_delay,
    );
    let normalizer = match &settings.ledger {
        Some(path) => {
            let ledger = normalize::Ledger::open(path, settings.utc_offset).map_err(|source| {
                GatewayError::Ledger {
                    path: path.clone(),
                    source,
                }
            })?;
            normalizer.with_ledger(ledger)
        }
        None => normalizer,
    };
    // The normalizer ends when every driver has ended (channel closed).
    let normalizer = tokio::spawn(normalizer.run(events_rx, CancellationToken::new()));

    let stop_uplink = CancellationToken::new();
    let uplink = uplink::Uplink {
        config: settings.uplink.clone(),
        gateway_id: settings.gateway_id.clone(),
        protocols: driver::supported_protocols()
            .iter()
            .map(|p| p.code().to_owned())
            .collect(),
        spool: spool.clone(),
        wake,
        metrics: metrics.clone(),
        announces,
    };
    let uplink = uplink
        .spawn(stop_uplink.clone())
        .map_err(GatewayError::Uplink)?;

    shutdown.await;
    tracing::info!("gateway stopping");
    stop_devices.cancel();
    device_tasks.wait().await;
    let _ = normalizer.await;
    let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
    while spool.lock().unwrap_or_else(|p| p.into_inner()).batches() > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_uplink.cancel();
    uplink.join().await;
    stop_metrics.cancel();
    tasks.close();
    tasks.wait().await;
    let left = spool.lock().unwrap_or_else(|p| p.into_inner()).batches();
    tracing::info!(spooled = left, "gateway stopped");
    Ok(())
}
