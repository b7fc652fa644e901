//! Interop with OPC UA peers nobody here wrote (asyncua, FreeOpcUa's
//! Python stack): the gateway subscribes to an asyncua server, without
//! security and with SignAndEncrypt Basic256Sha256 (each side trusting only
//! the other's certificate, made here), and the registry counts its device;
//! an asyncua client browses and reads the simulator's OPC UA face and finds
//! the catalog's devices with the values of their signals.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use fieldlink_gateway::GatewayConfig;
use fieldlink_model::Protocol;
use fieldlink_sim::opcua::nodes;
use fieldlink_sim::{FleetPlan, FleetSpec, OpcUaFleet, OpcUaOptions};
use opcua::crypto::{CertificateStore, X509Data};
use opcua::types::{ApplicationDescription, LocalizedText, Variant};

use crate::support::peers::{free_port, python_with_asyncua};
use crate::support::*;

/// Kills the peer process when the test ends, however it ends.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A certificate and key for `uri` on 127.0.0.1, as the gateway's library
/// makes them.
fn make_cert(uri: &str, cert: &Path, key: &Path) -> opcua::crypto::X509 {
    let description = ApplicationDescription {
        application_uri: uri.into(),
        application_name: LocalizedText::new("", uri),
        ..Default::default()
    };
    let args = X509Data::from((description, Some(vec!["127.0.0.1".to_owned()])));
    CertificateStore::create_certificate_and_key(&args, true, cert, key)
        .expect("certificate and key")
        .0
}

fn start_server(python: &Path, port: u16, secure: Option<(&Path, &Path, &Path)>) -> Peer {
    let mut cmd = Command::new(python);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/asyncua_server.py"
    ))
    .args(["--port", &port.to_string()]);
    if let Some((cert, key, trust)) = secure {
        cmd.args(["--security", "sign-and-encrypt", "--cert"])
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--trust")
            .arg(trust);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the asyncua server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready", "asyncua server did not start");
    Peer(child)
}

fn gateway_config(dir: &Path, registry: &str, port: u16, security: &str) -> String {
    let (mode, policy, trust) = match security {
        "none" => ("none", "none", "first-use"),
        _ => ("sign-and-encrypt", "basic256sha256", "trusted-dir"),
    };
    format!(
        r#"gateway_id = "gw-opcua-interop"
data_dir = "{data}"
[uplink]
registry = "{registry}"
token = "{PUBLIC_TOKEN}"
batch_max_delay = "50ms"

[opcua]
pki_dir = "{pki}"
server_trust = "{trust}"
request_timeout = "5s"
reconnect_min = "200ms"
reconnect_max = "1s"
publishing_interval = "100ms"
sampling_interval = "100ms"

[opcua.servers.peer]
endpoint = "opc.tcp://127.0.0.1:{port}/fieldlink/test/"
security_mode = "{mode}"
security_policy = "{policy}"

[[devices]]
id = "boiler-7"
class = "operating"
category = "motive-power"
type = "asyncua boiler"
name = "Boiler 7"
protocol = "opc-ua"
[devices.opcua]
server = "peer"
root = "ns=2;s=Boiler7"
tags = [
  {{ name = "temperature", node = "ns=2;s=Boiler7.Temperature", unit = "°C" }},
  {{ name = "pressure", path = "2:Pressure", deadband = 0.001 }},
  {{ name = "running", node = "ns=2;s=Boiler7.Running", type = "bool" }},
  {{ name = "count", path = "2:Count", queue_size = 5 }},
]
"#,
        data = dir.join("gw-data").display(),
        pki = dir.join("gw-pki").display(),
    )
}

async fn gateway_counts_the_asyncua_device(security: &str) {
    let Some(python) = python_with_asyncua() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = if security == "none" {
        start_server(&python, port, None)
    } else {
        // The gateway's own certificate, made before it starts (it would
        // make one on first run; the server must know it to trust it).
        let pki = dir.path().join("gw-pki");
        let gateway_cert = make_cert(
            "urn:fieldlink:gateway",
            &pki.join("own/cert.der"),
            &pki.join("private/private.pem"),
        );
        let _ = gateway_cert;
        // The server's certificate, trusted by the gateway by putting it in
        // its trusted directory under the name its library looks for.
        let server_dir = dir.path().join("server");
        let server_cert = make_cert(
            "urn:fieldlink:test:asyncua",
            &server_dir.join("cert.der"),
            &server_dir.join("key.pem"),
        );
        let trusted = pki.join("trusted");
        std::fs::create_dir_all(&trusted).unwrap();
        std::fs::copy(
            server_dir.join("cert.der"),
            trusted.join(CertificateStore::cert_file_name(&server_cert)),
        )
        .unwrap();
        start_server(
            &python,
            port,
            Some((
                &server_dir.join("cert.der"),
                &server_dir.join("key.pem"),
                &pki.join("own/cert.der"),
            )),
        )
    };
    let registry = TestRegistry::start("").await;
    let text = gateway_config(dir.path(), &registry.grpc, port, security);
    let settings = GatewayConfig::from_toml(&text).unwrap().validate().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(fieldlink_gateway::run(settings, async {
        let _ = stopped.await;
    }));
    eventually(
        "the asyncua device registered, online and reporting",
        || async {
            let s = registry.summary(None).await;
            figure(&s, "registered", "total", "") == 1
                && figure(&s, "online", "total", "") == 1
                && figure(&s, "reporting", "total", "") == 1
        },
    )
    .await;
    let (_, list) = registry.get("/api/v1/devices").await;
    let device = &list["devices"][0];
    assert_eq!(device["device_id"], "boiler-7");
    assert_eq!(device["protocol"], Protocol::OpcUa.code());
    assert_eq!(device["cloud"], "public");
    let _ = stop.send(());
    gateway.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_subscribes_to_an_asyncua_server_without_security() {
    gateway_counts_the_asyncua_device("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_subscribes_to_an_asyncua_server_with_sign_and_encrypt() {
    gateway_counts_the_asyncua_device("sign-and-encrypt").await;
}

fn as_f64(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        v => v.as_f64(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asyncua_client_browses_and_reads_the_simulator() {
    let Some(python) = python_with_asyncua() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plan = FleetPlan::new(FleetSpec {
        devices: 6,
        protocols: fieldlink_sim::ProtocolMix::only(Protocol::OpcUa),
        ..FleetSpec::default()
    })
    .unwrap();
    let fleet = OpcUaFleet::start(
        &plan,
        OpcUaOptions {
            base_port: 0,
            pki_dir: dir.path().join("pki"),
            ..OpcUaOptions::default()
        },
    )
    .await
    .unwrap();
    let url = fleet.endpoint(0).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/asyncua_client.py"
            ))
            .args(["--url", &url])
            .output()
            .expect("run the asyncua client")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "asyncua client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let devices = found["devices"].as_object().unwrap();
    assert_eq!(devices.len(), 6, "every device is an object under Devices");
    for d in plan.devices() {
        let entry = &devices[&d.id()];
        let ty = d.device_type;
        let props = &entry["properties"];
        assert_eq!(props["Class"], ty.class().code());
        assert_eq!(props["Category"], ty.category.code());
        assert_eq!(props["Model"], ty.model);
        assert_eq!(props["Name"], d.name());
        assert_eq!(props["Vendor"], ty.vendor);
        assert_eq!(props["SerialNumber"], d.serial().to_string());
        let sim = plan.sim_device(d.index).unwrap();
        let values = entry["values"].as_object().unwrap();
        assert_eq!(
            values.len(),
            ty.tag_count(),
            "{}: one variable per tag",
            d.id()
        );
        for (i, tag) in ty.all_tags().enumerate() {
            let read = &values[tag.name];
            assert_eq!(read[2], "Good", "{}.{}", d.id(), tag.name);
            let at = read[1].as_i64().unwrap();
            // The value of the signal at the variable's source timestamp.
            match nodes::value(&sim, i, at) {
                Variant::String(s) => assert_eq!(read[0], s.as_ref(), "{}.{}", d.id(), tag.name),
                expected => {
                    let want = match expected {
                        Variant::Boolean(b) => f64::from(u8::from(b)),
                        Variant::Double(v) => v,
                        Variant::UInt16(v) => f64::from(v),
                        Variant::Int16(v) => f64::from(v),
                        Variant::UInt32(v) => f64::from(v),
                        Variant::Int32(v) => f64::from(v),
                        Variant::UInt64(v) => v as f64,
                        Variant::Int64(v) => v as f64,
                        other => panic!("unexpected variant {other:?}"),
                    };
                    let got = as_f64(&read[0]).unwrap();
                    assert!(
                        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                        "{}.{} at {at}: read {got}, signal {want}",
                        d.id(),
                        tag.name
                    );
                }
            }
        }
    }
    fleet.stop().await;
}
