//! The `fieldlink.v1.Ingest` service.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fieldlink_model::proto::{self, HelloAck, RegistryMessage, registry_message::Body};
use fieldlink_model::{Protocol, now_unix_nanos, validate_device_id};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::committer::{Outbound, Pending, StreamCtx};
use super::lean::Inbound;
use super::prepare::{Window, check};
use crate::Shared;
use crate::config::Tenant;

/// How long a new stream may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The gRPC service gateways stream to.
#[derive(Debug, Clone)]
pub struct IngestService {
    shared: Arc<Shared>,
    committer: mpsc::Sender<Pending>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl IngestService {
    pub(crate) fn new(
        shared: Arc<Shared>,
        committer: mpsc::Sender<Pending>,
        shutdown: CancellationToken,
        tasks: tokio_util::task::TaskTracker,
    ) -> Self {
        IngestService {
            shared,
            committer,
            shutdown,
            tasks,
        }
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<Tenant, Status> {
        let refuse = |why: &str| {
            self.shared
                .metrics
                .streams_unauthenticated
                .fetch_add(1, Relaxed);
            Status::unauthenticated(why.to_owned())
        };
        let Some(value) = request.metadata().get("authorization") else {
            return Err(refuse(
                "missing `authorization: Bearer <tenant token>` metadata",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| refuse("`authorization` metadata is not `Bearer <token>`"))?;
        self.shared
            .tenant_by_token(token.trim())
            .cloned()
            .ok_or_else(|| refuse("unknown tenant token"))
    }
}

fn message(body: Body) -> Result<RegistryMessage, Status> {
    Ok(RegistryMessage { body: Some(body) })
}

fn error(code: proto::error::Code, text: String, sequence: u64) -> Result<RegistryMessage, Status> {
    message(Body::Error(proto::Error {
        code: code as i32,
        message: text,
        sequence,
    }))
}

impl IngestService {
    /// One gateway session: authenticate, then read its hello and batches
    /// on a task of its own; the replies are the returned stream.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without a known tenant token.
    pub(crate) async fn stream(
        &self,
        request: Request<Streaming<Inbound>>,
    ) -> Result<Response<ReceiverStream<Result<RegistryMessage, Status>>>, Status> {
        let tenant = self.authenticate(&request)?;
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let inflight = self.shared.settings.max_inflight_batches;
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        self.tasks.spawn(forward(out_rx, tx));
        let session = Session {
            shared: self.shared.clone(),
            committer: self.committer.clone(),
            shutdown: self.shutdown.clone(),
            tenant,
            tx: out_tx,
            inflight: Arc::new(Semaphore::new(inflight)),
        };
        self.shared.metrics.streams_opened.fetch_add(1, Relaxed);
        self.tasks.spawn(async move {
            session.run(inbound, peer).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    shared: Arc<Shared>,
    committer: mpsc::Sender<Pending>,
    shutdown: CancellationToken,
    tenant: Tenant,
    tx: mpsc::UnboundedSender<Outbound>,
    inflight: Arc<Semaphore>,
}

/// Hands the session's messages to the transport in order, releasing each
/// batch's in-flight permit only then: a gateway that stops reading acks
/// stops being read.
async fn forward(
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    transport: mpsc::Sender<Result<RegistryMessage, Status>>,
) {
    while let Some((message, permit)) = outbound.recv().await {
        let ended = message.is_err();
        if transport.send(message).await.is_err() || ended {
            break;
        }
        drop(permit);
    }
}

impl Session {
    async fn run(self, mut inbound: Streaming<Inbound>, peer: Option<std::net::SocketAddr>) {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(Inbound::Hello(hello)))) => hello,
            Ok(Ok(Some(_))) => {
                return self.fail(
                    proto::error::Code::Protocol,
                    "the first message must be a Hello".into(),
                    0,
                );
            }
            Ok(Ok(None)) => return,
            Ok(Err(status)) => return self.stream_error(status),
            Err(_) => {
                return self.fail(
                    proto::error::Code::Protocol,
                    "no Hello within 30 s".into(),
                    0,
                );
            }
        };
        if let Err(e) = validate_device_id(&hello.gateway_id) {
            let text = format!("gateway_id: {}", e.to_string().replace("device id", "id"));
            return self.fail(proto::error::Code::InvalidHello, text, 0);
        }
        if let Err(e) = validate_device_id(&hello.stream_id) {
            let text = format!("stream_id: {}", e.to_string().replace("device id", "id"));
            return self.fail(proto::error::Code::InvalidHello, text, 0);
        }
        let protocols: BTreeSet<Protocol> = hello
            .protocols
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        let key = format!(
            "{}\u{1f}{}\u{1f}{}",
            self.tenant.name, hello.gateway_id, hello.stream_id
        );
        let (tenant, gateway, generation, cancel, acked) = {
            let mut counters = self.shared.write_counters();
            let tenant = counters.tenant(&self.tenant.name);
            let gateway = counters.gateway(tenant, &hello.gateway_id, now_unix_nanos());
            let (generation, cancel) =
                counters.session_start(gateway, &key, &hello.software_version, protocols);
            (
                tenant,
                gateway,
                generation,
                cancel,
                counters.stream_sequence(&key),
            )
        };
        self.shared.metrics.streams_active.fetch_add(1, Relaxed);
        let span = tracing::info_span!(
            "stream",
            tenant = %self.tenant.name,
            gateway = %hello.gateway_id,
            peer = ?peer
        );
        let _entered = span.enter();
        tracing::info!(acked, version = %hello.software_version, "gateway stream opened");
        drop(_entered);
        let ctx = Arc::new(StreamCtx {
            key,
            tenant,
            tenant_name: self.tenant.name.clone(),
            cloud: self.tenant.cloud,
            gateway,
            gateway_id: hello.gateway_id.clone(),
            responder: self.tx.clone(),
        });
        let hello_ack = HelloAck {
            acked_sequence: acked,
            registry_version: env!("CARGO_PKG_VERSION").to_owned(),
            max_message_bytes: self.shared.settings.max_message_bytes as u64,
        };
        if self
            .tx
            .send((message(Body::HelloAck(hello_ack)), None))
            .is_ok()
        {
            self.read_batches(&mut inbound, &ctx, &cancel).await;
        }
        self.shared.metrics.streams_active.fetch_sub(1, Relaxed);
        self.shared
            .write_counters()
            .session_end(gateway, &ctx.key, generation, now_unix_nanos());
        tracing::info!(parent: &span, "gateway stream closed");
    }

    async fn read_batches(
        &self,
        inbound: &mut Streaming<Inbound>,
        ctx: &Arc<StreamCtx>,
        superseded: &CancellationToken,
    ) {
        let settings = &self.shared.settings;
        let mut last_sequence = 0u64;
        loop {
            // `Streaming::message` keeps partial frames in the stream: cancel safe.
            let next = tokio::select! {
                _ = superseded.cancelled() => {
                    let text = "a new session of this gateway stream took over".to_owned();
                    return self.fail(proto::error::Code::Superseded, text, 0);
                }
                _ = self.shutdown.cancelled() => {
                    let text = "the registry is shutting down".to_owned();
                    return self.fail(proto::error::Code::Shutdown, text, 0);
                }
                next = inbound.message() => next,
            };
            let batch = match next {
                Ok(Some(Inbound::Batch(batch))) => batch,
                Ok(Some(_)) => {
                    let text = "only Batch messages may follow the Hello".to_owned();
                    return self.fail(proto::error::Code::Protocol, text, 0);
                }
                Ok(None) => return,
                Err(status) => return self.stream_error(status),
            };
            if batch.sequence <= last_sequence {
                let text = format!(
                    "batch sequence {} is not above the previous one ({last_sequence})",
                    batch.sequence
                );
                return self.fail(proto::error::Code::Sequence, text, batch.sequence);
            }
            last_sequence = batch.sequence;
            let Ok(permit) = self.inflight.clone().acquire_owned().await else {
                return;
            };
            let window = Window::around(
                now_unix_nanos(),
                settings.backfill,
                settings.clock_skew,
                settings.utc_offset,
            );
            let sequence = batch.sequence;
            let mut checked = check(batch, window);
            if !checked.telemetry.is_empty() {
                let counters = self.shared.read_counters();
                checked.resolve(|id| counters.index_of(id));
            }
            let pending = Pending {
                stream: ctx.clone(),
                sequence,
                checked,
                permit,
            };
            if self.committer.send(pending).await.is_err() {
                let text = "the registry is shutting down".to_owned();
                return self.fail(proto::error::Code::Shutdown, text, 0);
            }
        }
    }

    /// Ends the stream with a typed error, then a status.
    fn fail(&self, code: proto::error::Code, text: String, sequence: u64) {
        if code == proto::error::Code::Shutdown {
            tracing::info!(%text, "ending gateway stream");
        } else {
            tracing::warn!(?code, %text, "ending gateway stream");
        }
        let _ = self.tx.send((error(code, text.clone(), sequence), None));
        let status = match code {
            proto::error::Code::Shutdown | proto::error::Code::Storage => Status::unavailable(text),
            proto::error::Code::Superseded => Status::aborted(text),
            _ => Status::invalid_argument(text),
        };
        let _ = self.tx.send((Err(status), None));
    }

    /// The inbound stream broke: a malformed or oversized message, or a reset.
    fn stream_error(&self, status: Status) {
        self.shared.metrics.stream_errors.fetch_add(1, Relaxed);
        tracing::warn!(code = ?status.code(), message = status.message(), "gateway stream failed");
        let _ = self.tx.send((Err(status), None));
    }
}
