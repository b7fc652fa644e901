//! The MQTT JSON driver with peers nobody here wrote: a real mosquitto
//! broker, mosquitto_pub publishing JSON and a mosquitto_sub holding a Last
//! Will. A gateway (in this process) reaches the registry, which counts the
//! device; killing the will's holder takes its device offline; malformed
//! JSON is counted, and the driver goes on.

use std::process::{Child, Command, Stdio};

use crate::support::mosquitto::Mosquitto;
use crate::support::peers::{free_port, mosquitto_pub, mosquitto_sub};
use crate::support::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn publish(broker: &Mosquitto, topic: &str, payload: &str, retain: bool) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &broker.port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        payload,
    ]);
    if retain {
        cmd.arg("-r");
    }
    let status = cmd.status().expect("run mosquitto_pub");
    assert!(status.success(), "mosquitto_pub {topic}");
}

async fn gateway(
    registry: &TestRegistry,
    broker: &Mosquitto,
    metrics: u16,
) -> tokio::sync::oneshot::Sender<()> {
    let text = format!(
        r#"gateway_id = "gw-mqtt-interop"
data_dir = "{data}"
[uplink]
registry = "{grpc}"
token = "{PUBLIC_TOKEN}"
batch_max_delay = "50ms"
[metrics]
listen = "127.0.0.1:{metrics}"
[mqtt]
broker = "{url}"
tenant = "acme"
reconnect_min = "100ms"
[[mqtt.topics]]
topic = "{{tenant}}/{{device_id}}/telemetry"
tags = [{{ name = "temp", pointer = "/temp", unit = "°C" }}]
"#,
        data = registry.dir.path().join("gw").display(),
        grpc = registry.grpc,
        url = broker.url(),
    );
    let settings = fieldlink_gateway::GatewayConfig::from_toml(&text)
        .unwrap()
        .validate()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fieldlink_gateway::run(settings, async {
        let _ = stopped.await;
    }));
    stop
}

#[tokio::test]
async fn mosquitto_pub_json_is_counted_and_a_lost_client_goes_offline() {
    let (Some(_), Some(_)) = (mosquitto_pub(), mosquitto_sub()) else {
        return;
    };
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let registry = TestRegistry::start("").await;
    let metrics_port = free_port();
    let _stop = gateway(&registry, &broker, metrics_port).await;

    publish(
        &broker,
        "acme/boiler-1/meta",
        r#"{"class":"operating","category":"motive-power","type":"BX-2","name":"Boiler 1"}"#,
        true,
    );
    publish(&broker, "acme/boiler-1/status", "online", true);
    eventually(
        "the registered device counted reporting and online",
        || async {
            // Telemetry is not retained: publish until the gateway hears it.
            publish(
                &broker,
                "acme/boiler-1/telemetry",
                r#"{"temp": 81.5}"#,
                false,
            );
            let s = registry.summary(None).await;
            s["reporting"]["by_class"]["operating"] == 1 && s["online"]["total"] == 1
        },
    )
    .await;
    let (_, list) = registry.get("/api/v1/devices").await;
    let d = &list["devices"][0];
    assert_eq!(d["device_id"], "boiler-1");
    assert_eq!(d["protocol"], "mqtt-json");
    assert_eq!(d["category"], "motive-power");
    assert_eq!(d["cloud"], "public");

    // Malformed JSON and a 10 MB payload: counted, and the driver carries on.
    publish(&broker, "acme/boiler-1/telemetry", "{\"temp\": 8", false);
    let big = registry.dir.path().join("big.json");
    std::fs::write(&big, vec![b'['; 10 << 20]).unwrap();
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-t",
            "acme/boiler-1/telemetry",
            "-f",
        ])
        .arg(&big)
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success());
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    eventually("the malformed payloads counted", || async {
        let (_, text) = get_text(&url).await;
        text.lines()
            .any(|l| l == "fieldlink_gateway_driver_malformed_total{protocol=\"mqtt-json\"} 2")
    })
    .await;

    // A client holding a Last Will: killed with SIGKILL, its will says offline.
    let holder = Killed(
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port.to_string(),
                "-i",
                "press-2",
                "-t",
                "acme/press-2/cmd",
            ])
            .args([
                "--will-topic",
                "acme/press-2/status",
                "--will-payload",
                "offline",
                "--will-retain",
                "--will-qos",
                "1",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub"),
    );
    publish(
        &broker,
        "acme/press-2/meta",
        r#"{"category":"light-industry","type":"HP-200","name":"Press 2"}"#,
        true,
    );
    publish(&broker, "acme/press-2/status", "online", true);
    eventually("the second device online and reporting", || async {
        publish(&broker, "acme/press-2/telemetry", r#"{"temp": 20}"#, false);
        let s = registry.summary(None).await;
        s["online"]["total"] == 2 && s["reporting"]["by_class"]["processing"] == 1
    })
    .await;
    drop(holder); // SIGKILL: no DISCONNECT, mosquitto publishes the will
    eventually("the device whose client died offline", || async {
        let (_, list) = registry.get("/api/v1/devices?online=false").await;
        list["devices"]
            .as_array()
            .is_some_and(|d| d.len() == 1 && d[0]["device_id"] == "press-2")
    })
    .await;
    let s = registry.summary(None).await;
    assert_eq!(s["online"]["total"], 1, "{s}");
    assert_eq!(s["registered"]["total"], 2, "{s}");
}
