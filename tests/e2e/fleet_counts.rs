//! Simulators → gateways → registry, as separate processes over real
//! loopback sockets: the registry's counts equal the ground-truth manifest
//! exactly, class by class and cloud by cloud.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fieldlink_sim::{FleetPlan, FleetSpec, RunOptions, RunningFleet};

use crate::support::peers::free_port;
use crate::support::*;

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (class, cloud) → devices, from manifest.csv.
fn manifest_counts(path: &std::path::Path) -> (BTreeMap<(String, String), u64>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("device_id,class,category,type,name,protocol,tenant,cloud,endpoint")
    );
    let mut counts = BTreeMap::new();
    let mut ids = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        *counts
            .entry((fields[1].to_owned(), fields[7].to_owned()))
            .or_default() += 1;
        ids.push(fields[0].to_owned());
    }
    ids.sort();
    (counts, ids)
}

#[tokio::test]
async fn registry_counts_equal_the_manifest_by_class_and_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FleetPlan::new(FleetSpec {
        devices: 48,
        port: free_port(),
        interval: Duration::from_millis(200),
        ..FleetSpec::default()
    })
    .unwrap();
    let files = plan
        .write_files(&dir.path().join("fleet"), "http://127.0.0.1:1")
        .unwrap();
    let fleet = RunningFleet::start(&plan, RunOptions::default())
        .await
        .unwrap();

    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir.path().join("registry").display()),
    )
    .unwrap();
    let registry = RegistryProcess::spawn_with(
        &config,
        &[OsStr::new("--tenants"), files.tenants.as_os_str()],
    );
    let _gateways = spawn_gateways(&files.gateways, &registry);

    assert_counts_equal_manifest(&registry, &files.manifest, 48, "modbus-tcp").await;
    fleet.stop().await;
}

/// Waits until all `n` devices are online and reporting, then checks the
/// registry's counts and device list against the manifest.
async fn assert_counts_equal_manifest(
    registry: &RegistryProcess,
    manifest: &std::path::Path,
    n: u64,
    protocol: &str,
) {
    let (expected, ids) = manifest_counts(manifest);
    eventually(
        "every simulated device registered, online and reporting",
        || async {
            let (_, s) = registry.get("/api/v1/summary").await;
            s["reporting"]["total"] == n && s["online"]["total"] == n
        },
    )
    .await;
    let (_, counts) = registry.get("/api/v1/counts?group_by=class,cloud").await;
    let mut got = BTreeMap::new();
    for row in counts["rows"].as_array().unwrap() {
        let key = (
            row["class"].as_str().unwrap().to_owned(),
            row["cloud"].as_str().unwrap().to_owned(),
        );
        for figure in ["registered", "online", "reporting"] {
            let count = row[figure].as_u64().unwrap();
            let want = expected.get(&key).copied().unwrap_or(0);
            assert_eq!(count, want, "{figure} of {key:?}");
        }
        got.insert(key, row["registered"].as_u64().unwrap());
    }
    assert_eq!(got.values().sum::<u64>(), n);
    let (_, list) = registry.get("/api/v1/devices").await;
    let listed: Vec<String> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids, "the device list is the manifest");
    let (_, s) = registry.get("/api/v1/summary").await;
    assert_eq!(s["protocols"]["list"], serde_json::json!([protocol]));
}

fn spawn_gateways(files: &[std::path::PathBuf], registry: &RegistryProcess) -> Vec<Gateway> {
    files
        .iter()
        .map(|path| {
            Gateway(
                Command::new(env!("CARGO_BIN_EXE_fieldlink"))
                    .args(["gateway", "--config"])
                    .arg(path)
                    .args(["--registry", &registry.grpc])
                    .env("FIELDLINK_LOG", "warn")
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect()
}

/// `fieldlink sim opcua` as a child process, killed on drop.
struct SimProcess(Child);

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_opcua_fleet_counts_equal_its_manifest_by_class_and_cloud() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fleet");
    // Three servers of 16, 16 and 8 devices; ports from a free base.
    let base = free_port();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args([
            "sim",
            "opcua",
            "--devices",
            "40",
            "--devices-per-server",
            "16",
        ])
        .args(["--interval", "200ms", "--port", &base.to_string(), "--out"])
        .arg(&out)
        .env("FIELDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = sim.stdout.take().unwrap();
    let sim = SimProcess(sim);
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("fleet:"))
        .expect("sim opcua reports its fleet");
    assert!(ready.contains("40 OPC UA devices on 3 servers"), "{ready}");

    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir.path().join("registry").display()),
    )
    .unwrap();
    let tenants = out.join("tenants.toml");
    let registry =
        RegistryProcess::spawn_with(&config, &[OsStr::new("--tenants"), tenants.as_os_str()]);
    let gateways: Vec<std::path::PathBuf> = ["public-a", "private-b"]
        .iter()
        .map(|t| out.join("gateways").join(format!("{t}.toml")))
        .collect();
    let _gateways = spawn_gateways(&gateways, &registry);
    assert_counts_equal_manifest(&registry, &out.join("manifest.csv"), 40, "opc-ua").await;
    drop(sim);
}
