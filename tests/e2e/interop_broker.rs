//! The broker against MQTT clients nobody here wrote: mosquitto_pub,
//! mosquitto_sub, mosquitto_passwd (mosquitto) and paho-mqtt (Python).

use std::process::Stdio;
use std::time::Duration;

use fieldlink_broker::{LinkFilter, Refusal};
use fieldlink_model::mqtt::{MqttEvent, MqttLink};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::broker::{TestBroker, token, user};
use crate::support::peers::{mosquitto_passwd, mosquitto_pub, mosquitto_sub, python_with_paho};

const WAIT: Duration = Duration::from_secs(20);

async fn next_event(link: &mut MqttLink) -> MqttEvent {
    tokio::time::timeout(WAIT, link.events.recv())
        .await
        .expect("an event in time")
        .expect("the link is open")
}

/// `mosquitto_pub` as `user` (its token, client id = user name).
fn publish(port: &str, user: &str, topic: &str, message: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-u",
        user,
        "-i",
        user,
        "-q",
        "1",
    ])
    .args(["-P", &token(user), "-t", topic, "-m", message])
    .args(extra)
    .kill_on_drop(true);
    cmd
}

/// A running `mosquitto_sub -v`, read line by line.
struct Sub {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Sub {
    fn start(port: &str, user: &str, client_id: &str, filters: &[&str]) -> Sub {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-u",
            user,
            "-i",
            client_id,
            "-v",
        ])
        .args(["-P", &token(user), "-q", "1"]);
        for f in filters {
            cmd.args(["-t", f]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start mosquitto_sub");
        let stdout = child.stdout.take().expect("stdout");
        Sub {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("mosquitto_sub still running")
    }

    /// Publishes probes as `probe_user` to `probe_topic` until one arrives:
    /// the subscription is then active.
    async fn wait_ready(&mut self, port: &str, probe_user: &str, probe_topic: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscription never became active"
            );
            let status = publish(port, probe_user, probe_topic, "probe", &[])
                .status()
                .await
                .expect("run mosquitto_pub");
            assert!(status.success());
            if let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(300), self.lines.next_line()).await
            {
                assert_eq!(line, format!("{probe_topic} probe"));
                // Later probes may still be on their way: drain them.
                while let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_millis(200), self.lines.next_line()).await
                {
                    assert_eq!(line, format!("{probe_topic} probe"));
                }
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_json_arrives_on_the_link_with_client_id_tenant_topic_and_payload() {
    if mosquitto_pub().is_none() {
        return;
    }
    let broker = TestBroker::start("").await;
    let port = broker.port();
    let mut acme = broker
        .handle
        .link(LinkFilter {
            tenant: Some("acme".into()),
        })
        .unwrap();
    let mut every = broker.handle.link(LinkFilter::default()).unwrap();
    let json = r#"{"temperature":21.5,"unit":"C","ok":true}"#;
    let before = fieldlink_model::now_unix_nanos();
    let status = publish(&port, "acme-dev-1", "acme/acme-dev-1/telemetry", json, &[])
        .status()
        .await
        .unwrap();
    assert!(status.success());

    let MqttEvent::Connected(info) = next_event(&mut acme).await else {
        panic!("expected Connected first")
    };
    assert_eq!(&*info.client_id, "acme-dev-1");
    assert_eq!(info.tenant.as_deref(), Some("acme"));
    assert_eq!(info.username.as_deref(), Some("acme-dev-1"));
    let MqttEvent::Publish(p) = next_event(&mut acme).await else {
        panic!("expected the publish")
    };
    let client = p.client.as_ref().expect("the publisher is known");
    assert_eq!(&*client.client_id, "acme-dev-1");
    assert_eq!(client.tenant.as_deref(), Some("acme"));
    assert_eq!(&*p.topic, "acme/acme-dev-1/telemetry");
    assert_eq!(&p.payload[..], json.as_bytes());
    assert_eq!(p.qos, 1);
    assert!(
        p.received_unix_nano >= before,
        "receive time stamped by the broker"
    );
    let MqttEvent::Disconnected { client, clean, .. } = next_event(&mut acme).await else {
        panic!("expected Disconnected")
    };
    assert_eq!(&*client.client_id, "acme-dev-1");
    assert!(clean, "mosquitto_pub sends DISCONNECT");

    // The link of every tenant saw the same three events.
    for _ in 0..3 {
        let event = next_event(&mut every).await;
        if let MqttEvent::Publish(q) = &event {
            assert_eq!(q.payload, p.payload);
        }
    }

    // Another tenant's client does not reach the acme link: plant first,
    // then acme-dev-2; the next acme event is acme-dev-2's.
    let status = publish(
        &port,
        "plant-dev-1",
        "plant/plant-dev-1/telemetry",
        "{}",
        &[],
    )
    .status()
    .await
    .unwrap();
    assert!(status.success());
    let status = publish(&port, "acme-dev-2", "acme/acme-dev-2/telemetry", "{}", &[])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let MqttEvent::Connected(info) = next_event(&mut acme).await else {
        panic!("expected Connected")
    };
    assert_eq!(&*info.client_id, "acme-dev-2");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_client_with_a_wrong_password_is_refused() {
    let Some(python) = python_with_paho() else {
        return;
    };
    let broker = TestBroker::start("").await;
    let port = broker.port();
    let run = |client: &str, password: String, version: &str| {
        let mut cmd = Command::new(&python);
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/paho_connect.py"
        ))
        .args(["127.0.0.1", &port, client, client, &password, version])
        .kill_on_drop(true);
        cmd
    };
    for version in ["4", "5"] {
        let good = run("acme-dev-1", token("acme-dev-1"), version)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&good.stdout);
        assert!(
            text.contains("connack 0"),
            "v{version} right password: {text}"
        );
        let bad = run("acme-dev-1", "not-the-token".into(), version)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bad.stdout);
        // 3.1.1 code 4 and 5's 0x86 both read as 134 in paho 2.
        assert!(
            text.contains("connack 134"),
            "v{version} wrong password: {text}"
        );
    }
    let unknown = run("nobody", token("nobody"), "5").output().await.unwrap();
    assert!(String::from_utf8_lossy(&unknown.stdout).contains("connack 134"));
    // Counted (paho may retry once before it sees its own disconnect).
    assert!(broker.handle.metrics().refusals(Refusal::BadCredentials) >= 3);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_outside_the_tenant_is_refused_and_not_delivered_to_a_subscriber() {
    if mosquitto_pub().is_none() || mosquitto_sub().is_none() {
        return;
    }
    let broker = TestBroker::start("").await;
    let port = broker.port();
    let mut plant_link = broker
        .handle
        .link(LinkFilter {
            tenant: Some("plant".into()),
        })
        .unwrap();
    let mut sub = Sub::start(&port, "plant-gw", "plant-gw-sub", &["plant/#"]);
    sub.wait_ready(&port, "plant-dev-1", "plant/plant-dev-1/probe")
        .await;

    // MQTT 5: PUBACK 0x87, the client stays connected.
    let v5 = publish(
        &port,
        "acme-dev-1",
        "plant/plant-dev-1/telemetry",
        "forged",
        &["-V", "mqttv5"],
    )
    .output()
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&v5.stderr);
    assert!(stderr.contains("Not authorized"), "{stderr}");
    // MQTT 3.1.1: no negative PUBACK, the connection is closed.
    let v4 = publish(
        &port,
        "acme-dev-1",
        "plant/plant-dev-1/telemetry",
        "forged",
        &[],
    )
    .output()
    .await
    .unwrap();
    assert!(!v4.status.success(), "3.1.1 publisher is disconnected");
    // Its own id is enforced too: another device's subtree in its tenant.
    let other = publish(
        &port,
        "acme-dev-1",
        "acme/acme-dev-2/telemetry",
        "forged",
        &["-V", "mqttv5"],
    )
    .output()
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&other.stderr).contains("Not authorized"));

    let status = publish(
        &port,
        "plant-dev-1",
        "plant/plant-dev-1/telemetry",
        "real",
        &[],
    )
    .status()
    .await
    .unwrap();
    assert!(status.success());
    assert_eq!(
        sub.line().await,
        "plant/plant-dev-1/telemetry real",
        "the forged ones never came"
    );
    assert_eq!(
        broker
            .handle
            .metrics()
            .refusals(Refusal::NotAuthorizedPublish),
        3
    );
    // The plant link saw plant-gw-sub, the probes and the real message, no forgery.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "real message never on the link"
        );
        if let MqttEvent::Publish(p) = next_event(&mut plant_link).await {
            assert_ne!(&p.payload[..], b"forged");
            if &p.payload[..] == b"real" {
                break;
            }
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_of_one_tenant_does_not_see_another_tenants_messages() {
    if mosquitto_pub().is_none() || mosquitto_sub().is_none() {
        return;
    }
    let broker = TestBroker::start("").await;
    let port = broker.port();
    // plant/# is refused for an acme service; acme/# is granted.
    let mut sub = Sub::start(&port, "acme-gw", "acme-gw-sub", &["acme/#", "plant/#"]);
    sub.wait_ready(&port, "acme-dev-1", "acme/acme-dev-1/probe")
        .await;
    let status = publish(
        &port,
        "plant-dev-1",
        "plant/plant-dev-1/telemetry",
        "plant-secret",
        &[],
    )
    .status()
    .await
    .unwrap();
    assert!(status.success());
    let status = publish(
        &port,
        "acme-dev-1",
        "acme/acme-dev-1/telemetry",
        "acme-after",
        &[],
    )
    .status()
    .await
    .unwrap();
    assert!(status.success());
    // plant's message went into the router first; had it been visible, it
    // would be the next line.
    assert_eq!(sub.line().await, "acme/acme-dev-1/telemetry acme-after");

    // `#` and other tenants' filters are refused outright.
    for (user, filter) in [
        ("acme-gw", "#"),
        ("acme-dev-1", "#"),
        ("acme-dev-1", "+/plant-dev-1/#"),
    ] {
        let out = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                user,
                "-P",
                &token(user),
                "-i",
                user,
            ])
            .args(["-t", filter, "-W", "5"])
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("denied"), "{user} {filter}: {stderr}");
    }
    assert!(
        broker
            .handle
            .metrics()
            .refusals(Refusal::NotAuthorizedSubscribe)
            >= 4
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mosquitto_passwd_hash_authenticates() {
    if mosquitto_pub().is_none() || mosquitto_passwd().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&file)
        .args(["acme-dev-9", "chosen by a person"])
        .status()
        .unwrap();
    assert!(status.success());
    let line = std::fs::read_to_string(&file).unwrap();
    let hash = line
        .trim()
        .strip_prefix("acme-dev-9:")
        .expect("user:hash line");
    assert!(hash.starts_with("$7$"), "{hash}");
    let extra = format!(
        "[[users]]\nusername = \"acme-dev-9\"\npassword_hash = \"{hash}\"\ntenant = \"acme\"\nrole = \"device\"\n"
    );
    let broker = TestBroker::start(&extra).await;
    let port = broker.port();
    let mut link = broker
        .handle
        .link(LinkFilter {
            tenant: Some("acme".into()),
        })
        .unwrap();
    let run = |password: &str| {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "acme-dev-9",
            "-i",
            "acme-dev-9",
        ])
        .args(["-P", password, "-t", "acme/acme-dev-9/t", "-m", "hi"])
        .kill_on_drop(true);
        cmd
    };
    assert!(!run("wrong").status().await.unwrap().success());
    assert!(run("chosen by a person").status().await.unwrap().success());
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    let MqttEvent::Publish(p) = next_event(&mut link).await else {
        panic!("expected the publish")
    };
    assert_eq!(&p.payload[..], b"hi");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_over_tls_with_fieldlink_certs_against_the_broker_process() {
    if mosquitto_pub().is_none() || mosquitto_sub().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["certs", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("broker.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n[[tenants]]\nname = \"acme\"\n{}{}",
        certs.join("server.pem").display(),
        certs.join("server.key").display(),
        user("acme-dev-1", "acme", "device"),
        user("acme-gw", "acme", "service"),
    );
    std::fs::write(&config, text).unwrap();
    let mut broker = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["broker", "--config"])
        .arg(&config)
        .env("FIELDLINK_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(broker.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let tls = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tls="))
        .unwrap_or_else(|| panic!("no tls= in `{line}`"));
    let port = tls.rsplit(':').next().unwrap().to_owned();
    let ca = certs.join("ca.pem");
    let mut sub = Command::new("mosquitto_sub");
    sub.args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&ca)
        .args([
            "-u",
            "acme-gw",
            "-P",
            &token("acme-gw"),
            "-i",
            "acme-gw",
            "-t",
            "acme/#",
            "-v",
            "-C",
            "1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut sub = sub.spawn().unwrap();
    let mut sub_lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    // Publish until the subscriber prints it (its subscription races us).
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived over TLS"
        );
        let status = Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port, "--cafile"])
            .arg(&ca)
            .args([
                "-u",
                "acme-dev-1",
                "-P",
                &token("acme-dev-1"),
                "-i",
                "acme-dev-1",
            ])
            .args([
                "-t",
                "acme/acme-dev-1/telemetry",
                "-m",
                r#"{"tls":true}"#,
                "-q",
                "1",
            ])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "mosquitto_pub over TLS");
        if let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(300), sub_lines.next_line()).await
        {
            break line;
        }
    };
    assert_eq!(got, r#"acme/acme-dev-1/telemetry {"tls":true}"#);
    // Without the CA the server certificate is not trusted.
    let untrusted = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &port,
            "--capath",
            "/nonexistent-dir",
        ])
        .args([
            "-u",
            "acme-dev-1",
            "-P",
            &token("acme-dev-1"),
            "-t",
            "acme/acme-dev-1/t",
            "-m",
            "x",
        ])
        .output()
        .await
        .unwrap();
    assert!(!untrusted.status.success());
    let pid = broker.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(WAIT, broker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}
