//! The gateway under test: its config (every device of the fleet polled
//! with the bench's [`Load`]), validated as the gateway validates it, and
//! the gateway itself as a child process (`fieldlink gateway --config
//! FILE`) so that its memory and CPU are its own.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fieldlink_gateway::GatewayConfig;
use fieldlink_gateway::config::DeviceConfig;
use fieldlink_gateway::driver::modbus::config::{
    ModbusDeviceConfig, ModbusSection, TemplateConfig,
};
use fieldlink_sim::FleetPlan;

use super::LOG_LIMITS;
use super::layout::Load;
use super::scrape::{Scraper, Snapshot};
use crate::common::quote;
use crate::process::{ChildProcess, LogSummary, Stopped};

/// Id of the bench's gateway.
const GATEWAY_ID: &str = "bench-modbus-gw";
/// Name of the template every device uses.
const TEMPLATE: &str = "bench";
/// How long the gateway may take to print its start line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop (it flushes its spool for up to 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the gateway's config text and validates it.
///
/// # Errors
/// When the config does not serialize or the gateway would refuse it.
pub(crate) fn config_text(
    plan: &FleetPlan,
    load: &Load,
    registry: &str,
    token: &str,
    data_dir: &Path,
    metrics: SocketAddr,
) -> anyhow::Result<String> {
    // The required keys as text (the optional ones keep the gateway's
    // defaults), then templates and devices as typed values.
    let head = format!(
        "gateway_id = {}\ndata_dir = {}\n[uplink]\nregistry = {}\ntoken = {}\n[metrics]\nlisten = \"{metrics}\"\n",
        quote(GATEWAY_ID),
        quote(&data_dir.to_string_lossy()),
        quote(registry),
        quote(token),
    );
    let mut config = GatewayConfig::from_toml(&head).context("the bench's gateway header")?;
    let mut section = ModbusSection::default();
    section.templates.insert(
        TEMPLATE.to_owned(),
        TemplateConfig {
            poll_groups: load.groups.clone(),
        },
    );
    config.drivers.insert(
        "modbus".to_owned(),
        toml::Value::try_from(&section).context("the bench's [modbus] section")?,
    );
    config.devices = plan
        .devices()
        .map(|d| {
            let ty = d.device_type;
            let modbus = ModbusDeviceConfig {
                endpoint: d.endpoint.to_string(),
                unit_id: 1,
                template: Some(TEMPLATE.to_owned()),
                poll_groups: Vec::new(),
            };
            Ok(DeviceConfig {
                id: d.id(),
                class: ty.class().code().to_owned(),
                category: ty.category.code().to_owned(),
                device_type: ty.model.to_owned(),
                name: d.name(),
                protocol: "modbus-tcp".to_owned(),
                attributes: BTreeMap::new(),
                driver: BTreeMap::from([(
                    "modbus".to_owned(),
                    toml::Value::try_from(&modbus).context("a bench device's [devices.modbus]")?,
                )]),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let text = toml::to_string(&config).context("cannot write the gateway config as TOML")?;
    GatewayConfig::from_toml(&text)
        .and_then(|c| c.validate())
        .context("the gateway refuses the bench's config")?;
    Ok(text)
}

/// A TOML basic string (JSON escapes are valid TOML escapes).
/// The running gateway.
#[derive(Debug)]
pub(crate) struct GatewayProcess {
    process: ChildProcess,
    scraper: Scraper,
}

impl GatewayProcess {
    /// Writes `config` to `path` and starts the gateway on it.
    ///
    /// # Errors
    /// When the file cannot be written or the gateway does not start.
    pub(crate) async fn start(
        path: &Path,
        config: &str,
        metrics: SocketAddr,
    ) -> anyhow::Result<GatewayProcess> {
        std::fs::write(path, config).with_context(|| format!("cannot write {}", path.display()))?;
        let args: Vec<OsString> = vec![
            "gateway".into(),
            "--config".into(),
            path.as_os_str().to_owned(),
        ];
        let (process, _) =
            ChildProcess::start("gateway", args, "gateway ", START_TIMEOUT, LOG_LIMITS).await?;
        Ok(GatewayProcess {
            process,
            scraper: Scraper::new(metrics)?,
        })
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> LogSummary {
        self.process.log()
    }

    /// One scrape of its metrics.
    ///
    /// # Errors
    /// When the metrics do not answer.
    pub(crate) async fn scrape(&self) -> anyhow::Result<Snapshot> {
        self.scraper.scrape().await
    }

    /// Waits until `devices` sessions are up; returns the scrape that
    /// showed it.
    ///
    /// # Errors
    /// When that does not happen within `timeout`.
    pub(crate) async fn wait_online(
        &self,
        devices: u32,
        timeout: Duration,
    ) -> anyhow::Result<Snapshot> {
        let deadline = Instant::now() + timeout;
        let mut last: Option<Snapshot> = None;
        loop {
            // The listener binds a moment after the start line.
            if let Ok(s) = self.scrape().await {
                if s.devices_online >= i64::from(devices) {
                    return Ok(s);
                }
                last = Some(s);
            }
            if Instant::now() >= deadline {
                let log = self.log();
                match last {
                    Some(s) => bail!(
                        "{} of {devices} devices online after {} s ({} connect failures); the gateway's last lines:{}",
                        s.devices_online,
                        timeout.as_secs(),
                        s.connect_failures,
                        log.tail_text()
                    ),
                    None => bail!(
                        "the gateway's metrics did not answer within {} s; its last lines:{}",
                        timeout.as_secs(),
                        log.tail_text()
                    ),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it (SIGTERM).
    ///
    /// # Errors
    /// When it cannot be signalled.
    pub(crate) async fn stop(self) -> anyhow::Result<(Stopped, LogSummary)> {
        self.process.stop(STOP_TIMEOUT).await
    }
}

#[cfg(test)]
mod tests {
    use fieldlink_sim::FleetSpec;

    use super::super::layout::{Block, Layout};
    use super::*;

    #[test]
    fn the_config_is_one_the_gateway_accepts() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 30,
            port: 15020,
            ..FleetSpec::default()
        })
        .unwrap();
        let load = Load::new(
            Layout::Scattered,
            12,
            Block { start: 0, len: 10 },
            Duration::from_millis(500),
        )
        .unwrap();
        let metrics: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let text = config_text(
            &plan,
            &load,
            "http://127.0.0.1:7600",
            "bench-modbus-token-0001",
            Path::new("/tmp/gw \"data\""),
            metrics,
        )
        .unwrap();
        let config = GatewayConfig::from_toml(&text).unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.configured_devices, 30);
        assert_eq!(settings.metrics, Some(metrics));
        let groups = &config.drivers["modbus"]["templates"][TEMPLATE]["poll_groups"];
        assert_eq!(groups.as_array().map(Vec::len), Some(3));
        let endpoint = &config.devices[0].driver["modbus"]["endpoint"];
        assert!(endpoint.as_str().unwrap().ends_with(":15020"), "{endpoint}");
        assert_eq!(settings.data_dir, Path::new("/tmp/gw \"data\""));
    }
}
