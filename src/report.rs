//! `fieldlink report`: the platform form's figures (表 1.1 with its breakdown
//! by category and the protocols adapted) and the device list (附件1), read
//! from a running registry's HTTP API.
//!
//! [`client`] talks to the registry; [`figures`] and [`devices`] turn its
//! replies into text with pure functions (tested without a registry);
//! [`output`] writes stdout or a file that appears only when complete.

mod client;
mod devices;
mod figures;
mod output;
mod text;

use std::io::Write;
use std::path::PathBuf;

use fieldlink_model::Day;

use client::Registry;
use output::Output;

/// The long help's tail: what each format holds.
const AFTER_LONG_HELP: &str = "\
Figures (default): table 1.1 for the day: 可连接设备数量 (registered), 日运行数量
(devices that reported real-time data that day; the form's figure is the
public-cloud one, marked ★) and 在线设备数量 (online now), by class and cloud;
then every category (补充说明和分类详细介绍) and the protocols adapted
(工业协议兼容适配数量). Days are cut in the registry's time zone.

Formats:
  md    Figures: Markdown tables. --devices: one numbered table per class
        (运行设备, 加工设备, 行走设备, 其他设备).
  json  Figures: one object: day, timezone, registered/online/reporting in the
        shape of /api/v1/summary (total, by_class, by_cloud) plus
        by_class_cloud, protocols (adapted, list, supported, by_protocol) and
        categories (one entry per category, with by_cloud).
        --devices: the registry's JSON device list, unchanged.
  csv   Figures: long format for pivot tables, one record per figure and
        non-empty cell (class x category x protocol x cloud):
          day,metric,class,category,protocol,cloud,value,
          metric_name,class_name,category_name,protocol_name,cloud_name
        metric is registered, reporting or online; *_name are the form's
        names. Sum value over any columns for a breakdown, e.g.
        metric=reporting, cloud=public gives the form's 日运行数量.
        --devices: the registry's CSV, unchanged:
          device_id,class,category,type,name,protocol,tenant,cloud,
          first_seen,last_seen,online (+ points,first_point,last_point
          with --day)

Examples:
  fieldlink report --registry http://10.0.0.5:7680 --day 2026-11-26
  fieldlink report --format csv --output figures.csv
  fieldlink report --devices --day 2026-11-26 --output devices.md";

/// Flags of `fieldlink report`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_LONG_HELP)]
pub(crate) struct ReportArgs {
    /// HTTP base URL of the registry.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7680")]
    registry: String,
    /// Day of the 日运行数量 figure (and of the point columns with --devices),
    /// in the registry's time zone [default: today there].
    #[arg(long, value_name = "YYYY-MM-DD")]
    day: Option<Day>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    format: Format,
    /// Print the device list (附件1) instead of the figures.
    #[arg(long)]
    devices: bool,
    /// Write to FILE instead of stdout; FILE is replaced only once the report
    /// is complete.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Output formats of `fieldlink report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Markdown tables.
    #[value(alias = "markdown")]
    Md,
    /// JSON.
    Json,
    /// CSV.
    Csv,
}

/// Runs `fieldlink report`.
///
/// # Errors
/// The registry URL is bad or the registry cannot be reached, it rejects a
/// request (its message is shown), or the output cannot be written.
pub(crate) async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let registry = Registry::new(&args.registry)?;
    let day = args.day.map(|d| d.to_string());
    let mut out = match &args.output {
        Some(path) => Output::file(path)?,
        None => Output::stdout(),
    };
    let work = async {
        if args.devices {
            device_list(&registry, day.as_deref(), args.format, &mut out).await
        } else {
            figures(&registry, day.as_deref(), args.format, &mut out).await
        }
    };
    // On Ctrl-C, return so `out` is dropped and no partial --output file is
    // left behind.
    tokio::select! {
        result = work => result?,
        () = crate::shutdown_signal() => anyhow::bail!("interrupted; the report is incomplete"),
    }
    out.finish()
}

/// The `day` query parameter, if a day was given.
fn day_query(day: Option<&str>) -> Vec<(&'static str, &str)> {
    day.map(|d| vec![("day", d)]).unwrap_or_default()
}

/// Figures mode: the summary (for the day, the zone and the protocols), then
/// the counts of that same day, formatted.
async fn figures(
    registry: &Registry,
    day: Option<&str>,
    format: Format,
    out: &mut Output,
) -> anyhow::Result<()> {
    let summary: figures::Summary = registry
        .get_json("/api/v1/summary", &day_query(day))
        .await?;
    // The summary's day, not "today" again: the two requests could straddle
    // midnight.
    let counts: figures::Counts = registry
        .get_json(
            "/api/v1/counts",
            &[("day", &summary.day), ("group_by", figures::GROUP_BY)],
        )
        .await?;
    let report = figures::Report::new(registry.base(), summary, counts)?;
    let text = match format {
        Format::Md => report.markdown(),
        Format::Json => report.json()?,
        Format::Csv => report.csv(),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// Device-list mode: JSON and CSV are the registry's export passed through;
/// Markdown is built class by class, page by page.
async fn device_list(
    registry: &Registry,
    day: Option<&str>,
    format: Format,
    out: &mut Output,
) -> anyhow::Result<()> {
    let mut query = day_query(day);
    match format {
        Format::Json | Format::Csv => {
            let code = if format == Format::Json {
                "json"
            } else {
                "csv"
            };
            query.push(("format", code));
            let last = registry.copy_to("/api/v1/devices", &query, out).await?;
            if format == Format::Json && last.is_some_and(|b| b != b'\n') {
                // End the line on a terminal; JSON is the same.
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        Format::Md => {
            let summary: figures::Summary = registry.get_json("/api/v1/summary", &query).await?;
            let heading = devices::heading(
                registry.base(),
                &summary.day,
                &summary.timezone,
                day.is_some(),
            );
            let mut source = devices::RegistrySource { registry, day };
            devices::write_markdown(&mut source, &heading, day.is_some(), out).await
        }
    }
}
