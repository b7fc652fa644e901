//! The accept loop both listeners share: it only accepts. A connection
//! slot first (past the limit the socket is closed at once and counted,
//! paced so a flood cannot spin the loop), backing off on errors (out of
//! files, a peer that reset before accept); the rest happens in the
//! connection's own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, Refusal};

/// Accepts on `listener` until `stop`, handing each connection and its slot
/// to `start`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    mut start: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(5);
                accepted
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: the client learns now rather than waiting in the backlog.
            metrics.refuse(Refusal::MaxConnections);
            tracing::debug!(%peer, "refused: connection limit reached");
            drop(stream);
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        start(stream, peer, permit);
    }
}
