//! A stop signal shared by a face's client tasks.

use std::sync::Arc;

use tokio::sync::watch;

/// Stopped once, seen by every clone.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Stop {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Stop {
    pub(crate) fn stop(&self) {
        let _ = self.tx.send(true);
    }

    /// Completes once stopped.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub(crate) async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}
