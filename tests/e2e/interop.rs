//! Interop with Modbus peers nobody here wrote.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use fieldlink_gateway::GatewayConfig;
use fieldlink_gateway::device::DeviceHandle;
use fieldlink_gateway::driver::Reading;
use fieldlink_gateway::driver::modbus::{ModbusDriver, ModbusKind};
use fieldlink_gateway::driver::poll::{PolledSession, Poller};
use fieldlink_model::proto::point::Value;

use crate::support::peers::{free_port, python_with_pymodbus};
use crate::support::*;

/// Kills the peer process when the test ends, however it ends.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_pymodbus(python: &std::path::Path, port: u16) -> Peer {
    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/pymodbus_server.py"
        ))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the pymodbus server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), format!("ready {port}"));
    // `ready` is printed just before pymodbus binds: wait for the port.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "pymodbus never listened on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Peer(child)
}

fn config(registry: &str, data: &std::path::Path, port: u16) -> String {
    format!(
        r#"gateway_id = "gw-interop"
data_dir = "{data}"
[uplink]
registry = "{registry}"
token = "{PUBLIC_TOKEN}"
batch_max_delay = "50ms"
[modbus]
timeout = "500ms"
backoff_min = "100ms"
backoff_max = "500ms"

[[devices]]
id = "pymodbus-vmc-1"
class = "processing"
category = "machine-tools"
type = "VMC-850"
name = "pymodbus machining centre"
[devices.modbus]
endpoint = "127.0.0.1:{port}"
poll_groups = [ {{ interval = "100ms", tags = [
  {{ name = "spindle_speed", area = "holding-register", address = 0, type = "u16" }},
  {{ name = "spindle_load", area = "holding-register", address = 1, type = "u16", scale = 0.1 }},
  {{ name = "feed_rate", area = "holding-register", address = 2, type = "f32" }},
  {{ name = "coolant_temp", area = "holding-register", address = 4, type = "i16" }},
  {{ name = "program", area = "holding-register", address = 5, type = "string", length = 3 }},
  {{ name = "flow", area = "input-register", address = 0, type = "f32", word_order = "little" }},
  {{ name = "running", area = "coil", address = 0, type = "bool" }},
  {{ name = "door_open", area = "coil", address = 1, type = "bool" }},
  {{ name = "alarm", area = "discrete-input", address = 1, type = "bool" }},
] }} ]
"#,
        data = data.display()
    )
}

#[tokio::test]
async fn the_gateway_decodes_a_pymodbus_device_and_the_registry_counts_it() {
    let Some(python) = python_with_pymodbus() else {
        return;
    };
    let port = free_port();
    let _peer = start_pymodbus(&python, port);
    let registry = TestRegistry::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig::from_toml(&config(&registry.grpc, dir.path(), port)).unwrap();
    let settings = config.validate().unwrap();

    // The driver's decoding against the peer's register map.
    let driver = ModbusDriver::configure(config.driver_config(&ModbusKind).unwrap()).unwrap();
    let device = &driver.devices()[0];
    let mut session = driver
        .poller()
        .connect(&device.target)
        .await
        .expect("connect to pymodbus");
    let handle = DeviceHandle::from_index(0);
    let mut out: Vec<Reading> = device.groups[0]
        .tags
        .clone()
        .map(|tag| Reading::bad(handle, tag, 1))
        .collect();
    let read = session.read_group(0, &mut out).await.expect("read");
    let values: Vec<Option<Value>> = out.into_iter().map(|r| r.value).collect();
    assert_eq!(
        values,
        [
            Some(Value::IntValue(1500)),
            Some(Value::DoubleValue(655.0 * 0.1)),
            Some(Value::DoubleValue(1234.5)),
            Some(Value::IntValue(-40)),
            Some(Value::StringValue("VMC850".into())),
            Some(Value::DoubleValue(12.25)),
            Some(Value::BoolValue(true)),
            Some(Value::BoolValue(false)),
            Some(Value::BoolValue(true)),
        ]
    );
    assert_eq!(
        read.requests, 4,
        "holding 0..8, input 0..2, coils 0..2, discrete 1"
    );
    drop(session);

    // The whole path: gateway → registry.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(fieldlink_gateway::run(settings, async {
        let _ = stopped.await;
    }));
    eventually("the pymodbus device reporting", || async {
        let s = registry.summary(None).await;
        figure(&s, "reporting", "by_class", "processing") == 1
            && figure(&s, "online", "total", "") == 1
    })
    .await;
    let _ = stop.send(());
    gateway.await.unwrap().unwrap();
    registry.stop().await;
}
