//! The broker under test, a child process either way so that `/proc` gives
//! its own memory and CPU:
//!
//! - `fieldlink broker --config broker.toml` (this binary): the fleet's
//!   users ([`crate::fleet_broker::broker_config`]) and `/metrics`, read by
//!   scraping;
//! - `mosquitto -c mosquitto.conf` ([`super::mosquitto`]), read through
//!   `$SYS` ([`super::sys`]).
//!
//! Both are read as a [`BrokerReading`]: connections, messages and bytes,
//! with the time those figures were true.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fieldlink_broker::config::MetricsConfig;
use fieldlink_sim::FleetPlan;
use fieldlink_sim::mqtt::{BrokerAddr, Credentials, Role};
use serde::Serialize;

use super::LOG_LIMITS;
use super::mosquitto::{self, Access, Programs, User};
use super::sys::{self, SysObserver};
use crate::common::free_local_addr;
use crate::fleet_broker::broker_config;
use crate::process::{ChildProcess, LogSummary, Stopped};
use crate::prometheus::Endpoint;

/// How long a broker may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The bench's own `$SYS` reader at mosquitto.
const OBSERVER: &str = "bench-observer";

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BrokerKind {
    /// `fieldlink broker`.
    Fieldlink,
    /// mosquitto.
    Mosquitto,
}

impl BrokerKind {
    /// For people and file names.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BrokerKind::Fieldlink => "fieldlink",
            BrokerKind::Mosquitto => "mosquitto",
        }
    }
}

/// The broker's figures at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BrokerReading {
    /// When the message figures were true: the scrape, or the arrival of
    /// mosquitto's `$SYS` update.
    pub(crate) at: Instant,
    /// Client connections (mosquitto's count includes the bench's
    /// observer).
    pub(crate) connections: i64,
    /// PUBLISH packets received from clients.
    pub(crate) messages_in: u64,
    /// PUBLISH packets sent to clients.
    pub(crate) messages_out: u64,
    /// Bytes received from clients.
    pub(crate) bytes_in: u64,
}

/// Where the figures come from.
#[derive(Debug)]
enum Figures {
    Metrics(Endpoint),
    Sys(SysObserver),
}

/// A running broker.
#[derive(Debug)]
pub(crate) struct BrokerProcess {
    kind: BrokerKind,
    process: ChildProcess,
    addr: SocketAddr,
    figures: Figures,
    version: String,
}

impl BrokerProcess {
    /// Starts `fieldlink broker` with `plan`'s users (`credentials`) on
    /// free loopback ports, its config in `dir/broker.toml`.
    ///
    /// # Errors
    /// When the config cannot be made or written, or the broker does not
    /// listen.
    pub(crate) async fn start_fieldlink(
        dir: &Path,
        plan: &FleetPlan,
        credentials: &Credentials,
    ) -> anyhow::Result<BrokerProcess> {
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut config = broker_config(plan, credentials, any_port)?;
        config.metrics = Some(MetricsConfig { listen: any_port });
        config
            .validate()
            .context("the fieldlink broker refuses the bench's config")?;
        let path = dir.join("broker.toml");
        let text = toml::to_string(&config).context("cannot write the broker config as TOML")?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        let args: Vec<OsString> = vec!["broker".into(), "--config".into(), path.into()];
        let (process, line) = ChildProcess::start(
            "fieldlink broker",
            args,
            "broker listening:",
            START_TIMEOUT,
            LOG_LIMITS,
        )
        .await?;
        let Some((addr, metrics)) = parse_listening(&line) else {
            let _ = process.stop(STOP_TIMEOUT).await;
            bail!("cannot parse the broker's line `{line}`");
        };
        Ok(BrokerProcess {
            kind: BrokerKind::Fieldlink,
            process,
            addr,
            figures: Figures::Metrics(Endpoint::new(format!("{metrics}metrics"))?),
            version: format!("fieldlink broker {}", env!("CARGO_PKG_VERSION")),
        })
    }

    /// Starts mosquitto with the same users as the fieldlink broker (and
    /// an observer of the bench's own) on a free loopback port, its files
    /// in `dir`, and connects the observer.
    ///
    /// # Errors
    /// When the files cannot be written, mosquitto does not listen, or
    /// its `$SYS` figures do not arrive.
    pub(crate) async fn start_mosquitto(
        programs: &Programs,
        dir: &Path,
        plan: &FleetPlan,
        credentials: &Credentials,
    ) -> anyhow::Result<BrokerProcess> {
        let tenant = plan
            .tenants()
            .first()
            .map(|t| t.name.clone())
            .context("the plan has no tenant")?;
        let observer_password = format!("{OBSERVER}-{}", std::process::id());
        let mut users: Vec<User> = credentials
            .all()
            .iter()
            .map(|c| User {
                username: c.username.clone(),
                password: c.password.clone(),
                access: match c.role {
                    Role::Gateway => Access::Service,
                    Role::Device | Role::EdgeNode => Access::Device,
                    Role::Fleet => Access::Fleet(c.tenant.clone()),
                },
            })
            .collect();
        users.push(User {
            username: OBSERVER.to_owned(),
            password: observer_password.clone(),
            access: Access::Observer,
        });
        let addr = free_local_addr()?;
        let config = mosquitto::write_files(programs, dir, addr, &tenant, &users).await?;
        let args: Vec<OsString> = vec!["-c".into(), config.into()];
        let mut process =
            ChildProcess::spawn_program("mosquitto", &programs.mosquitto, args, LOG_LIMITS)?;
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = process.exited() {
                // Let its last lines arrive.
                tokio::time::sleep(Duration::from_millis(200)).await;
                bail!(
                    "mosquitto exited ({status}) before listening on {addr}; its last lines:{}",
                    process.log().tail_text()
                );
            }
            if Instant::now() >= deadline {
                let tail = process.log().tail_text();
                let _ = process.stop(STOP_TIMEOUT).await;
                bail!(
                    "mosquitto did not listen on {addr} within {} s; its last lines:{tail}",
                    START_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let observer = SysObserver::start(addr, OBSERVER, &observer_password);
        let broker = BrokerProcess {
            kind: BrokerKind::Mosquitto,
            process,
            addr,
            figures: Figures::Sys(observer),
            version: programs.version.clone(),
        };
        // The first `$SYS` round says the observer is in.
        if let Figures::Sys(observer) = &broker.figures
            && let Err(last) = observer
                .wait_for(sys::CLIENTS_CONNECTED, START_TIMEOUT, |n| n >= 1)
                .await
        {
            bail!(
                "mosquitto's $SYS figures did not arrive within {} s (last: {last:?}); its last lines:{}",
                START_TIMEOUT.as_secs(),
                broker.log().tail_text()
            );
        }
        Ok(broker)
    }

    /// Which broker it is.
    pub(crate) fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// Its name and version.
    pub(crate) fn version(&self) -> String {
        match &self.figures {
            Figures::Sys(observer) => observer.version().unwrap_or_else(|| self.version.clone()),
            Figures::Metrics(_) => self.version.clone(),
        }
    }

    /// Where clients connect.
    pub(crate) fn url(&self) -> BrokerAddr {
        BrokerAddr {
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
        }
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Connections of the bench's own beside the devices and the gateway
    /// (mosquitto's `$SYS` observer).
    pub(crate) fn own_connections(&self) -> i64 {
        match self.figures {
            Figures::Metrics(_) => 0,
            Figures::Sys(_) => 1,
        }
    }

    /// Its figures now.
    ///
    /// # Errors
    /// When the metrics do not answer, or `$SYS` has not said enough yet.
    pub(crate) async fn reading(&self) -> anyhow::Result<BrokerReading> {
        match &self.figures {
            Figures::Metrics(endpoint) => {
                let s = endpoint.scrape().await?;
                Ok(BrokerReading {
                    at: Instant::now(),
                    connections: s.value("fieldlink_broker_connections").unwrap_or(0.0) as i64,
                    messages_in: s.count("fieldlink_broker_messages_in_total"),
                    messages_out: s.count("fieldlink_broker_messages_out_total"),
                    bytes_in: s.count("fieldlink_broker_bytes_in_total"),
                })
            }
            Figures::Sys(observer) => {
                let received = observer
                    .get(sys::MESSAGES_RECEIVED)
                    .with_context(|| format!("mosquitto sent no {}", sys::MESSAGES_RECEIVED))?;
                let value = |topic: &str| observer.get(topic).map_or(0, |v| v.value);
                Ok(BrokerReading {
                    at: received.at,
                    connections: i64::try_from(value(sys::CLIENTS_CONNECTED)).unwrap_or(i64::MAX),
                    messages_in: received.value,
                    messages_out: value(sys::MESSAGES_SENT),
                    bytes_in: value(sys::BYTES_RECEIVED),
                })
            }
        }
    }

    /// Waits until the broker counts at least `n` connections.
    ///
    /// # Errors
    /// When that does not happen within `timeout`.
    pub(crate) async fn wait_connections(&self, n: i64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.reading().await.ok().map(|r| r.connections);
            if now.is_some_and(|c| c >= n) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {} counts {} of {n} connections after {} s; its last lines:{}",
                    self.kind.name(),
                    now.map_or_else(|| "no".to_owned(), |c| c.to_string()),
                    timeout.as_secs(),
                    self.log().tail_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> LogSummary {
        self.process.log()
    }

    /// Stops it (SIGTERM).
    ///
    /// # Errors
    /// When it cannot be signalled.
    pub(crate) async fn stop(self) -> anyhow::Result<(Stopped, LogSummary)> {
        // The observer disconnects first.
        drop(self.figures);
        self.process.stop(STOP_TIMEOUT).await
    }
}

/// `broker listening: mqtt=ADDR metrics=http://ADDR/` → (ADDR, metrics
/// URL ending in `/`).
fn parse_listening(line: &str) -> Option<(SocketAddr, String)> {
    let rest = line.strip_prefix("broker listening:")?;
    let mut mqtt = None;
    let mut metrics = None;
    for word in rest.split_whitespace() {
        if let Some(addr) = word.strip_prefix("mqtt=") {
            mqtt = addr.parse().ok();
        } else if let Some(url) = word.strip_prefix("metrics=") {
            metrics = Some(if url.ends_with('/') {
                url.to_owned()
            } else {
                format!("{url}/")
            });
        }
    }
    Some((mqtt?, metrics?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_both_addresses() {
        let line = "broker listening: mqtt=127.0.0.1:40001 metrics=http://127.0.0.1:40002/";
        let (mqtt, metrics) = parse_listening(line).unwrap();
        assert_eq!(mqtt, "127.0.0.1:40001".parse::<SocketAddr>().unwrap());
        assert_eq!(metrics, "http://127.0.0.1:40002/");
        assert_eq!(
            parse_listening("broker listening: mqtt=127.0.0.1:1 metrics=http://h:2").map(|p| p.1),
            Some("http://h:2/".to_owned())
        );
        assert_eq!(parse_listening("broker listening: mqtt=127.0.0.1:1"), None);
    }
}
