//! The registry a bench's gateway streams to: this binary as `fieldlink
//! registry` in the bench's temporary directory with one tenant; its counts
//! read back over HTTP.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::process::{LogLimits, LogSummary, RegistryChild, Stopped, Tenant, registry_config};

/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running registry.
#[derive(Debug)]
pub(crate) struct RegistryProcess {
    registry: RegistryChild,
    client: reqwest::Client,
}

/// The registry's device counts for today (`/api/v1/summary`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Counts {
    /// `registered.total`.
    pub(crate) registered: u64,
    /// `online.total`.
    pub(crate) online: u64,
    /// `reporting.total` (日运行数量).
    pub(crate) reporting: u64,
}

impl RegistryProcess {
    /// Writes a config with the one `tenant` under `dir` (`registry.toml`,
    /// data in `registry-data/`) and starts the registry on free ports; its
    /// log is summarized within `limits`.
    ///
    /// # Errors
    /// When the config cannot be written or the registry does not listen.
    pub(crate) async fn start(
        dir: &Path,
        tenant: Tenant,
        limits: LogLimits,
    ) -> anyhow::Result<RegistryProcess> {
        let text = config_text(&dir.join("registry-data"), tenant);
        RegistryProcess::start_with(dir, &text, limits).await
    }

    /// Writes `config` (a whole registry config) to `dir/registry.toml` and
    /// starts the registry on it, as [`RegistryProcess::start`].
    ///
    /// # Errors
    /// When the config cannot be written or the registry does not listen.
    pub(crate) async fn start_with(
        dir: &Path,
        config_text: &str,
        limits: LogLimits,
    ) -> anyhow::Result<RegistryProcess> {
        let config = dir.join("registry.toml");
        std::fs::write(&config, config_text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let registry = RegistryChild::start(&config, START_TIMEOUT, limits).await?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(RegistryProcess { registry, client })
    }

    /// The registry process: its URLs (gRPC for the gateway, HTTP for the
    /// counts), pid and log.
    pub(crate) fn process(&self) -> &RegistryChild {
        &self.registry
    }

    /// `GET {http}{path}` as JSON (`path` without the leading `/`).
    ///
    /// # Errors
    /// When the API does not answer 200 with JSON.
    pub(crate) async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.registry.http_url());
        crate::common::get_json(&self.client, &url).await
    }

    /// Today's counts.
    ///
    /// # Errors
    /// When the API does not answer with a summary.
    pub(crate) async fn counts(&self) -> anyhow::Result<Counts> {
        let url = "api/v1/summary";
        let body = self.get_json(url).await?;
        let total = |what: &str| {
            body.pointer(&format!("/{what}/total"))
                .and_then(serde_json::Value::as_u64)
                .with_context(|| format!("{url} has no {what}.total: {body}"))
        };
        Ok(Counts {
            registered: total("registered")?,
            online: total("online")?,
            reporting: total("reporting")?,
        })
    }

    /// Reads the counts until `reporting` reaches `expected` or `timeout`
    /// passes; returns the last counts.
    ///
    /// # Errors
    /// When the API fails.
    pub(crate) async fn wait_reporting(
        &self,
        expected: u64,
        timeout: Duration,
    ) -> anyhow::Result<Counts> {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.counts().await?;
            if counts.reporting >= expected || Instant::now() >= deadline {
                return Ok(counts);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops it (SIGTERM).
    ///
    /// # Errors
    /// When it cannot be signalled.
    pub(crate) async fn stop(self) -> anyhow::Result<(Stopped, LogSummary)> {
        self.registry.stop(STOP_TIMEOUT).await
    }
}

fn config_text(data_dir: &Path, tenant: Tenant) -> String {
    registry_config(data_dir, "", &[tenant])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "bench-modbus-token-0001";

    #[test]
    fn the_config_has_the_tenant() {
        let tenant = Tenant {
            name: "bench-modbus",
            cloud: "public",
            token: TOKEN,
        };
        let text = config_text(Path::new("/tmp/a \"b\"/data"), tenant);
        assert!(text.starts_with("data_dir = \"/tmp/a \\\"b\\\"/data\"\n"));
        assert!(text.contains(TOKEN));
        assert!(text.parse::<toml::Table>().is_ok());
        assert_eq!(
            text,
            format!(
                "data_dir = \"/tmp/a \\\"b\\\"/data\"\n\
                 [[tenants]]\n\
                 name = \"bench-modbus\"\n\
                 cloud = \"public\"\n\
                 token = \"{TOKEN}\"\n"
            )
        );
    }
}
