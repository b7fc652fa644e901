//! The comparison: the manifest against what the registry lists and counts.
//! Every manifest device must be registered with the same class, category,
//! type, name, protocol, tenant and cloud, be online and report today; the
//! registry must list nobody else; and its counts per (class, category,
//! protocol, cloud) must equal the manifest's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::manifest::Device;

/// How many differences of one kind are printed (all are counted).
const SHOWN: usize = 20;

/// A device as the registry lists it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    /// Its fields, as a manifest row has them.
    pub(crate) device: Device,
    /// Online now.
    pub(crate) online: bool,
    /// Reporting on the day verified.
    pub(crate) reporting: bool,
}

/// The key of a count row.
pub(crate) type Key = (String, String, String, String);

/// One count row of the registry: registered, online, reporting.
pub(crate) type Figures = [u64; 3];

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FieldDiff {
    /// Device id.
    pub(crate) id: String,
    /// Which field.
    pub(crate) field: &'static str,
    /// The manifest's value.
    pub(crate) manifest: String,
    /// The registry's value.
    pub(crate) registry: String,
}

/// One count that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CountDiff {
    /// class, category, protocol, cloud.
    pub(crate) key: [String; 4],
    /// registered, online or reporting.
    pub(crate) figure: &'static str,
    /// From the manifest.
    pub(crate) manifest: u64,
    /// From the registry.
    pub(crate) registry: u64,
}

/// Everything that differs.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Differences {
    /// Manifest devices the registry does not list.
    pub(crate) missing: Vec<String>,
    /// Devices the registry lists and the manifest does not.
    pub(crate) extra: Vec<String>,
    /// Fields that differ.
    pub(crate) fields: Vec<FieldDiff>,
    /// Manifest devices listed but offline.
    pub(crate) offline: Vec<String>,
    /// Manifest devices listed but not reporting on the day.
    pub(crate) not_reporting: Vec<String>,
    /// Count rows that differ.
    pub(crate) counts: Vec<CountDiff>,
}

impl Differences {
    /// Whether nothing differs.
    pub(crate) fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.fields.is_empty()
            && self.offline.is_empty()
            && self.not_reporting.is_empty()
            && self.counts.is_empty()
    }

    /// For people: each kind with its count and its first entries.
    pub(crate) fn describe(&self) -> String {
        let mut s = String::new();
        let mut list = |what: &str, items: Vec<String>| {
            if items.is_empty() {
                return;
            }
            let _ = writeln!(s, "{} {what}:", items.len());
            for item in items.iter().take(SHOWN) {
                let _ = writeln!(s, "  {item}");
            }
            if items.len() > SHOWN {
                let _ = writeln!(s, "  ... and {} more", items.len() - SHOWN);
            }
        };
        list(
            "manifest device(s) missing from the registry",
            self.missing.clone(),
        );
        list(
            "device(s) in the registry and not in the manifest",
            self.extra.clone(),
        );
        list(
            "field(s) that differ",
            self.fields
                .iter()
                .map(|f| {
                    format!(
                        "{}: {} is `{}` in the manifest, `{}` in the registry",
                        f.id, f.field, f.manifest, f.registry
                    )
                })
                .collect(),
        );
        list("manifest device(s) offline", self.offline.clone());
        list(
            "manifest device(s) not reporting on the day",
            self.not_reporting.clone(),
        );
        list(
            "count(s) that differ",
            self.counts
                .iter()
                .map(|c| {
                    format!(
                        "{} of {}: {} in the manifest, {} in the registry",
                        c.figure,
                        c.key.join("/"),
                        c.manifest,
                        c.registry
                    )
                })
                .collect(),
        );
        s
    }
}

/// The manifest's counts: every device registered, online and reporting.
pub(crate) fn manifest_counts(manifest: &[Device]) -> BTreeMap<Key, Figures> {
    let mut counts = BTreeMap::new();
    for d in manifest {
        let key = (
            d.class.clone(),
            d.category.clone(),
            d.protocol.clone(),
            d.cloud.clone(),
        );
        let row: &mut Figures = counts.entry(key).or_default();
        for n in row.iter_mut() {
            *n += 1;
        }
    }
    counts
}

/// Compares the manifest with the registry's list and counts.
pub(crate) fn compare(
    manifest: &[Device],
    listed: &[Listed],
    counts: &BTreeMap<Key, Figures>,
) -> Differences {
    let mut out = Differences::default();
    let by_id: HashMap<&str, &Listed> = listed.iter().map(|l| (l.device.id.as_str(), l)).collect();
    let wanted: HashSet<&str> = manifest.iter().map(|d| d.id.as_str()).collect();
    for want in manifest {
        let Some(got) = by_id.get(want.id.as_str()) else {
            out.missing.push(want.id.clone());
            continue;
        };
        let g = &got.device;
        let pairs = [
            ("class", &want.class, &g.class),
            ("category", &want.category, &g.category),
            ("type", &want.device_type, &g.device_type),
            ("name", &want.name, &g.name),
            ("protocol", &want.protocol, &g.protocol),
            ("tenant", &want.tenant, &g.tenant),
            ("cloud", &want.cloud, &g.cloud),
        ];
        for (field, a, b) in pairs {
            if a != b {
                out.fields.push(FieldDiff {
                    id: want.id.clone(),
                    field,
                    manifest: a.clone(),
                    registry: b.clone(),
                });
            }
        }
        if !got.online {
            out.offline.push(want.id.clone());
        }
        if !got.reporting {
            out.not_reporting.push(want.id.clone());
        }
    }
    out.extra = listed
        .iter()
        .filter(|l| !wanted.contains(l.device.id.as_str()))
        .map(|l| l.device.id.clone())
        .collect();
    let expected = manifest_counts(manifest);
    let keys: std::collections::BTreeSet<&Key> = expected.keys().chain(counts.keys()).collect();
    for key in keys {
        let want = expected.get(key).copied().unwrap_or_default();
        let got = counts.get(key).copied().unwrap_or_default();
        for (i, figure) in ["registered", "online", "reporting"]
            .into_iter()
            .enumerate()
        {
            if want[i] != got[i] {
                out.counts.push(CountDiff {
                    key: [key.0.clone(), key.1.clone(), key.2.clone(), key.3.clone()],
                    figure,
                    manifest: want[i],
                    registry: got[i],
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: &str, class: &str, category: &str) -> Device {
        Device {
            id: id.into(),
            class: class.into(),
            category: category.into(),
            device_type: "T".into(),
            name: format!("Device {id}"),
            protocol: "modbus-tcp".into(),
            tenant: "acme".into(),
            cloud: "public".into(),
            endpoint: String::new(),
        }
    }

    fn listed(d: &Device) -> Listed {
        Listed {
            device: d.clone(),
            online: true,
            reporting: true,
        }
    }

    fn counts_of(list: &[Listed]) -> BTreeMap<Key, Figures> {
        let mut counts: BTreeMap<Key, Figures> = BTreeMap::new();
        for l in list {
            let d = &l.device;
            let row = counts
                .entry((
                    d.class.clone(),
                    d.category.clone(),
                    d.protocol.clone(),
                    d.cloud.clone(),
                ))
                .or_default();
            row[0] += 1;
            row[1] += u64::from(l.online);
            row[2] += u64::from(l.reporting);
        }
        counts
    }

    #[test]
    fn equal_fleets_have_no_differences() {
        let manifest = vec![
            device("a", "operating", "power"),
            device("b", "other", "safety"),
        ];
        let list: Vec<Listed> = manifest.iter().map(listed).collect();
        let d = compare(&manifest, &list, &counts_of(&list));
        assert!(d.is_empty(), "{}", d.describe());
    }

    #[test]
    fn planted_differences_are_each_found() {
        let manifest = vec![
            device("a", "operating", "power"),
            device("b", "other", "safety"),
            device("c", "mobile", "logistics"),
        ];
        let mut list: Vec<Listed> = manifest.iter().map(listed).collect();
        // b is gone, x is extra, c has the wrong class and is offline.
        list.retain(|l| l.device.id != "b");
        list.push(listed(&device("x", "operating", "power")));
        list[1].device.class = "processing".into();
        list[1].online = false;
        let d = compare(&manifest, &list, &counts_of(&list));
        assert_eq!(d.missing, ["b"]);
        assert_eq!(d.extra, ["x"]);
        assert_eq!(
            d.fields,
            [FieldDiff {
                id: "c".into(),
                field: "class",
                manifest: "mobile".into(),
                registry: "processing".into(),
            }]
        );
        assert_eq!(d.offline, ["c"]);
        assert!(d.not_reporting.is_empty());
        let text = d.describe();
        assert!(
            text.contains("1 manifest device(s) missing from the registry:\n  b"),
            "{text}"
        );
        assert!(
            text.contains("c: class is `mobile` in the manifest, `processing` in the registry")
        );
        // Counts: operating/power has 2 instead of 1; other/safety 0 of 1;
        // mobile/logistics 0 of 1; processing/logistics 1 of 0 (offline).
        let figure = |key: &str, figure: &str| {
            d.counts
                .iter()
                .find(|c| c.key.join("/") == key && c.figure == figure)
                .map(|c| (c.manifest, c.registry))
        };
        assert_eq!(
            figure("operating/power/modbus-tcp/public", "registered"),
            Some((1, 2))
        );
        assert_eq!(
            figure("other/safety/modbus-tcp/public", "reporting"),
            Some((1, 0))
        );
        assert_eq!(
            figure("processing/logistics/modbus-tcp/public", "registered"),
            Some((0, 1))
        );
        assert_eq!(
            figure("processing/logistics/modbus-tcp/public", "online"),
            None
        );
    }

    #[test]
    fn counts_that_disagree_with_a_matching_list_are_found() {
        let manifest = vec![device("a", "operating", "power")];
        let list: Vec<Listed> = manifest.iter().map(listed).collect();
        let mut counts = counts_of(&list);
        counts.values_mut().for_each(|row| row[2] = 0);
        let d = compare(&manifest, &list, &counts);
        assert_eq!(d.counts.len(), 1);
        assert_eq!(d.counts[0].figure, "reporting");
    }
}
