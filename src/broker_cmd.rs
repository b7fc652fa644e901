//! `fieldlink broker`: load and validate the config, bind, serve until
//! Ctrl-C/SIGTERM; `fieldlink broker passwd` makes password hash lines.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use fieldlink_broker::auth::{HashKind, PasswordHash};
use std::sync::Arc;

use fieldlink_broker::{Broker, BrokerConfig, LinkFilter, Listeners};
use fieldlink_gateway::driver::MqttLinkFactory;
use fieldlink_model::mqtt::MqttLink;

/// Flags of `fieldlink broker`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BrokerArgs {
    #[command(subcommand)]
    command: Option<BrokerCommand>,
    /// Configuration file (see deploy/broker.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override `listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override `tls.listen` (needs a [tls] section).
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Override (or set) `metrics.listen`.
    #[arg(long)]
    metrics: Option<SocketAddr>,
}

#[derive(Debug, clap::Subcommand)]
enum BrokerCommand {
    /// Print `USERNAME:HASH` for a password read from stdin (never from the
    /// command line), like mosquitto_passwd; paste the hash as `password_hash`.
    Passwd(PasswdArgs),
    /// One process of the lean ingress (started by `fieldlink broker` for
    /// each of `ingress.shards`; stops when its stdin closes).
    #[command(hide = true)]
    Shard(crate::ingress_cmd::ShardArgs),
}

#[derive(Debug, clap::Args)]
struct PasswdArgs {
    /// pbkdf2 ($7$, PBKDF2-HMAC-SHA512, mosquitto's format) for passwords
    /// people choose; sha256 (salted, fast) for random device tokens of 20+
    /// characters.
    #[arg(long, value_enum, default_value_t = Kind::Pbkdf2)]
    kind: Kind,
    /// The user name the line is for.
    username: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    Pbkdf2,
    Sha256,
}

impl BrokerArgs {
    /// Whether this is an ingress shard: one thread each (many shards share
    /// the cores; one allocator arena keeps an idle connection's memory
    /// small).
    pub(crate) fn is_shard(&self) -> bool {
        matches!(self.command, Some(BrokerCommand::Shard(_)))
    }
}

pub(crate) async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BrokerCommand::Passwd(passwd)) => return run_passwd(passwd),
        Some(BrokerCommand::Shard(shard)) => return crate::ingress_cmd::run_shard(shard).await,
        None => {}
    }
    let Some(path) = args.config else {
        anyhow::bail!("fieldlink broker needs --config FILE (see deploy/broker.example.toml)");
    };
    let mut config = BrokerConfig::from_file(&path)?;
    if let Some(addr) = args.listen {
        config.listen = addr;
    }
    if let Some(addr) = args.tls_listen {
        match config.tls.as_mut() {
            Some(tls) => tls.listen = addr,
            None => anyhow::bail!("--tls-listen needs a [tls] section in {}", path.display()),
        }
    }
    if let Some(addr) = args.metrics {
        config.metrics = Some(fieldlink_broker::config::MetricsConfig { listen: addr });
    }
    let settings = config.validate().map_err(|e| e.in_file(&path))?;
    if settings.users.is_empty() {
        tracing::warn!("no users configured: every client will be refused");
    }
    let listeners = Listeners::bind(&settings).await.context("cannot listen")?;
    let mut line = format!("broker listening: mqtt={}", listeners.mqtt.local_addr()?);
    if let Some(tls) = &listeners.tls {
        line.push_str(&format!(" tls={}", tls.local_addr()?));
    }
    if let Some(metrics) = &listeners.metrics {
        line.push_str(&format!(" metrics=http://{}/", metrics.local_addr()?));
    }
    let shards = settings.ingress.as_ref().map(|i| {
        line.push_str(&format!(
            " ingress={} ({} shard processes of up to {} connections)",
            i.listen, i.shards, i.max_connections
        ));
        i.shards
    });
    crate::say(format_args!("{line}"));
    let stop_shards = tokio_util::sync::CancellationToken::new();
    let supervisor = shards.map(|n| {
        tokio::spawn(crate::ingress_cmd::supervise(
            path.clone(),
            n,
            stop_shards.clone(),
        ))
    });
    let result = Broker::new(settings)
        .run(listeners, crate::shutdown_signal())
        .await;
    stop_shards.cancel();
    if let Some(supervisor) = supervisor {
        let _ = supervisor.await;
    }
    result.context("broker failed")?;
    crate::say(format_args!("broker stopped"));
    Ok(())
}

fn run_passwd(args: PasswdArgs) -> anyhow::Result<()> {
    if args.username.is_empty() || args.username.contains(['/', '+', '#', ':']) {
        anyhow::bail!("the user name must be non-empty, without /, +, # or :");
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!(
            "password for {} (echoed; pipe it in to avoid that): ",
            args.username
        );
        let _ = std::io::stderr().flush();
    }
    let mut password = String::new();
    stdin
        .lock()
        .read_line(&mut password)
        .context("cannot read the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    let kind = match args.kind {
        Kind::Pbkdf2 => HashKind::Pbkdf2,
        Kind::Sha256 => HashKind::Sha256,
    };
    let hash = PasswordHash::generate(kind, password.as_bytes())?;
    crate::say(format_args!("{}:{hash}", args.username));
    Ok(())
}

/// In-process links to a broker or an ingress (`open`), one per driver and
/// tenant. A tenant it does not know gets a closed link (the driver logs it
/// and retries with backoff).
pub(crate) fn link_factory(
    open: impl Fn(LinkFilter) -> Result<MqttLink, fieldlink_broker::BrokerError> + Send + Sync + 'static,
) -> MqttLinkFactory {
    Arc::new(move |tenant: Option<&str>| {
        let filter = LinkFilter {
            tenant: tenant.map(str::to_owned),
        };
        open(filter).unwrap_or_else(|e| {
            tracing::error!(error = %e, ?tenant, "no in-process MQTT link");
            let (_, events) = tokio::sync::mpsc::channel(1);
            let (publish, _) = tokio::sync::mpsc::channel(1);
            MqttLink { events, publish }
        })
    })
}
