//! One synthetic gateway stream: hello, announce its devices, then stream
//! telemetry templates with a window of outstanding batches, timing every
//! ack and tracking which devices had points accepted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use fieldlink_model::proto::{
    Batch, DeviceAnnounce, DeviceStatus, GatewayMessage, Hello, RegistryMessage, TagDescriptor,
    device_status, gateway_message, registry_message,
};
use fieldlink_model::{Category, Protocol, now_unix_nanos};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use super::wire::{BenchCodec, Outgoing, TAGS, Template};

/// Devices announced per batch in phase 1.
const ANNOUNCE_BATCH: u32 = 2_000;
/// A stream that hears nothing for this long has stalled.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);
/// Rejection details kept per stream.
const KEPT_SAMPLES: usize = 5;

/// The gRPC method of `fieldlink.v1.Ingest/Stream`.
const STREAM_PATH: &str = "/fieldlink.v1.Ingest/Stream";

/// What one stream does.
#[derive(Debug, Clone)]
pub(crate) struct StreamPlan {
    /// Stream number, from 0.
    pub(crate) index: usize,
    /// gRPC URL of the registry.
    pub(crate) url: String,
    /// Tenant token.
    pub(crate) token: String,
    /// Global index of its first device.
    pub(crate) first_device: u64,
    /// Its devices.
    pub(crate) devices: u32,
    /// Devices per telemetry batch.
    pub(crate) devices_per_batch: u32,
    /// Points per device per telemetry batch (1: every point of a batch is
    /// another device).
    pub(crate) points_per_device: usize,
    /// Id of this run's sequence spaces.
    pub(crate) run_id: String,
    /// Batches kept un-acknowledged.
    pub(crate) window: usize,
}

/// Where the run is; the driver moves it forward, streams wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Connect, say hello, build templates.
    Prepare,
    /// Announce devices.
    Announce,
    /// Stream telemetry until the deadline.
    Telemetry {
        /// When to stop sending.
        deadline: Instant,
    },
}

/// Signals from streams to the driver.
#[derive(Debug)]
pub(crate) struct Signals {
    /// A stream is connected and ready to announce.
    pub(crate) ready: mpsc::Sender<usize>,
    /// A stream has all its devices acknowledged.
    pub(crate) announced: mpsc::Sender<usize>,
    /// Running totals of all streams, for progress lines.
    pub(crate) progress: Arc<Progress>,
}

/// Running totals of all streams.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Announce batches acknowledged.
    pub(crate) announce_batches: AtomicU64,
    /// Telemetry batches acknowledged.
    pub(crate) batches: AtomicU64,
    /// Points accepted.
    pub(crate) accepted: AtomicU64,
    /// (day, device) records the accepted points created or updated.
    pub(crate) device_days: AtomicU64,
}

/// What one stream measured.
#[derive(Debug)]
pub(crate) struct StreamOutcome {
    /// Announce batches acknowledged.
    pub(crate) announce_batches: u64,
    /// Announces and statuses rejected.
    pub(crate) announce_rejected: u64,
    /// Telemetry batches acknowledged.
    pub(crate) batches: u64,
    /// Points the acks accepted.
    pub(crate) accepted: u64,
    /// (day, device) records the accepted points created or updated: one
    /// per device of an accepted batch (its points share one timestamp, so
    /// one day, and are accepted or rejected together).
    pub(crate) device_days: u64,
    /// Points the acks rejected.
    pub(crate) rejected: u64,
    /// Acks marked duplicate.
    pub(crate) duplicates: u64,
    /// Acks that did not name the oldest outstanding batch.
    pub(crate) out_of_order_acks: u64,
    /// Distinct devices with at least one accepted point.
    pub(crate) reporting: u64,
    /// Points sent.
    pub(crate) sent_points: u64,
    /// Bytes of telemetry messages sent.
    pub(crate) sent_bytes: u64,
    /// Telemetry ack latency, microseconds.
    pub(crate) latency: Histogram<u64>,
    /// Announce ack latency, microseconds.
    pub(crate) announce_latency: Histogram<u64>,
    /// Rejected items (points, or 1 per announce/status) by reason.
    pub(crate) reasons: BTreeMap<String, u64>,
    /// Some rejection details.
    pub(crate) samples: Vec<String>,
    /// When the last telemetry ack came.
    pub(crate) last_ack: Option<Instant>,
}

/// The device id of global device `index`.
pub(crate) fn device_id(index: u64) -> String {
    format!("bench-dev-{index:07}")
}

/// Class, category and protocol of global device `index`: every category
/// (so every class) and every protocol in turn.
fn device_kind(index: u64) -> (Category, Protocol) {
    let categories = Category::ALL.len() as u64;
    let protocols = Protocol::ALL.len() as u64;
    // Both indexes are below the lengths of their lists.
    let category = Category::ALL[(index % categories) as usize];
    let protocol = Protocol::ALL[((index / categories) % protocols) as usize];
    (category, protocol)
}

/// A new histogram of microseconds, 1 µs to 10 min, 3 digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Runs one stream through the phases `phase` announces.
///
/// # Errors
/// When the registry cannot be reached, ends the stream, answers out of
/// protocol or stalls.
pub(crate) async fn run_stream(
    plan: StreamPlan,
    mut phase: watch::Receiver<Phase>,
    signals: Signals,
) -> anyhow::Result<StreamOutcome> {
    let index = plan.index;
    let mut stream = Connection::open(&plan).await?;
    let templates = build_templates(&plan);
    signals.ready.send(index).await.ok();
    phase
        .wait_for(|p| *p != Phase::Prepare)
        .await
        .context("the bench driver went away")?;

    let mut outcome = StreamOutcome {
        announce_batches: 0,
        announce_rejected: 0,
        batches: 0,
        accepted: 0,
        device_days: 0,
        rejected: 0,
        duplicates: 0,
        out_of_order_acks: 0,
        reporting: 0,
        sent_points: 0,
        sent_bytes: 0,
        latency: latency_histogram(),
        announce_latency: latency_histogram(),
        reasons: BTreeMap::new(),
        samples: Vec::new(),
        last_ack: None,
    };
    stream
        .announce(&plan, &signals.progress, &mut outcome)
        .await?;
    signals.announced.send(index).await.ok();
    let deadline = loop {
        if let Phase::Telemetry { deadline } = *phase.borrow_and_update() {
            break deadline;
        }
        phase
            .changed()
            .await
            .context("the bench driver went away")?;
    };
    stream
        .telemetry(&plan, &templates, deadline, &signals.progress, &mut outcome)
        .await?;
    stream.close().await?;
    Ok(outcome)
}

/// The templates of a stream's devices, `devices_per_batch` each.
fn build_templates(plan: &StreamPlan) -> Vec<Arc<Template>> {
    let step = plan.devices_per_batch.max(1);
    (0..plan.devices)
        .step_by(step as usize)
        .map(|start| {
            let end = start.saturating_add(step).min(plan.devices);
            let first = plan.first_device;
            Arc::new(Template::build(
                start..end,
                plan.points_per_device,
                |local| device_id(first + u64::from(local)),
            ))
        })
        .collect()
}

/// An outstanding batch.
#[derive(Debug)]
struct InFlight {
    sequence: u64,
    sent: Instant,
    /// Index of the template, for telemetry batches.
    template: Option<usize>,
}

/// An open `Ingest.Stream`.
struct Connection {
    index: usize,
    tx: mpsc::Sender<Outgoing>,
    inbound: Streaming<RegistryMessage>,
    next_sequence: u64,
    inflight: VecDeque<InFlight>,
    window: usize,
}

impl Connection {
    async fn open(plan: &StreamPlan) -> anyhow::Result<Self> {
        let index = plan.index;
        let fail = |what: String| anyhow!("stream {index} failed: {what}");
        let channel = Endpoint::from_shared(plan.url.clone())
            .with_context(|| format!("invalid registry URL `{}`", plan.url))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| fail(format!("cannot connect to {}: {e}", plan.url)))?;
        let (tx, rx) = mpsc::channel(plan.window + 1);
        let hello = GatewayMessage {
            body: Some(gateway_message::Body::Hello(Hello {
                gateway_id: format!("bench-gw-{index:03}"),
                stream_id: format!("{}-{index:03}", plan.run_id),
                software_version: concat!("fieldlink-bench/", env!("CARGO_PKG_VERSION")).into(),
                protocols: Protocol::ALL.iter().map(|p| p.code().to_owned()).collect(),
            })),
        };
        tx.send(Outgoing::encode(&hello))
            .await
            .map_err(|_| fail("request stream closed".into()))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let bearer = MetadataValue::try_from(format!("Bearer {}", plan.token))
            .context("the token is not valid in a gRPC header")?;
        request.metadata_mut().insert("authorization", bearer);
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| fail(format!("channel not ready: {e}")))?;
        let response = grpc
            .streaming(request, PathAndQuery::from_static(STREAM_PATH), BenchCodec)
            .await
            .map_err(|s| fail(format!("status {:?}: {}", s.code(), s.message())))?;
        let mut connection = Connection {
            index,
            tx,
            inbound: response.into_inner(),
            next_sequence: 1,
            inflight: VecDeque::with_capacity(plan.window),
            window: plan.window,
        };
        match connection.next_message().await? {
            registry_message::Body::HelloAck(ack) => {
                connection.next_sequence = ack.acked_sequence + 1;
            }
            other => return Err(fail(format!("expected HelloAck, got {other:?}"))),
        }
        Ok(connection)
    }

    fn fail(&self, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("stream {} failed: {what}", self.index)
    }

    /// The next message; registry errors and statuses become errors.
    async fn next_message(&mut self) -> anyhow::Result<registry_message::Body> {
        let next = tokio::time::timeout(ACK_TIMEOUT, self.inbound.message()).await;
        match next {
            Err(_) => Err(self.fail(format_args!(
                "nothing from the registry for {} s with {} batch(es) outstanding",
                ACK_TIMEOUT.as_secs(),
                self.inflight.len()
            ))),
            Ok(Err(s)) => Err(self.fail(format_args!("status {:?}: {}", s.code(), s.message()))),
            Ok(Ok(None)) => Err(self.fail(format_args!(
                "the registry ended the stream with {} batch(es) outstanding",
                self.inflight.len()
            ))),
            Ok(Ok(Some(RegistryMessage {
                body: Some(registry_message::Body::Error(e)),
            }))) => Err(self.fail(format_args!(
                "registry error {}: {} (sequence {})",
                e.code().as_str_name(),
                e.message,
                e.sequence
            ))),
            Ok(Ok(Some(RegistryMessage { body: Some(body) }))) => Ok(body),
            Ok(Ok(Some(RegistryMessage { body: None }))) => {
                Err(self.fail("empty message from the registry"))
            }
        }
    }

    async fn send(&mut self, message: Outgoing, template: Option<usize>) -> anyhow::Result<()> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.inflight.push_back(InFlight {
            sequence,
            sent: Instant::now(),
            template,
        });
        let fail = |_| anyhow!("stream {} failed: the request stream closed", self.index);
        self.tx.send(message).await.map_err(fail)
    }

    /// Waits for the next ack; returns it with the batches it completes
    /// (the oldest outstanding ones up to its sequence).
    async fn next_ack(
        &mut self,
    ) -> anyhow::Result<(fieldlink_model::proto::Ack, Vec<InFlight>, bool)> {
        let ack = match self.next_message().await? {
            registry_message::Body::Ack(ack) => ack,
            other => return Err(self.fail(format_args!("expected an Ack, got {other:?}"))),
        };
        let mut done = Vec::new();
        while self
            .inflight
            .front()
            .is_some_and(|f| f.sequence <= ack.sequence)
        {
            done.extend(self.inflight.pop_front());
        }
        let in_order = done.len() == 1;
        if done.is_empty() {
            return Err(self.fail(format_args!(
                "ack for sequence {} which is not outstanding",
                ack.sequence
            )));
        }
        Ok((ack, done, in_order))
    }

    /// Phase 1: every device announced and online, all acked.
    async fn announce(
        &mut self,
        plan: &StreamPlan,
        progress: &Progress,
        outcome: &mut StreamOutcome,
    ) -> anyhow::Result<()> {
        let mut next = 0u32;
        while next < plan.devices || !self.inflight.is_empty() {
            while next < plan.devices && self.inflight.len() < self.window {
                let end = next.saturating_add(ANNOUNCE_BATCH).min(plan.devices);
                let batch = announce_batch(plan, next, end, self.next_sequence);
                self.send(Outgoing::encode(&batch), None).await?;
                next = end;
            }
            let (ack, done, in_order) = self.next_ack().await?;
            outcome.announce_batches += done.len() as u64;
            record_latency(&mut outcome.announce_latency, &done, Instant::now());
            progress
                .announce_batches
                .fetch_add(done.len() as u64, Relaxed);
            outcome.out_of_order_acks += u64::from(!in_order);
            for r in &ack.rejections {
                outcome.announce_rejected += u64::from(r.count);
                note_rejection(outcome, r);
            }
        }
        Ok(())
    }

    /// Phase 2: templates in turn until `deadline`, then the outstanding acks.
    async fn telemetry(
        &mut self,
        plan: &StreamPlan,
        templates: &[Arc<Template>],
        deadline: Instant,
        progress: &Progress,
        outcome: &mut StreamOutcome,
    ) -> anyhow::Result<()> {
        if templates.is_empty() {
            return Ok(());
        }
        let mut reporting = Reporting::new(plan.devices, templates.len());
        let mut next = 0usize;
        loop {
            while self.inflight.len() < self.window && Instant::now() < deadline {
                let template = &templates[next];
                outcome.sent_points += template.points();
                outcome.sent_bytes += template.message_len(self.next_sequence) as u64;
                let message = Outgoing::Telemetry {
                    sequence: self.next_sequence,
                    template: template.clone(),
                    time_unix_nano: u64::try_from(now_unix_nanos()).unwrap_or(0),
                };
                self.send(message, Some(next)).await?;
                next = (next + 1) % templates.len();
            }
            if self.inflight.is_empty() {
                break;
            }
            let (ack, done, in_order) = self.next_ack().await?;
            let now = Instant::now();
            outcome.last_ack = Some(now);
            outcome.batches += done.len() as u64;
            outcome.out_of_order_acks += u64::from(!in_order);
            outcome.accepted += ack.accepted_points;
            let device_days = ack.accepted_points / plan.points_per_device.max(1) as u64;
            outcome.device_days += device_days;
            progress.batches.fetch_add(done.len() as u64, Relaxed);
            progress.accepted.fetch_add(ack.accepted_points, Relaxed);
            progress.device_days.fetch_add(device_days, Relaxed);
            outcome.rejected += ack.rejected_points;
            outcome.duplicates += u64::from(ack.duplicate);
            record_latency(&mut outcome.latency, &done, now);
            for r in &ack.rejections {
                note_rejection(outcome, r);
            }
            // Only the acked batch's own devices are known to be accepted:
            // an ack that covers earlier batches says nothing of their points.
            let acked = done
                .iter()
                .rfind(|f| f.sequence == ack.sequence)
                .and_then(|f| f.template);
            if let Some(t) = acked
                && ack.accepted_points > 0
            {
                reporting.mark(t, &templates[t], plan, &ack.rejections);
            }
        }
        outcome.reporting = reporting.count;
        Ok(())
    }

    /// Ends the request stream and waits for the registry to end its side.
    async fn close(mut self) -> anyhow::Result<()> {
        drop(self.tx);
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(message) = self.inbound.message().await.transpose() {
                if let Err(s) = message {
                    return Err(anyhow!("status {:?}: {}", s.code(), s.message()));
                }
            }
            Ok(())
        })
        .await;
        match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow!("stream {} failed while closing: {e:#}", self.index)),
            Err(_) => Err(anyhow!(
                "stream {} failed: the registry did not end the stream within 30 s of ours",
                self.index
            )),
        }
    }
}

/// Records send-to-`now` of each batch of `done`, in microseconds.
fn record_latency(histogram: &mut Histogram<u64>, done: &[InFlight], now: Instant) {
    for f in done {
        let micros = u64::try_from(now.duration_since(f.sent).as_micros()).unwrap_or(u64::MAX);
        histogram.saturating_record(micros.max(1));
    }
}

fn note_rejection(outcome: &mut StreamOutcome, r: &fieldlink_model::proto::Rejection) {
    *outcome
        .reasons
        .entry(r.reason().as_str_name().to_owned())
        .or_default() += u64::from(r.count);
    if outcome.samples.len() < KEPT_SAMPLES {
        outcome.samples.push(format!(
            "{} {}: {} ({} item(s))",
            r.device_id,
            r.reason().as_str_name(),
            r.detail,
            r.count
        ));
    }
}

/// The announce batch of stream-local devices `start..end`.
fn announce_batch(plan: &StreamPlan, start: u32, end: u32, sequence: u64) -> GatewayMessage {
    let now = u64::try_from(now_unix_nanos()).unwrap_or(0);
    let count = (end - start) as usize;
    let mut announces = Vec::with_capacity(count);
    let mut statuses = Vec::with_capacity(count);
    for local in start..end {
        let global = plan.first_device + u64::from(local);
        let id = device_id(global);
        let (category, protocol) = device_kind(global);
        announces.push(DeviceAnnounce {
            device_id: id.clone(),
            class: category.class().code().to_owned(),
            category: category.code().to_owned(),
            r#type: format!("bench-{}", category.code()),
            name: format!("bench device {global}"),
            protocol: protocol.code().to_owned(),
            endpoint: format!(
                "10.{}.{}.{}:502",
                (global >> 16) & 255,
                (global >> 8) & 255,
                global & 255
            ),
            attributes: Default::default(),
            tags: TAGS
                .iter()
                .map(|name| TagDescriptor {
                    name: (*name).to_owned(),
                    r#type: "double".to_owned(),
                    unit: String::new(),
                })
                .collect(),
        });
        statuses.push(DeviceStatus {
            device_id: id,
            state: device_status::State::Online as i32,
            reason: "bench".to_owned(),
            time_unix_nano: now,
        });
    }
    GatewayMessage {
        body: Some(gateway_message::Body::Batch(Batch {
            sequence,
            announces,
            statuses,
            telemetry: Vec::new(),
            retires: Vec::new(),
        })),
    }
}

/// Which of a stream's devices had points accepted.
#[derive(Debug)]
struct Reporting {
    devices: Vec<bool>,
    /// Templates whose every device is marked already.
    complete: Vec<bool>,
    count: u64,
}

impl Reporting {
    fn new(devices: u32, templates: usize) -> Self {
        Reporting {
            devices: vec![false; devices as usize],
            complete: vec![false; templates],
            count: 0,
        }
    }

    /// Marks the devices of template `t` whose points were not all rejected.
    fn mark(
        &mut self,
        t: usize,
        template: &Template,
        plan: &StreamPlan,
        rejections: &[fieldlink_model::proto::Rejection],
    ) {
        if self.complete[t] {
            return;
        }
        let mut rejected: HashMap<&str, u64> = HashMap::new();
        for r in rejections {
            *rejected.entry(r.device_id.as_str()).or_default() += u64::from(r.count);
        }
        let mut all = true;
        for local in template.devices.clone() {
            let accepted = rejected.is_empty()
                || rejected
                    .get(device_id(plan.first_device + u64::from(local)).as_str())
                    .is_none_or(|&n| n < plan.points_per_device as u64);
            let seen = &mut self.devices[local as usize];
            if accepted && !*seen {
                *seen = true;
                self.count += 1;
            }
            all &= *seen;
        }
        self.complete[t] = all;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlink_model::DeviceClass;

    #[test]
    fn devices_cover_every_class_and_protocol() {
        let kinds: Vec<_> = (0..200).map(device_kind).collect();
        for class in DeviceClass::ALL {
            assert!(kinds.iter().any(|(c, _)| c.class() == *class));
        }
        for protocol in Protocol::ALL {
            assert!(kinds.iter().any(|(_, p)| p == protocol));
        }
    }

    #[test]
    fn templates_cover_every_device_once() {
        let plan = StreamPlan {
            index: 0,
            url: String::new(),
            token: String::new(),
            first_device: 100,
            devices: 25,
            devices_per_batch: 10,
            points_per_device: 10,
            run_id: "r".into(),
            window: 4,
        };
        let templates = build_templates(&plan);
        let ranges: Vec<_> = templates.iter().map(|t| t.devices.clone()).collect();
        assert_eq!(ranges, [0..10, 10..20, 20..25]);
        assert_eq!(templates[2].points(), 50);
        let mut reporting = Reporting::new(plan.devices, templates.len());
        let rejection = fieldlink_model::proto::Rejection {
            device_id: device_id(101),
            reason: 2,
            detail: String::new(),
            count: 10,
        };
        reporting.mark(0, &templates[0], &plan, &[rejection]);
        assert_eq!(reporting.count, 9);
        assert!(!reporting.complete[0]);
        reporting.mark(0, &templates[0], &plan, &[]);
        reporting.mark(2, &templates[2], &plan, &[]);
        assert_eq!(reporting.count, 15);
        assert!(reporting.complete[0]);
    }
}
