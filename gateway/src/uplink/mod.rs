//! The uplink: gRPC streams from the spool to the registry.
//!
//! One stream per spool stream: the live one sends batches as they are
//! spooled; older ones (a backlog left by an outage or a restart) are
//! replayed beside it at `replay_batches_per_sec`. Each stream opens with a
//! Hello carrying the spool stream's id; the registry's HelloAck says what is
//! already durable, and every Ack removes batches from the spool. Any failure
//! ends all streams and the uplink reconnects with jittered exponential
//! backoff; nothing unacknowledged ever leaves the spool. Batches go out as
//! the spool holds them, never decoded and encoded again ([`wire`]).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fieldlink_model::proto::{Hello, RegistryMessage, registry_message::Body};
use rand::Rng;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::config::UplinkConfig;
use crate::metrics::Metrics;
use crate::normalize::Announcements;
use crate::spool::Spool;

mod wire;

use wire::{Outgoing, UplinkCodec};

/// The registry's ingest method.
const STREAM_PATH: &str = "/fieldlink.v1.Ingest/Stream";

/// Runs the uplink until `shutdown`.
#[derive(Debug)]
pub struct Uplink {
    /// Uplink settings.
    pub config: UplinkConfig,
    /// Gateway id for the Hello.
    pub gateway_id: String,
    /// Protocols for the Hello.
    pub protocols: Vec<String>,
    /// The spool.
    pub spool: Arc<Mutex<Spool>>,
    /// Woken when a batch is spooled.
    pub wake: Arc<Notify>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Every declared device's announce: a new live stream starts with
    /// them, so its points never arrive before the announces still waiting
    /// in a backlog stream.
    pub announces: Arc<Announcements>,
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

/// The uplink running on its own thread ([`Uplink::spawn`]).
#[derive(Debug)]
pub struct UplinkThread {
    done: tokio::sync::oneshot::Receiver<()>,
}

impl UplinkThread {
    /// Waits until the uplink has stopped (after its `shutdown`).
    pub async fn join(self) {
        // An error means the thread ended without a word: ended all the same.
        let _ = self.done.await;
    }
}

impl Uplink {
    /// Runs [`Uplink::run`] on a thread of its own, with a single-threaded
    /// runtime that also drives the registry connection.
    ///
    /// Device tasks are many and, in a busy gateway, always runnable; a task
    /// on their runtime waits for a pass over all of them before it runs
    /// again. The uplink's streams wait on acks and HTTP/2 window updates
    /// many times a second; on the devices' runtime each of those waits
    /// took a whole pass (5 000 Modbus devices polled back to back: 35
    /// batches/s delivered while the devices filled the spool ten times
    /// faster). On its own thread the uplink runs as soon as the kernel
    /// wakes it.
    ///
    /// # Errors
    /// When the thread or its runtime cannot be created.
    pub fn spawn(self, shutdown: CancellationToken) -> std::io::Result<UplinkThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("uplink".to_owned())
            .spawn(move || {
                runtime.block_on(self.run(shutdown));
                let _ = done_tx.send(());
            })?;
        Ok(UplinkThread { done })
    }

    /// Connects, streams, reconnects, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut backoff = this.config.reconnect_min;
        loop {
            let attempt = CancellationToken::new();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = this.clone().session(attempt.clone()) => r,
            };
            attempt.cancel();
            this.metrics.uplink_connected.store(0, Relaxed);
            match result {
                Ok(()) => backoff = this.config.reconnect_min,
                Err(e) => tracing::warn!(error = %e, "uplink down; reconnecting"),
            }
            let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
            backoff = (backoff * 2).min(this.config.reconnect_max);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One connection: a stream per spool stream, until one fails.
    async fn session(self: Arc<Self>, cancel: CancellationToken) -> Result<(), String> {
        let channel = Endpoint::from_shared(self.config.registry.clone())
            .map_err(|e| format!("uplink.registry: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .connect()
            .await
            .map_err(|e| format!("cannot reach the registry at {}: {e}", self.config.registry))?;
        let (live, streams) = {
            let mut spool = lock(&self.spool);
            let before = spool.live().0;
            let live = spool.rotate_if_backlog().map_err(|e| e.to_string())?;
            if live != before {
                tracing::info!(
                    backlog_stream = before,
                    live_stream = live,
                    "backlog found: live data goes to a new stream"
                );
                for payload in self.announces.batches().iter() {
                    spool.append(payload).map_err(|e| e.to_string())?;
                }
            }
            (live, spool.streams())
        };
        let (done_tx, mut done_rx) = mpsc::channel::<(u64, Result<(), String>)>(streams.len() + 1);
        for (epoch, id) in streams {
            let this = self.clone();
            let channel = channel.clone();
            let cancel = cancel.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let result = this.stream(channel, epoch, id, epoch != live, cancel).await;
                let _ = done.send((epoch, result)).await;
            });
        }
        drop(done_tx);
        self.metrics.uplink_connected.store(1, Relaxed);
        tracing::info!(registry = %self.config.registry, "uplink connected");
        while let Some((epoch, result)) = done_rx.recv().await {
            match result {
                Ok(()) if epoch != live => continue, // a backlog fully replayed
                Ok(()) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Streams spool stream `epoch` until it fails, is cancelled or (for a
    /// replay) is fully acknowledged.
    async fn stream(
        &self,
        channel: Channel,
        epoch: u64,
        stream_id: String,
        replay: bool,
        cancel: CancellationToken,
    ) -> Result<(), String> {
        let (tx, rx) = mpsc::channel::<Outgoing>(self.config.max_inflight_batches + 1);
        let hello = Hello {
            gateway_id: self.gateway_id.clone(),
            stream_id: stream_id.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocols: self.protocols.clone(),
        };
        tx.send(Outgoing::Hello(hello))
            .await
            .map_err(|_| "stream closed".to_owned())?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let bearer = format!("Bearer {}", self.config.token)
            .parse()
            .map_err(|_| "uplink.token: not valid in a header".to_owned())?;
        request.metadata_mut().insert("authorization", bearer);
        let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
        client
            .ready()
            .await
            .map_err(|e| format!("the registry channel is not ready: {e}"))?;
        let mut inbound = client
            .streaming(request, PathAndQuery::from_static(STREAM_PATH), UplinkCodec)
            .await
            .map_err(|s| format!("registry refused the stream: {}: {}", s.code(), s.message()))?
            .into_inner();
        let acked = match inbound.message().await {
            Ok(Some(RegistryMessage {
                body: Some(Body::HelloAck(ack)),
            })) => ack.acked_sequence,
            Ok(other) => return Err(format!("expected HelloAck, got {other:?}")),
            Err(s) => return Err(format!("{}: {}", s.code(), s.message())),
        };
        self.ack(epoch, acked)?;
        tracing::info!(stream = %stream_id, epoch, replay, acked, "uplink stream open");
        let mut sent = acked.max(
            lock(&self.spool)
                .first_unacked(epoch)
                .map_or(acked, |s| s - 1),
        );
        let mut inflight = 0usize;
        let period = Duration::from_secs_f64(1.0 / f64::from(self.config.replay_batches_per_sec));
        let mut pace = tokio::time::interval(period);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if replay && inflight == 0 && lock(&self.spool).first_unacked(epoch).is_none() {
                tracing::info!(stream = %stream_id, "backlog replayed");
                return Ok(());
            }
            // Send what fits in the window (one per tick when replaying).
            let room = self.config.max_inflight_batches.saturating_sub(inflight);
            let want = if replay { room.min(1) } else { room };
            if want > 0 {
                let batches = lock(&self.spool)
                    .read_after(epoch, sent, want)
                    .map_err(|e| e.to_string())?;
                for (sequence, payload) in batches {
                    // Checked by its CRC when read; sent as spooled.
                    tx.send(Outgoing::Batch { sequence, payload })
                        .await
                        .map_err(|_| "stream closed".to_owned())?;
                    sent = sequence;
                    inflight += 1;
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.wake.notified(), if !replay => {}
                _ = pace.tick(), if replay => {}
                message = inbound.message() => match message {
                    Ok(Some(RegistryMessage { body: Some(Body::Ack(ack)) })) => {
                        inflight = inflight.saturating_sub(1);
                        if !ack.rejections.is_empty() {
                            tracing::warn!(stream = %stream_id, replay, sequence = ack.sequence, rejected = ack.rejected_points, rejections = ?ack.rejections, "registry rejected part of a batch");
                        }
                        self.ack(epoch, ack.sequence)?;
                        self.metrics.batches_acked.fetch_add(1, Relaxed);
                    }
                    Ok(Some(RegistryMessage { body: Some(Body::Error(e)) })) => {
                        return Err(format!("registry error {:?}: {}", e.code(), e.message));
                    }
                    Ok(Some(other)) => return Err(format!("unexpected {other:?}")),
                    Ok(None) => return Err("registry ended the stream".to_owned()),
                    Err(s) => return Err(format!("{}: {}", s.code(), s.message())),
                },
            }
        }
    }

    fn ack(&self, epoch: u64, sequence: u64) -> Result<(), String> {
        let mut spool = lock(&self.spool);
        spool.ack(epoch, sequence).map_err(|e| e.to_string())?;
        self.metrics
            .uplink_lag_ms
            .store(spool.oldest_age_ms(), Relaxed);
        self.metrics.spool_batches.store(spool.batches(), Relaxed);
        self.metrics.spool_bytes.store(spool.bytes(), Relaxed);
        Ok(())
    }
}
