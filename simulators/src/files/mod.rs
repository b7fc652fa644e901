//! The files a fleet writes: the ground-truth manifest, the registry's
//! tenants file and one gateway config per tenant.
//!
//! Each protocol's simulator face contributes through [`FaceFiles`]: the
//! manifest's endpoint of its devices, the driver sections of the gateway
//! configs (`[modbus]`, `[opcua]`, ...) and each device's `[devices.NAME]`,
//! and files of its own. A tenant's gateway config serves its devices of
//! every protocol. The configs are built as TOML values in the gateway's
//! `GatewayConfig` format (`gateway/src/config.rs`); this crate does not
//! depend on the gateway.

mod modbus;
mod mqtt;
mod opcua;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use fieldlink_model::Protocol;
use serde::Serialize;

pub use modbus::{IDENT_INTERVAL, ModbusFiles};
pub use mqtt::{MqttFiles, SparkplugFiles};
pub use opcua::OpcUaFiles;

use crate::error::SimError;
use crate::plan::{FleetPlan, PlannedDevice};

/// Header of `manifest.csv`.
pub const MANIFEST_HEADER: &str =
    "device_id,class,category,type,name,protocol,tenant,cloud,endpoint";
/// Default registry gRPC URL of the gateway configs.
pub const DEFAULT_REGISTRY_URL: &str = "http://127.0.0.1:7600";

/// What one protocol's face writes into a fleet's files.
pub trait FaceFiles {
    /// The protocol of the devices it serves.
    fn protocol(&self) -> Protocol;

    /// The manifest's `endpoint` of device `d`.
    fn endpoint(&self, plan: &FleetPlan, d: &PlannedDevice) -> String;

    /// The driver-wide sections of tenant `tenant`'s gateway config, for
    /// `devices` (the tenant's devices of this protocol, never empty), as
    /// top-level keys (`modbus` → `[modbus]`).
    ///
    /// # Errors
    /// [`SimError::Toml`] when a value does not serialize.
    fn gateway_sections(
        &self,
        plan: &FleetPlan,
        tenant: usize,
        devices: &[PlannedDevice],
    ) -> Result<toml::Table, SimError>;

    /// Device `d`'s driver section as `(name, value)` (`[devices.modbus]`),
    /// or `None` when the gateway discovers the device at run time (it is
    /// then not listed in the config, only in the manifest).
    ///
    /// # Errors
    /// [`SimError::Toml`] when a value does not serialize.
    fn gateway_device(
        &self,
        plan: &FleetPlan,
        d: &PlannedDevice,
    ) -> Result<Option<(String, toml::Value)>, SimError>;

    /// Files of the face's own (a broker's users), written into `dir`.
    ///
    /// # Errors
    /// [`SimError::Io`] naming the path.
    fn extra_files(&self, _plan: &FleetPlan, _dir: &Path) -> Result<Vec<PathBuf>, SimError> {
        Ok(Vec::new())
    }
}

/// Paths of the written files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFiles {
    /// `DIR/manifest.csv`.
    pub manifest: PathBuf,
    /// `DIR/tenants.toml`.
    pub tenants: PathBuf,
    /// `DIR/gateways/<tenant>.toml`, in tenant order.
    pub gateways: Vec<PathBuf>,
    /// Files the faces wrote of their own.
    pub extra: Vec<PathBuf>,
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

/// A TOML value from a serializable one.
pub(crate) fn to_value(what: &str, value: &impl Serialize) -> Result<toml::Value, SimError> {
    toml::Value::try_from(value).map_err(|e| SimError::Toml {
        what: what.to_owned(),
        message: e.to_string(),
    })
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

fn face_of<'a>(
    faces: &[&'a dyn FaceFiles],
    protocol: Protocol,
) -> Result<&'a dyn FaceFiles, SimError> {
    faces
        .iter()
        .copied()
        .find(|f| f.protocol() == protocol)
        .ok_or_else(|| {
            SimError::spec(
                "--protocols",
                format!("no simulator face writes files for {protocol} here"),
            )
        })
}

impl FleetPlan {
    /// One manifest row (no newline): `device_id,class,category,type,name,
    /// protocol,tenant,cloud,endpoint`, with the endpoint from `face`.
    pub fn manifest_row(&self, d: &PlannedDevice, face: &dyn FaceFiles) -> String {
        let tenant = &self.tenants()[d.tenant];
        let fields = [
            d.id(),
            d.device_type.class().code().to_owned(),
            d.device_type.category.code().to_owned(),
            d.device_type.model.to_owned(),
            d.name(),
            d.protocol.code().to_owned(),
            tenant.name.clone(),
            tenant.cloud.code().to_owned(),
            face.endpoint(self, d),
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
    /// [`FleetPlan::tenants`]) with the Modbus face only: see
    /// [`FleetPlan::gateway_toml_with`].
    ///
    /// # Errors
    /// As [`FleetPlan::gateway_toml_with`].
    pub fn gateway_toml(
        &self,
        tenant: usize,
        registry_url: &str,
        data_dir: &Path,
    ) -> Result<String, SimError> {
        self.gateway_toml_with(tenant, registry_url, data_dir, &[&ModbusFiles])
    }

    /// The gateway config of tenant `tenant`: `gateway_id`
    /// `sim-gw-<tenant>`, the given `data_dir`, `[uplink]` to
    /// `registry_url` with the tenant's token, each face's driver sections,
    /// and a `[[devices]]` entry (common keys, attributes vendor,
    /// serial_number, firmware, and the face's section) for every device the
    /// gateway does not discover by itself.
    ///
    /// # Errors
    /// [`SimError::Spec`] for an unknown tenant or a protocol without a
    /// face; [`SimError::Toml`] if serialization fails.
    pub fn gateway_toml_with(
        &self,
        tenant: usize,
        registry_url: &str,
        data_dir: &Path,
        faces: &[&dyn FaceFiles],
    ) -> Result<String, SimError> {
        let t = self
            .tenants()
            .get(tenant)
            .ok_or_else(|| SimError::spec("tenant", format!("no tenant {tenant}")))?;
        let mut root = toml::Table::new();
        root.insert("gateway_id".into(), format!("sim-gw-{}", t.name).into());
        root.insert(
            "data_dir".into(),
            data_dir.to_string_lossy().into_owned().into(),
        );
        let mut uplink = toml::Table::new();
        uplink.insert("registry".into(), registry_url.into());
        uplink.insert("token".into(), t.token.as_str().into());
        root.insert("uplink".into(), uplink.into());
        let mut devices = Vec::new();
        for protocol in self.protocols() {
            let face = face_of(faces, protocol)?;
            let of: Vec<PlannedDevice> = self
                .devices_of_tenant(tenant)
                .filter(|d| d.protocol == protocol)
                .collect();
            if of.is_empty() {
                continue;
            }
            root.extend(face.gateway_sections(self, tenant, &of)?);
            for d in &of {
                let Some((name, section)) = face.gateway_device(self, d)? else {
                    continue;
                };
                let ty = d.device_type;
                let mut entry = toml::Table::new();
                entry.insert("id".into(), d.id().into());
                entry.insert("class".into(), ty.class().code().into());
                entry.insert("category".into(), ty.category.code().into());
                entry.insert("type".into(), ty.model.into());
                entry.insert("name".into(), d.name().into());
                entry.insert("protocol".into(), protocol.code().into());
                entry.insert("attributes".into(), to_value("attributes", &attributes(d))?);
                entry.insert(name, section);
                devices.push(toml::Value::Table(entry));
            }
        }
        root.insert("devices".into(), devices.into());
        toml::to_string(&root).map_err(|e| SimError::Toml {
            what: format!("gateway config of {}", t.name),
            message: e.to_string(),
        })
    }

    /// Writes the files with the Modbus face only: see
    /// [`FleetPlan::write_files_with`].
    ///
    /// # Errors
    /// As [`FleetPlan::write_files_with`].
    pub fn write_files(&self, dir: &Path, registry_url: &str) -> Result<WrittenFiles, SimError> {
        self.write_files_with(dir, registry_url, &[&ModbusFiles])
    }

    /// Writes `dir/manifest.csv`, `dir/tenants.toml`,
    /// `dir/gateways/<tenant>.toml` (data dirs `dir/gateways/<tenant>-data`,
    /// absolute) and the faces' own files, creating directories as needed.
    /// Every protocol of the plan needs a face in `faces`.
    ///
    /// # Errors
    /// [`SimError::Io`] naming the path; [`SimError::Toml`];
    /// [`SimError::Spec`] for a protocol without a face.
    pub fn write_files_with(
        &self,
        dir: &Path,
        registry_url: &str,
        faces: &[&dyn FaceFiles],
    ) -> Result<WrittenFiles, SimError> {
        for protocol in self.protocols() {
            face_of(faces, protocol)?;
        }
        let gateways_dir = dir.join("gateways");
        std::fs::create_dir_all(&gateways_dir).map_err(|e| SimError::io(&gateways_dir, e))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| SimError::io(dir, e))?;
        let gateways_dir = dir.join("gateways");

        let manifest = dir.join("manifest.csv");
        let file = std::fs::File::create(&manifest).map_err(|e| SimError::io(&manifest, e))?;
        let mut out = BufWriter::new(file);
        let mut write = || -> Result<(), SimError> {
            let io = |e| SimError::io(&manifest, e);
            writeln!(out, "{MANIFEST_HEADER}").map_err(io)?;
            for d in self.devices() {
                let face = face_of(faces, d.protocol)?;
                writeln!(out, "{}", self.manifest_row(&d, face)).map_err(io)?;
            }
            out.flush().map_err(io)
        };
        write()?;

        let tenants = dir.join("tenants.toml");
        std::fs::write(&tenants, self.tenants_toml()?).map_err(|e| SimError::io(&tenants, e))?;

        let mut gateways = Vec::new();
        for (i, t) in self.tenants().iter().enumerate() {
            let path = gateways_dir.join(format!("{}.toml", t.name));
            let data_dir = gateways_dir.join(format!("{}-data", t.name));
            let text = self.gateway_toml_with(i, registry_url, &data_dir, faces)?;
            std::fs::write(&path, text).map_err(|e| SimError::io(&path, e))?;
            gateways.push(path);
        }
        let mut extra = Vec::new();
        for protocol in self.protocols() {
            extra.extend(face_of(faces, protocol)?.extra_files(self, &dir)?);
        }
        Ok(WrittenFiles {
            manifest,
            tenants,
            gateways,
            extra,
        })
    }
}

/// The attributes every simulated device is announced with.
pub fn attributes(d: &PlannedDevice) -> BTreeMap<&'static str, String> {
    let ty = d.device_type;
    BTreeMap::from([
        ("vendor", ty.vendor.to_owned()),
        ("serial_number", d.serial().to_string()),
        ("firmware", ty.firmware_text()),
    ])
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
            HashSet::from(["gateway_id", "data_dir", "uplink", "modbus", "devices"])
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
        let templates = value["modbus"]["templates"].as_table().unwrap();
        for d in devices {
            let d = d.as_table().unwrap();
            for key in [
                "id",
                "class",
                "category",
                "type",
                "name",
                "protocol",
                "attributes",
                "modbus",
            ] {
                assert!(d.contains_key(key), "device lacks {key}: {d:?}");
            }
            assert_eq!(d["protocol"].as_str(), Some("modbus-tcp"));
            let modbus = d["modbus"].as_table().unwrap();
            assert!(modbus["endpoint"].as_str().unwrap().starts_with("127."));
            assert_eq!(modbus["unit_id"].as_integer(), Some(1));
            let template = modbus["template"].as_str().unwrap();
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
        assert!(rows.iter().all(|r| r.len() == 9 && r[5] == "modbus-tcp"));
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

    #[test]
    fn every_protocol_of_the_plan_needs_a_face() {
        let dir = tempfile::tempdir().unwrap();
        let p = FleetPlan::new(FleetSpec {
            devices: 40,
            protocols: "modbus-tcp,opc-ua".parse().unwrap(),
            ..FleetSpec::default()
        })
        .unwrap();
        let err = p.write_files(dir.path(), DEFAULT_REGISTRY_URL).unwrap_err();
        assert!(err.to_string().contains("opc-ua"), "{err}");
    }
}
