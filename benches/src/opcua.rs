//! `fieldlink bench opcua`: one gateway subscribing to `--items` variables
//! of a simulated OPC UA server, streaming every data change into a
//! registry; then asyncua subscribing to the same items of the same server.
//!
//! A run, all on loopback:
//!
//! 1. the server: the simulator's OPC UA face ([`fieldlink_sim::opcua`]) in
//!    this process, one server holding catalog devices with exactly
//!    `--items` variables between them (sampled at `--interval`); it
//!    states MaxMonitoredItemsPerCall 5 000 and
//!    MaxMonitoredItemsPerSubscription 50 000, so the gateway must split
//!    calls and spread items over subscriptions;
//! 2. a registry and the gateway as child processes of this binary (their
//!    memory and CPU are their own); the gateway's config subscribes to
//!    every item at `--interval`;
//! 3. **creation**: the gateway logs how long its items took from session
//!    up to the last one created; items ÷ that time is the creation rate;
//! 4. **streaming**: after a warm-up, a window of `--duration`: value
//!    changes per second counted by the registry
//!    (`fieldlink_registry_points_accepted_total`), the gateway's CPU, and
//!    its RSS per item at the end;
//! 5. the peer (`benches/peers/asyncua_load.py`): the same items in the same
//!    batches, its creation rate and changes per second over the same
//!    window; the ratios gateway ÷ asyncua;
//! 6. a summary printed and JSON written to
//!    `<out>/opcua-<items>i-<unix_secs>.json`.

mod items;
mod peer;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use fieldlink_sim::{OpcUaFleet, OpcUaOptions};
use serde::Serialize;

use crate::process::{self, ChildProcess, LogLimits, RegistryChild, Tenant, registry_config};
use items::Items;
use peer::PeerOut;

/// Flags of `fieldlink bench opcua`.
#[derive(Debug, Clone, clap::Args)]
pub struct OpcUaArgs {
    /// Monitored items (variables) the gateway subscribes to.
    #[arg(long, default_value_t = 10_000)]
    pub items: usize,
    /// Sampling and publishing interval.
    #[arg(long, default_value = "1s", value_parser = fieldlink_sim::parse_interval)]
    pub interval: Duration,
    /// Length of the counting window (gateway, then the same for asyncua).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// TCP port of the simulated server.
    #[arg(long, default_value_t = 14840)]
    pub port: u16,
    /// Directory the JSON result is written to.
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
    /// Skip the asyncua peer.
    #[arg(long)]
    pub no_peer: bool,
}

/// Token of the bench tenant.
const TOKEN: &str = "bench-opcua-token-0001";
/// What the server states per call and per subscription.
const PER_CALL: usize = 5000;
const PER_SUBSCRIPTION: usize = 50_000;
/// The gateway's line with the creation figures.
const CREATED: &str = "monitored items created";
const LOG_LIMITS: LogLimits = LogLimits {
    problems: 10,
    max_line: Some(400),
    keep: Some(CREATED),
};
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayOut {
    /// Items created.
    pub created: u64,
    /// Seconds from session up to the last item created.
    pub create_secs: f64,
    /// Items created per second.
    pub items_per_sec: f64,
    /// Create calls made.
    pub create_calls: u64,
    /// Subscriptions made.
    pub subscriptions: u64,
    /// Value changes the registry accepted in the window.
    pub changes: u64,
    /// Value changes per second into the registry.
    pub changes_per_sec: f64,
    /// Gateway CPU seconds per second in the window.
    pub cpu_per_sec: Option<f64>,
    /// Gateway RSS at the end of the window.
    pub rss_bytes: Option<u64>,
    /// RSS per item.
    pub rss_per_item: Option<f64>,
    /// Warnings and errors in its log.
    pub warnings: u64,
    /// Errors in its log.
    pub errors: u64,
}

/// Gateway ÷ asyncua.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    /// Creation rate.
    pub items_per_sec: Option<f64>,
    /// Changes per second.
    pub changes_per_sec: Option<f64>,
    /// RSS (gateway ÷ peer; lower is better).
    pub rss: Option<f64>,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    bench: &'static str,
    started_unix: u64,
    items: usize,
    devices: usize,
    interval_ms: f64,
    window_secs: f64,
    server_limits: (usize, usize),
    gateway: GatewayOut,
    peer: Option<PeerOut>,
    peer_missing: Option<String>,
    ratios: Option<Ratios>,
    command: String,
}

/// Runs the bench.
///
/// # Errors
/// When a part does not start, the gateway does not create every item, or
/// the registry counts no changes.
pub async fn run(args: OpcUaArgs) -> anyhow::Result<()> {
    if args.duration < Duration::from_secs(1) {
        bail!("--duration must be at least 1s");
    }
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let items = Items::pick(args.items)?;
    let dir = tempfile::Builder::new()
        .prefix("fieldlink-bench-opcua-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    println!(
        "starting a simulated OPC UA server with {} devices ({} items) on 127.0.0.1:{} ...",
        items.plan.len(),
        items.total,
        args.port
    );
    let fleet = OpcUaFleet::start(
        &items.plan,
        OpcUaOptions {
            base_port: args.port,
            devices_per_server: items.plan.len(),
            pki_dir: dir.path().join("sim-pki"),
            limits: fieldlink_sim::opcua::SimLimits {
                items_per_call: PER_CALL,
                items_per_subscription: PER_SUBSCRIPTION,
                nodes_per_read: 10_000,
                max_array_length: 200_000,
            },
            ..OpcUaOptions::default()
        },
    )
    .await
    .context("the simulated server did not start")?;
    let url = fleet.endpoint(0).context("no server")?;
    let outcome = drive(&args, &items, dir.path(), &url).await;
    fleet.stop().await;
    let (gateway, peer, peer_missing) = outcome?;
    let ratios = peer.as_ref().map(|p| Ratios {
        items_per_sec: p
            .items_per_sec
            .filter(|r| *r > 0.0)
            .map(|r| gateway.items_per_sec / r),
        changes_per_sec: p
            .changes_per_sec
            .filter(|r| *r > 0.0)
            .map(|r| gateway.changes_per_sec / r),
        rss: gateway
            .rss_bytes
            .map(|g| g as f64 / p.rss_bytes.max(1) as f64),
    });
    let results = Results {
        bench: "opcua",
        started_unix,
        items: items.total,
        devices: items.devices(),
        interval_ms: args.interval.as_secs_f64() * 1e3,
        window_secs: args.duration.as_secs_f64(),
        server_limits: (PER_CALL, PER_SUBSCRIPTION),
        gateway,
        peer,
        peer_missing,
        ratios,
        command: format!(
            "fieldlink bench opcua --items {} --interval {} --duration {}",
            args.items,
            humantime::format_duration(args.interval),
            humantime::format_duration(args.duration)
        ),
    };
    print!("{}", summary(&results));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args
        .out
        .join(format!("opcua-{}i-{started_unix}.json", items.total));
    let json = serde_json::to_string_pretty(&results).context("cannot write JSON")?;
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    println!("results: {}", path.display());
    if results.gateway.created < items.total as u64 {
        bail!(
            "the gateway created {} of {} items",
            results.gateway.created,
            items.total
        );
    }
    Ok(())
}

async fn drive(
    args: &OpcUaArgs,
    items: &Items,
    dir: &Path,
    url: &str,
) -> anyhow::Result<(GatewayOut, Option<PeerOut>, Option<String>)> {
    let gateway = measure_gateway(args, items, dir, url).await?;
    if args.no_peer {
        return Ok((gateway, None, Some("skipped (--no-peer)".to_owned())));
    }
    let python = match peer::find_python().await {
        Ok(p) => p,
        Err(why) => {
            println!("peer missing: {why}");
            return Ok((gateway, None, Some(why)));
        }
    };
    println!("running the peer: asyncua ({}) ...", python.display());
    match peer::run(
        &python,
        dir,
        url,
        items.node_ids(),
        args.interval,
        PER_CALL,
        PER_SUBSCRIPTION,
        warmup(args.interval),
        args.duration,
    )
    .await
    {
        Ok(out) => Ok((gateway, Some(out), None)),
        Err(e) => {
            let why = format!("the peer failed: {e:#}");
            eprintln!("{why}");
            Ok((gateway, None, Some(why)))
        }
    }
}

fn warmup(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(2))
}

/// Sum of every sample of metric `name` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *sum.get_or_insert(0.0) += value;
    }
    sum
}

async fn scrape(client: &reqwest::Client, url: &str) -> Option<String> {
    client.get(url).send().await.ok()?.text().await.ok()
}

/// `key=value` of a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..].split_whitespace().next()?.parse().ok()
}

async fn measure_gateway(
    args: &OpcUaArgs,
    items: &Items,
    dir: &Path,
    url: &str,
) -> anyhow::Result<GatewayOut> {
    let config = dir.join("registry.toml");
    let tenant = Tenant {
        name: "bench",
        cloud: "public",
        token: TOKEN,
    };
    std::fs::write(
        &config,
        registry_config(&dir.join("registry-data"), "", &[tenant]),
    )
    .context("cannot write the registry config")?;
    let registry = RegistryChild::start(&config, START_TIMEOUT, LOG_LIMITS).await?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free port for the gateway's metrics")?;
    let text = items::gateway_config(
        items,
        url,
        args.interval,
        registry.grpc_url(),
        TOKEN,
        &dir.join("gateway-data"),
        metrics,
    )?;
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).context("cannot write the gateway config")?;
    println!("starting the gateway ({} items) ...", items.total);
    let gw_args: Vec<OsString> = vec!["gateway".into(), "--config".into(), path.into()];
    let (gateway, _) =
        ChildProcess::start("gateway", gw_args, "gateway ", START_TIMEOUT, LOG_LIMITS).await?;
    let result = window(args, items, &gateway, &registry, metrics).await;
    let _ = gateway.stop(STOP_TIMEOUT).await;
    let _ = registry.stop(STOP_TIMEOUT).await;
    result
}

async fn window(
    args: &OpcUaArgs,
    items: &Items,
    gateway: &ChildProcess,
    registry: &RegistryChild,
    metrics: std::net::SocketAddr,
) -> anyhow::Result<GatewayOut> {
    let client = reqwest::Client::new();
    let registry_metrics = format!("{}metrics", registry.http_url());
    let gateway_metrics = format!("http://{metrics}/metrics");
    let mut out = GatewayOut::default();
    // Creation: wait for the gateway's log lines to add up to every item.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut next_note = Instant::now() + Duration::from_secs(10);
    loop {
        let log = gateway.log();
        let (mut created, mut since, mut calls, mut subs) = (0, 0, 0, 0);
        for line in &log.kept {
            created += field(line, "created").unwrap_or(0);
            since = since.max(field(line, "since_session_up_ms").unwrap_or(0));
            calls += field(line, "calls").unwrap_or(0);
            subs += field(line, "subscriptions").unwrap_or(0);
        }
        if created >= items.total as u64 {
            out.created = created;
            out.create_secs = since as f64 / 1e3;
            out.items_per_sec = created as f64 / out.create_secs.max(1e-3);
            out.create_calls = calls;
            out.subscriptions = subs;
            break;
        }
        if Instant::now() > next_note {
            next_note += Duration::from_secs(10);
            println!(
                "  ... {created} of {} items created so far; the gateway's last lines:{}",
                items.total,
                log.tail_text()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway created {created} of {} items in 600 s; its last lines:{}",
                items.total,
                log.tail_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "gateway: {} items created in {:.2} s ({:.0} items/s, {} calls, {} subscriptions)",
        out.created, out.create_secs, out.items_per_sec, out.create_calls, out.subscriptions
    );
    tokio::time::sleep(warmup(args.interval)).await;
    let accepted = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| metric(t, "fieldlink_registry_points_accepted_total"))
    };
    let before = accepted(&scrape(&client, &registry_metrics).await);
    let cpu_before = process::cpu_seconds(gateway.pid());
    let t0 = Instant::now();
    tokio::time::sleep(args.duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let after = accepted(&scrape(&client, &registry_metrics).await);
    let cpu_after = process::cpu_seconds(gateway.pid());
    let _ = scrape(&client, &gateway_metrics).await;
    if let (Some(b), Some(a)) = (before, after) {
        out.changes = (a - b).max(0.0) as u64;
        out.changes_per_sec = out.changes as f64 / elapsed;
    }
    out.cpu_per_sec = cpu_before.zip(cpu_after).map(|(b, a)| (a - b) / elapsed);
    out.rss_bytes = process::rss_bytes(gateway.pid());
    out.rss_per_item = out.rss_bytes.map(|r| r as f64 / items.total as f64);
    let log = gateway.log();
    out.warnings = log.warnings;
    out.errors = log.errors;
    println!(
        "gateway: {:.0} value changes/s into the registry, RSS {:.1} MB ({:.0} B per item)",
        out.changes_per_sec,
        out.rss_bytes.unwrap_or(0) as f64 / 1e6,
        out.rss_per_item.unwrap_or(0.0)
    );
    if out.changes == 0 {
        bail!("the registry accepted no value changes in the window");
    }
    Ok(out)
}

fn summary(r: &Results) -> String {
    let g = &r.gateway;
    let mut s = format!(
        "\n== bench opcua: {} items on {} devices, interval {} ms, window {} s\n\
         gateway: created {} in {:.2} s = {:.0} items/s ({} calls, {} subscriptions); \
         {:.0} changes/s into the registry; CPU {:.3} s/s; RSS {:.1} MB = {:.0} B/item\n",
        r.items,
        r.devices,
        r.interval_ms,
        r.window_secs,
        g.created,
        g.create_secs,
        g.items_per_sec,
        g.create_calls,
        g.subscriptions,
        g.changes_per_sec,
        g.cpu_per_sec.unwrap_or(0.0),
        g.rss_bytes.unwrap_or(0) as f64 / 1e6,
        g.rss_per_item.unwrap_or(0.0)
    );
    match (&r.peer, &r.ratios) {
        (Some(p), Some(x)) => s.push_str(&format!(
            "asyncua {}: created {} in {:.2} s = {:.0} items/s; {:.0} changes/s; RSS {:.1} MB\n\
             ratios gateway ÷ asyncua: creation {:.2}×, changes/s {:.2}×, RSS {:.2}×\n",
            p.asyncua,
            p.created,
            p.create_secs,
            p.items_per_sec.unwrap_or(0.0),
            p.changes_per_sec.unwrap_or(0.0),
            p.rss_bytes as f64 / 1e6,
            x.items_per_sec.unwrap_or(0.0),
            x.changes_per_sec.unwrap_or(0.0),
            x.rss.unwrap_or(0.0)
        )),
        _ => s.push_str(&format!(
            "asyncua: {}\n",
            r.peer_missing.as_deref().unwrap_or("not run")
        )),
    }
    s.push_str(&format!("command: {}\n", r.command));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_log_fields_are_read() {
        let text = "# HELP x\nfieldlink_registry_points_accepted_total 1500\nfieldlink_registry_points_accepted_totalx 9\n";
        assert_eq!(
            metric(text, "fieldlink_registry_points_accepted_total"),
            Some(1500.0)
        );
        let line = "INFO monitored items created server=sim-0 created=5000 refused=0 calls=1 since_session_up_ms=250";
        assert_eq!(field(line, "created"), Some(5000));
        assert_eq!(field(line, "since_session_up_ms"), Some(250));
        assert_eq!(field(line, "nope"), None);
    }
}
