//! `fieldlink bench ingest`: synthetic gateway streams into a registry.
//!
//! The bench starts its own registry (this binary as `fieldlink registry` in
//! a temporary directory, two tenants: one public, one private cloud) or
//! drives a given one. Streams alternate between the tenants; each owns a
//! contiguous block of devices and runs two phases:
//!
//! 1. announce: every device announced and reported online, 2 000 per
//!    batch, all acknowledged;
//! 2. telemetry for `--duration`: batches of `--batch` points
//!    (`--points-per-device`, default 10, per device; with 1 every point of
//!    a batch is another device, the device-days load) cycling through the
//!    stream's devices, up to `--window` (default 32) batches outstanding
//!    per stream. Device-days/s, the (day, device) records the accepted
//!    points create or update, are reported beside points/s; with `--http`
//!    known, `GET /api/v1/summary` is timed in a loop meanwhile.
//!
//! With `--peer postgres` the same run then upserts the same (day, device)
//! load into a throwaway PostgreSQL cluster (`ingest::postgres`) and prints
//! both device-days/s and their ratio.
//!
//! Telemetry batches are encoded once per run as templates
//! (`ingest::wire`) and written straight into the gRPC buffer with the
//! sequence and the current time patched in, so the generator does no
//! per-point allocation. Afterwards the bench reads the registry's counts
//! back over HTTP and checks them against what it sent: `registered` must
//! equal `--devices` and `reporting` the distinct devices that had a point
//! accepted (points are stamped now, so the registry's today; a run across
//! its midnight will not reconcile). A registry the bench started is then
//! stopped and started again on its data (`ingest::restart`): the restart
//! time is until it serves those same counts. It prints a summary and writes JSON to
//! `<out>/ingest-<devices>d-<streams>s-<unix_secs>.json`.

mod load;
mod postgres;
mod reconcile;
mod registry_process;
mod report;
mod restart;
mod summary_probe;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use load::{Phase, Progress, Signals, StreamOutcome, StreamPlan};
use reconcile::{Commits, Expected, Reconciliation};
use registry_process::{PRIVATE_TOKEN, PUBLIC_TOKEN, RegistryProcess};
use report::{
    AnnounceOut, ArgsOut, CpuOut, Interval, Latency, RegistryOut, RestartOut, Results, RssOut,
    TelemetryOut, per_sec,
};
use summary_probe::SummaryProbe;
use wire::MAX_POINTS_PER_DEVICE;

use crate::process::{
    ThreadCpu, cpu_seconds, machine_busy_seconds, own_cpu_seconds, rss_bytes, thread_cpu,
    thread_cpu_diff,
};

/// Flags of `fieldlink bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Devices announced, spread evenly over the streams.
    #[arg(long, default_value_t = 100_000)]
    pub devices: u64,
    /// Concurrent gateway streams.
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// Points per telemetry batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// How long telemetry is streamed (after all devices are announced).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// gRPC URL of a running registry (e.g. http://127.0.0.1:7600); without
    /// it the bench starts its own registry process in a temporary directory.
    #[arg(long)]
    pub registry: Option<String>,
    /// HTTP URL of that registry, to read its counts back (e.g. http://127.0.0.1:7680).
    #[arg(long, requires = "registry")]
    pub http: Option<String>,
    /// Tenant token for `--registry`.
    #[arg(long, requires = "registry")]
    pub token: Option<String>,
    /// Directory the JSON result is written to.
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
    /// Batches each stream keeps un-acknowledged (the bench's registry
    /// reads at most 64 per stream).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Points per device per telemetry batch, 1 to 10; 1 makes every point
    /// of a batch another device (one (day, device) record per point).
    #[arg(long, default_value_t = 10)]
    pub points_per_device: usize,
    /// Also run the same (day, device) upsert load into a peer database.
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,
    /// Client connections of the peer load.
    #[arg(long, default_value_t = 8)]
    pub peer_clients: usize,
    /// Rows per upsert statement of the peer load.
    #[arg(long, default_value_t = 1_000)]
    pub peer_rows_per_statement: usize,
}

/// A peer of `bench ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// PostgreSQL from the Debian `postgresql` package, in a throwaway
    /// cluster: `INSERT … ON CONFLICT (day, device) DO UPDATE`.
    Postgres,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Postgres => "postgres",
        }
    }
}

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Runs the bench.
///
/// # Errors
/// When the registry cannot be started or reached, or a stream fails, or
/// the registry's counts do not match what was sent.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let bench = async {
        match &args.registry {
            None => run_spawned(&args, started_unix).await,
            Some(url) => run_external(&args, url, started_unix).await,
        }
    };
    // On Ctrl-C the bench is dropped: a registry it started is killed and
    // its directory removed.
    let mut results = tokio::select! {
        results = bench => results?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    if args.peer == Some(Peer::Postgres) {
        let plan = postgres::PeerPlan {
            devices: args.devices,
            clients: args.peer_clients,
            rows_per_statement: args.peer_rows_per_statement,
            duration: args.duration,
            offset: fieldlink_model::UtcOffset::default(),
        };
        let peer = tokio::select! {
            peer = postgres::bench(plan) => peer.context("the PostgreSQL peer failed")?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        };
        results.device_days_ratio = postgres::ratio(
            results.telemetry.device_days_per_sec,
            peer.device_days_per_sec,
        );
        results.peer = Some(peer);
    }
    print!("{}", results.summary());
    let path = results.write_json(&args.out)?;
    println!("results: {}", path.display());
    if let Some(restart) = &results.restart
        && restart.serving_correct_secs.is_none()
    {
        bail!(
            "after a restart the registry did not serve the counts it had: {:?} (see {})",
            restart.reconciliation,
            path.display()
        );
    }
    if !results.reconciliation.ok {
        bail!(
            "counts MISMATCH: the registry reports {} registered and {} reporting, the bench expected {} and {} (see {})",
            results
                .reconciliation
                .registered
                .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
            results
                .reconciliation
                .reporting
                .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
            results.reconciliation.expected_registered,
            results.reconciliation.expected_reporting,
            path.display()
        );
    }
    Ok(())
}

fn check_args(args: &IngestArgs) -> anyhow::Result<()> {
    if args.streams == 0 {
        bail!("--streams must be at least 1");
    }
    if args.devices < args.streams as u64 {
        bail!(
            "--devices ({}) must be at least --streams ({})",
            args.devices,
            args.streams
        );
    }
    if args.devices / args.streams as u64 >= u64::from(u32::MAX) {
        bail!(
            "--devices is too large: at most {} per stream",
            u32::MAX - 1
        );
    }
    if !(1..=MAX_POINTS_PER_DEVICE).contains(&args.points_per_device) {
        bail!("--points-per-device must be 1..={MAX_POINTS_PER_DEVICE}");
    }
    if args.batch < args.points_per_device {
        bail!(
            "--batch must be at least --points-per-device ({})",
            args.points_per_device
        );
    }
    if args.peer.is_some() {
        if args.peer_clients == 0 {
            bail!("--peer-clients must be at least 1");
        }
        if args.peer_rows_per_statement == 0 {
            bail!("--peer-rows-per-statement must be at least 1");
        }
    }
    if args.peer == Some(Peer::Postgres) {
        // Fail before the registry run, not after it.
        postgres::find_bin()?;
    }
    if args.window == 0 {
        bail!("--window must be at least 1");
    }
    if args.duration.is_zero() {
        bail!("--duration must be above 0");
    }
    if args.registry.is_some() && args.token.is_none() {
        bail!("--token (a tenant token of that registry) is required with --registry");
    }
    Ok(())
}

/// The registry a run drives.
#[derive(Debug)]
struct Target {
    grpc: String,
    /// Token of each stream, by stream number.
    tokens: Vec<String>,
    /// Process to read memory and CPU of.
    pid: Option<u32>,
    /// HTTP base URL, to read metrics.
    http: Option<String>,
}

async fn run_spawned(args: &IngestArgs, started_unix: u64) -> anyhow::Result<Results> {
    println!("starting a registry ...");
    let registry = RegistryProcess::start()
        .await
        .context("registry did not start")?;
    let pid = registry.process().pid();
    let baseline = rss_bytes(pid);
    println!(
        "registry listening: grpc={} http={} (pid {pid})",
        registry.process().grpc_url(),
        registry.process().http_url()
    );
    let target = Target {
        grpc: registry.process().grpc_url().to_owned(),
        tokens: (0..args.streams)
            .map(|i| {
                if i % 2 == 0 {
                    PUBLIC_TOKEN
                } else {
                    PRIVATE_TOKEN
                }
                .to_owned()
            })
            .collect(),
        pid: Some(pid),
        http: Some(registry.process().http_url().to_owned()),
    };
    let driven = match drive(args, &target, started_unix).await {
        Ok(driven) => driven,
        Err(e) => {
            let mut registry = registry;
            if let Some(status) = registry.process_mut().exited() {
                eprintln!("the registry exited: {status}");
            }
            let log = registry.process().log();
            eprintln!("registry's last log lines:{}", log.tail_text());
            if let Err(stop) = registry.stop().await {
                eprintln!("and stopping the registry failed: {stop:#}");
            }
            return Err(e);
        }
    };
    let by_cloud = driven.plans.iter().fold((0, 0), |(public, private), p| {
        if p.index % 2 == 0 {
            (public + u64::from(p.devices), private)
        } else {
            (public, private + u64::from(p.devices))
        }
    });
    let expected = Expected {
        registered: args.devices,
        reporting: driven.reporting(),
        by_cloud: Some(by_cloud),
    };
    let reconciliation = match reconcile::reconcile(registry.process().http_url(), expected).await {
        Ok(r) => r,
        Err(e) => {
            let _ = registry.stop().await;
            return Err(e.context("cannot read the registry's counts"));
        }
    };
    let end_rss = rss_bytes(pid);
    println!("restarting the registry on its data ...");
    let restart_started = Instant::now();
    let (registry, stop) = registry.restart().await?;
    let listening_secs = restart_started.elapsed().as_secs_f64() - stop.seconds;
    let restart = restart::until_correct(registry.process().http_url(), expected).await;
    let restart = RestartOut {
        stop_secs: stop.seconds,
        listening_secs,
        serving_correct_secs: restart.after.map(|t| t.as_secs_f64() + listening_secs),
        rss_bytes: rss_bytes(registry.process().pid()),
        bytes_per_device: rss_bytes(registry.process().pid())
            .map(|b| b as f64 / args.devices.max(1) as f64),
        reconciliation: restart.reconciliation,
    };
    let http = registry.process().http_url().to_owned();
    let (stopped, log) = registry.stop().await.context("cannot stop the registry")?;
    let rss = RssOut::new(baseline, driven.after_announce_rss, end_rss, args.devices);
    let registry = RegistryOut {
        spawned: true,
        grpc: target.grpc.clone(),
        http: Some(http),
        stopped: Some(stopped),
        log: Some(log),
    };
    let mut results = driven.results(args, started_unix, registry, rss, reconciliation);
    results.restart = Some(restart);
    Ok(results)
}

async fn run_external(args: &IngestArgs, url: &str, started_unix: u64) -> anyhow::Result<Results> {
    let token = args.token.clone().unwrap_or_default();
    let target = Target {
        grpc: url.to_owned(),
        tokens: vec![token; args.streams],
        pid: None,
        http: args.http.clone(),
    };
    let driven = drive(args, &target, started_unix).await?;
    let expected = Expected {
        registered: args.devices,
        reporting: driven.reporting(),
        by_cloud: None,
    };
    let reconciliation = match &args.http {
        Some(http) => reconcile::reconcile(http, expected)
            .await
            .context("cannot read the registry's counts")?,
        None => {
            println!("no --http: the registry's counts are not reconciled");
            Reconciliation::skipped(expected, "no --http given: counts not read back")
        }
    };
    let registry = RegistryOut {
        spawned: false,
        grpc: url.to_owned(),
        http: args.http.clone(),
        stopped: None,
        log: None,
    };
    let rss = RssOut::new(None, None, None, args.devices);
    Ok(driven.results(args, started_unix, registry, rss, reconciliation))
}

/// What the streams did.
#[derive(Debug)]
struct Driven {
    plans: Vec<StreamPlan>,
    outcomes: Vec<StreamOutcome>,
    announce_secs: f64,
    telemetry_secs: f64,
    after_announce_rss: Option<u64>,
    registry_cpu: Option<f64>,
    bench_cpu: Option<f64>,
    machine_cpu: Option<f64>,
    registry_threads: Vec<ThreadCpu>,
    commits: Option<Commits>,
    timeline: Vec<Interval>,
    summary: Option<summary_probe::SummaryOut>,
}

impl Driven {
    fn reporting(&self) -> u64 {
        self.outcomes.iter().map(|o| o.reporting).sum()
    }

    fn results(
        self,
        args: &IngestArgs,
        started_unix: u64,
        registry: RegistryOut,
        rss: RssOut,
        reconciliation: Reconciliation,
    ) -> Results {
        let sum = |f: fn(&StreamOutcome) -> u64| self.outcomes.iter().map(f).sum::<u64>();
        let mut latency = load::latency_histogram();
        let mut announce_latency = load::latency_histogram();
        let mut rejections = std::collections::BTreeMap::new();
        let mut samples = Vec::new();
        for o in &self.outcomes {
            // Same bounds: adding cannot fail.
            let _ = latency.add(&o.latency);
            let _ = announce_latency.add(&o.announce_latency);
            for (reason, n) in &o.reasons {
                *rejections.entry(reason.clone()).or_insert(0) += n;
            }
            samples.extend(
                o.samples
                    .iter()
                    .take(5usize.saturating_sub(samples.len()))
                    .cloned(),
            );
        }
        let devices_per_batch = devices_per_batch(args.batch, args.points_per_device);
        let seconds = self.telemetry_secs;
        let accepted = sum(|o| o.accepted);
        let device_days = sum(|o| o.device_days);
        let batches = sum(|o| o.batches);
        let bytes = sum(|o| o.sent_bytes);
        Results {
            bench: "ingest",
            started_unix,
            args: ArgsOut {
                devices: args.devices,
                streams: args.streams,
                batch: args.batch,
                points_per_device: args.points_per_device,
                devices_per_batch,
                points_per_batch: u64::from(devices_per_batch) * args.points_per_device as u64,
                duration_secs: args.duration.as_secs_f64(),
                window: args.window,
                registry: args.registry.clone(),
                http: args.http.clone(),
                out: args.out.clone(),
                peer: args.peer.map(Peer::name),
                peer_clients: args.peer_clients,
                peer_rows_per_statement: args.peer_rows_per_statement,
            },
            registry,
            announce: AnnounceOut {
                devices: args.devices,
                batches: sum(|o| o.announce_batches),
                seconds: self.announce_secs,
                devices_per_sec: per_sec(args.devices, self.announce_secs),
                rejected: sum(|o| o.announce_rejected),
                ack_latency_us: Latency::of(&announce_latency),
            },
            telemetry: TelemetryOut {
                seconds,
                batches,
                batches_per_sec: per_sec(batches, seconds),
                points_sent: sum(|o| o.sent_points),
                points_accepted: accepted,
                points_per_sec: per_sec(accepted, seconds),
                device_days,
                device_days_per_sec: per_sec(device_days, seconds),
                points_rejected: sum(|o| o.rejected),
                bytes_sent: bytes,
                mbytes_per_sec: per_sec(bytes, seconds) / 1e6,
                duplicates: sum(|o| o.duplicates),
                out_of_order_acks: sum(|o| o.out_of_order_acks),
                rejections,
                rejection_samples: samples,
                ack_latency_us: Latency::of(&latency),
                devices_reporting: self.reporting(),
                timeline: self.timeline,
                summary: self.summary,
            },
            rss,
            cpu: CpuOut {
                registry_seconds: self.registry_cpu,
                bench_seconds: self.bench_cpu,
                registry_threads: self.registry_threads,
                machine_seconds: self.machine_cpu,
                other_seconds: self
                    .machine_cpu
                    .map(|m| m - self.registry_cpu.unwrap_or(0.0) - self.bench_cpu.unwrap_or(0.0)),
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            commits: self.commits,
            reconciliation,
            restart: None,
            peer: None,
            device_days_ratio: None,
        }
    }
}

fn devices_per_batch(batch: usize, points_per_device: usize) -> u32 {
    u32::try_from(batch / points_per_device.max(1))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The streams' plans: devices split evenly, tenants alternating.
fn plans(args: &IngestArgs, target: &Target, started_unix: u64) -> Vec<StreamPlan> {
    let streams = args.streams as u64;
    let (each, extra) = (args.devices / streams, args.devices % streams);
    let run_id = format!("bench-{started_unix}-{}", std::process::id());
    let mut first = 0u64;
    (0..args.streams)
        .map(|index| {
            let devices = each + u64::from((index as u64) < extra);
            let plan = StreamPlan {
                index,
                url: target.grpc.clone(),
                token: target.tokens[index].clone(),
                first_device: first,
                // Checked in `check_args`: at most u32::MAX - 1 per stream.
                devices: u32::try_from(devices).unwrap_or(u32::MAX),
                devices_per_batch: devices_per_batch(args.batch, args.points_per_device),
                points_per_device: args.points_per_device,
                run_id: run_id.clone(),
                window: args.window,
            };
            first += devices;
            plan
        })
        .collect()
}

/// Waits until `n` streams signalled on `events`; a stream that ends first
/// ends the wait with its error. Calls `tick` every `PROGRESS_EVERY`.
async fn wait_for_streams(
    events: &mut mpsc::Receiver<usize>,
    tasks: &mut JoinSet<anyhow::Result<StreamOutcome>>,
    n: usize,
    what: &str,
    mut tick: impl FnMut(),
) -> anyhow::Result<()> {
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut got = 0;
    while got < n {
        tokio::select! {
            event = events.recv() => match event {
                Some(_) => got += 1,
                None => bail!("streams went away before they were {what}"),
            },
            Some(ended) = tasks.join_next() => {
                ended_early(ended)?;
                bail!("a stream ended before it was {what}");
            }
            _ = ticker.tick() => tick(),
        }
    }
    Ok(())
}

fn ended_early(
    ended: Result<anyhow::Result<StreamOutcome>, tokio::task::JoinError>,
) -> anyhow::Result<StreamOutcome> {
    match ended {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("a stream task failed: {e}")),
    }
}

async fn drive(args: &IngestArgs, target: &Target, started_unix: u64) -> anyhow::Result<Driven> {
    let plans = plans(args, target, started_unix);
    let n = plans.len();
    let (phase_tx, phase_rx) = watch::channel(Phase::Prepare);
    let (ready_tx, mut ready_rx) = mpsc::channel(n);
    let (announced_tx, mut announced_rx) = mpsc::channel(n);
    let progress = Arc::new(Progress::default());
    let mut tasks = JoinSet::new();
    for plan in &plans {
        let signals = Signals {
            ready: ready_tx.clone(),
            announced: announced_tx.clone(),
            progress: progress.clone(),
        };
        tasks.spawn(load::run_stream(plan.clone(), phase_rx.clone(), signals));
    }
    drop((ready_tx, announced_tx, phase_rx));
    println!("connecting {n} streams and building telemetry templates ...");
    wait_for_streams(&mut ready_rx, &mut tasks, n, "connected", || {}).await?;

    println!("announcing {} devices over {n} streams ...", args.devices);
    let announce_start = Instant::now();
    phase_tx.send_replace(Phase::Announce);
    wait_for_streams(&mut announced_rx, &mut tasks, n, "announced", || {
        println!(
            "  {:>5.1} s: {} announce batches acked",
            announce_start.elapsed().as_secs_f64(),
            progress.announce_batches.load(Relaxed)
        );
    })
    .await?;
    let announce_secs = announce_start.elapsed().as_secs_f64();
    let after_announce_rss = target.pid.and_then(rss_bytes);
    println!(
        "announced in {announce_secs:.2} s; streaming telemetry for {} ...",
        humantime::format_duration(args.duration)
    );

    let cpu_before = (
        target.pid.and_then(cpu_seconds),
        own_cpu_seconds(),
        machine_busy_seconds(),
    );
    let metrics_before = match &target.http {
        Some(http) => reconcile::scrape(http).await,
        None => None,
    };
    let threads_before = target.pid.map(thread_cpu);
    let probe = target.http.as_deref().map(SummaryProbe::start);
    let start = Instant::now();
    phase_tx.send_replace(Phase::Telemetry {
        deadline: start + args.duration,
    });
    let mut timeline = Vec::new();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let (mut last_at, mut last_points, mut last_batches, mut last_days) =
        (0.0f64, 0u64, 0u64, 0u64);
    let mut outcomes = Vec::with_capacity(n);
    loop {
        tokio::select! {
            ended = tasks.join_next() => match ended {
                Some(ended) => outcomes.push(ended_early(ended)?),
                None => break,
            },
            _ = ticker.tick() => {
                let at = start.elapsed().as_secs_f64();
                let points = progress.accepted.load(Relaxed);
                let batches = progress.batches.load(Relaxed);
                let days = progress.device_days.load(Relaxed);
                let interval = Interval {
                    at_secs: at,
                    points_per_sec: per_sec(points - last_points, at - last_at),
                    device_days_per_sec: per_sec(days - last_days, at - last_at),
                    batches_per_sec: per_sec(batches - last_batches, at - last_at),
                };
                println!(
                    "  {:>5.1} s: {:>10.0} points/s, {:>10.0} device-days/s, {:>7.0} batches/s",
                    at, interval.points_per_sec, interval.device_days_per_sec, interval.batches_per_sec
                );
                timeline.push(interval);
                (last_at, last_points, last_batches, last_days) = (at, points, batches, days);
            }
        }
    }
    let summary = match probe {
        Some(probe) => probe.finish().await,
        None => None,
    };
    let cpu_after = (
        target.pid.and_then(cpu_seconds),
        own_cpu_seconds(),
        machine_busy_seconds(),
    );
    let registry_threads = match (target.pid, &threads_before) {
        (Some(pid), Some(before)) => thread_cpu_diff(before, &thread_cpu(pid)),
        _ => Vec::new(),
    };
    let metrics_after = match &target.http {
        Some(http) => reconcile::scrape(http).await,
        None => None,
    };
    let commits = match (&metrics_before, &metrics_after) {
        (Some(before), Some(after)) => Commits::between(before, after),
        _ => None,
    };
    let last_ack = outcomes.iter().filter_map(|o| o.last_ack).max();
    let telemetry_secs = last_ack.map_or(0.0, |t| t.duration_since(start).as_secs_f64());
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    Ok(Driven {
        plans,
        outcomes,
        announce_secs,
        telemetry_secs,
        after_announce_rss,
        registry_cpu: diff(cpu_before.0, cpu_after.0),
        bench_cpu: diff(cpu_before.1, cpu_after.1),
        machine_cpu: diff(cpu_before.2, cpu_after.2),
        registry_threads,
        commits,
        timeline,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(devices: u64, streams: usize) -> IngestArgs {
        IngestArgs {
            devices,
            streams,
            batch: 1000,
            duration: Duration::from_secs(1),
            registry: None,
            http: None,
            token: None,
            out: PathBuf::from("out"),
            window: 32,
            points_per_device: 10,
            peer: None,
            peer_clients: 8,
            peer_rows_per_statement: 1000,
        }
    }

    #[test]
    fn devices_are_split_evenly_without_overlap() {
        let target = Target {
            grpc: "http://x".into(),
            tokens: vec!["a".into(), "b".into(), "c".into()],
            pid: None,
            http: None,
        };
        let plans = plans(&args(10, 3), &target, 1);
        let got: Vec<_> = plans.iter().map(|p| (p.first_device, p.devices)).collect();
        assert_eq!(got, [(0, 4), (4, 3), (7, 3)]);
        assert_eq!(plans[1].token, "b");
        assert_eq!(plans[0].devices_per_batch, 100);
        let mut one = args(10, 3);
        one.points_per_device = 1;
        let plans = super::plans(&one, &target, 1);
        assert_eq!(
            plans[0].devices_per_batch, 1000,
            "every point another device"
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(check_args(&args(10, 3)).is_ok());
        assert!(check_args(&args(2, 3)).is_err());
        assert!(check_args(&args(10, 0)).is_err());
        let mut a = args(10, 1);
        a.batch = 5;
        assert!(check_args(&a).is_err());
        a.batch = 10;
        a.points_per_device = 0;
        assert!(check_args(&a).is_err());
        a.points_per_device = 11;
        assert!(check_args(&a).is_err());
        a.points_per_device = 1;
        assert!(check_args(&a).is_ok());
        a.registry = Some("http://x".into());
        assert!(check_args(&a).is_err());
    }
}
