//! The lean ingress over real loopback sockets, spoken to in raw MQTT
//! bytes: connect and publish at every QoS in 3.1.1 and 5, shared tenant
//! credentials with per-client-id ACLs, refusals with their codes, wills on
//! lost connections and keep-alive timeouts, takeover order, and hostile
//! input that closes only its own connection; the client lookup of the
//! shard's metrics server.

use std::time::Duration;

use bytes::BytesMut;
use fieldlink_broker::auth::HashKind;
use fieldlink_broker::ingress::{Ingress, IngressHandle, shard};
use fieldlink_broker::{BrokerConfig, LinkFilter, Refusal};
use fieldlink_model::mqtt::{MqttEvent, MqttLink};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

mod common;

use common::*;

/// The fleet credential of tenant `acme`: one user for many devices.
const FLEET_USER: &str = "acme-fleet";

struct TestIngress {
    addr: std::net::SocketAddr,
    handle: IngressHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestIngress {
    async fn start(limits: &str) -> TestIngress {
        let listener = shard::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        Self::start_on(limits, listener).await
    }

    async fn start_on(limits: &str, listener: tokio::net::TcpListener) -> TestIngress {
        Self::start_full(limits, listener, None).await
    }

    async fn start_full(
        limits: &str,
        listener: tokio::net::TcpListener,
        metrics: Option<tokio::net::TcpListener>,
    ) -> TestIngress {
        let mut text = format!(
            "{limits}\n[[tenants]]\nname = \"acme\"\ndevice.publish = [\"%t/%c/#\"]\n[[tenants]]\nname = \"plant\"\n"
        );
        text.push_str(&user(
            "plant-dev-1",
            "plant",
            "device",
            HashKind::Sha256,
            &token("plant-dev-1"),
        ));
        text.push_str(&user(
            FLEET_USER,
            "acme",
            "device",
            HashKind::Sha256,
            &token(FLEET_USER),
        ));
        text.push_str("client_id_must_match = false\n");
        let settings = BrokerConfig::from_toml(&text).unwrap().validate().unwrap();
        let addr = listener.local_addr().unwrap();
        let ingress = Ingress::new(settings, 100);
        let handle = ingress.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            ingress
                .run(listener, metrics, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestIngress {
            addr,
            handle,
            stop: Some(stop),
            task,
        }
    }

    fn link(&self, tenant: &str) -> MqttLink {
        self.handle
            .link(LinkFilter {
                tenant: Some(tenant.to_owned()),
            })
            .unwrap()
    }

    fn refusals(&self, reason: Refusal) -> u64 {
        self.handle.metrics().refusals(reason)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("ingress stops in time")
            .unwrap();
    }
}

/// A device of the acme fleet credential, identified by its client id.
fn fleet_device(client_id: &str, v5: bool) -> ConnectOpts<'static> {
    let password: &'static str = Box::leak(token(FLEET_USER).into_boxed_str());
    ConnectOpts {
        v5,
        client_id: Box::leak(client_id.to_owned().into_boxed_str()),
        username: Some(FLEET_USER),
        password: Some(password),
        keep_alive: 30,
        will: None,
    }
}

/// The link's next event, which must be a publish.
async fn next_publish(link: &mut MqttLink) -> fieldlink_model::mqtt::MqttPublish {
    match next_event(link).await {
        MqttEvent::Publish(p) => p,
        other => panic!("expected Publish, got {other:?}"),
    }
}

async fn raw(addr: std::net::SocketAddr) -> Raw<TcpStream> {
    Raw {
        stream: TcpStream::connect(addr).await.unwrap(),
        buf: BytesMut::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_connect_publish_at_every_qos_and_leave_in_order() {
    let ingress = TestIngress::start("").await;
    let mut link = ingress.link("acme");
    for v5 in [false, true] {
        let id = if v5 { "dev-5" } else { "dev-4" };
        let mut c = raw(ingress.addr).await;
        assert_eq!(c.connect(&fleet_device(id, v5)).await, 0);
        match next_event(&mut link).await {
            MqttEvent::Connected(info) => {
                assert_eq!(&*info.client_id, id);
                assert_eq!(info.tenant.as_deref(), Some("acme"));
                assert_eq!(info.username.as_deref(), Some(FLEET_USER));
            }
            other => panic!("expected Connected, got {other:?}"),
        }
        let topic = format!("acme/{id}/telemetry");
        c.send(&publish(v5, &topic, b"{\"t\":1}", 0, 0, false))
            .await;
        c.send(&publish(v5, &topic, b"{\"t\":2}", 1, 7, false))
            .await;
        let puback = c.recv_kind(4).await;
        assert_eq!(&puback.body[..2], &[0, 7]);
        // QoS 2: delivered once even when resent before PUBREL.
        c.send(&publish(v5, &topic, b"{\"t\":3}", 2, 8, false))
            .await;
        c.send(&publish(v5, &topic, b"{\"t\":3}", 2, 8, true)).await;
        assert_eq!(&c.recv_kind(5).await.body[..2], &[0, 8]);
        assert_eq!(&c.recv_kind(5).await.body[..2], &[0, 8]);
        c.send(&frame(0x62, &[0, 8])).await;
        assert_eq!(&c.recv_kind(7).await.body[..2], &[0, 8]);
        for expected in [&b"{\"t\":1}"[..], b"{\"t\":2}", b"{\"t\":3}"] {
            match next_event(&mut link).await {
                MqttEvent::Publish(p) => {
                    assert_eq!(&*p.topic, topic);
                    assert_eq!(&p.payload[..], expected);
                    assert_eq!(p.client.as_ref().map(|c| &*c.client_id), Some(id));
                }
                other => panic!("expected Publish, got {other:?}"),
            }
        }
        // PINGREQ is answered; SUBSCRIBE is refused (nothing is routed here).
        c.send(&frame(0xC0, &[])).await;
        assert_eq!(c.recv_kind(13).await.body.len(), 0);
        c.send(&subscribe(v5, 9, &[("acme/dev/cmd", 1)])).await;
        let suback = c.recv_kind(9).await;
        assert_eq!(*suback.body.last().unwrap(), if v5 { 0x87 } else { 0x80 });
        c.send(&frame(0xE0, &[])).await;
        assert!(c.closed().await.is_empty());
        match next_event(&mut link).await {
            MqttEvent::Disconnected { client, clean, .. } => {
                assert_eq!(&*client.client_id, id);
                assert!(clean);
            }
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
    assert_eq!(
        ingress
            .handle
            .metrics()
            .messages_in
            .load(std::sync::atomic::Ordering::Relaxed),
        6
    );
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_sent_behind_the_connect_before_connack_are_answered_after_it() {
    let ingress = TestIngress::start("").await;
    let mut link = ingress.link("acme");
    for v5 in [false, true] {
        let id = if v5 { "early-5" } else { "early-4" };
        let mut c = raw(ingress.addr).await;
        // A device's registration in the CONNECT's own write, as MQTT lets
        // a client send before CONNACK.
        let mut burst = connect(&fleet_device(id, v5));
        burst.extend(publish(
            v5,
            &format!("acme/{id}/meta"),
            b"{\"m\":1}",
            1,
            1,
            false,
        ));
        burst.extend(publish(
            v5,
            &format!("acme/{id}/status"),
            b"online",
            1,
            2,
            false,
        ));
        c.send(&burst).await;
        let connack = c.recv().await.expect("a CONNACK");
        assert_eq!((connack.kind(), connack.body[1]), (2, 0), "{connack:?}");
        for pkid in [1u8, 2] {
            let puback = c.recv().await.expect("a PUBACK");
            assert_eq!((puback.kind(), &puback.body[..2]), (4, &[0, pkid][..]));
        }
        assert!(
            matches!(next_event(&mut link).await, MqttEvent::Connected(info) if &*info.client_id == id)
        );
        for payload in [&b"{\"m\":1}"[..], b"online"] {
            assert_eq!(&next_publish(&mut link).await.payload[..], payload);
        }
        c.send(&frame(0xE0, &[])).await;
        assert!(c.closed().await.is_empty());
        assert!(matches!(
            next_event(&mut link).await,
            MqttEvent::Disconnected { .. }
        ));
    }
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_or_a_broken_packet_behind_the_connect_still_gets_its_connack_first() {
    let ingress = TestIngress::start("").await;
    let mut link = ingress.link("acme");
    // CONNECT and DISCONNECT in one write: CONNACK, then a clean end.
    let mut quick = raw(ingress.addr).await;
    let mut burst = connect(&fleet_device("quick", false));
    burst.extend(frame(0xE0, &[]));
    quick.send(&burst).await;
    let got = quick.closed().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].kind(), got[0].body[1]), (2, 0));
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Disconnected { clean: true, .. }
    ));
    // CONNECT, a good QoS 1 publish, then a publish with a broken topic
    // length: CONNACK and the good one's PUBACK, then the close (MQTT 5
    // says why: malformed, 0x81).
    let mut broken = raw(ingress.addr).await;
    let mut burst = connect(&fleet_device("broken", true));
    burst.extend(publish(true, "acme/broken/telemetry", b"ok", 1, 3, false));
    burst.extend(frame(0x30, &[0xff, 0xff, b'a']));
    broken.send(&burst).await;
    let got = broken.closed().await;
    let kinds: Vec<u8> = got.iter().map(|g| g.kind()).collect();
    assert_eq!(kinds, [2, 4, 14], "{got:?}");
    assert_eq!(&got[1].body[..2], &[0, 3]);
    assert_eq!(got[2].body.first(), Some(&0x81));
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    assert_eq!(&next_publish(&mut link).await.payload[..], b"ok");
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Disconnected { clean: false, .. }
    ));
    assert_eq!(ingress.refusals(Refusal::Malformed), 1);
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_credential_publishes_only_under_its_own_client_id() {
    let ingress = TestIngress::start("").await;
    let mut link = ingress.link("acme");
    // MQTT 5: a negative PUBACK, the connection stays.
    let mut c = raw(ingress.addr).await;
    assert_eq!(c.connect(&fleet_device("dev-a", true)).await, 0);
    let _connected = next_event(&mut link).await;
    c.send(&publish(true, "acme/dev-b/telemetry", b"1", 1, 3, false))
        .await;
    let nack = c.recv_kind(4).await;
    assert_eq!(nack.body, [0, 3, 0x87]);
    c.send(&publish(true, "acme/dev-a/telemetry", b"2", 1, 4, false))
        .await;
    assert_eq!(c.recv_kind(4).await.body, [0, 4]);
    match next_event(&mut link).await {
        MqttEvent::Publish(p) => assert_eq!(&*p.topic, "acme/dev-a/telemetry"),
        other => panic!("only the allowed publish arrives, got {other:?}"),
    }
    // 3.1.1 has no negative PUBACK: the connection is closed.
    let mut c4 = raw(ingress.addr).await;
    assert_eq!(c4.connect(&fleet_device("dev-c", false)).await, 0);
    c4.send(&publish(false, "plant/dev-c/telemetry", b"1", 0, 0, false))
        .await;
    c4.closed().await;
    assert_eq!(ingress.refusals(Refusal::NotAuthorizedPublish), 2);
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_bad_wills_are_refused_with_their_codes() {
    let ingress = TestIngress::start("").await;
    for (v5, code) in [(false, 4), (true, 0x86)] {
        let mut c = raw(ingress.addr).await;
        let mut opts = fleet_device("dev-x", v5);
        opts.password = Some("not the token");
        assert_eq!(c.connect(&opts).await, code);
        c.closed().await;
        let mut c = raw(ingress.addr).await;
        let mut opts = fleet_device("dev-x", v5);
        opts.username = Some("nobody");
        assert_eq!(c.connect(&opts).await, code);
    }
    let mut c = raw(ingress.addr).await;
    let mut opts = fleet_device("dev-x", true);
    opts.will = Some(("plant/dev-x/status", "offline"));
    assert_eq!(c.connect(&opts).await, 0x87);
    // A device user whose client id must be its user name.
    let mut c = raw(ingress.addr).await;
    let password = token("plant-dev-1");
    let opts = ConnectOpts {
        v5: false,
        client_id: "someone-else",
        username: Some("plant-dev-1"),
        password: Some(&password),
        keep_alive: 30,
        will: None,
    };
    assert_eq!(c.connect(&opts).await, 2);
    assert_eq!(ingress.refusals(Refusal::BadCredentials), 4);
    assert_eq!(ingress.refusals(Refusal::NotAuthorizedWill), 1);
    assert_eq!(ingress.refusals(Refusal::ClientIdRejected), 1);
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_packets_close_only_their_connection() {
    let ingress = TestIngress::start("[limits]\nmax_packet_size = 1024\n").await;
    let mut link = ingress.link("acme");
    let mut good = raw(ingress.addr).await;
    assert_eq!(good.connect(&fleet_device("dev-good", true)).await, 0);
    let _ = next_event(&mut link).await;

    // Garbage instead of CONNECT, and a CONNECT declaring 2 MB.
    let mut garbage = raw(ingress.addr).await;
    garbage.send(b"GET / HTTP/1.1\r\n\r\n").await;
    garbage.closed().await;
    let mut huge = raw(ingress.addr).await;
    huge.send(&[0x10, 0x80, 0x80, 0x80, 0x01]).await;
    huge.closed().await;

    // Connected, then a publish declaring more than the limit: MQTT 5
    // says why (0x95) before closing.
    let mut big = raw(ingress.addr).await;
    assert_eq!(big.connect(&fleet_device("dev-big", true)).await, 0);
    let _ = next_event(&mut link).await;
    big.send(&[0x30, 0xff, 0xff, 0x03]).await;
    let before = big.closed().await;
    assert!(
        before.iter().any(|g| g.kind() == 14 && g.body == [0x95]),
        "{before:?}"
    );
    // A publish with a broken topic length.
    let mut broken = raw(ingress.addr).await;
    assert_eq!(broken.connect(&fleet_device("dev-broken", false)).await, 0);
    broken.send(&frame(0x30, &[0xff, 0xff, b'a'])).await;
    broken.closed().await;

    // The first device never noticed.
    good.send(&publish(
        true,
        "acme/dev-good/telemetry",
        b"still here",
        1,
        1,
        false,
    ))
    .await;
    assert_eq!(good.recv_kind(4).await.body, [0, 1]);
    let mut kinds = Vec::new();
    loop {
        match next_event(&mut link).await {
            MqttEvent::Publish(p) => {
                assert_eq!(&p.payload[..], b"still here");
                break;
            }
            MqttEvent::Disconnected { client, clean, .. } => {
                assert!(!clean);
                kinds.push(client.client_id.to_string());
            }
            MqttEvent::Connected(_) => {}
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["dev-big", "dev-broken"]);
    assert_eq!(ingress.refusals(Refusal::TooLarge), 2);
    assert_eq!(ingress.refusals(Refusal::Malformed), 1);
    assert!(
        ingress.refusals(Refusal::ProtocolError) + ingress.refusals(Refusal::UnsupportedProtocol)
            >= 1
    );
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_one_and_a_half_keep_alives_and_its_will_published() {
    let ingress = TestIngress::start("").await;
    let mut link = ingress.link("acme");
    let mut c = raw(ingress.addr).await;
    let mut opts = fleet_device("dev-quiet", false);
    opts.keep_alive = 1;
    opts.will = Some(("acme/dev-quiet/status", "offline"));
    let started = tokio::time::Instant::now();
    assert_eq!(c.connect(&opts).await, 0);
    let _ = next_event(&mut link).await;
    c.closed().await;
    let silent = started.elapsed();
    assert!(
        silent >= Duration::from_millis(1400),
        "dropped after {silent:?}, before 1.5 s"
    );
    match next_event(&mut link).await {
        MqttEvent::Publish(p) => {
            assert_eq!(&*p.topic, "acme/dev-quiet/status");
            assert_eq!(&p.payload[..], b"offline");
        }
        other => panic!("expected the will, got {other:?}"),
    }
    match next_event(&mut link).await {
        MqttEvent::Disconnected { clean, reason, .. } => {
            assert!(!clean);
            assert_eq!(reason, "keep-alive timeout");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(ingress.refusals(Refusal::KeepAliveTimeout), 1);
    // A lost connection fires the will too; DISCONNECT does not.
    let mut lost = raw(ingress.addr).await;
    let mut opts = fleet_device("dev-lost", true);
    opts.will = Some(("acme/dev-lost/status", "offline"));
    assert_eq!(lost.connect(&opts).await, 0);
    let _ = next_event(&mut link).await;
    drop(lost);
    match next_event(&mut link).await {
        MqttEvent::Publish(p) => assert_eq!(&*p.topic, "acme/dev-lost/status"),
        other => panic!("expected the will, got {other:?}"),
    }
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_talking_outlives_its_first_deadlines_and_is_dropped_once_silent() {
    let ingress = TestIngress::start("").await;
    let mut link = ingress.link("acme");
    let mut c = raw(ingress.addr).await;
    let mut opts = fleet_device("dev-chatty", false);
    opts.keep_alive = 1;
    assert_eq!(c.connect(&opts).await, 0);
    let _ = next_event(&mut link).await;
    // A PINGREQ every 0.5 s for 4 s: past several 1.5 s deadlines, each
    // looked at again after the client spoke.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send(&frame(0xC0, &[])).await;
        assert_eq!(c.recv_kind(13).await.body, Vec::<u8>::new(), "PINGRESP");
    }
    assert_eq!(ingress.refusals(Refusal::KeepAliveTimeout), 0);
    let quiet = tokio::time::Instant::now();
    c.closed().await;
    let silent = quiet.elapsed();
    assert!(
        silent >= Duration::from_millis(1400) && silent < Duration::from_secs(5),
        "dropped {silent:?} after its last PINGREQ"
    );
    assert_eq!(ingress.refusals(Refusal::KeepAliveTimeout), 1);
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_over_in_order() {
    let ingress = TestIngress::start("").await;
    let mut link = ingress.link("acme");
    let mut first = raw(ingress.addr).await;
    assert_eq!(first.connect(&fleet_device("dev-t", true)).await, 0);
    let _ = next_event(&mut link).await;
    let mut second = raw(ingress.addr).await;
    assert_eq!(second.connect(&fleet_device("dev-t", true)).await, 0);
    let before = first.closed().await;
    assert!(
        before.iter().any(|g| g.kind() == 14 && g.body == [0x8E]),
        "{before:?}"
    );
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Disconnected { .. }
    ));
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    // A link opened now is told who is connected.
    let mut late = ingress.link("acme");
    match next_event(&mut late).await {
        MqttEvent::Connected(info) => assert_eq!(&*info.client_id, "dev-t"),
        other => panic!("expected the replayed Connected, got {other:?}"),
    }
    ingress.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_on_one_port_each_count_their_own_clients() {
    let first = shard::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.local_addr().unwrap();
    let second = shard::bind_shared(addr).unwrap();
    let a = TestIngress::start_on("", first).await;
    let b = TestIngress::start_on("", second).await;
    let mut clients = Vec::new();
    for n in 0..40 {
        // Different source addresses hash to different shards.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(
                format!("127.0.{}.{}:0", n / 200, 1 + n % 200)
                    .parse()
                    .unwrap(),
            )
            .unwrap();
        let mut c = Raw {
            stream: socket.connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        };
        assert_eq!(
            c.connect(&fleet_device(&format!("dev-{n}"), false)).await,
            0
        );
        clients.push(c);
    }
    let count = |i: &TestIngress| {
        i.handle
            .metrics()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    eventually("every client counted once", || count(&a) + count(&b) == 40).await;
    assert!(
        count(&a) > 0 && count(&b) > 0,
        "both shards took clients: {} and {}",
        count(&a),
        count(&b)
    );
    drop(clients);
    a.stop().await;
    b.stop().await;
}

/// `GET path` on `addr` over HTTP/1.1: (status, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut text))
        .await
        .expect("an answer in time")
        .unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_server_looks_clients_up_in_the_session_table() {
    let listener = shard::bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = metrics.local_addr().unwrap();
    let ingress = TestIngress::start_full("", listener, Some(metrics)).await;
    let mut link = ingress.link("acme");
    let mut c = raw(ingress.addr).await;
    let before = fieldlink_model::now_unix_nanos() / 1_000_000;
    assert_eq!(c.connect(&fleet_device("dev-look", false)).await, 0);
    let _ = next_event(&mut link).await;

    let (status, body) = http_get(api, "/clients/acme/dev-look").await;
    assert_eq!(status, 200, "{body}");
    let local = c.stream.local_addr().unwrap();
    assert!(
        body.starts_with(&format!(
            "{{\"connected\":true,\"peer\":\"{local}\",\"connected_at_ms\":"
        )),
        "{body}"
    );
    let at: i64 = body
        .rsplit(':')
        .next()
        .and_then(|t| t.trim_end_matches('}').parse().ok())
        .unwrap_or_else(|| panic!("no connected_at_ms: {body}"));
    assert!(at >= before, "connected at {at}, before {before}");

    // Another client id, another tenant: not here.
    for path in ["/clients/acme/dev-other", "/clients/plant/dev-look"] {
        let (status, body) = http_get(api, path).await;
        assert_eq!(
            (status, body.as_str()),
            (404, r#"{"connected":false}"#),
            "{path}"
        );
    }
    // The metrics are still served beside it.
    let (status, body) = http_get(api, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("fieldlink_broker_"), "{body}");

    // Gone once it disconnects.
    c.send(&frame(0xE0, &[])).await;
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Disconnected { .. }
    ));
    let (status, _) = http_get(api, "/clients/acme/dev-look").await;
    assert_eq!(status, 404);
    ingress.stop().await;
}
