//! The HTTP API on threads of its own: the ingest streams keep the main
//! runtime's workers busy decoding batches, and a `/summary` queued behind
//! them waited tens of milliseconds at 2 M device-days/s. On its own
//! runtime the kernel's scheduler, which favours a thread that slept, lets
//! it in at once.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{RegistryError, Shared};

/// Worker threads of the HTTP runtime (an export streaming a large device
/// list does not hold up `/healthz`).
const WORKERS: usize = 2;

/// Serves the API on `listener` from a runtime of its own until `cancel`,
/// then lets open connections finish for at most `drain`.
///
/// # Errors
/// `RegistryError::Io` when the listener cannot be moved or the threads
/// cannot start.
pub(crate) fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    drain: Duration,
) -> Result<JoinHandle<std::io::Result<()>>, RegistryError> {
    let io = |what: &'static str| move |source| RegistryError::Io { what, source };
    let listener = listener.into_std().map_err(io("HTTP listener"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("registry-http")
        .enable_all()
        .build()
        .map_err(io("HTTP runtime"))?;
    std::thread::Builder::new()
        .name("registry-http-main".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                let server = axum::serve(listener, super::router(shared))
                    .with_graceful_shutdown(cancel.clone().cancelled_owned());
                let overdue = async {
                    cancel.cancelled().await;
                    tokio::time::sleep(drain).await;
                };
                tokio::select! {
                    result = server => result,
                    () = overdue => {
                        tracing::warn!("HTTP server: connections still open after {drain:?}; closing them");
                        Ok(())
                    }
                }
            })
        })
        .map_err(io("HTTP thread"))
}
