//! `fieldlink bench ingest`: synthetic gateway streams into a registry.

use std::path::PathBuf;
use std::time::Duration;

/// Flags of `fieldlink bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Devices announced, spread evenly over the streams.
    #[arg(long, default_value_t = 100_000)]
    pub devices: u64,
    /// Concurrent gateway streams.
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// Points per telemetry batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// How long telemetry is streamed (after all devices are announced).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// gRPC URL of a running registry (e.g. http://127.0.0.1:7600); without
    /// it the bench starts its own registry process in a temporary directory.
    #[arg(long)]
    pub registry: Option<String>,
    /// HTTP URL of that registry, to read its counts back (e.g. http://127.0.0.1:7680).
    #[arg(long, requires = "registry")]
    pub http: Option<String>,
    /// Tenant token for `--registry`.
    #[arg(long, requires = "registry")]
    pub token: Option<String>,
    /// Directory the JSON result is written to.
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
}

/// Runs the bench.
///
/// # Errors
/// When the registry cannot be started or reached, or a stream fails.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench ingest is not implemented yet: {args:?}")
}
