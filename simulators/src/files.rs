//! The files a fleet writes: the ground-truth manifest, the registry's
//! tenants file and one gateway config per tenant.
//!
//! The gateway config is serialized from structs here that mirror the
//! gateway's `GatewayConfig` format (`gateway/src/config.rs`); this crate
//! does not depend on the gateway.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::catalog::{Area, DataType, IDENT_TAGS, Order, TagDef};
use crate::error::SimError;
use crate::plan::{FleetPlan, PlannedDevice};

/// Header of `manifest.csv`.
pub const MANIFEST_HEADER: &str =
    "device_id,class,category,type,name,protocol,tenant,cloud,endpoint";
/// Protocol code of the Modbus face.
pub const PROTOCOL: &str = "modbus-tcp";
/// Default registry gRPC URL of the gateway configs.
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:7600";
/// The identification block is polled at this interval, or the process
/// interval when that is longer.
pub const IDENT_INTERVAL: Duration = Duration::from_secs(60);

/// Paths of the written files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFiles {
    /// `DIR/manifest.csv`.
    pub manifest: PathBuf,
    /// `DIR/tenants.toml`.
    pub tenants: PathBuf,
    /// `DIR/gateways/<tenant>.toml`, in tenant order.
    pub gateways: Vec<PathBuf>,
}

#[derive(Serialize)]
struct TenantsFile<'a> {
    tenants: Vec<TenantEntry<'a>>,
}

#[derive(Serialize)]
struct TenantEntry<'a> {
    name: &'a str,
    cloud: &'a str,
    token: &'a str,
}

#[derive(Serialize)]
struct GatewayFile<'a> {
    gateway_id: String,
    data_dir: String,
    uplink: Uplink<'a>,
    templates: BTreeMap<&'static str, Template>,
    devices: Vec<GatewayDevice>,
}

#[derive(Serialize)]
struct Uplink<'a> {
    registry: &'a str,
    token: &'a str,
}

#[derive(Serialize)]
struct Template {
    poll_groups: Vec<PollGroup>,
}

#[derive(Serialize)]
struct PollGroup {
    interval: String,
    tags: Vec<Tag>,
}

#[derive(Serialize)]
struct Tag {
    name: &'static str,
    area: Area,
    address: u16,
    #[serde(rename = "type")]
    data_type: DataType,
    #[serde(skip_serializing_if = "is_zero")]
    length: u16,
    #[serde(skip_serializing_if = "is_one")]
    scale: f64,
    #[serde(skip_serializing_if = "is_zero_f")]
    offset: f64,
    #[serde(skip_serializing_if = "str::is_empty")]
    unit: &'static str,
    #[serde(skip_serializing_if = "is_big")]
    word_order: Order,
}

#[derive(Serialize)]
struct GatewayDevice {
    id: String,
    class: &'static str,
    category: &'static str,
    #[serde(rename = "type")]
    device_type: &'static str,
    name: String,
    protocol: &'static str,
    endpoint: String,
    unit_id: u8,
    template: &'static str,
    attributes: BTreeMap<&'static str, String>,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
fn is_zero_f(v: &f64) -> bool {
    *v == 0.0
}
fn is_big(v: &Order) -> bool {
    *v == Order::Big
}

fn tag(t: &TagDef) -> Tag {
    Tag {
        name: t.name,
        area: t.area,
        address: t.address,
        data_type: t.data_type,
        length: if t.data_type == DataType::String {
            t.length
        } else {
            0
        },
        scale: t.scale,
        offset: t.offset,
        unit: t.unit,
        word_order: t.word_order,
    }
}

fn interval_text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn csv_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

impl FleetPlan {
    /// One manifest row (no newline): `device_id,class,category,type,name,
    /// protocol,tenant,cloud,endpoint`.
    pub fn manifest_row(&self, d: &PlannedDevice) -> String {
        let tenant = &self.tenants()[d.tenant];
        let fields = [
            d.id(),
            d.device_type.class().code().to_owned(),
            d.device_type.category.code().to_owned(),
            d.device_type.model.to_owned(),
            d.name(),
            PROTOCOL.to_owned(),
            tenant.name.clone(),
            tenant.cloud.code().to_owned(),
            d.endpoint.to_string(),
        ];
        let mut row = String::with_capacity(128);
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                row.push(',');
            }
            csv_field(&mut row, f);
        }
        row
    }

    /// `tenants.toml`: `[[tenants]]` with `name`, `cloud` and `token`, the
    /// registry's `TenantsFile` format.
    ///
    /// # Errors
    /// [`SimError::Toml`] if serialization fails.
    pub fn tenants_toml(&self) -> Result<String, SimError> {
        let file = TenantsFile {
            tenants: self
                .tenants()
                .iter()
                .map(|t| TenantEntry {
                    name: &t.name,
                    cloud: t.cloud.code(),
                    token: &t.token,
                })
                .collect(),
        };
        toml::to_string(&file).map_err(|e| SimError::Toml {
            what: "tenants.toml".into(),
            message: e.to_string(),
        })
    }

    /// The gateway config of tenant `tenant` (index into
    /// [`FleetPlan::tenants`]): `gateway_id` `sim-gw-<tenant>`, the given
    /// `data_dir`, `[uplink]` to `registry_url` with the tenant's token, one
    /// `[templates.<type key>]` per type it uses (process tags at the plan's
    /// interval, the identification block at [`IDENT_INTERVAL`]) and its
    /// `[[devices]]` (unit id 1, attributes vendor, serial_number, firmware).
    ///
    /// # Errors
    /// [`SimError::Spec`] for an unknown tenant; [`SimError::Toml`] if
    /// serialization fails.
    pub fn gateway_toml(
        &self,
        tenant: usize,
        registry_url: &str,
        data_dir: &Path,
    ) -> Result<String, SimError> {
        let t = self
            .tenants()
            .get(tenant)
            .ok_or_else(|| SimError::spec("tenant", format!("no tenant {tenant}")))?;
        let interval = self.spec().interval;
        let mut templates = BTreeMap::new();
        let mut devices = Vec::new();
        for d in self.devices_of_tenant(tenant) {
            let ty = d.device_type;
            templates.entry(ty.key).or_insert_with(|| Template {
                poll_groups: vec![
                    PollGroup {
                        interval: interval_text(interval),
                        tags: ty.tags.iter().map(tag).collect(),
                    },
                    PollGroup {
                        interval: interval_text(interval.max(IDENT_INTERVAL)),
                        tags: IDENT_TAGS.iter().map(tag).collect(),
                    },
                ],
            });
            let mut attributes = BTreeMap::new();
            attributes.insert("vendor", ty.vendor.to_owned());
            attributes.insert("serial_number", d.serial().to_string());
            attributes.insert("firmware", ty.firmware_text());
            devices.push(GatewayDevice {
                id: d.id(),
                class: ty.class().code(),
                category: ty.category.code(),
                device_type: ty.model,
                name: d.name(),
                protocol: PROTOCOL,
                endpoint: d.endpoint.to_string(),
                unit_id: 1,
                template: ty.key,
                attributes,
            });
        }
        let file = GatewayFile {
            gateway_id: format!("sim-gw-{}", t.name),
            data_dir: data_dir.to_string_lossy().into_owned(),
            uplink: Uplink {
                registry: registry_url,
                token: &t.token,
            },
            templates,
            devices,
        };
        toml::to_string(&file).map_err(|e| SimError::Toml {
            what: format!("gateway config of {}", t.name),
            message: e.to_string(),
        })
    }

    /// Writes `dir/manifest.csv`, `dir/tenants.toml` and
    /// `dir/gateways/<tenant>.toml` (data dirs `dir/gateways/<tenant>-data`,
    /// absolute), creating directories as needed.
    ///
    /// # Errors
    /// [`SimError::Io`] naming the path; [`SimError::Toml`].
    pub fn write_files(&self, dir: &Path, registry_url: &str) -> Result<WrittenFiles, SimError> {
        let gateways_dir = dir.join("gateways");
        std::fs::create_dir_all(&gateways_dir).map_err(|e| SimError::io(&gateways_dir, e))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| SimError::io(dir, e))?;
        let gateways_dir = dir.join("gateways");

        let manifest = dir.join("manifest.csv");
        let file = std::fs::File::create(&manifest).map_err(|e| SimError::io(&manifest, e))?;
        let mut out = BufWriter::new(file);
        let mut write = || -> std::io::Result<()> {
            writeln!(out, "{MANIFEST_HEADER}")?;
            for d in self.devices() {
                writeln!(out, "{}", self.manifest_row(&d))?;
            }
            out.flush()
        };
        write().map_err(|e| SimError::io(&manifest, e))?;

        let tenants = dir.join("tenants.toml");
        std::fs::write(&tenants, self.tenants_toml()?).map_err(|e| SimError::io(&tenants, e))?;

        let mut gateways = Vec::new();
        for (i, t) in self.tenants().iter().enumerate() {
            let path = gateways_dir.join(format!("{}.toml", t.name));
            let data_dir = gateways_dir.join(format!("{}-data", t.name));
            let text = self.gateway_toml(i, registry_url, &data_dir)?;
            std::fs::write(&path, text).map_err(|e| SimError::io(&path, e))?;
            gateways.push(path);
        }
        Ok(WrittenFiles {
            manifest,
            tenants,
            gateways,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::catalog;
    use crate::plan::FleetSpec;

    fn plan(devices: u32) -> FleetPlan {
        FleetPlan::new(FleetSpec {
            devices,
            seed: 4,
            ..FleetSpec::default()
        })
        .unwrap()
    }

    #[test]
    fn gateway_toml_has_the_gateway_keys() {
        let p = plan(60);
        let text = p
            .gateway_toml(0, DEFAULT_REGISTRY_URL, Path::new("/tmp/gw-a-data"))
            .unwrap();
        let value: toml::Table = toml::from_str(&text).unwrap();
        let top: HashSet<&str> = value.keys().map(String::as_str).collect();
        assert_eq!(
            top,
            HashSet::from(["gateway_id", "data_dir", "uplink", "templates", "devices"])
        );
        assert_eq!(value["gateway_id"].as_str(), Some("sim-gw-public-a"));
        assert_eq!(value["data_dir"].as_str(), Some("/tmp/gw-a-data"));
        let uplink = value["uplink"].as_table().unwrap();
        assert_eq!(uplink["registry"].as_str(), Some(DEFAULT_REGISTRY_URL));
        assert_eq!(
            uplink["token"].as_str(),
            Some(p.tenants()[0].token.as_str())
        );

        let devices = value["devices"].as_array().unwrap();
        assert_eq!(devices.len(), p.devices_of_tenant(0).count());
        let templates = value["templates"].as_table().unwrap();
        for d in devices {
            let d = d.as_table().unwrap();
            for key in [
                "id",
                "class",
                "category",
                "type",
                "name",
                "protocol",
                "endpoint",
                "unit_id",
                "template",
                "attributes",
            ] {
                assert!(d.contains_key(key), "device lacks {key}: {d:?}");
            }
            assert_eq!(d["protocol"].as_str(), Some("modbus-tcp"));
            assert_eq!(d["unit_id"].as_integer(), Some(1));
            let template = d["template"].as_str().unwrap();
            let groups = templates[template]["poll_groups"].as_array().unwrap();
            assert_eq!(groups[0]["interval"].as_str(), Some("1s"));
            assert_eq!(groups[1]["interval"].as_str(), Some("1m"));
            for g in groups {
                for t in g["tags"].as_array().unwrap() {
                    let t = t.as_table().unwrap();
                    for key in ["name", "area", "address", "type"] {
                        assert!(t.contains_key(key), "tag lacks {key}: {t:?}");
                    }
                    let allowed = [
                        "name",
                        "area",
                        "address",
                        "type",
                        "length",
                        "scale",
                        "offset",
                        "unit",
                        "word_order",
                    ];
                    assert!(t.keys().all(|k| allowed.contains(&k.as_str())), "{t:?}");
                }
            }
        }
        // Spot checks of encodings the gateway must understand.
        assert!(text.contains("area = \"input-register\""));
        assert!(text.contains("area = \"holding-register\""));
        assert!(text.contains("type = \"string\""));
        assert!(text.contains("length = 8"));
    }

    #[test]
    fn little_word_order_and_discrete_inputs_are_written() {
        let p = plan(200);
        let all: String = (0..p.tenants().len())
            .map(|i| {
                p.gateway_toml(i, DEFAULT_REGISTRY_URL, Path::new("d"))
                    .unwrap()
            })
            .collect();
        assert!(all.contains("word_order = \"little\""));
        assert!(all.contains("area = \"discrete-input\""));
        assert!(all.contains("area = \"coil\""));
        assert!(all.contains("type = \"f32\""));
    }

    #[test]
    fn files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(catalog::CATALOG.len() as u32 + 5);
        let files = p.write_files(dir.path(), DEFAULT_REGISTRY_URL).unwrap();
        let manifest = std::fs::read_to_string(&files.manifest).unwrap();
        let mut lines = manifest.lines();
        assert_eq!(lines.next(), Some(MANIFEST_HEADER));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), p.len() as usize);
        assert!(rows.iter().all(|r| r.len() == 9 && r[5] == PROTOCOL));
        let categories: HashSet<&str> = rows.iter().map(|r| r[2]).collect();
        assert_eq!(categories.len(), fieldlink_model::Category::ALL.len());

        let tenants: toml::Table =
            toml::from_str(&std::fs::read_to_string(&files.tenants).unwrap()).unwrap();
        let list = tenants["tenants"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        for t in list {
            assert!(t["token"].as_str().unwrap().len() >= 24);
            assert!(["public", "private"].contains(&t["cloud"].as_str().unwrap()));
        }
        assert_eq!(files.gateways.len(), 2);
        let gw: toml::Table =
            toml::from_str(&std::fs::read_to_string(&files.gateways[1]).unwrap()).unwrap();
        let data_dir = gw["data_dir"].as_str().unwrap();
        assert!(Path::new(data_dir).is_absolute());
        assert!(data_dir.ends_with("gateways/private-b-data"));
    }
}
