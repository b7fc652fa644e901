//! The registry the bench starts for itself: this same binary as
//! `fieldlink registry` in a temporary directory with two bench tenants,
//! started, logged and stopped by `crate::process`, which also reads its
//! memory and CPU from `/proc`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::process::{LogLimits, LogSummary, RegistryChild, Stopped, Tenant, registry_config};

/// Token of the public-cloud bench tenant.
pub(crate) const PUBLIC_TOKEN: &str = "bench-public-token-0001";
/// Token of the private-cloud bench tenant.
pub(crate) const PRIVATE_TOKEN: &str = "bench-private-token-0001";

/// How long the registry may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted registry may take to load its store and listen.
const RESTART_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the registry may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of the registry's log is kept: its first 20 warning and error
/// lines, whole.
const LOG_LIMITS: LogLimits = LogLimits {
    problems: 20,
    max_line: None,
    keep: None,
};

/// A running registry child process.
#[derive(Debug)]
pub(crate) struct RegistryProcess {
    /// Declared before `dir`: killed (on drop) before its data is removed.
    registry: RegistryChild,
    dir: tempfile::TempDir,
}

impl RegistryProcess {
    /// Starts `fieldlink registry` in a fresh temporary directory and waits
    /// for its listening line.
    ///
    /// # Errors
    /// When the directory, config or process cannot be made, or the registry
    /// exits or stays silent instead of listening.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fieldlink-bench-ingest-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let config = dir.path().join("registry.toml");
        std::fs::write(&config, config_text(&dir.path().join("data")))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let registry = RegistryChild::start(&config, START_TIMEOUT, LOG_LIMITS).await?;
        Ok(RegistryProcess { registry, dir })
    }

    /// Stops the registry (SIGTERM, as an operator would) and starts it
    /// again on the same data directory; returns once it listens, which it
    /// does only after loading its store. The first run's log is dropped;
    /// how it stopped is returned.
    ///
    /// # Errors
    /// When it cannot be stopped, or does not come back within 15 minutes.
    pub(crate) async fn restart(self) -> anyhow::Result<(Self, Stopped)> {
        let RegistryProcess { registry, dir } = self;
        let (stopped, _) = registry.stop(STOP_TIMEOUT).await?;
        let config = dir.path().join("registry.toml");
        let registry = RegistryChild::start(&config, RESTART_TIMEOUT, LOG_LIMITS)
            .await
            .context("the registry did not come back after a restart")?;
        Ok((RegistryProcess { registry, dir }, stopped))
    }

    /// The registry process: its URLs, pid and log.
    pub(crate) fn process(&self) -> &RegistryChild {
        &self.registry
    }

    /// The registry process, to see whether it exited.
    pub(crate) fn process_mut(&mut self) -> &mut RegistryChild {
        &mut self.registry
    }

    /// Sends SIGTERM, waits for the exit (SIGKILL after a timeout) and
    /// removes the temporary directory.
    ///
    /// # Errors
    /// When the signal cannot be sent, or the directory cannot be removed.
    pub(crate) async fn stop(self) -> anyhow::Result<(Stopped, LogSummary)> {
        let stopped = self.registry.stop(STOP_TIMEOUT).await?;
        let path = self.dir.path().to_path_buf();
        self.dir
            .close()
            .with_context(|| format!("cannot remove {}", path.display()))?;
        Ok(stopped)
    }
}

fn config_text(data_dir: &Path) -> String {
    registry_config(
        data_dir,
        "[ingest]\nmax_inflight_batches = 64\n",
        &[
            Tenant {
                name: "bench-public",
                cloud: "public",
                token: PUBLIC_TOKEN,
            },
            Tenant {
                name: "bench-private",
                cloud: "private",
                token: PRIVATE_TOKEN,
            },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_both_tenants() {
        let text = config_text(Path::new("/tmp/x y/data"));
        assert!(text.starts_with("data_dir = \"/tmp/x y/data\"\n"));
        assert!(text.contains("cloud = \"private\""));
        assert!(text.contains(PUBLIC_TOKEN));
        assert_eq!(
            text,
            format!(
                "data_dir = \"/tmp/x y/data\"\n\
                 [ingest]\n\
                 max_inflight_batches = 64\n\
                 [[tenants]]\n\
                 name = \"bench-public\"\n\
                 cloud = \"public\"\n\
                 token = \"{PUBLIC_TOKEN}\"\n\
                 [[tenants]]\n\
                 name = \"bench-private\"\n\
                 cloud = \"private\"\n\
                 token = \"{PRIVATE_TOKEN}\"\n"
            )
        );
    }
}
