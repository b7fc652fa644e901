//! The audit sample: a few manifest devices asked through their own
//! protocol, which proves they exist beyond the registry's word. The
//! sample is stratified by protocol ([`sample`]), and each protocol has
//! its probe:
//!
//! - `modbus-tcp` ([`modbus`]): the identification block (class and
//!   category indexes, model name);
//! - `opc-ua` ([`opcua`]): the device object's identity properties
//!   `Class`, `Category`, `Model` and `Name`, read in one session per
//!   server;
//! - `mqtt-json` and `sparkplug-b` ([`mqtt`]): at the broker the endpoint
//!   names, the device's retained `status` (`online`) and `meta` (its
//!   identity), or a Sparkplug DBIRTH (identity) or DDATA from the device
//!   at the edge node the endpoint names; or, with `--mqtt-api`, the lean
//!   ingress shards' client lookup (connected on some shard).
//!
//! A device of a protocol without a probe (serial Modbus RTU) is counted
//! as skipped, and the report says so.

mod modbus;
mod mqtt;
mod opcua;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;

use super::manifest::Device;

/// What one probe found: `Ok` when the device answered as the manifest
/// says, else why not.
pub(crate) type Outcome = Result<(), String>;

/// Modbus devices asked at once.
const MODBUS_AT_ONCE: usize = 16;
/// OPC UA servers and MQTT clients at once.
const SESSIONS_AT_ONCE: usize = 8;

/// How the probes reach the devices.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probes {
    /// How long a device (or a server, or a broker) may take to answer.
    pub(crate) timeout: Duration,
    /// User name and password for every broker (over `mqtt_credentials`).
    pub(crate) mqtt_login: Option<(String, String)>,
    /// Per tenant, the login of its gateway (`mqtt-credentials.csv`).
    pub(crate) mqtt_credentials: HashMap<String, (String, String)>,
    /// Lean ingress shards' HTTP APIs (`http://HOST:PORT/`); when given,
    /// MQTT clients are looked up there instead of at a broker.
    pub(crate) mqtt_api: Vec<String>,
    /// User name and password for the OPC UA servers (anonymous when
    /// `None`).
    pub(crate) opcua_login: Option<(String, String)>,
}

impl Probes {
    /// The MQTT login for tenant `tenant`'s devices.
    fn mqtt_login(&self, tenant: &str) -> Option<(String, String)> {
        self.mqtt_login
            .clone()
            .or_else(|| self.mqtt_credentials.get(tenant).cloned())
    }
}

/// Reads a fleet's `mqtt-credentials.csv` (`username,password,tenant,role`):
/// each tenant's gateway login (role `gateway`), which may subscribe to the
/// whole tenant.
///
/// # Errors
/// When the file cannot be read or is not such a file (the line is named).
pub(crate) fn read_mqtt_credentials(
    path: &std::path::Path,
) -> anyhow::Result<HashMap<String, (String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_mqtt_credentials(&text).with_context(|| format!("{}", path.display()))
}

fn parse_mqtt_credentials(text: &str) -> anyhow::Result<HashMap<String, (String, String)>> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim_end() == "username,password,tenant,role" => {}
        other => anyhow::bail!(
            "line 1: the header must be `username,password,tenant,role`, got `{}`",
            other.map_or("", |(_, h)| h)
        ),
    }
    let mut out = HashMap::new();
    for (i, line) in lines {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let [user, password, tenant, role] = fields[..] else {
            anyhow::bail!("line {}: 4 columns wanted", i + 1);
        };
        if role == "gateway" {
            out.entry(tenant.to_owned())
                .or_insert_with(|| (user.to_owned(), password.to_owned()));
        }
    }
    Ok(out)
}

/// The default `mqtt-credentials.csv`: beside the manifest, when it exists.
pub(crate) fn credentials_beside(manifest: &std::path::Path) -> Option<PathBuf> {
    let path = manifest.parent()?.join("mqtt-credentials.csv");
    path.is_file().then_some(path)
}

/// What the audit found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Audit {
    /// Devices asked and answering as the manifest says.
    pub(crate) confirmed: Vec<String>,
    /// Devices that did not answer, or answered otherwise (id at
    /// endpoint: why).
    pub(crate) failed: Vec<String>,
    /// Devices of the sample whose protocol has no probe.
    pub(crate) skipped: usize,
    /// Per protocol: (confirmed, sampled).
    pub(crate) by_protocol: BTreeMap<String, (usize, usize)>,
}

impl Audit {
    /// `modbus-tcp 7/7, opc-ua 6/7, ...`.
    pub(crate) fn breakdown(&self) -> String {
        let parts: Vec<String> = self
            .by_protocol
            .iter()
            .map(|(p, (ok, n))| format!("{p} {ok}/{n}"))
            .collect();
        parts.join(", ")
    }
}

/// About `size` manifest devices (all when fewer), stratified by protocol:
/// every protocol of the manifest has at least one device in the sample
/// (so the sample may exceed `size` when it is smaller than the number of
/// protocols), the rest shared in proportion to the protocols' devices;
/// within a protocol, devices evenly spread over its rows. In manifest
/// order.
pub(crate) fn sample(manifest: &[Device], size: usize) -> Vec<&Device> {
    if size == 0 || manifest.is_empty() {
        return Vec::new();
    }
    let mut strata: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, d) in manifest.iter().enumerate() {
        match strata.iter_mut().find(|(p, _)| *p == d.protocol) {
            Some((_, rows)) => rows.push(i),
            None => strata.push((&d.protocol, vec![i])),
        }
    }
    let quotas = quotas(
        &strata.iter().map(|(_, r)| r.len()).collect::<Vec<_>>(),
        size.min(manifest.len()),
    );
    let mut picked: Vec<usize> = strata
        .iter()
        .zip(quotas)
        .flat_map(|((_, rows), q)| (0..q).map(move |i| rows[i * rows.len() / q]))
        .collect();
    picked.sort_unstable();
    picked.into_iter().map(|i| &manifest[i]).collect()
}

/// How many of each stratum (of `lens` devices) a sample of `n` takes: in
/// proportion to its devices, one at least, never more than it has; the
/// total is `n` (or the number of strata, when larger).
fn quotas(lens: &[usize], n: usize) -> Vec<usize> {
    let total: usize = lens.iter().sum();
    if total == 0 {
        return vec![0; lens.len()];
    }
    let n = n.min(total);
    let target = n.max(lens.iter().filter(|&&l| l > 0).count());
    let mut q: Vec<usize> = lens
        .iter()
        .map(|&l| (n * l / total).clamp(l.min(1), l))
        .collect();
    let mut sum: usize = q.iter().sum();
    // Too many (the minimum of one lifted small strata): take from the
    // largest shares.
    while sum > target {
        let Some(i) = (0..q.len()).filter(|&i| q[i] > 1).max_by_key(|&i| q[i]) else {
            break;
        };
        q[i] -= 1;
        sum -= 1;
    }
    // Too few: to the largest remainders with room.
    let mut by_remainder: Vec<usize> = (0..lens.len()).collect();
    by_remainder.sort_by_key(|&i| (std::cmp::Reverse(n * lens[i] % total), i));
    while sum < target {
        let Some(&i) = by_remainder.iter().find(|&&i| q[i] < lens[i]) else {
            break;
        };
        q[i] += 1;
        sum += 1;
        by_remainder.retain(|&j| j != i);
        if by_remainder.is_empty() {
            by_remainder = (0..lens.len()).collect();
        }
    }
    q
}

/// Probes the sample.
pub(crate) async fn run(sample: &[&Device], probes: &Probes) -> Audit {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; sample.len()];
    let by = |protocols: &[&str]| -> Vec<usize> {
        (0..sample.len())
            .filter(|&i| protocols.contains(&sample[i].protocol.as_str()))
            .collect()
    };
    let modbus_rows = by(&["modbus-tcp"]);
    let opcua_rows = by(&["opc-ua"]);
    let mqtt_rows = by(&["mqtt-json", "sparkplug-b"]);

    let modbus = futures::stream::iter(modbus_rows.iter().map(|&i| {
        let d = sample[i];
        async move { (i, modbus::probe(d, &d.endpoint, probes.timeout).await) }
    }))
    .buffer_unordered(MODBUS_AT_ONCE)
    .collect::<Vec<_>>();
    let opcua_devices: Vec<&Device> = opcua_rows.iter().map(|&i| sample[i]).collect();
    let mqtt_devices: Vec<&Device> = mqtt_rows.iter().map(|&i| sample[i]).collect();
    let (modbus, opcua, mqtt) = tokio::join!(
        modbus,
        opcua::probe(&opcua_devices, probes),
        mqtt::probe(&mqtt_devices, probes)
    );
    for (i, o) in modbus {
        outcomes[i] = Some(o);
    }
    for (rows, found) in [(&opcua_rows, opcua), (&mqtt_rows, mqtt)] {
        for (&i, o) in rows.iter().zip(found) {
            outcomes[i] = Some(o);
        }
    }

    let mut audit = Audit::default();
    for (d, outcome) in sample.iter().zip(outcomes) {
        let Some(outcome) = outcome else {
            audit.skipped += 1;
            continue;
        };
        let tally = audit.by_protocol.entry(d.protocol.clone()).or_default();
        tally.1 += 1;
        match outcome {
            Ok(()) => {
                tally.0 += 1;
                audit.confirmed.push(d.id.clone());
            }
            Err(why) => audit
                .failed
                .push(format!("{} at `{}`: {why}", d.id, d.endpoint)),
        }
    }
    audit
}

/// Compares what a device says of itself (`field`, value) with its
/// manifest row: class, category, type (model) and name.
pub(crate) fn check_identity<'a>(
    d: &Device,
    said: impl IntoIterator<Item = (&'a str, Option<String>)>,
) -> Outcome {
    for (field, got) in said {
        let want = match field {
            "class" => &d.class,
            "category" => &d.category,
            "type" => &d.device_type,
            "name" => &d.name,
            _ => continue,
        };
        match got {
            None => return Err(format!("it says no {field}")),
            Some(got) if got != *want => {
                return Err(format!("it says {field} `{got}`, the manifest `{want}`"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, protocol: &str) -> Device {
        Device {
            id: id.into(),
            class: "operating".into(),
            category: "power".into(),
            device_type: "PM-3".into(),
            name: "Meter".into(),
            protocol: protocol.into(),
            tenant: "t".into(),
            cloud: "public".into(),
            endpoint: String::new(),
        }
    }

    fn ids<'a>(s: &[&'a Device]) -> Vec<&'a str> {
        s.iter().map(|d| d.id.as_str()).collect()
    }

    #[test]
    fn the_sample_spreads_over_the_manifest() {
        let manifest: Vec<Device> = (0..10)
            .map(|i| device(&i.to_string(), "modbus-tcp"))
            .collect();
        assert_eq!(ids(&sample(&manifest, 3)), ["0", "3", "6"]);
        assert_eq!(sample(&manifest, 50).len(), 10);
        assert!(sample(&manifest, 0).is_empty());
    }

    #[test]
    fn every_protocol_is_sampled_in_proportion() {
        // 90 Modbus, 9 OPC UA, 1 MQTT.
        let mut manifest: Vec<Device> = (0..90)
            .map(|i| device(&format!("m{i}"), "modbus-tcp"))
            .collect();
        manifest.extend((0..9).map(|i| device(&format!("o{i}"), "opc-ua")));
        manifest.push(device("q0", "mqtt-json"));
        let s = sample(&manifest, 10);
        let count = |p: &str| s.iter().filter(|d| d.protocol == p).count();
        assert_eq!(s.len(), 10);
        assert_eq!(
            (count("modbus-tcp"), count("opc-ua"), count("mqtt-json")),
            (8, 1, 1)
        );
        // Fewer than the protocols: one of each still.
        assert_eq!(ids(&sample(&manifest, 1)), ["m0", "o0", "q0"]);
        // The first row of each protocol is always in.
        let s = ids(&sample(&manifest, 20));
        assert_eq!(s.len(), 20);
        for first in ["m0", "o0", "q0"] {
            assert!(s.contains(&first), "{s:?}");
        }
        assert_eq!(sample(&manifest, 1000).len(), 100);
    }

    #[test]
    fn quotas_add_up_and_fit() {
        for (lens, n) in [
            (vec![5, 5], 3),
            (vec![1, 1, 100], 10),
            (vec![3, 3, 3], 9),
            (vec![7], 7),
            (vec![2, 50, 2], 20),
        ] {
            let q = quotas(&lens, n);
            assert_eq!(q.iter().sum::<usize>(), n.max(lens.len()), "{lens:?} {n}");
            assert!(q.iter().zip(&lens).all(|(q, l)| q <= l && *q >= 1));
        }
    }

    #[test]
    fn the_gateway_logins_come_from_the_credentials_file() {
        let text = "username,password,tenant,role\nsim-1,p1,acme,device\nsim-gw-acme,gp,acme,gateway\nsim-gw-b,gb,b,gateway\n";
        let c = parse_mqtt_credentials(text).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c["acme"], ("sim-gw-acme".to_owned(), "gp".to_owned()));
        assert!(parse_mqtt_credentials("user,pass\n").is_err());
        assert!(
            format!(
                "{:#}",
                parse_mqtt_credentials("username,password,tenant,role\na,b\n").unwrap_err()
            )
            .contains("line 2")
        );
    }

    #[test]
    fn identity_is_compared_field_by_field() {
        let d = device("d", "opc-ua");
        let said = |name: &str| {
            vec![
                ("class", Some("operating".to_owned())),
                ("name", Some(name.to_owned())),
            ]
        };
        assert_eq!(check_identity(&d, said("Meter")), Ok(()));
        assert_eq!(
            check_identity(&d, said("Pump")),
            Err("it says name `Pump`, the manifest `Meter`".to_owned())
        );
        assert!(check_identity(&d, [("type", None)]).is_err());
    }
}
