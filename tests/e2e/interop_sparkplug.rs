//! The Sparkplug host with an edge node nobody here wrote (pysparkplug, a
//! Python implementation of Sparkplug B) at a real mosquitto: the registry
//! counts its device, a forged sequence gap makes the host send a Rebirth
//! NCMD that the script receives, and killing the script (its NDEATH will
//! fires) takes the device offline.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::mosquitto::Mosquitto;
use crate::support::peers::python_with_pysparkplug;
use crate::support::*;

struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_pysparkplug_edge_node_is_counted_rebirths_on_a_gap_and_dies() {
    let Some(python) = python_with_pysparkplug() else {
        return;
    };
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let registry = TestRegistry::start("").await;
    let text = format!(
        r#"gateway_id = "gw-sparkplug-interop"
data_dir = "{data}"
[uplink]
registry = "{grpc}"
token = "{PUBLIC_TOKEN}"
batch_max_delay = "50ms"
[sparkplug]
broker = "{url}"
tenant = "acme"
host_id = "fieldlink-acme"
reconnect_min = "100ms"
rebirth_interval = "200ms"
"#,
        data = registry.dir.path().join("gw").display(),
        grpc = registry.grpc,
        url = broker.url(),
    );
    let settings = fieldlink_gateway::GatewayConfig::from_toml(&text)
        .unwrap()
        .validate()
        .unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fieldlink_gateway::run(settings, async {
        let _ = stopped.await;
    }));
    // Let the host's STATE be there first (an edge node may wait for it).
    eventually("the host's STATE retained at the broker", || async {
        let out = tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port.to_string(),
                "-t",
                "spBv1.0/STATE/fieldlink-acme",
                "-C",
                "1",
                "-W",
                "1",
            ])
            .output()
            .await;
        out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"online\":true"))
    })
    .await;

    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/pysparkplug_edge.py"
        ))
        .args([
            "127.0.0.1",
            &broker.port.to_string(),
            "acme",
            "py-edge",
            "meter-7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the pysparkplug edge node");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let script = Script(child);
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    // Waits without blocking the runtime the gateway runs on.
    async fn wait_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, want: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some(line)) if line.trim() == want => return,
                Ok(Some(line)) => seen.push(line),
                _ => panic!("the script never printed `{want}`; it printed {seen:?}"),
            }
        }
    }
    wait_line(&mut lines, "ready").await;

    eventually(
        "the pysparkplug device registered, online and reporting",
        || async {
            let s = registry.summary(None).await;
            s["reporting"]["by_class"]["operating"] == 1 && s["online"]["total"] == 1
        },
    )
    .await;
    let (_, list) = registry.get("/api/v1/devices").await;
    let d = &list["devices"][0];
    assert_eq!(d["device_id"], "acme/py-edge/meter-7");
    assert_eq!(d["protocol"], "sparkplug-b");
    assert_eq!(d["category"], "power");

    // A forged sequence gap: the host asks for a rebirth.
    writeln!(stdin, "gap").expect("tell the script");
    stdin.flush().expect("flush");
    wait_line(&mut lines, "ncmd rebirth").await;

    // SIGKILL: the broker publishes the node's NDEATH will.
    drop(script);
    eventually("the device offline after NDEATH", || async {
        let s = registry.summary(None).await;
        s["online"]["total"] == 0 && s["registered"]["total"] == 1
    })
    .await;
}
