//! The lean ingress's processes: `fieldlink broker` with an `[ingress]`
//! section starts `ingress.shards` children of itself
//! (`fieldlink broker shard --config FILE --index K`) and restarts one that
//! exits; each shard binds `ingress.listen` with `SO_REUSEPORT`, runs
//! [`fieldlink_broker::ingress::Ingress`] and, on its links, the gateways
//! of `ingress.gateways` (gateway id `<id>-s<K>`, data dir
//! `<data_dir>/s<K>`), which stream to the registry like any gateway.
//!
//! A shard stops when its stdin closes, so shards never outlive their
//! supervisor, even one killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use fieldlink_broker::BrokerConfig;
use fieldlink_broker::ingress::{Ingress, shard};
use fieldlink_gateway::GatewayConfig;
use fieldlink_gateway::driver::Resources;
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Shortest and longest wait before a shard that exited is started again.
const RESTART_MIN: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A shard that ran this long before exiting is restarted at once.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long a stopping shard may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Flags of `fieldlink broker shard` (started by `fieldlink broker`).
#[derive(Debug, clap::Args)]
pub(crate) struct ShardArgs {
    /// The broker's configuration file (with an [ingress] section).
    #[arg(long, short)]
    config: PathBuf,
    /// This shard's index, 0-based.
    #[arg(long)]
    index: usize,
}

/// Runs one shard until stdin closes or a signal.
pub(crate) async fn run_shard(args: ShardArgs) -> anyhow::Result<()> {
    let config = BrokerConfig::from_file(&args.config)?;
    let settings = config.validate().map_err(|e| e.in_file(&args.config))?;
    let Some(ingress) = settings.ingress.clone() else {
        anyhow::bail!("{}: no [ingress] section", args.config.display());
    };
    let metrics =
        match ingress
            .metrics
            .and_then(|base| shard::metrics_addr(base, args.index))
        {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("shard {}: cannot serve /metrics on {addr}", args.index)
            })?),
            None => None,
        };
    let ingress_server = Ingress::new(settings, ingress.max_connections);
    let links = LinksOpened::default();
    let resources = Resources {
        embedded_mqtt: Some({
            let handle = ingress_server.handle();
            let links = links.clone();
            crate::broker_cmd::link_factory(move |filter| {
                let link = handle.link(filter);
                links.opened();
                link
            })
        }),
    };
    let mut links_expected = 0;
    let base = args.config.parent().unwrap_or(Path::new("."));
    let stop_gateways = CancellationToken::new();
    let mut gateways = tokio::task::JoinSet::new();
    for path in &ingress.gateways {
        let path = base.join(path);
        let mut config = GatewayConfig::from_file(&path)?;
        config.gateway_id = format!("{}-s{}", config.gateway_id, args.index);
        config.data_dir = config.data_dir.join(format!("s{}", args.index));
        if let Some(m) = config.metrics.as_mut() {
            // One port per shard, as for the ingress's own metrics.
            if let Some(addr) = shard::metrics_addr(m.listen, args.index) {
                m.listen = addr;
            }
        }
        let gateway = config.validate().map_err(|e| e.in_file(&path))?;
        links_expected += gateway
            .drivers
            .iter()
            .map(|d| d.embedded_links())
            .sum::<usize>();
        gateways.spawn(fieldlink_gateway::run_with(
            gateway,
            resources.clone(),
            stop_gateways.clone().cancelled_owned(),
        ));
    }
    // Devices are taken once every gateway reads its link, so that no
    // device's first messages (its registration) pass unread; until then
    // the shards already listening on the port take them.
    if links_expected > 0 {
        tokio::select! {
            () = links.wait_for(links_expected) => {}
            Some(ended) = gateways.join_next() => {
                ended?.context("gateway failed")?;
                anyhow::bail!("a gateway stopped before it opened its link");
            }
        }
    }
    let listener = shard::bind_shared(ingress.listen).context("cannot listen")?;
    crate::say(format_args!(
        "ingress shard {} listening: mqtt={} (max {} connections), {} gateway(s)",
        args.index,
        ingress.listen,
        ingress.max_connections,
        gateways.len()
    ));
    let stdin = fieldlink_sim::stdin_closed(true);
    let stop = async {
        tokio::select! {
            _ = crate::shutdown_signal() => {}
            _ = stdin => {}
        }
    };
    ingress_server
        .run(listener, metrics, stop)
        .await
        .context("ingress failed")?;
    stop_gateways.cancel();
    while let Some(gateway) = gateways.join_next().await {
        gateway?.context("gateway failed")?;
    }
    Ok(())
}

/// The shard processes of one broker, restarted when they exit, until
/// `stop`.
pub(crate) async fn supervise(config: PathBuf, shards: usize, stop: CancellationToken) {
    let tasks: Vec<_> = (0..shards)
        .map(|index| tokio::spawn(keep_running(config.clone(), index, stop.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

fn start(config: &Path, index: usize) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["broker", "shard", "--config"])
        .arg(config)
        .args(["--index", &index.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // Its own process group: Ctrl-C reaches the supervisor, which then
    // closes the shards' stdin.
    #[cfg(unix)]
    cmd.process_group(0);
    cmd.spawn()
}

async fn keep_running(config: PathBuf, index: usize, stop: CancellationToken) {
    let mut backoff = RESTART_MIN;
    while !stop.is_cancelled() {
        let started = tokio::time::Instant::now();
        let mut child = match start(&config, index) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(shard = index, error = %e, "cannot start an ingress shard");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RESTART_MAX);
                continue;
            }
        };
        let stdin = child.stdin.take();
        tokio::select! {
            status = child.wait() => {
                let ran = started.elapsed();
                if ran >= HEALTHY_RUN {
                    backoff = RESTART_MIN;
                }
                tracing::error!(shard = index, status = ?status.ok(), ran_s = ran.as_secs(),
                    restart_in_ms = backoff.as_millis() as u64, "ingress shard exited; restarting it");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RESTART_MAX);
            }
            _ = stop.cancelled() => {
                drop(stdin);
                if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                    tracing::warn!(shard = index, "ingress shard did not stop in time; killing it");
                    let _ = child.kill().await;
                }
                return;
            }
        }
    }
}

/// How many in-process links the shard's gateways have opened.
#[derive(Debug, Clone, Default)]
struct LinksOpened(Arc<(AtomicUsize, Notify)>);

impl LinksOpened {
    fn opened(&self) {
        self.0.0.fetch_add(1, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }

    /// Returns once `n` links have been opened.
    async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.0.1.notified();
            if self.0.0.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}
