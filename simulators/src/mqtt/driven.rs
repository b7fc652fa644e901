//! An rumqttc event loop driven by a task of its own. `EventLoop::poll` is
//! not cancel-safe while it connects: polled in a `select!` beside a timer,
//! a tick during the CONNECT drops the half-open connection and the next
//! poll opens another, so the broker sees the client connect twice. Here the
//! loop is only ever polled to completion, and its events arrive on a
//! channel, which is cancel-safe.

use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Pause after a connection error before the next poll reconnects.
const RETRY: Duration = Duration::from_millis(250);

/// A driven event loop; dropping it stops the loop.
#[derive(Debug)]
pub(crate) struct Driven {
    /// The loop's events and errors, in order.
    pub(crate) events: mpsc::Receiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
}

impl Driven {
    /// Drives `eventloop` until dropped.
    pub(crate) fn start(mut eventloop: EventLoop) -> Driven {
        let (tx, events) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let polled = eventloop.poll().await;
                let failed = polled.is_err();
                if tx.send(polled).await.is_err() {
                    return;
                }
                if failed {
                    tokio::time::sleep(RETRY).await;
                }
            }
        });
        Driven { events, task }
    }

    /// Waits (up to a second) until the DISCONNECT asked for went out.
    pub(crate) async fn flush_disconnect(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(e) = self.events.recv().await {
                if matches!(
                    e,
                    Err(_) | Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))
                ) {
                    return;
                }
            }
        })
        .await;
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        self.task.abort();
    }
}
