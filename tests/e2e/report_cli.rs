//! `fieldlink report` against a live registry with known devices.

use std::process::Command;

use crate::support::*;

async fn report(registry: &TestRegistry, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fieldlink"));
    command
        .args(["report", "--registry", &registry.http])
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn report_prints_the_form_figures_and_the_device_list() {
    let registry = TestRegistry::start("").await;
    let t = now();
    let mut public = Gateway::connect(&registry.grpc, PUBLIC_TOKEN, "gw-pub", "s")
        .await
        .unwrap();
    public
        .send(announce_batch(vec![
            announce("cnc-1", "processing", "machine-tools", "modbus-tcp"),
            announce("agv-1", "mobile", "logistics", "modbus-tcp"),
        ]))
        .await
        .unwrap();
    public
        .send(telemetry_batch(vec![points("cnc-1", &[t])]))
        .await
        .unwrap();
    let mut private = Gateway::connect(&registry.grpc, PRIVATE_TOKEN, "gw-priv", "s")
        .await
        .unwrap();
    private
        .send(announce_batch(vec![announce(
            "gas-1", "other", "safety", "opc-ua",
        )]))
        .await
        .unwrap();
    private
        .send(telemetry_batch(vec![points("gas-1", &[t])]))
        .await
        .unwrap();

    let markdown = report(&registry, &[]).await;
    for line in [
        "| 可连接设备数量 | 合计 | 3 | 0 | 1 | 1 | 1 |",
        "| 可连接设备数量 | 公有云 | 2 | 0 | 1 | 1 | 0 |",
        "| 可连接设备数量 | 私有云 | 1 | 0 | 0 | 0 | 1 |",
        "| 日运行数量 | 公有云 ★ | 1 | 0 | 1 | 0 | 0 |",
        "| 日运行数量 | 私有云 | 1 | 0 | 0 | 0 | 1 |",
    ] {
        assert!(markdown.contains(line), "missing `{line}` in\n{markdown}");
    }
    assert!(
        markdown.contains("| 加工设备 | machine-tools | 机床 | 1 |"),
        "{markdown}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&report(&registry, &["--format", "json"]).await).unwrap();
    assert_eq!(json["registered"]["total"], 3);
    assert_eq!(json["reporting"]["by_cloud"]["public"], 1);

    let devices = report(&registry, &["--devices"]).await;
    let mobile = devices.find("## 行走设备").expect("a mobile section");
    let other = devices.find("## 其他设备").expect("an other section");
    let agv = devices.find("agv-1").expect("agv listed");
    assert!(
        mobile < agv && agv < other,
        "agv-1 under 行走设备:\n{devices}"
    );
    let csv = report(&registry, &["--devices", "--format", "csv"]).await;
    assert_eq!(csv.lines().count(), 4, "{csv}");
    registry.stop().await;
}
