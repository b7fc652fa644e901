//! Test support: a registry in this process or as a real child process, a
//! minimal gateway client speaking the real gRPC stream, and HTTP helpers.
#![allow(dead_code)]

pub mod bench;
pub mod broker;
pub mod modbus_device;
pub mod mosquitto;
pub mod peers;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fieldlink_model::proto::{
    self, Ack, Batch, DeviceAnnounce, DeviceStatus, DeviceTelemetry, GatewayMessage, HelloAck,
    Point, RegistryMessage, gateway_message, ingest_client::IngestClient, registry_message::Body,
};
use fieldlink_registry::{Registry, RegistryConfig};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

pub const PUBLIC_TOKEN: &str = "public-tenant-token-0001";
pub const PRIVATE_TOKEN: &str = "private-tenant-token-0001";
pub const NANOS: i64 = 1_000_000_000;

/// Config text with two tenants (public `acme`, private `plant`) and `extra`.
pub fn config_text(data_dir: &Path, extra: &str) -> String {
    format!(
        r#"data_dir = "{}"
{extra}
[[tenants]]
name = "acme"
cloud = "public"
token = "{PUBLIC_TOKEN}"

[[tenants]]
name = "plant"
cloud = "private"
token = "{PRIVATE_TOKEN}"
"#,
        data_dir.display()
    )
}

/// A registry served by this test process.
pub struct TestRegistry {
    pub grpc: String,
    pub http: String,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestRegistry {
    /// Starts a registry with two tenants; `extra` is TOML placed before the tenants.
    pub async fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, extra).await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> Self {
        let text = config_text(&dir.path().join("data"), extra);
        let settings = RegistryConfig::from_toml(&text)
            .expect("test config parses")
            .validate()
            .expect("test config is valid");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let grpc_addr = grpc.local_addr().expect("addr");
        let http_addr = http.local_addr().expect("addr");
        let registry = Registry::open(settings).expect("registry opens");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            registry
                .serve(grpc, http, async {
                    let _ = stopped.await;
                })
                .await
                .expect("registry serves");
        });
        TestRegistry {
            grpc: format!("http://{grpc_addr}"),
            http: format!("http://{http_addr}"),
            dir,
            stop: Some(stop),
            task,
        }
    }

    /// Stops it and waits; returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("registry task");
        self.dir
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        get_json(&format!("{}{path_and_query}", self.http)).await
    }

    pub async fn summary(&self, day: Option<&str>) -> Value {
        let path = match day {
            Some(day) => format!("/api/v1/summary?day={day}"),
            None => "/api/v1/summary".to_owned(),
        };
        let (status, body) = self.get(&path).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// The `fieldlink` binary as a real child process.
pub struct RegistryProcess {
    pub child: Child,
    pub grpc: String,
    pub http: String,
}

impl RegistryProcess {
    /// Starts `fieldlink registry --config CONFIG` on free ports and waits
    /// for its listening line.
    pub fn spawn(config: &Path) -> Self {
        Self::spawn_with(config, &[])
    }

    /// As [`RegistryProcess::spawn`], with extra arguments.
    pub fn spawn_with(config: &Path, extra: &[&std::ffi::OsStr]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
            .args(["registry", "--config"])
            .arg(config)
            .args(extra)
            .args(["--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .env("FIELDLINK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fieldlink registry");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let grpc = field(&line, "grpc=").expect("grpc address in listening line");
        let http = field(&line, "http=").expect("http address in listening line");
        RegistryProcess {
            child,
            grpc: format!("http://{grpc}"),
            http: http.trim_end_matches('/').to_owned(),
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("wait")
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        get_json(&format!("{}{path_and_query}", self.http)).await
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(name)? + name.len();
    line[start..].split_whitespace().next()
}

pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("HTTP body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub async fn get_text(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("HTTP body"))
}

/// A figure of a summary: `figure(&s, "reporting", "by_cloud", "public")`,
/// or the total with `figure(&s, "registered", "total", "")`.
pub fn figure(summary: &Value, name: &str, by: &str, key: &str) -> u64 {
    let value = if by == "total" {
        &summary[name]["total"]
    } else {
        &summary[name][by][key]
    };
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{name}.{by}.{key} missing in {summary}"))
}

/// A gateway speaking the real ingest stream.
pub struct Gateway {
    tx: mpsc::Sender<GatewayMessage>,
    rx: Streaming<RegistryMessage>,
    pub hello_ack: HelloAck,
    pub next_sequence: u64,
}

impl Gateway {
    /// Opens a stream, sends the hello and reads the hello ack.
    pub async fn connect(
        url: &str,
        token: &str,
        gateway_id: &str,
        stream_id: &str,
    ) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(256);
        tx.send(GatewayMessage {
            body: Some(gateway_message::Body::Hello(proto::Hello {
                gateway_id: gateway_id.into(),
                stream_id: stream_id.into(),
                software_version: "test".into(),
                protocols: vec!["modbus-tcp".into(), "opc-ua".into()],
            })),
        })
        .await
        .expect("queue hello");
        let mut client = IngestClient::connect(url.to_owned())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii token"),
        );
        let mut rx = client.stream(request).await?.into_inner();
        let hello_ack = match rx.message().await? {
            Some(RegistryMessage {
                body: Some(Body::HelloAck(ack)),
            }) => ack,
            other => panic!("expected a HelloAck, got {other:?}"),
        };
        Ok(Gateway {
            tx,
            rx,
            next_sequence: hello_ack.acked_sequence + 1,
            hello_ack,
        })
    }

    /// Sends `batch` with the next sequence (unless it has one) and waits for its ack.
    pub async fn send(&mut self, mut batch: Batch) -> Result<Ack, Status> {
        if batch.sequence == 0 {
            batch.sequence = self.next_sequence;
        }
        self.next_sequence = batch.sequence + 1;
        self.push(batch).await;
        self.ack().await
    }

    /// Sends without waiting.
    pub async fn push(&mut self, batch: Batch) {
        self.tx
            .send(GatewayMessage {
                body: Some(gateway_message::Body::Batch(batch)),
            })
            .await
            .expect("stream open");
    }

    /// The next ack; an Error message or status is returned as Err.
    pub async fn ack(&mut self) -> Result<Ack, Status> {
        match self.rx.message().await? {
            Some(RegistryMessage {
                body: Some(Body::Ack(ack)),
            }) => Ok(ack),
            Some(RegistryMessage {
                body: Some(Body::Error(e)),
            }) => Err(Status::aborted(format!("{:?}: {}", e.code(), e.message))),
            other => Err(Status::internal(format!("unexpected {other:?}"))),
        }
    }

    /// The next message or the status that ended the stream.
    pub async fn next(&mut self) -> Result<Option<RegistryMessage>, Status> {
        self.rx.message().await
    }
}

pub fn announce(id: &str, class: &str, category: &str, protocol: &str) -> DeviceAnnounce {
    DeviceAnnounce {
        device_id: id.into(),
        class: class.into(),
        category: category.into(),
        r#type: format!("type-of-{category}"),
        name: format!("name of {id}"),
        protocol: protocol.into(),
        endpoint: "127.0.0.1:502".into(),
        attributes: Default::default(),
        tags: vec![proto::TagDescriptor {
            name: "value".into(),
            r#type: "double".into(),
            unit: String::new(),
        }],
    }
}

pub fn online(id: &str, time: i64) -> DeviceStatus {
    DeviceStatus {
        device_id: id.into(),
        state: proto::device_status::State::Online as i32,
        reason: "connected".into(),
        time_unix_nano: time as u64,
    }
}

pub fn points(id: &str, times: &[i64]) -> DeviceTelemetry {
    DeviceTelemetry {
        device_id: id.into(),
        points: times
            .iter()
            .map(|t| Point {
                tag: String::new(),
                tag_id: 0,
                time_unix_nano: *t as u64,
                quality: 0,
                value: Some(proto::point::Value::DoubleValue(1.5)),
            })
            .collect(),
    }
}

pub fn announce_batch(devices: Vec<DeviceAnnounce>) -> Batch {
    Batch {
        announces: devices,
        ..Batch::default()
    }
}

pub fn telemetry_batch(telemetry: Vec<DeviceTelemetry>) -> Batch {
    Batch {
        telemetry,
        ..Batch::default()
    }
}

pub fn now() -> i64 {
    fieldlink_model::now_unix_nanos()
}

/// Waits until `check` holds, polling; panics with `what` after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
