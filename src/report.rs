//! `fieldlink report`.

/// Flags of `fieldlink report`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// HTTP URL of the registry.
    #[arg(long, default_value = "http://127.0.0.1:7680")]
    registry: String,
}

pub(crate) async fn run(args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("report is not implemented yet: {args:?}")
}
