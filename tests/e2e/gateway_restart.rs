//! kill -9 of the gateway while the registry is unreachable loses nothing
//! and counts nothing twice: after both restart, the registry's per-device,
//! per-day point totals equal the gateway's own ledger.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn spawn_gateway(config: &Path, registry: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["gateway", "--config"])
        .arg(config)
        .args(["--registry", registry])
        .env(
            "FIELDLINK_LOG",
            std::env::var("GW_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fieldlink gateway")
}

fn ledger_totals(path: &Path) -> BTreeMap<(String, String), u64> {
    let mut totals = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let mut fields = line.split(',');
        let (Some(device), Some(day), Some(n)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("bad ledger line {line:?}");
        };
        *totals
            .entry((device.to_owned(), day.to_owned()))
            .or_default() += n.parse::<u64>().unwrap();
    }
    totals
}

#[tokio::test]
async fn kill_9_of_the_gateway_during_an_outage_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let registry_config = dir.path().join("registry.toml");
    std::fs::write(
        &registry_config,
        config_text(&dir.path().join("registry-data"), ""),
    )
    .unwrap();
    let (device_a, _a) = modbus_device::serve(vec![10, 20, 30]).await;
    let (device_b, _b) = modbus_device::serve(vec![40, 50, 60]).await;
    let ledger = dir.path().join("ledger.csv");
    let gateway_config = dir.path().join("gateway.toml");
    let device = |id: &str, addr: std::net::SocketAddr| {
        format!(
            r#"
[[devices]]
id = "{id}"
class = "operating"
category = "power"
type = "PM-800"
name = "power meter {id}"
[devices.modbus]
endpoint = "{addr}"
poll_groups = [ {{ interval = "20ms", tags = [
  {{ name = "voltage", area = "holding-register", address = 0 }},
  {{ name = "current", area = "holding-register", address = 1 }},
  {{ name = "power", area = "holding-register", address = 2 }},
] }} ]
"#
        )
    };
    std::fs::write(
        &gateway_config,
        format!(
            r#"gateway_id = "gw-restart"
data_dir = "{data}"
ledger = "{ledger}"
[uplink]
registry = "http://127.0.0.1:1"
token = "{PUBLIC_TOKEN}"
batch_max_delay = "20ms"
reconnect_min = "50ms"
reconnect_max = "200ms"
replay_batches_per_sec = 1000
{a}{b}"#,
            data = dir.path().join("gateway-data").display(),
            ledger = ledger.display(),
            a = device("meter-a", device_a),
            b = device("meter-b", device_b),
        ),
    )
    .unwrap();

    let registry = RegistryProcess::spawn(&registry_config);
    let mut gateway = spawn_gateway(&gateway_config, &registry.grpc);
    eventually("both meters reporting", || async {
        let (_, s) = registry.get("/api/v1/summary").await;
        s["reporting"]["total"] == 2
    })
    .await;

    // The registry goes away; the gateway keeps polling into its spool ...
    registry.kill9();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // ... and is killed too.
    gateway.kill().unwrap();
    gateway.wait().unwrap();

    let registry = RegistryProcess::spawn(&registry_config);
    let mut gateway = spawn_gateway(&gateway_config, &registry.grpc);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A clean stop: the gateway flushes its spool before it exits.
    let pid = gateway.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || gateway.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    let expected = ledger_totals(&ledger);
    assert!(expected.len() >= 2, "{expected:?}");
    let mut got = BTreeMap::new();
    for id in ["meter-a", "meter-b"] {
        let (_, days) = registry.get(&format!("/api/v1/devices/{id}/days")).await;
        for d in days["days"].as_array().unwrap() {
            got.insert(
                (id.to_owned(), d["day"].as_str().unwrap().to_owned()),
                d["points"].as_u64().unwrap(),
            );
        }
    }
    assert_eq!(
        got, expected,
        "registry running logs vs the gateway's ledger"
    );
    let (_, metrics) = get_text(&format!("{}/metrics", registry.http)).await;
    assert!(
        metrics.contains("fieldlink_registry_batches_applied_total"),
        "{metrics}"
    );
}
