//! The registry the gateway streams to: this binary as `fieldlink registry`
//! in the bench's temporary directory, one public bench tenant; its counts
//! read back over HTTP.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::child::{ChildProcess, LogSummary, Stopped};

/// Token of the bench tenant.
pub(crate) const TOKEN: &str = "bench-modbus-token-0001";
/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running registry.
#[derive(Debug)]
pub(crate) struct RegistryProcess {
    process: ChildProcess,
    grpc: String,
    http: String,
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
    /// Writes a config under `dir` and starts the registry on free ports.
    ///
    /// # Errors
    /// When the config cannot be written or the registry does not listen.
    pub(crate) async fn start(dir: &Path) -> anyhow::Result<RegistryProcess> {
        let config = dir.join("registry.toml");
        std::fs::write(&config, config_text(&dir.join("registry-data")))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let args: Vec<OsString> = vec![
            "registry".into(),
            "--config".into(),
            config.into_os_string(),
            "--grpc".into(),
            "127.0.0.1:0".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
        ];
        let (process, line) =
            ChildProcess::start("registry", args, "registry listening:", START_TIMEOUT).await?;
        let Some((grpc, http)) = parse_listening(&line) else {
            let _ = process.stop(STOP_TIMEOUT).await;
            anyhow::bail!("cannot parse the registry's line `{line}`");
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(RegistryProcess {
            process,
            grpc,
            http,
            client,
        })
    }

    /// gRPC URL for the gateway.
    pub(crate) fn grpc_url(&self) -> &str {
        &self.grpc
    }

    /// HTTP base URL (ends in `/`).
    pub(crate) fn http_url(&self) -> &str {
        &self.http
    }

    /// Process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> LogSummary {
        self.process.log()
    }

    /// Today's counts.
    ///
    /// # Errors
    /// When the API does not answer with a summary.
    pub(crate) async fn counts(&self) -> anyhow::Result<Counts> {
        let url = format!("{}api/v1/summary", self.http);
        let body: serde_json::Value = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot GET {url}"))?
            .json()
            .await
            .with_context(|| format!("{url} is not JSON"))?;
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
        self.process.stop(STOP_TIMEOUT).await
    }
}

fn config_text(data_dir: &Path) -> String {
    // TOML basic strings take JSON-style escapes.
    let data_dir = serde_json::to_string(&data_dir.to_string_lossy())
        .unwrap_or_else(|_| "\"registry-data\"".to_owned());
    format!(
        "data_dir = {data_dir}\n\
         [[tenants]]\n\
         name = \"bench-modbus\"\n\
         cloud = \"public\"\n\
         token = \"{TOKEN}\"\n"
    )
}

/// `registry listening: grpc=ADDR http=URL` → (`http://ADDR`, URL).
fn parse_listening(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("registry listening:")?;
    let mut grpc = None;
    let mut http = None;
    for word in rest.split_whitespace() {
        if let Some(addr) = word.strip_prefix("grpc=") {
            grpc = Some(format!("http://{addr}"));
        } else if let Some(url) = word.strip_prefix("http=") {
            http = Some(url.to_owned());
        }
    }
    let http = http?;
    let http = if http.ends_with('/') {
        http
    } else {
        format!("{http}/")
    };
    Some((grpc?, http))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_both_urls() {
        let line = "registry listening: grpc=127.0.0.1:41000 http=http://127.0.0.1:41001/";
        assert_eq!(
            parse_listening(line),
            Some((
                "http://127.0.0.1:41000".to_owned(),
                "http://127.0.0.1:41001/".to_owned()
            ))
        );
        assert_eq!(parse_listening("registry listening: grpc=x"), None);
    }

    #[test]
    fn the_config_has_the_tenant() {
        let text = config_text(Path::new("/tmp/a \"b\"/data"));
        assert!(text.starts_with("data_dir = \"/tmp/a \\\"b\\\"/data\"\n"));
        assert!(text.contains(TOKEN));
        assert!(text.parse::<toml::Table>().is_ok());
    }
}
