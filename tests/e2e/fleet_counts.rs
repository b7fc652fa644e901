//! Simulators → gateways → registry, as separate processes over real
//! loopback sockets: the registry's counts equal the ground-truth manifest
//! exactly, class by class and cloud by cloud, and `bench verify` audits
//! each fleet's devices through their own protocol.

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
    let _gateways: Vec<Gateway> = files
        .gateways
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
        .collect();

    assert_counts_equal_manifest(&registry, &files.manifest, 48, &["modbus-tcp"]).await;
    crate::bench_verify::assert_verify_equals_and_catches_planted_differences(
        &files.manifest,
        &registry.http,
        dir.path(),
    )
    .await;
    drop(_gateways);
    fleet.stop().await;
}

/// Waits until every device of the manifest is online and reporting, then
/// checks the registry's counts against it class by class and cloud by
/// cloud, its device list, and its protocols.
async fn assert_counts_equal_manifest(
    registry: &RegistryProcess,
    manifest: &std::path::Path,
    n: u64,
    protocols: &[&str],
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
    assert_eq!(
        got.len(),
        expected.len(),
        "every (class, cloud) of the manifest has a row"
    );
    let (_, list) = registry
        .get(&format!("/api/v1/devices?limit={}", n + 10))
        .await;
    let listed: Vec<String> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids, "the device list is the manifest");
    let (_, s) = registry.get("/api/v1/summary").await;
    assert_eq!(s["protocols"]["list"], serde_json::json!(protocols));
}

/// A simulator of the binary (`fieldlink sim mqtt|sparkplug`), stopped
/// with SIGTERM.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Which broker a fleet test uses.
#[derive(Clone, Copy)]
enum FleetBroker {
    /// A mosquitto the test starts (`--broker`).
    Mosquitto,
    /// The `fieldlink broker` the simulator starts itself (no `--broker`):
    /// its users and per-tenant ACLs must let every client in.
    Own,
}

/// `fieldlink sim <face>` fleets at a broker, the registry and one gateway
/// per tenant as separate processes: counts equal the manifest.
async fn broker_fleet(face: &str, devices: u32, extra: &[&str], which: FleetBroker) {
    use std::io::{BufRead, BufReader};

    let mosquitto;
    let broker_args = match which {
        FleetBroker::Mosquitto => {
            let Some(broker) = crate::support::mosquitto::Mosquitto::start() else {
                return;
            };
            mosquitto = broker;
            vec!["--broker".to_owned(), mosquitto.url()]
        }
        FleetBroker::Own => vec![
            "--broker-listen".to_owned(),
            format!("127.0.0.1:{}", crate::support::peers::free_port()),
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fleet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args([
            "sim",
            face,
            "--devices",
            &devices.to_string(),
            "--interval",
            "200ms",
        ])
        .arg("--out")
        .arg(&out)
        .args(&broker_args)
        .args(["--registry", "http://127.0.0.1:1"])
        .args(extra)
        .env("FIELDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let sim = Sim(child);
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("the simulator runs").unwrap();
        if line.starts_with("fleet:") {
            break;
        }
    }
    assert!(out.join("mqtt-credentials.csv").exists());
    if matches!(which, FleetBroker::Own) {
        assert!(
            out.join("broker.toml").exists(),
            "the simulator's broker config"
        );
    }
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir.path().join("registry").display()),
    )
    .unwrap();
    let tenants = out.join("tenants.toml");
    let registry =
        RegistryProcess::spawn_with(&config, &[OsStr::new("--tenants"), tenants.as_os_str()]);
    let gateways: Vec<Gateway> = ["public-a", "private-b"]
        .iter()
        .map(|t| {
            Gateway(
                Command::new(env!("CARGO_BIN_EXE_fieldlink"))
                    .args(["gateway", "--config"])
                    .arg(out.join("gateways").join(format!("{t}.toml")))
                    .args(["--registry", &registry.grpc])
                    .env("FIELDLINK_LOG", "warn")
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let protocol = if face == "mqtt" {
        "mqtt-json"
    } else {
        "sparkplug-b"
    };
    assert_counts_equal_manifest(
        &registry,
        &out.join("manifest.csv"),
        u64::from(devices),
        &[protocol],
    )
    .await;
    crate::bench_verify::assert_audit_probes_protocol(
        &out.join("manifest.csv"),
        &registry.http,
        protocol,
    )
    .await;
    drop(gateways);
    drop(sim);
}

#[tokio::test]
async fn sim_mqtt_fleet_counts_equal_the_manifest_by_class_and_cloud() {
    broker_fleet("mqtt", 44, &[], FleetBroker::Mosquitto).await;
}

#[tokio::test]
async fn sim_sparkplug_fleet_counts_equal_the_manifest_by_class_and_cloud() {
    broker_fleet(
        "sparkplug",
        44,
        &["--devices-per-node", "6"],
        FleetBroker::Mosquitto,
    )
    .await;
}

#[tokio::test]
async fn sim_mqtt_fleet_on_its_own_fieldlink_broker_counts_equal_the_manifest() {
    broker_fleet("mqtt", 30, &[], FleetBroker::Own).await;
}

#[tokio::test]
async fn sim_sparkplug_fleet_on_its_own_fieldlink_broker_counts_equal_the_manifest() {
    broker_fleet(
        "sparkplug",
        30,
        &["--devices-per-node", "5"],
        FleetBroker::Own,
    )
    .await;
}

#[tokio::test]
async fn an_opcua_fleet_counts_equal_its_manifest_by_class_and_cloud() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fleet");
    // Three servers of 16, 16 and 8 devices, on three consecutive ports.
    let base = crate::support::peers::free_port_block(3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args([
            "sim",
            "opcua",
            "--devices",
            "40",
            "--devices-per-server",
            "16",
        ])
        .args([
            "--interval",
            "200ms",
            "--opcua-port",
            &base.to_string(),
            "--out",
        ])
        .arg(&out)
        .env("FIELDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let sim = Sim(child);
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("fleet:"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("opc-ua: 40 devices on 3 servers")),
        "{lines:?}"
    );

    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir.path().join("registry").display()),
    )
    .unwrap();
    let tenants = out.join("tenants.toml");
    let registry =
        RegistryProcess::spawn_with(&config, &[OsStr::new("--tenants"), tenants.as_os_str()]);
    let gateways: Vec<Gateway> = ["public-a", "private-b"]
        .iter()
        .map(|t| {
            Gateway(
                Command::new(env!("CARGO_BIN_EXE_fieldlink"))
                    .args(["gateway", "--config"])
                    .arg(out.join("gateways").join(format!("{t}.toml")))
                    .args(["--registry", &registry.grpc])
                    .env("FIELDLINK_LOG", "warn")
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    assert_counts_equal_manifest(&registry, &out.join("manifest.csv"), 40, &["opc-ua"]).await;
    crate::bench_verify::assert_audit_probes_protocol(
        &out.join("manifest.csv"),
        &registry.http,
        "opc-ua",
    )
    .await;
    drop(gateways);
    drop(sim);
}

/// Process ids of `pid`'s children (started by any of its threads).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `fieldlink sim mqtt --client lean` on its own broker: lean devices in
/// two shard processes, each from its own 127.x.y.z address, through the
/// broker's lean ingress, whose shard runs the gateway configs; the
/// registry counts every device as the manifest says, and no process
/// outlives the simulator.
#[tokio::test]
async fn a_lean_mqtt_fleet_through_the_ingress_counts_equal_the_manifest() {
    use std::io::{BufRead, BufReader};

    const DEVICES: u32 = 40;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fleet");
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["sim", "mqtt", "--client", "lean", "--lean-shard-size", "20"])
        .args(["--devices", &DEVICES.to_string(), "--interval", "300ms"])
        .arg("--out")
        .arg(&out)
        .args(["--broker-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--ingress-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--ingress-metrics", &format!("127.0.0.1:{}", free_port())])
        .args(["--registry", &format!("http://{grpc}")])
        .env("FIELDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let sim_pid = child.id();
    let sim = Sim(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut said = Vec::new();
    loop {
        let line = lines.next().expect("the simulator runs").unwrap();
        said.push(line.clone());
        if line.starts_with("fleet:") {
            break;
        }
    }
    let said = said.join("\n");
    assert!(
        said.contains("40 lean devices in 2 process(es)") && said.contains("1 shard process(es)"),
        "{said}"
    );
    // One login per tenant, not one per device.
    let credentials = std::fs::read_to_string(out.join("mqtt-credentials.csv")).unwrap();
    assert_eq!(credentials.matches(",fleet").count(), 2, "{credentials}");
    assert!(
        std::fs::read_to_string(out.join("broker.toml"))
            .unwrap()
            .contains("[ingress]")
    );

    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir.path().join("registry").display()),
    )
    .unwrap();
    let mut registry = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["registry", "--config"])
        .arg(&config)
        .arg("--tenants")
        .arg(out.join("tenants.toml"))
        .args(["--grpc", &grpc, "--http", "127.0.0.1:0"])
        .env("FIELDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(registry.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .expect("http address in the registry's listening line")
        .trim_end_matches('/')
        .to_owned();
    let registry = RegistryProcess {
        child: registry,
        grpc: format!("http://{grpc}"),
        http,
    };
    assert_counts_equal_manifest(
        &registry,
        &out.join("manifest.csv"),
        u64::from(DEVICES),
        &["mqtt-json"],
    )
    .await;

    // The fleet names its shards' client API, through which bench verify
    // audits the devices (the ingress keeps no retained status).
    let words: Vec<&str> = said.split_whitespace().collect();
    let apis: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "--mqtt-api")
        .map(|w| w[1].trim_end_matches(')'))
        .collect();
    assert_eq!(apis.len(), 1, "{said}");
    let mut verify = Command::new(env!("CARGO_BIN_EXE_fieldlink"));
    verify
        .args(["bench", "verify", "--manifest"])
        .arg(out.join("manifest.csv"))
        .args(["--registry", &registry.http, "--audit", "10"]);
    for api in &apis {
        verify.args(["--mqtt-api", api]);
    }
    let verified = verify.output().unwrap();
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{text}");
    assert!(text.contains("audit: 10 of 10"), "{text}");

    // Two fleet shards and one ingress shard (under the simulator).
    let kids = children(sim_pid);
    assert_eq!(kids.len(), 3, "children of the simulator: {kids:?}");
    drop(sim);
    for pid in kids {
        eventually(
            "the simulator's shard processes exit with it",
            || async move {
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z "))
            },
        )
        .await;
    }
}
