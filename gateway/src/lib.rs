//! The Fieldlink edge gateway.
//!
//! Flow: [`driver`] (one task per device: connect, poll, back off; the
//! [`driver::Driver`] trait and the Modbus TCP driver) → [`normalize`]
//! (readings into protobuf batches, grouped by device) → [`spool`] (every
//! batch on disk before it is sent) → [`uplink`] (gRPC streams to the
//! registry with the tenant token; acks remove batches from the spool).
//! [`run`] wires them for a validated [`Settings`].
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod config;
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

use driver::Driver;
use driver::modbus::ModbusDriver;
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
    let metrics = Arc::new(Metrics::default());
    let spool = Spool::open(
        &settings.data_dir,
        settings.spool.max_bytes,
        settings.spool.segment_bytes,
        settings.spool.fsync,
    )?;
    tracing::info!(
        gateway = %settings.gateway_id,
        devices = settings.devices.len(),
        backlog = spool.batches(),
        "gateway starting"
    );
    let spool = Arc::new(Mutex::new(spool));
    let wake = Arc::new(Notify::new());
    let devices: Arc<Vec<_>> = Arc::new(settings.devices.iter().cloned().map(Arc::new).collect());
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
    let driver = Arc::new(ModbusDriver::new(settings.modbus.clone()));
    let timing = driver::Timing::from(&settings.modbus);
    let device_tasks = TaskTracker::new();
    for (index, device) in devices.iter().enumerate() {
        device_tasks.spawn(driver::run_device(
            driver.clone(),
            device.clone(),
            u32::try_from(index).unwrap_or(u32::MAX),
            timing.clone(),
            events_tx.clone(),
            metrics.clone(),
            stop_devices.clone(),
        ));
    }
    device_tasks.close();
    drop(events_tx);

    let announces = Arc::new(normalize::announce_batches(&devices));
    let normalizer = normalize::Normalizer::new(
        devices.clone(),
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
    // The normalizer ends when every device task has ended (channel closed).
    let normalizer = tokio::spawn(normalizer.run(events_rx, CancellationToken::new()));

    let stop_uplink = CancellationToken::new();
    let uplink = uplink::Uplink {
        config: settings.uplink.clone(),
        gateway_id: settings.gateway_id.clone(),
        protocols: vec![driver.protocol().code().to_owned()],
        spool: spool.clone(),
        wake,
        metrics: metrics.clone(),
        announces,
    };
    let uplink = tokio::spawn(uplink.run(stop_uplink.clone()));

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
    let _ = uplink.await;
    stop_metrics.cancel();
    tasks.close();
    tasks.wait().await;
    let left = spool.lock().unwrap_or_else(|p| p.into_inner()).batches();
    tracing::info!(spooled = left, "gateway stopped");
    Ok(())
}
