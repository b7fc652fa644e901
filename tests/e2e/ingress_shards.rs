//! `fieldlink broker` with an `[ingress]` section, as a separate process:
//! two shard processes on one port, each running the gateway on its links;
//! real `mosquitto_pub` and paho-mqtt clients (one shared fleet credential, identity =
//! client id) publish through them and the registry counts every device;
//! a shard killed with SIGKILL is started again and takes clients; `bench
//! verify --mqtt-api` finds devices held on the shards through their
//! client lookup.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fieldlink_broker::auth::{HashKind, PasswordHash};

use crate::support::peers::{free_port, free_port_block, mosquitto_pub, python_with_paho};
use crate::support::*;

const FLEET_PASSWORD: &str = "fleet-token-0123456789abcdef";
const DEVICES: usize = 12;

struct BrokerProcess {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        // SIGTERM: the supervisor closes its shards' stdin.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl BrokerProcess {
    /// The next line a process of the broker printed that contains `what`.
    fn wait_line(&self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line with `{what}` from fieldlink broker"));
            if line.contains(what) {
                return line;
            }
        }
    }
}

fn write_configs(
    dir: &std::path::Path,
    registry: &TestRegistry,
    ingress: u16,
    metrics: Option<u16>,
) -> std::path::PathBuf {
    let hash = PasswordHash::generate(HashKind::Sha256, FLEET_PASSWORD.as_bytes()).unwrap();
    let broker = format!(
        r#"listen = "127.0.0.1:{mqtt}"
[[tenants]]
name = "acme"
device.publish = ["%t/%c/#"]
[[users]]
username = "acme-fleet"
password_hash = "{hash}"
tenant = "acme"
role = "device"
client_id_must_match = false
[ingress]
listen = "127.0.0.1:{ingress}"
shards = 2
max_connections = 1000
gateways = ["gateway.toml"]
{metrics}"#,
        mqtt = free_port(),
        metrics = metrics.map_or_else(String::new, |m| format!("metrics = \"127.0.0.1:{m}\"\n")),
    );
    let gateway = format!(
        r#"gateway_id = "gw-ingress"
data_dir = "{data}"
[uplink]
registry = "{grpc}"
token = "{PUBLIC_TOKEN}"
batch_max_delay = "50ms"
[mqtt]
broker = "embedded"
tenant = "acme"
[[mqtt.topics]]
topic = "{{tenant}}/{{device_id}}/telemetry"
tags = [{{ name = "temp", pointer = "/temp" }}]
auto_register = {{ class = "other", category = "pollution-control", type = "PM-1" }}
"#,
        data = dir.join("gw").display(),
        grpc = registry.grpc,
    );
    std::fs::write(dir.join("gateway.toml"), gateway).unwrap();
    let path = dir.join("broker.toml");
    std::fs::write(&path, broker).unwrap();
    path
}

fn start_broker(config: &std::path::Path) -> BrokerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["broker", "--config"])
        .arg(config)
        .env("FIELDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fieldlink broker");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    BrokerProcess { child, lines }
}

fn publish(port: u16, device: &str, source: &str) -> bool {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-A", source])
        .args([
            "-u",
            "acme-fleet",
            "-P",
            FLEET_PASSWORD,
            "-i",
            device,
            "-q",
            "1",
        ])
        .args([
            "-t",
            &format!("acme/{device}/telemetry"),
            "-m",
            r#"{"temp": 21.5}"#,
        ])
        .stderr(Stdio::null())
        .status()
        .expect("run mosquitto_pub")
        .success()
}

/// Whether `pid` is a live `fieldlink ... shard` process.
fn is_shard(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.iter().any(|a| *a == b"shard") && args.iter().any(|a| a.ends_with(b"fieldlink"))
}

/// The parent of `pid`: in `/proc/PID/stat`, `pid (comm) state ppid ...`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Pids of the shard processes of the supervisor `parent`, from `/proc`
/// (other tests, and other runs on the box, have shards of their own).
fn shard_pids(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent) && is_shard(pid))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_devices_through_two_ingress_shards_are_all_counted() {
    let (Some(_), Some(python)) = (mosquitto_pub(), python_with_paho()) else {
        return;
    };
    let registry = TestRegistry::start("").await;
    let port = free_port();
    let config = write_configs(registry.dir.path(), &registry, port, None);
    let broker = start_broker(&config);
    // Both shards, in whichever order they come up.
    let mut up = [
        broker.wait_line("ingress shard"),
        broker.wait_line("ingress shard"),
    ];
    up.sort();
    assert!(
        up[0].starts_with("ingress shard 0 listening")
            && up[1].starts_with("ingress shard 1 listening"),
        "{up:?}"
    );

    // Devices from many source addresses: the kernel spreads them over
    // both shards.
    let device = |n: usize| format!("pm-{n:03}");
    let source = |n: usize| format!("127.0.{}.{}", 1 + n / 200, 1 + n % 200);
    eventually("every device registered and reporting", || async {
        for n in 0..DEVICES {
            publish(port, &device(n), &source(n));
        }
        let s = registry.summary(None).await;
        s["registered"]["total"] == DEVICES && s["reporting"]["total"] == DEVICES
    })
    .await;
    let (_, list) = registry.get("/api/v1/devices?limit=100").await;
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.len(), DEVICES);
    for d in devices {
        assert_eq!(d["class"], "other");
        assert_eq!(d["protocol"], "mqtt-json");
        assert_eq!(d["cloud"], "public");
    }

    // paho-mqtt, 3.1.1 and 5: QoS 1 acknowledged and counted; a wrong
    // password refused (3.1.1's 4 and 5's 0x86 both read 134 in paho 2).
    let paho = |client: &str, password: &str, version: &str| {
        let out = Command::new(&python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/paho_connect.py"
            ))
            .args([
                "127.0.0.1",
                &port.to_string(),
                client,
                "acme-fleet",
                password,
                version,
            ])
            .args([&format!("acme/{client}/telemetry"), r#"{"temp": 20.0}"#])
            .output()
            .expect("run paho_connect.py");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for version in ["4", "5"] {
        let text = paho(&format!("paho-{version}"), FLEET_PASSWORD, version);
        assert!(
            text.contains("connack 0") && text.contains("puback 0"),
            "paho v{version}: {text}"
        );
        let text = paho(&format!("paho-{version}"), "not-the-token", version);
        assert!(
            text.contains("connack 134"),
            "paho v{version} wrong password: {text}"
        );
    }
    eventually("the paho devices counted too", || async {
        let s = registry.summary(None).await;
        s["registered"]["total"] == DEVICES + 2 && s["reporting"]["total"] == DEVICES + 2
    })
    .await;

    // A shard killed with SIGKILL is started again by its supervisor.
    let supervisor = broker.child.id();
    let pids = shard_pids(supervisor);
    assert_eq!(pids.len(), 2, "two shard processes: {pids:?}");
    let status = Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    broker.wait_line("ingress shard");
    eventually("two shards again", || async {
        shard_pids(supervisor).len() == 2
    })
    .await;
    // Clients still get through (whichever shard takes them).
    eventually("a publish after the restart", || async {
        publish(port, &device(0), &source(0))
    })
    .await;
    let last = shard_pids(supervisor);
    assert_eq!(last.len(), 2, "{last:?}");
    drop(broker);
    eventually("no shard outlives its supervisor", || async {
        !last.iter().any(|&pid| is_shard(pid))
    })
    .await;
}

/// An MQTT 3.1.1 client of the fleet credential connected from `source`,
/// kept open (raw bytes: no client library binds a source address).
async fn held_device(port: u16, device: &str, source: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend(u16::try_from(s.len()).unwrap().to_be_bytes());
        out.extend(s.as_bytes());
    }
    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let mut len = body.len();
        loop {
            let mut byte = u8::try_from(len % 128).unwrap();
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
        out.extend(body);
        out
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    // CONNECT: MQTT 3.1.1, user + password + clean session, keep-alive 60 s.
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend([4, 0xC2, 0, 60]);
    string(&mut body, device);
    string(&mut body, "acme-fleet");
    string(&mut body, FLEET_PASSWORD);
    stream.write_all(&packet(0x10, &body)).await.unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "{device} connected");
    stream
}

/// One QoS 0 telemetry message of `device` on its connection.
async fn telemetry(stream: &mut tokio::net::TcpStream, device: &str) {
    use tokio::io::AsyncWriteExt;
    let topic = format!("acme/{device}/telemetry");
    let payload = br#"{"temp": 21.5}"#;
    let mut body = Vec::new();
    body.extend(u16::try_from(topic.len()).unwrap().to_be_bytes());
    body.extend(topic.as_bytes());
    body.extend(payload);
    // Short enough for a one-byte remaining length.
    let mut packet = vec![0x30, u8::try_from(body.len()).unwrap()];
    packet.extend(body);
    stream.write_all(&packet).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_verify_finds_ingress_devices_through_the_shards_client_lookup() {
    // Enough source addresses that the kernel's hash puts some on each
    // shard (all on one: 2 in 2^24).
    const HELD: usize = 24;
    let registry = TestRegistry::start("").await;
    let port = free_port();
    let metrics = free_port_block(2);
    let config = write_configs(registry.dir.path(), &registry, port, Some(metrics));
    let broker = start_broker(&config);
    broker.wait_line("ingress shard");
    broker.wait_line("ingress shard");
    let device = |n: usize| format!("held-{n:02}");
    let mut held = Vec::new();
    for n in 0..HELD {
        let source = format!("127.0.{}.{}", 3 + n / 200, 1 + n % 200);
        held.push(held_device(port, &device(n), &source).await);
    }
    // Telemetry again every round: a shard's gateway may not have its link
    // yet when the first messages come (they are dropped then).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for (n, stream) in held.iter_mut().enumerate() {
            telemetry(stream, &device(n)).await;
        }
        let s = registry.summary(None).await;
        if s["registered"]["total"] == HELD
            && s["online"]["total"] == HELD
            && s["reporting"]["total"] == HELD
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every held device registered, online and reporting: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The fleet's manifest: the devices as the registry has them, each at
    // its client of the ingress.
    let (_, list) = registry.get("/api/v1/devices?limit=100").await;
    let mut rows =
        vec!["device_id,class,category,type,name,protocol,tenant,cloud,endpoint".to_owned()];
    for d in list["devices"].as_array().unwrap() {
        let field = |k: &str| d[k].as_str().unwrap().to_owned();
        rows.push(format!(
            "{},{},{},{},{},{},{},{},mqtt://127.0.0.1:{port}/acme/{}",
            field("device_id"),
            field("class"),
            field("category"),
            field("type"),
            field("name"),
            field("protocol"),
            field("tenant"),
            field("cloud"),
            field("device_id"),
        ));
    }
    assert_eq!(rows.len(), HELD + 1);
    let dir = registry.dir.path();
    let manifest = dir.join("manifest.csv");
    std::fs::write(&manifest, rows.join("\n") + "\n").unwrap();
    let apis: Vec<String> = (0..2)
        .map(|k| format!("http://127.0.0.1:{}", metrics + k))
        .collect();
    let flags = [
        "--audit",
        "100",
        "--mqtt-api",
        &apis[0],
        "--mqtt-api",
        &apis[1],
    ];
    // Each device is connected on exactly one shard, and each shard holds some.
    let http = reqwest::Client::new();
    let mut per_shard = [0; 2];
    for n in 0..HELD {
        let mut on = Vec::new();
        for (k, api) in apis.iter().enumerate() {
            let url = format!("{api}/clients/acme/{}", device(n));
            let answer = http.get(&url).send().await.unwrap();
            if answer.status() == 200 {
                let body: serde_json::Value = answer.json().await.unwrap();
                assert_eq!(body["connected"], true, "{url}: {body}");
                on.push(k);
            } else {
                assert_eq!(answer.status(), 404, "{url}");
            }
        }
        assert_eq!(on.len(), 1, "{} is on one shard: {on:?}", device(n));
        per_shard[on[0]] += 1;
    }
    assert!(per_shard.iter().all(|&c| c > 0), "{per_shard:?}");

    let ok = crate::bench_verify::verify_with(&manifest, &registry.http, "10s", &flags).await;
    let out = crate::bench_verify::text(&ok);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "audit: {HELD} of {HELD} sampled devices answered through their own protocol as the manifest says; 0 skipped (no probe for their protocol) [mqtt-json {HELD}/{HELD}]"
        )),
        "{out}"
    );

    // A row whose client is connected nowhere.
    let first = device(0);
    let planted: Vec<String> = rows
        .iter()
        .map(|r| {
            if r.starts_with(&format!("{first},")) {
                r.replace(&format!("/acme/{first}"), "/acme/not-connected")
            } else {
                r.clone()
            }
        })
        .collect();
    let path = dir.join("not-connected.csv");
    std::fs::write(&path, planted.join("\n") + "\n").unwrap();
    let bad = crate::bench_verify::verify_with(&path, &registry.http, "0s", &flags).await;
    let out = crate::bench_verify::text(&bad);
    assert!(!bad.status.success(), "{out}");
    assert!(
        out.contains(&format!(
            "{first} at `mqtt://127.0.0.1:{port}/acme/not-connected`: client `not-connected` of tenant `acme` is not connected on any of the 2 ingress shard(s) of --mqtt-api"
        )),
        "{out}"
    );
    drop(held);
    drop(broker);
}
