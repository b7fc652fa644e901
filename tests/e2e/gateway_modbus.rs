//! A gateway polling a Modbus TCP device streams to a registry, and the
//! registry counts the device.

use std::time::Duration;

use fieldlink_gateway::GatewayConfig;

use crate::support::*;

fn gateway_config(
    dir: &std::path::Path,
    registry: &str,
    device: std::net::SocketAddr,
    extra_device: &str,
    metrics_port: u16,
) -> String {
    format!(
        r#"gateway_id = "gw-modbus-1"
data_dir = "{data}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[uplink]
registry = "{registry}"
token = "{PUBLIC_TOKEN}"
batch_max_delay = "50ms"

[modbus]
timeout = "300ms"
backoff_min = "100ms"
backoff_max = "500ms"

[modbus.templates.cnc]
poll_groups = [
  {{ interval = "100ms", tags = [
    {{ name = "spindle_speed", area = "holding-register", address = 0, type = "u16", unit = "rpm" }},
    {{ name = "spindle_load", area = "holding-register", address = 1, type = "u16", scale = 0.1, unit = "%" }},
    {{ name = "feed_rate", area = "holding-register", address = 2, type = "f32", unit = "mm/min" }},
  ] }},
]

[[devices]]
id = "cnc-0001"
class = "processing"
category = "machine-tools"
type = "VMC-850"
name = "CNC machining centre 1"
attributes = {{ vendor = "acme" }}
[devices.modbus]
endpoint = "{device}"
template = "cnc"
{extra_device}
"#,
        data = dir.join("gw").display()
    )
}

#[tokio::test]
async fn a_polled_modbus_device_is_counted_by_the_registry() {
    let registry = TestRegistry::start("").await;
    let feed = 1234.5f32.to_bits();
    let (device, _server) =
        modbus_device::serve(vec![1500, 655, (feed >> 16) as u16, feed as u16]).await;
    let dir = tempfile::tempdir().unwrap();
    // A device whose TCP port accepts but never answers, and one that
    // refuses connections: neither may stall the first.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let _hung = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let silent = format!(
        r#"
[[devices]]
id = "cnc-0003"
class = "processing"
category = "machine-tools"
type = "VMC-850"
name = "CNC machining centre 3 (hung controller)"
[devices.modbus]
endpoint = "{hung_addr}"
template = "cnc"
"#
    ) + r#"
[[devices]]
id = "cnc-0002"
class = "processing"
category = "machine-tools"
type = "VMC-850"
name = "CNC machining centre 2 (switched off)"
[devices.modbus]
endpoint = "127.0.0.1:1"
template = "cnc"
"#;
    let metrics_port = crate::support::peers::free_port();
    let text = gateway_config(dir.path(), &registry.grpc, device, &silent, metrics_port);
    let settings = GatewayConfig::from_toml(&text).unwrap().validate().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(fieldlink_gateway::run(settings, async {
        let _ = stopped.await;
    }));

    eventually(
        "the device counted as registered, online and reporting",
        || async {
            let s = registry.summary(None).await;
            figure(&s, "reporting", "total", "") == 1 && figure(&s, "online", "total", "") == 1
        },
    )
    .await;
    let s = registry.summary(None).await;
    assert_eq!(figure(&s, "registered", "total", ""), 3);
    assert_eq!(figure(&s, "registered", "by_class", "processing"), 3);
    assert_eq!(s["protocols"]["list"], serde_json::json!(["modbus-tcp"]));
    let (_, d) = registry.get("/api/v1/devices/cnc-0001").await;
    assert_eq!(d["name"], "CNC machining centre 1");
    assert_eq!(d["attributes"]["vendor"], "acme");
    let (_, off) = registry.get("/api/v1/devices/cnc-0002").await;
    assert_eq!(off["online"], false);
    assert!(
        off["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{off}"
    );
    // The hung one times out, is reported offline, and sends only bad-quality points.
    eventually("the hung device offline", || async {
        let (_, d) = registry.get("/api/v1/devices/cnc-0003").await;
        d["status"]["online"] == false
    })
    .await;
    let (_, hung) = registry.get("/api/v1/devices/cnc-0003").await;
    assert!(
        hung["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{hung}"
    );
    let s = registry.summary(None).await;
    assert_eq!(
        figure(&s, "reporting", "total", ""),
        1,
        "bad-quality points do not count"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, days) = registry.get("/api/v1/devices/cnc-0001/days").await;
    let points = days["days"][0]["points"].as_u64().unwrap();
    assert!(points >= 3, "{days}");
    assert_eq!(points % 3, 0, "three tags per poll: {points}");

    let (status, metrics) = get_text(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
    };
    assert_eq!(value("fieldlink_gateway_devices_online"), 1.0);
    assert!(value("fieldlink_gateway_driver_requests_total{protocol=\"modbus-tcp\"}") >= 1.0);
    assert!(
        value("fieldlink_gateway_driver_errors_total{protocol=\"modbus-tcp\"}") >= 1.0,
        "the hung device's timeouts"
    );
    assert!(
        value("fieldlink_gateway_driver_connect_failures_total{protocol=\"modbus-tcp\"}") >= 1.0,
        "the refusing device"
    );
    assert!(value("fieldlink_gateway_batches_acked_total") >= 1.0);
    assert!(value("fieldlink_gateway_poll_seconds_count{protocol=\"modbus-tcp\"}") >= 1.0);
    assert_eq!(value("fieldlink_gateway_uplink_connected"), 1.0);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), gateway)
        .await
        .expect("gateway stops")
        .unwrap()
        .unwrap();
    registry.stop().await;
}
