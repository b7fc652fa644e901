//! The driver conformance kit: one harness every driver runs against its
//! simulator face (or any server it can control).
//!
//! A driver author implements [`Face`] for a handful of devices — start
//! them, write the gateway config that reaches them, take one away and back,
//! hang one, make one answer garbage, grow a tag or device at run time,
//! restart the server — and calls [`run`]. The kit runs the driver through
//! the real seam (its [`DriverKind`], a [`Sink`]) without the rest of the
//! gateway and checks, each with a deadline:
//!
//! 1. **connect**: every device is declared, comes online and delivers good
//!    readings;
//! 2. **discovery**: tags and devices that appear at run time are declared
//!    (announced) and deliver readings;
//! 3. **loss and return**: a device that goes away is reported offline, one
//!    that returns online again, with readings;
//! 4. **a hung device stalls nobody**: while one device accepts but never
//!    answers, the others keep delivering;
//! 5. **malformed input** becomes bad quality or a counted error, never a
//!    crash: the driver keeps running and the others keep delivering;
//! 6. **reconnect**: after the server restarts, every device is back.
//!
//! A face says which checks do not apply to its protocol (a Modbus device
//! has no run-time tags); the [`Report`] lists them as not applicable, never
//! as passed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fieldlink_model::Protocol;
use fieldlink_model::proto::Quality;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::device::DeviceHandle;
use crate::driver::{DriverContext, DriverEvent, DriverKind, Limits, Resources, Sink};
use crate::metrics::Metrics;

/// What changed when a face grew at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Growth {
    /// A device appeared; its id.
    Device(String),
    /// A tag appeared on a device: (device id, tag name).
    Tag(String, String),
}

/// A driver's simulator face, as the kit drives it. Device ids are those
/// the gateway announces.
pub trait Face: Send {
    /// The driver's part of a gateway config reaching the face's devices:
    /// its driver section and `[[devices]]` entries, as TOML text (the kit
    /// adds `gateway_id` and `[uplink]`).
    fn config(&self) -> String;

    /// Devices the driver must declare from the start (configured or
    /// discovered on connect); at least three.
    fn devices(&self) -> Vec<String>;

    /// Resources the driver needs (an embedded broker's link).
    fn resources(&self) -> Resources {
        Resources::default()
    }

    /// Takes device `id` away (it stops answering and refuses connections,
    /// or disconnects).
    fn stop_device(&mut self, id: &str) -> impl Future<Output = ()> + Send;

    /// Brings device `id` back.
    fn start_device(&mut self, id: &str) -> impl Future<Output = ()> + Send;

    /// Makes device `id` hang: it keeps its connection but never answers.
    /// `false` when the protocol has no such state (a pushing device that
    /// goes quiet is the same as one that stopped).
    fn hang_device(&mut self, id: &str) -> impl Future<Output = bool> + Send;

    /// Makes device `id` send malformed data (garbage frames, undecodable
    /// payloads). `false` when the face cannot.
    fn malform_device(&mut self, id: &str) -> impl Future<Output = bool> + Send;

    /// Undoes `hang_device` and `malform_device`.
    fn heal_device(&mut self, id: &str) -> impl Future<Output = ()> + Send;

    /// Adds a device or a tag at run time; `None` when the protocol's tags
    /// and devices are fixed by config.
    fn grow(&mut self) -> impl Future<Output = Option<Growth>> + Send;

    /// Restarts the server or broker the driver is connected to, so it must
    /// reconnect.
    fn restart(&mut self) -> impl Future<Output = ()> + Send;
}

/// How long the kit waits for each check.
#[derive(Debug, Clone)]
pub struct KitOptions {
    /// Longest wait for an expected event.
    pub deadline: Duration,
    /// How long the others are watched while one device hangs or is
    /// malformed.
    pub watch: Duration,
}

impl Default for KitOptions {
    fn default() -> Self {
        KitOptions {
            deadline: Duration::from_secs(20),
            watch: Duration::from_secs(2),
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It held.
    Passed,
    /// The face says it does not apply to the protocol.
    NotApplicable,
}

/// What the kit found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The protocol checked.
    pub protocol: Protocol,
    /// Each check by name, in order.
    pub checks: Vec<(&'static str, Outcome)>,
    /// Readings seen in all.
    pub readings: u64,
    /// Bad-quality readings seen.
    pub bad_readings: u64,
}

/// A check that failed.
#[derive(Debug, thiserror::Error)]
#[error("conformance check `{check}` failed: {why}")]
pub struct KitFailure {
    /// Which check.
    pub check: &'static str,
    /// What was seen instead.
    pub why: String,
}

fn fail(check: &'static str, why: impl Into<String>) -> KitFailure {
    KitFailure {
        check,
        why: why.into(),
    }
}

/// What the kit knows of each device from the driver's events.
#[derive(Debug, Default, Clone)]
struct Seen {
    online: Option<bool>,
    tags: Vec<String>,
    good: u64,
    bad: u64,
}

/// The driver's events, folded per device.
struct Observer {
    events: mpsc::Receiver<DriverEvent>,
    ids: HashMap<DeviceHandle, String>,
    devices: HashMap<String, Seen>,
    readings: u64,
    bad: u64,
}

impl Observer {
    fn apply(&mut self, event: DriverEvent) {
        match event {
            DriverEvent::Announce { device, info, tags } => {
                self.ids.insert(device, info.id.clone());
                let seen = self.devices.entry(info.id.clone()).or_default();
                seen.tags = tags.iter().map(|t| t.name.clone()).collect();
            }
            DriverEvent::Status { device, online, .. } => {
                if let Some(id) = self.ids.get(&device) {
                    self.devices.entry(id.clone()).or_default().online = Some(online);
                }
            }
            DriverEvent::Readings(readings) => {
                for r in readings {
                    self.readings += 1;
                    let Some(id) = self.ids.get(&r.device) else {
                        continue;
                    };
                    let seen = self.devices.entry(id.clone()).or_default();
                    if r.quality == Quality::Bad || r.value.is_none() {
                        seen.bad += 1;
                        self.bad += 1;
                    } else {
                        seen.good += 1;
                    }
                }
            }
        }
    }

    fn seen(&self, id: &str) -> Seen {
        self.devices.get(id).cloned().unwrap_or_default()
    }

    /// Applies events until `done` holds or `deadline`.
    async fn until(&mut self, deadline: Instant, mut done: impl FnMut(&Observer) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            match timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.apply(event),
                Ok(None) | Err(_) => return done(self),
            }
        }
    }

    /// Applies events for `window`.
    async fn watch(&mut self, window: Duration) {
        let until = Instant::now() + window;
        while let Ok(Some(event)) = timeout_at(until, self.events.recv()).await {
            self.apply(event);
        }
    }

    fn good_counts(&self, ids: &[String]) -> Vec<u64> {
        ids.iter().map(|id| self.seen(id).good).collect()
    }
}

/// Runs of the kit in this process, for their data directories.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

const GATEWAY_HEAD: &str = "gateway_id = \"conformance\"\n[uplink]\nregistry = \"http://127.0.0.1:1\"\ntoken = \"conformance-kit-token\"\n";

/// Runs every check against `face` with the driver of `kind`.
///
/// # Errors
/// The first check that fails, saying what was seen.
pub async fn run<F: Face>(
    kind: &dyn DriverKind,
    face: &mut F,
    options: &KitOptions,
) -> Result<Report, KitFailure> {
    // The driver's own files (certificates) go to a directory of the run's.
    let data_dir = std::env::temp_dir().join(format!(
        "fieldlink-conformance-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Relaxed)
    ));
    let text = format!(
        "data_dir = \"{}\"\n{GATEWAY_HEAD}{}",
        data_dir.display().to_string().replace('\\', "/"),
        face.config()
    );
    let config = GatewayConfig::from_toml(&text).map_err(|e| fail("config", e.to_string()))?;
    let input = config
        .driver_config(kind)
        .map_err(|e| fail("config", e.to_string()))?;
    let driver = kind
        .configure(input)
        .map_err(|problems| fail("config", problems.join("\n")))?;
    let protocol = kind
        .protocols()
        .first()
        .copied()
        .unwrap_or(Protocol::ModbusTcp);
    let metrics = Arc::new(Metrics::default());
    let limits = Limits {
        max_devices: 100_000,
        max_tags_per_device: 10_000,
    };
    let (sink, events) = Sink::channel(4096, limits, metrics.clone());
    let shutdown = CancellationToken::new();
    let ctx = DriverContext {
        sink,
        shutdown: shutdown.clone(),
        resources: face.resources(),
    };
    let task = tokio::spawn(driver.run(ctx));
    let mut obs = Observer {
        events,
        ids: HashMap::new(),
        devices: HashMap::new(),
        readings: 0,
        bad: 0,
    };
    let result = checks(face, &mut obs, &metrics, protocol, options).await;
    shutdown.cancel();
    // Drain so that a driver blocked on a full channel sees the shutdown.
    let drain = async { while obs.events.recv().await.is_some() {} };
    let stopped =
        tokio::time::timeout(options.deadline, async { tokio::join!(drain, task).1 }).await;
    let checks = result?;
    match stopped {
        Err(_) => return Err(fail("shutdown", "the driver did not stop when cancelled")),
        Ok(Err(e)) if e.is_panic() => {
            return Err(fail("shutdown", format!("the driver panicked: {e}")));
        }
        Ok(_) => {}
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(Report {
        protocol,
        checks,
        readings: obs.readings,
        bad_readings: obs.bad,
    })
}

async fn checks<F: Face>(
    face: &mut F,
    obs: &mut Observer,
    metrics: &Metrics,
    protocol: Protocol,
    options: &KitOptions,
) -> Result<Vec<(&'static str, Outcome)>, KitFailure> {
    let mut out = Vec::new();
    let ids = face.devices();
    if ids.len() < 3 {
        return Err(fail("connect", "a face needs at least three devices"));
    }
    let deadline = || Instant::now() + options.deadline;
    let all_up = |ids: &[String]| {
        let ids = ids.to_vec();
        move |o: &Observer| {
            ids.iter().all(|id| {
                let s = o.seen(id);
                s.online == Some(true) && s.good > 0
            })
        }
    };

    // 1. Connect, read or subscribe.
    if !obs.until(deadline(), all_up(&ids)).await {
        return Err(fail("connect", describe(obs, &ids)));
    }
    out.push(("connect", Outcome::Passed));

    // 2. Discovery at run time.
    match face.grow().await {
        None => out.push(("discovery", Outcome::NotApplicable)),
        Some(Growth::Device(id)) => {
            let ok = obs
                .until(deadline(), |o| {
                    o.seen(&id).good > 0 && !o.seen(&id).tags.is_empty()
                })
                .await;
            if !ok {
                return Err(fail(
                    "discovery",
                    format!("new device `{id}`: {:?}", obs.seen(&id)),
                ));
            }
            out.push(("discovery", Outcome::Passed));
        }
        Some(Growth::Tag(id, tag)) => {
            let before = obs.seen(&id).good;
            let ok = obs
                .until(deadline(), |o| {
                    let s = o.seen(&id);
                    s.tags.contains(&tag) && s.good > before
                })
                .await;
            if !ok {
                return Err(fail(
                    "discovery",
                    format!("tag `{tag}` of `{id}` not announced: {:?}", obs.seen(&id)),
                ));
            }
            out.push(("discovery", Outcome::Passed));
        }
    }

    // 3. Device loss and return.
    let lost = ids[0].clone();
    face.stop_device(&lost).await;
    if !obs
        .until(deadline(), |o| o.seen(&lost).online == Some(false))
        .await
    {
        return Err(fail(
            "loss",
            format!("`{lost}` never reported offline: {:?}", obs.seen(&lost)),
        ));
    }
    let before = obs.seen(&lost).good;
    face.start_device(&lost).await;
    let back = obs
        .until(deadline(), |o| {
            let s = o.seen(&lost);
            s.online == Some(true) && s.good > before
        })
        .await;
    if !back {
        return Err(fail(
            "return",
            format!("`{lost}` did not come back: {:?}", obs.seen(&lost)),
        ));
    }
    out.push(("loss and return", Outcome::Passed));

    // 4. A hung device stalls nobody.
    let hung = ids[1].clone();
    let others: Vec<String> = ids.iter().filter(|id| **id != hung).cloned().collect();
    if face.hang_device(&hung).await {
        let before = obs.good_counts(&others);
        obs.watch(options.watch).await;
        let after = obs.good_counts(&others);
        if let Some(i) = (0..others.len()).find(|&i| after[i] <= before[i]) {
            return Err(fail(
                "hung device",
                format!("`{}` delivered nothing while `{hung}` hung", others[i]),
            ));
        }
        face.heal_device(&hung).await;
        if !obs
            .until(deadline(), all_up(std::slice::from_ref(&hung)))
            .await
        {
            return Err(fail(
                "hung device",
                format!("`{hung}` did not recover: {:?}", obs.seen(&hung)),
            ));
        }
        out.push(("hung device stalls nobody", Outcome::Passed));
    } else {
        out.push(("hung device stalls nobody", Outcome::NotApplicable));
    }

    // 5. Malformed input: bad quality or a counted error, never a crash.
    let bad = ids[2].clone();
    let others: Vec<String> = ids.iter().filter(|id| **id != bad).cloned().collect();
    let errors = |m: &Metrics| {
        let d = m.driver(protocol);
        d.malformed.load(Relaxed) + d.errors.load(Relaxed) + d.exceptions.load(Relaxed)
    };
    if face.malform_device(&bad).await {
        let (errors_before, bad_before) = (errors(metrics), obs.seen(&bad).bad);
        let ok = obs
            .until(deadline(), |o| {
                errors(metrics) > errors_before || o.seen(&bad).bad > bad_before
            })
            .await;
        if !ok {
            return Err(fail(
                "malformed",
                format!("garbage from `{bad}` was neither bad quality nor a counted error"),
            ));
        }
        let before = obs.good_counts(&others);
        obs.watch(options.watch).await;
        let after = obs.good_counts(&others);
        if let Some(i) = (0..others.len()).find(|&i| after[i] <= before[i]) {
            return Err(fail(
                "malformed",
                format!(
                    "`{}` delivered nothing after `{bad}` sent garbage",
                    others[i]
                ),
            ));
        }
        face.heal_device(&bad).await;
        if !obs
            .until(deadline(), all_up(std::slice::from_ref(&bad)))
            .await
        {
            return Err(fail(
                "malformed",
                format!("`{bad}` did not recover: {:?}", obs.seen(&bad)),
            ));
        }
        out.push(("malformed input", Outcome::Passed));
    } else {
        out.push(("malformed input", Outcome::NotApplicable));
    }

    // 6. Reconnect after the server restarts.
    let before = obs.good_counts(&ids);
    face.restart().await;
    let ok = obs
        .until(deadline(), |o| {
            ids.iter().zip(&before).all(|(id, n)| {
                let s = o.seen(id);
                s.online == Some(true) && s.good > *n
            })
        })
        .await;
    if !ok {
        return Err(fail("reconnect", describe(obs, &ids)));
    }
    out.push(("reconnect", Outcome::Passed));
    Ok(out)
}

fn describe(obs: &Observer, ids: &[String]) -> String {
    let declared: HashSet<&String> = obs.devices.keys().collect();
    ids.iter()
        .map(|id| {
            if declared.contains(id) {
                let s = obs.seen(id);
                format!(
                    "{id}: online {:?}, {} good, {} bad",
                    s.online, s.good, s.bad
                )
            } else {
                format!("{id}: never declared")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
