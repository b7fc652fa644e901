//! The gateway: this binary as `fieldlink gateway --config FILE`, a child
//! process, whose `[mqtt]` section is the one `fieldlink sim mqtt` writes
//! ([`MqttFiles`]: JSON telemetry on `{tenant}/{device_id}/telemetry`,
//! automatic tags, the source time from `ts`, devices registered on their
//! retained meta topic) pointed at the broker under test with the gateway's
//! own service user. The same config, but for the broker's address, for
//! both brokers.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fieldlink_gateway::GatewayConfig;
use fieldlink_sim::mqtt::{BrokerAddr, Credentials, gateway_id};
use fieldlink_sim::{FaceFiles, FleetPlan, MqttFiles, PlannedDevice};

use super::LOG_LIMITS;
use crate::common::quote;
use crate::process::{ChildProcess, LogSummary, Stopped};
use crate::prometheus::{Endpoint, Scrape};

/// How long the gateway may take to print its start line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop (it flushes its spool for up to 5 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The MQTT JSON driver's counters carry this label.
const MQTT_JSON: &str = "protocol=\"mqtt-json\"";

/// Builds the gateway's config text for tenant 0 of `plan` at `broker`,
/// and validates it.
///
/// # Errors
/// When the config does not serialize or the gateway would refuse it.
pub(crate) fn config_text(
    plan: &FleetPlan,
    credentials: &Credentials,
    broker: &BrokerAddr,
    registry: &str,
    data_dir: &Path,
    metrics: SocketAddr,
) -> anyhow::Result<String> {
    let tenant = plan.tenants().first().context("the plan has no tenant")?;
    let head = format!(
        "gateway_id = {}\ndata_dir = {}\n[uplink]\nregistry = {}\ntoken = {}\n[metrics]\nlisten = \"{metrics}\"\n",
        quote(&gateway_id(&tenant.name)),
        quote(&data_dir.to_string_lossy()),
        quote(registry),
        quote(&tenant.token),
    );
    let mut config = GatewayConfig::from_toml(&head).context("the bench's gateway header")?;
    let files = MqttFiles {
        broker: broker.clone(),
        credentials: credentials.clone(),
        gateway_login: None,
        gateway_embedded: false,
    };
    let devices: Vec<PlannedDevice> = plan.devices_of_tenant(0).collect();
    let sections = files
        .gateway_sections(plan, 0, &devices)
        .context("the bench's [mqtt] section")?;
    for (name, section) in sections {
        config.drivers.insert(name, section);
    }
    let text = toml::to_string(&config).context("cannot write the gateway config as TOML")?;
    GatewayConfig::from_toml(&text)
        .and_then(|c| c.validate())
        .context("the gateway refuses the bench's config")?;
    Ok(text)
}

/// The gateway's figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GatewayReading {
    /// Devices declared (`fieldlink_gateway_devices`).
    pub(crate) devices: u64,
    /// Devices online.
    pub(crate) devices_online: i64,
    /// Messages the MQTT JSON driver received.
    pub(crate) messages: u64,
    /// Points put into batches.
    pub(crate) points: u64,
    /// Messages the driver could not understand.
    pub(crate) malformed: u64,
    /// Messages the driver ignored.
    pub(crate) ignored: u64,
    /// Lost broker sessions (and other driver failures).
    pub(crate) errors: u64,
    /// Age of the oldest unacknowledged batch, seconds.
    pub(crate) uplink_lag_seconds: f64,
    /// Batches dropped from a full spool.
    pub(crate) batches_dropped: u64,
}

impl GatewayReading {
    fn of(s: &Scrape) -> GatewayReading {
        GatewayReading {
            devices: s.count("fieldlink_gateway_devices"),
            devices_online: s.value("fieldlink_gateway_devices_online").unwrap_or(0.0) as i64,
            messages: s.labelled_count("fieldlink_gateway_driver_messages_total", MQTT_JSON),
            points: s.count("fieldlink_gateway_points_total"),
            malformed: s.labelled_count("fieldlink_gateway_driver_malformed_total", MQTT_JSON),
            ignored: s.labelled_count("fieldlink_gateway_driver_ignored_total", MQTT_JSON),
            errors: s.labelled_count("fieldlink_gateway_driver_errors_total", MQTT_JSON),
            uplink_lag_seconds: s
                .value("fieldlink_gateway_uplink_lag_seconds")
                .unwrap_or(0.0),
            batches_dropped: s.count("fieldlink_gateway_spool_dropped_batches_total"),
        }
    }
}

/// The running gateway.
#[derive(Debug)]
pub(crate) struct GatewayProcess {
    process: ChildProcess,
    metrics: Endpoint,
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
        let args: Vec<OsString> = vec!["gateway".into(), "--config".into(), path.into()];
        let (process, _) =
            ChildProcess::start("gateway", args, "gateway ", START_TIMEOUT, LOG_LIMITS).await?;
        Ok(GatewayProcess {
            process,
            metrics: Endpoint::new(format!("http://{metrics}/metrics"))?,
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

    /// Its figures now.
    ///
    /// # Errors
    /// When the metrics do not answer.
    pub(crate) async fn reading(&self) -> anyhow::Result<GatewayReading> {
        Ok(GatewayReading::of(&self.metrics.scrape().await?))
    }

    /// Waits until `devices` devices are declared and online.
    ///
    /// # Errors
    /// When that does not happen within `timeout`.
    pub(crate) async fn wait_online(&self, devices: u32, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            // The listener binds a moment after the start line.
            if let Ok(r) = self.reading().await {
                if r.devices >= u64::from(devices) && r.devices_online >= i64::from(devices) {
                    return Ok(());
                }
                last = Some(r);
            }
            if Instant::now() >= deadline {
                match last {
                    Some(r) => bail!(
                        "the gateway has {} of {devices} devices, {} online, after {} s ({} malformed, {} ignored messages); its last lines:{}",
                        r.devices,
                        r.devices_online,
                        timeout.as_secs(),
                        r.malformed,
                        r.ignored,
                        self.log().tail_text()
                    ),
                    None => bail!(
                        "the gateway's metrics did not answer within {} s; its last lines:{}",
                        timeout.as_secs(),
                        self.log().tail_text()
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
    use fieldlink_model::{Cloud, Protocol};
    use fieldlink_sim::{FleetSpec, ProtocolMix, TenantSpec};

    use super::*;

    #[test]
    fn the_config_reaches_the_broker_and_the_registry() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 12,
            tenants: vec![TenantSpec {
                token: Some("tok-0123456789abcdef".into()),
                ..TenantSpec::new("bench-mqtt", Cloud::Public)
            }],
            protocols: ProtocolMix::only(Protocol::MqttJson),
            ..FleetSpec::default()
        })
        .unwrap();
        let credentials = Credentials::generate(&plan, 1).unwrap();
        let broker: BrokerAddr = "mqtt://127.0.0.1:18830".parse().unwrap();
        let metrics: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let text = config_text(
            &plan,
            &credentials,
            &broker,
            "http://127.0.0.1:7600",
            Path::new("/tmp/gw \"data\""),
            metrics,
        )
        .unwrap();
        let config = GatewayConfig::from_toml(&text).unwrap();
        let settings = config.validate().unwrap();
        assert_eq!(settings.metrics, Some(metrics));
        assert_eq!(config.gateway_id, "sim-gw-bench-mqtt");
        let mqtt = &config.drivers["mqtt"];
        assert_eq!(mqtt["broker"].as_str(), Some("mqtt://127.0.0.1:18830"));
        assert_eq!(mqtt["tenant"].as_str(), Some("bench-mqtt"));
        assert_eq!(
            mqtt["password"].as_str(),
            credentials.password("sim-gw-bench-mqtt")
        );
        assert_eq!(
            mqtt["topics"][0]["topic"].as_str(),
            Some("{tenant}/{device_id}/telemetry")
        );
        assert!(config.devices.is_empty(), "devices register themselves");
    }
}
