//! `fieldlink bench verify --manifest FILE --registry URL`: reconciles a
//! registry with a fleet's ground truth after any run ([`diff`] says what
//! is compared), through the registry's own HTTP API:
//!
//! - `/api/v1/summary` for the registry's day;
//! - `/api/v1/counts?group_by=class,category,protocol,cloud` for the
//!   counts;
//! - `/api/v1/devices`, paged by `after`, for the device list id by id
//!   (and once more with `reporting=true` for who reports on the day).
//!
//! It prints what differs and fails on any difference; `--wait` reads
//! again until the registry agrees or the time is up (counts settle a
//! moment after a fleet comes up).
//!
//! Then an audit sample ([`audit`]): `--audit N` manifest devices,
//! stratified by protocol, asked through their own protocol, which proves
//! they exist: Modbus TCP's identification block, an OPC UA object's
//! identity properties, an MQTT JSON device's retained status and meta, a
//! Sparkplug device's births and data (or, with `--mqtt-api`, the lean
//! ingress shards' client lookup).

mod audit;
mod diff;
mod manifest;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use diff::{Differences, Figures, Key, Listed};
use manifest::Device;

/// Flags of `fieldlink bench verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The fleet's `manifest.csv` (as `fieldlink sim ...` writes it).
    #[arg(long)]
    pub manifest: PathBuf,
    /// The registry's HTTP API (e.g. http://127.0.0.1:7601).
    #[arg(long)]
    pub registry: String,
    /// Read again until the registry agrees, for at most this long.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// Manifest devices asked through their own protocol (0: none):
    /// stratified by protocol (at least one of each protocol of the
    /// manifest, the rest in proportion), spread over the file.
    #[arg(long, default_value_t = 20)]
    pub audit: usize,
    /// How long a sampled device, OPC UA server or broker may take to
    /// answer. Sparkplug devices keep nothing retained: they must publish
    /// (DBIRTH or DDATA) within this time, so make it longer than the
    /// fleet's data interval.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// User name at the brokers of MQTT JSON and Sparkplug devices (with
    /// --mqtt-password), for every tenant. Without it, each tenant's
    /// gateway login from --mqtt-credentials is used (a gateway may read
    /// its whole tenant), else none (anonymous).
    #[arg(long, requires = "mqtt_password")]
    pub mqtt_user: Option<String>,
    /// Password of --mqtt-user.
    #[arg(long, requires = "mqtt_user")]
    pub mqtt_password: Option<String>,
    /// The fleet's broker users (`username,password,tenant,role`, as
    /// `fieldlink sim mqtt|sparkplug` writes them); default:
    /// `mqtt-credentials.csv` beside the manifest, when there is one.
    #[arg(long)]
    pub mqtt_credentials: Option<PathBuf>,
    /// The HTTP API of a lean ingress shard (its metrics address, e.g.
    /// http://127.0.0.1:9101), once per shard. When given, an MQTT device
    /// is confirmed by `GET /clients/<tenant>/<client id>` saying it is
    /// connected on one of them (the ingress keeps no retained status);
    /// else at the broker its endpoint names.
    #[arg(long = "mqtt-api", value_name = "URL")]
    pub mqtt_api: Vec<String>,
    /// User name at the OPC UA servers (with --opcua-password); anonymous
    /// without. Security mode None either way.
    #[arg(long, requires = "opcua_password")]
    pub opcua_user: Option<String>,
    /// Password of --opcua-user.
    #[arg(long, requires = "opcua_user")]
    pub opcua_password: Option<String>,
}

/// Devices asked for per page of the device list.
const PAGE: usize = 10_000;
/// Pause between two reads while waiting.
const RETRY: Duration = Duration::from_millis(500);

/// Runs the reconciliation.
///
/// # Errors
/// When the manifest cannot be read, the registry does not answer, or
/// anything differs (the error says how much; the differences are printed).
pub async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let manifest = manifest::read(&args.manifest)?;
    let api = Api::new(&args.registry)?;
    let probes = probes(&args)?;
    let deadline = Instant::now() + args.wait;
    loop {
        let (day, differences) = reconcile(&api, &manifest).await?;
        if differences.is_empty() {
            println!(
                "verify: the registry at {} equals {} on {day}: {} devices registered, online and reporting, id by id and per class, category, protocol and cloud",
                api.base,
                args.manifest.display(),
                manifest.len()
            );
            return audit_sample(&manifest, args.audit, &args.manifest, &probes).await;
        }
        if Instant::now() >= deadline {
            print!("{}", differences.describe());
            bail!(
                "the registry at {} differs from {} on {day} (see above)",
                api.base,
                args.manifest.display()
            );
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// How the audit reaches the devices, from the flags.
fn probes(args: &VerifyArgs) -> anyhow::Result<audit::Probes> {
    let credentials = match &args.mqtt_credentials {
        Some(path) => audit::read_mqtt_credentials(path)?,
        None => match audit::credentials_beside(&args.manifest) {
            Some(path) => audit::read_mqtt_credentials(&path)?,
            None => Default::default(),
        },
    };
    let mut mqtt_api = Vec::with_capacity(args.mqtt_api.len());
    for url in &args.mqtt_api {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--mqtt-api must be an http:// or https:// URL, got `{url}`");
        }
        mqtt_api.push(if url.ends_with('/') {
            url.clone()
        } else {
            format!("{url}/")
        });
    }
    let pair = |u: &Option<String>, p: &Option<String>| u.clone().zip(p.clone());
    Ok(audit::Probes {
        timeout: args.probe_timeout,
        mqtt_login: pair(&args.mqtt_user, &args.mqtt_password),
        mqtt_credentials: credentials,
        mqtt_api,
        opcua_login: pair(&args.opcua_user, &args.opcua_password),
    })
}

/// Asks about `size` manifest devices themselves; fails when one answers
/// otherwise than the manifest says.
async fn audit_sample(
    manifest: &[Device],
    size: usize,
    path: &Path,
    probes: &audit::Probes,
) -> anyhow::Result<()> {
    let sample = audit::sample(manifest, size);
    let audit = audit::run(&sample, probes).await;
    println!(
        "audit: {} of {} sampled devices answered through their own protocol as the manifest says; {} skipped (no probe for their protocol){}",
        audit.confirmed.len(),
        sample.len(),
        audit.skipped,
        if audit.by_protocol.is_empty() {
            String::new()
        } else {
            format!(" [{}]", audit.breakdown())
        }
    );
    if audit.failed.is_empty() {
        return Ok(());
    }
    for f in &audit.failed {
        println!("  {f}");
    }
    bail!(
        "{} sampled device(s) of {} did not answer as the manifest says (see above)",
        audit.failed.len(),
        path.display()
    )
}

/// One read of the registry, compared.
async fn reconcile(api: &Api, manifest: &[Device]) -> anyhow::Result<(String, Differences)> {
    let summary = api.get("api/v1/summary").await?;
    let day = summary
        .get("day")
        .and_then(Value::as_str)
        .context("the summary has no day")?
        .to_owned();
    let counts = api.counts(&day).await?;
    let reporting: HashSet<String> = api
        .devices(&format!("day={day}&reporting=true"))
        .await?
        .into_iter()
        .map(|(d, _)| d.id)
        .collect();
    let listed: Vec<Listed> = api
        .devices("")
        .await?
        .into_iter()
        .map(|(device, online)| Listed {
            reporting: reporting.contains(&device.id),
            device,
            online,
        })
        .collect();
    Ok((day, diff::compare(manifest, &listed, &counts)))
}

/// The registry's HTTP API.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> anyhow::Result<Api> {
        let base = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--registry must be an http:// or https:// URL, got `{base}`");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Api { base, client })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        crate::common::get_json(&self.client, &url).await
    }

    /// The counts per (class, category, protocol, cloud) on `day`.
    async fn counts(&self, day: &str) -> anyhow::Result<BTreeMap<Key, Figures>> {
        let path = format!("api/v1/counts?day={day}&group_by=class,category,protocol,cloud");
        let body = self.get(&path).await?;
        let rows = body
            .get("rows")
            .and_then(Value::as_array)
            .with_context(|| format!("{path}: no rows"))?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let text = |k: &str| {
                row.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .with_context(|| format!("{path}: a row without {k}: {row}"))
            };
            let number = |k: &str| {
                row.get(k)
                    .and_then(Value::as_u64)
                    .with_context(|| format!("{path}: a row without {k}: {row}"))
            };
            let key = (
                text("class")?,
                text("category")?,
                text("protocol")?,
                text("cloud")?,
            );
            counts.insert(
                key,
                [
                    number("registered")?,
                    number("online")?,
                    number("reporting")?,
                ],
            );
        }
        Ok(counts)
    }

    /// Every device of the list (with `query`), with its online flag.
    async fn devices(&self, query: &str) -> anyhow::Result<Vec<(Device, bool)>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("api/v1/devices?limit={PAGE}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(&percent_encode(a));
            }
            let body = self.get(&path).await?;
            let rows = body
                .get("devices")
                .and_then(Value::as_array)
                .with_context(|| format!("{path}: no devices"))?;
            for row in rows {
                out.push(listed_device(row).with_context(|| format!("{path}: {row}"))?);
            }
            match body.get("next_after").and_then(Value::as_str) {
                Some(next) if !rows.is_empty() => after = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}

fn listed_device(row: &Value) -> anyhow::Result<(Device, bool)> {
    let text = |k: &str| {
        row.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no {k}"))
    };
    let device = Device {
        id: text("device_id")?,
        class: text("class")?,
        category: text("category")?,
        device_type: text("type")?,
        name: text("name")?,
        protocol: text("protocol")?,
        tenant: text("tenant")?,
        cloud: text("cloud")?,
        endpoint: String::new(),
    };
    let online = row
        .get("online")
        .and_then(Value::as_bool)
        .context("no online")?;
    Ok((device, online))
}

/// A query value, percent-encoded (device ids are letters, digits, `-`,
/// `_`, `.`, `:`; anything else is encoded).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_encoded_for_the_query() {
        assert_eq!(percent_encode("sim-cnc-000001"), "sim-cnc-000001");
        assert_eq!(percent_encode("a:b/c d"), "a%3Ab%2Fc%20d");
    }

    #[test]
    fn the_registry_url_must_be_http() {
        assert!(Api::new("127.0.0.1:7601").is_err());
        assert_eq!(
            Api::new("http://127.0.0.1:7601").unwrap().base,
            "http://127.0.0.1:7601/"
        );
    }
}
