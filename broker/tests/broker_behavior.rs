//! The broker over real loopback sockets, spoken to in raw MQTT bytes:
//! QoS 2, wills, takeover, MQTT 5 reason codes, links with backpressure,
//! TLS with a rustls client, and hostile input (silence, huge lengths,
//! garbage, slow consumers, password floods, connection floods).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fieldlink_broker::auth::HashKind;
use fieldlink_broker::certs::TestPki;
use fieldlink_broker::{Broker, BrokerConfig, BrokerHandle, LinkFilter, Listeners, Refusal};
use fieldlink_model::mqtt::{MqttEvent, MqttLink, OutgoingPublish};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

mod common;

use common::*;

struct TestBroker {
    addr: std::net::SocketAddr,
    tls_addr: Option<std::net::SocketAddr>,
    handle: BrokerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// `head`: TOML before the tenants (top-level keys, [limits], [tls]).
    async fn start(head: &str) -> TestBroker {
        let mut text =
            format!("{head}\n[[tenants]]\nname = \"acme\"\n[[tenants]]\nname = \"plant\"\n");
        for (name, tenant, role) in [
            ("acme-dev-1", "acme", "device"),
            ("acme-dev-2", "acme", "device"),
            ("plant-dev-1", "plant", "device"),
            ("acme-gw", "acme", "service"),
        ] {
            text.push_str(&user(name, tenant, role, HashKind::Sha256, &token(name)));
        }
        text.push_str(&user(
            "person",
            "acme",
            "service",
            HashKind::Pbkdf2,
            "a password a person chose",
        ));
        let settings = BrokerConfig::from_toml(&text).unwrap().validate().unwrap();
        let mqtt = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = mqtt.local_addr().unwrap();
        let tls = match settings.tls {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let tls_addr = tls.as_ref().map(|l| l.local_addr().unwrap());
        let broker = Broker::new(settings);
        let handle = broker.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let listeners = Listeners {
                mqtt,
                tls,
                metrics: None,
            };
            broker
                .run(listeners, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestBroker {
            addr,
            tls_addr,
            handle,
            stop: Some(stop),
            task,
        }
    }

    fn link(&self, tenant: Option<&str>) -> MqttLink {
        self.handle
            .link(LinkFilter {
                tenant: tenant.map(str::to_owned),
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
            .expect("broker stops in time")
            .unwrap();
    }
}

// ---- behaviour -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_is_delivered_exactly_once_even_when_resent() {
    let broker = TestBroker::start("").await;
    let mut link = broker.link(Some("acme"));
    let mut c = Raw::tcp(broker.addr).await;
    assert_eq!(c.connect(&device("acme-dev-1", false)).await, 0);
    let p = publish(false, "acme/acme-dev-1/t", b"once", 2, 7, false);
    c.send(&p).await;
    assert_eq!(c.recv().await.unwrap().kind(), 5, "PUBREC");
    // Resent before PUBREL (DUP): acknowledged, not delivered again.
    c.send(&publish(false, "acme/acme-dev-1/t", b"once", 2, 7, true))
        .await;
    assert_eq!(c.recv().await.unwrap().kind(), 5, "PUBREC again");
    c.send(&frame(0x62, &7u16.to_be_bytes())).await; // PUBREL
    let comp = c.recv().await.unwrap();
    assert_eq!((comp.kind(), &comp.body[..2]), (7, &7u16.to_be_bytes()[..]));
    // The same id after PUBCOMP is a new message.
    c.send(&publish(false, "acme/acme-dev-1/t", b"twice", 2, 7, false))
        .await;
    assert_eq!(c.recv().await.unwrap().kind(), 5);
    c.send(&frame(0xe0, &[])).await;

    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    let MqttEvent::Publish(first) = next_event(&mut link).await else {
        panic!("publish")
    };
    assert_eq!((&first.payload[..], first.qos), (&b"once"[..], 2));
    let MqttEvent::Publish(second) = next_event(&mut link).await else {
        panic!("the resend came through twice")
    };
    assert_eq!(&second.payload[..], b"twice");
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Disconnected { clean: true, .. }
    ));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_is_published_on_a_lost_connection_and_not_after_disconnect() {
    let broker = TestBroker::start("").await;
    let mut link = broker.link(Some("acme"));
    let mut watcher = Raw::tcp(broker.addr).await;
    assert_eq!(watcher.connect(&device("acme-gw", false)).await, 0);
    watcher
        .send(&subscribe(false, 1, &[("acme/+/status", 0)]))
        .await;
    assert_eq!(watcher.recv().await.unwrap().kind(), 9, "SUBACK");
    assert!(
        matches!(next_event(&mut link).await, MqttEvent::Connected(_)),
        "the watcher"
    );

    // A will outside the ACL refuses the CONNECT.
    let mut forged = Raw::tcp(broker.addr).await;
    let mut o = device("acme-dev-2", false);
    o.will = Some(("acme/acme-dev-1/status", "forged"));
    assert_eq!(forged.connect(&o).await, 5, "not authorized");
    assert_eq!(broker.refusals(Refusal::NotAuthorizedWill), 1);

    for (clean, id) in [(true, "acme-dev-1"), (false, "acme-dev-1")] {
        let mut c = Raw::tcp(broker.addr).await;
        let mut o = device(id, false);
        o.will = Some(("acme/acme-dev-1/status", "offline"));
        assert_eq!(c.connect(&o).await, 0);
        assert!(matches!(
            next_event(&mut link).await,
            MqttEvent::Connected(_)
        ));
        if clean {
            c.send(&frame(0xe0, &[])).await;
            assert!(c.closed().await.is_empty());
        } else {
            drop(c); // the network goes away
        }
        if !clean {
            let MqttEvent::Publish(will) = next_event(&mut link).await else {
                panic!("expected the will first")
            };
            assert_eq!(
                (&*will.topic, &will.payload[..]),
                ("acme/acme-dev-1/status", &b"offline"[..])
            );
            let got = watcher.recv_kind(3).await;
            assert!(got.body.ends_with(b"offline"), "{got:?}");
        }
        let MqttEvent::Disconnected {
            clean: was_clean, ..
        } = next_event(&mut link).await
        else {
            panic!("expected Disconnected")
        };
        assert_eq!(was_clean, clean);
    }
    assert_eq!(
        broker
            .handle
            .metrics()
            .wills
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_over_in_order() {
    let broker = TestBroker::start("").await;
    let mut link = broker.link(Some("acme"));
    let mut first = Raw::tcp(broker.addr).await;
    assert_eq!(first.connect(&device("acme-dev-1", true)).await, 0);
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    let mut second = Raw::tcp(broker.addr).await;
    assert_eq!(second.connect(&device("acme-dev-1", true)).await, 0);
    // The first is told (MQTT 5: DISCONNECT 0x8E) and closed.
    let last = first.closed().await;
    assert!(
        last.iter()
            .any(|g| g.kind() == 14 && g.body.first() == Some(&0x8e)),
        "{last:?}"
    );
    let MqttEvent::Disconnected { reason, clean, .. } = next_event(&mut link).await else {
        panic!("the first's Disconnected comes before the second's Connected")
    };
    assert_eq!((reason.as_str(), clean), ("taken over", false));
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    // The second works.
    second
        .send(&publish(true, "acme/acme-dev-1/t", b"x", 1, 1, false))
        .await;
    assert_eq!(second.recv().await.unwrap().kind(), 4);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_refusals_carry_their_reason_codes() {
    let broker = TestBroker::start("").await;
    let mut bad = Raw::tcp(broker.addr).await;
    let mut o = device("acme-dev-1", true);
    o.password = Some("wrong");
    assert_eq!(bad.connect(&o).await, 0x86);
    // A device's client id must be its user name.
    let mut other = Raw::tcp(broker.addr).await;
    let mut o = device("acme-dev-1", true);
    o.client_id = "acme-dev-2";
    assert_eq!(other.connect(&o).await, 0x85);
    assert_eq!(broker.refusals(Refusal::ClientIdRejected), 1);
    // An empty client id becomes the user name (assigned).
    let mut empty = Raw::tcp(broker.addr).await;
    let mut o = device("acme-dev-2", true);
    o.client_id = "";
    assert_eq!(empty.connect(&o).await, 0);

    let mut c = Raw::tcp(broker.addr).await;
    assert_eq!(c.connect(&device("acme-dev-1", true)).await, 0);
    c.send(&publish(true, "plant/plant-dev-1/t", b"x", 1, 3, false))
        .await;
    let ack = c.recv().await.unwrap();
    assert_eq!(
        (ack.kind(), ack.body.get(2)),
        (4, Some(&0x87)),
        "PUBACK not authorized"
    );
    c.send(&publish(true, "plant/plant-dev-1/t", b"x", 2, 4, false))
        .await;
    let rec = c.recv().await.unwrap();
    assert_eq!(
        (rec.kind(), rec.body.get(2)),
        (5, Some(&0x87)),
        "PUBREC not authorized"
    );
    c.send(&subscribe(
        true,
        5,
        &[("#", 1), ("acme/acme-dev-1/#", 2), ("a/#/b", 0)],
    ))
    .await;
    let suback = c.recv().await.unwrap();
    assert_eq!(suback.kind(), 9);
    // pkid, properties length 0, then one code per filter (QoS capped at 1).
    assert_eq!(&suback.body[..], &[0, 5, 0, 0x87, 0x01, 0x8f]);
    // Still connected: a ping is answered.
    c.send(&frame(0xc0, &[])).await;
    assert_eq!(c.recv().await.unwrap().kind(), 13);
    assert_eq!(broker.refusals(Refusal::NotAuthorizedPublish), 2);
    assert_eq!(broker.refusals(Refusal::NotAuthorizedSubscribe), 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_link_makes_the_publisher_wait_and_loses_nothing() {
    let broker = TestBroker::start("[limits]\nlink_capacity = 2\n").await;
    let mut link = broker.link(Some("acme"));
    let mut c = Raw::tcp(broker.addr).await;
    assert_eq!(c.connect(&device("acme-dev-1", false)).await, 0);
    const N: u16 = 20;
    let mut all = Vec::new();
    for i in 1..=N {
        all.extend(publish(
            false,
            "acme/acme-dev-1/t",
            format!("m{i}").as_bytes(),
            1,
            i,
            false,
        ));
    }
    c.send(&all).await;
    let metrics = broker.handle.metrics();
    eventually("the publisher to wait on the full link", || {
        metrics
            .link_waits
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    })
    .await;
    // Not every PUBACK can have come: the link holds 2 events.
    let mut acks = 0;
    while let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(300), c.recv()).await {
        assert_eq!(got.kind(), 4);
        acks += 1;
    }
    assert!(acks < N, "{acks} PUBACKs while the link was full");
    // Reading the link releases everything, in order, none dropped.
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    for i in 1..=N {
        let MqttEvent::Publish(p) = next_event(&mut link).await else {
            panic!("publish {i}")
        };
        assert_eq!(p.payload, format!("m{i}").as_bytes());
    }
    for _ in acks..N {
        assert_eq!(c.recv().await.unwrap().kind(), 4);
    }
    assert_eq!(
        metrics
            .link_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_publishes_reach_subscribers_and_other_links_within_the_service_acl() {
    let broker = TestBroker::start("").await;
    let driver = broker.link(Some("acme"));
    let mut other = broker.link(Some("acme"));
    let mut plant = broker.link(Some("plant"));
    let mut dev = Raw::tcp(broker.addr).await;
    assert_eq!(dev.connect(&device("acme-dev-1", false)).await, 0);
    dev.send(&subscribe(false, 1, &[("acme/acme-dev-1/#", 1)]))
        .await;
    assert_eq!(dev.recv().await.unwrap().kind(), 9);
    assert!(matches!(
        next_event(&mut other).await,
        MqttEvent::Connected(_)
    ));
    for (topic, payload) in [
        ("plant/plant-dev-1/cmd", "forbidden"),
        ("acme/acme-dev-1/cmd", "on"),
    ] {
        driver
            .publish
            .send(OutgoingPublish {
                topic: topic.into(),
                payload: payload.as_bytes().to_vec().into(),
                qos: 1,
                retain: false,
            })
            .await
            .unwrap();
    }
    // The device gets the allowed command at QoS 1 and acknowledges it.
    let got = dev.recv_kind(3).await;
    assert!(got.body.ends_with(b"on"), "{got:?}");
    assert_eq!((got.first >> 1) & 3, 1);
    let pkid = &got.body[2 + "acme/acme-dev-1/cmd".len()..][..2];
    dev.send(&frame(0x40, pkid)).await;
    // The other acme link sees it as a publish of the driver's link.
    let MqttEvent::Publish(p) = next_event(&mut other).await else {
        panic!("publish")
    };
    assert_eq!(&p.payload[..], b"on");
    assert!(p.client.unwrap().client_id.starts_with("fieldlink-link-"));
    assert_eq!(
        broker
            .handle
            .metrics()
            .link_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(plant.events.try_recv().is_err(), "plant saw nothing");
    assert!(matches!(
        broker.handle.link(LinkFilter {
            tenant: Some("nope".into())
        }),
        Err(fieldlink_broker::BrokerError::UnknownTenant(_))
    ));
    broker.stop().await;
    // Stopping ends the links.
    assert!(
        tokio::time::timeout(WAIT, async { while other.events.recv().await.is_some() {} })
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rustls_client_speaks_mqtt_over_the_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate().unwrap();
    pki.write(dir.path()).unwrap();
    let head = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );
    let broker = TestBroker::start(&head).await;
    let tls_addr = broker.tls_addr.unwrap();
    let mut link = broker.link(Some("acme"));

    let mut roots = rustls::RootCertStore::empty();
    for ca in fieldlink_broker::tls::certs("ca", &dir.path().join("ca.pem")).unwrap() {
        roots.add(ca).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(fieldlink_broker::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let mut c = Raw {
        stream,
        buf: BytesMut::new(),
    };
    assert_eq!(c.connect(&device("acme-dev-1", true)).await, 0);
    c.send(&publish(
        true,
        "acme/acme-dev-1/t",
        b"over tls",
        1,
        1,
        false,
    ))
    .await;
    assert_eq!(c.recv().await.unwrap().kind(), 4);
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    let MqttEvent::Publish(p) = next_event(&mut link).await else {
        panic!("publish")
    };
    assert_eq!(&p.payload[..], b"over tls");

    // Plain MQTT to the TLS port fails the handshake, counted.
    let mut plain = Raw::tcp(tls_addr).await;
    plain.send(&connect(&device("acme-dev-2", false))).await;
    plain.closed().await;
    eventually("the failed handshake to be counted", || {
        broker.refusals(Refusal::TlsHandshake) == 1
    })
    .await;
    broker.stop().await;
}

// ---- hostile input -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_huge_lengths_and_garbage_are_closed_counted_and_stall_nobody() {
    let broker =
        TestBroker::start("[limits]\nconnect_timeout = \"500ms\"\nmax_packet_size = 65536\n").await;
    // Held open during the whole test: a silent connection must not block others.
    let mut silent = Raw::tcp(broker.addr).await;
    let mut good = Raw::tcp(broker.addr).await;
    assert_eq!(good.connect(&device("acme-dev-1", true)).await, 0);

    // A CONNECT declaring 256 MB: closed from its five header bytes.
    let mut huge = Raw::tcp(broker.addr).await;
    huge.send(&[0x10, 0xff, 0xff, 0xff, 0x7f]).await;
    assert!(huge.closed().await.is_empty());
    assert_eq!(broker.refusals(Refusal::TooLarge), 1);
    // After CONNECT, a PUBLISH declaring 256 MB: MQTT 5 DISCONNECT 0x95.
    let mut big = Raw::tcp(broker.addr).await;
    assert_eq!(big.connect(&device("acme-dev-2", true)).await, 0);
    big.send(&[0x30, 0xff, 0xff, 0xff, 0x7f]).await;
    let last = big.closed().await;
    assert!(
        last.iter()
            .any(|g| g.kind() == 14 && g.body.first() == Some(&0x95)),
        "{last:?}"
    );
    assert_eq!(broker.refusals(Refusal::TooLarge), 2);

    // Not MQTT at all.
    let mut http = Raw::tcp(broker.addr).await;
    http.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(http.closed().await.is_empty());
    // A server-only packet type with a body, after CONNECT (this used to
    // reach an unreachable!() in rumqttd's v5 decoder).
    let mut connack = Raw::tcp(broker.addr).await;
    assert_eq!(connack.connect(&device("plant-dev-1", true)).await, 0);
    connack.send(&[0x20, 0x02, 0x00, 0x00]).await;
    connack.closed().await;
    assert_eq!(broker.refusals(Refusal::Malformed), 2);

    // The silent one is closed after connect_timeout.
    assert!(silent.closed().await.is_empty());
    assert_eq!(broker.refusals(Refusal::ConnectTimeout), 1);

    // Meanwhile the good client was never held up.
    good.send(&frame(0xc0, &[])).await;
    assert_eq!(good.recv().await.unwrap().kind(), 13);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_is_refused_counted_and_devices_still_connect() {
    let broker = TestBroker::start("[limits]\nauth_concurrency = 1\n").await;
    let mut link = broker.link(Some("acme"));
    const FLOOD: usize = 40;
    let addr = broker.addr;
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = Raw::tcp(addr).await;
                let id = format!("flood-{i}");
                let o = ConnectOpts {
                    client_id: &id,
                    username: Some("person"),
                    password: Some("guess"),
                    keep_alive: 30,
                    ..ConnectOpts::default()
                };
                c.connect(&o).await
            })
        })
        .collect();
    // A device with a fast hash connects and publishes during the flood.
    let mut c = Raw::tcp(broker.addr).await;
    assert_eq!(c.connect(&device("acme-dev-1", false)).await, 0);
    c.send(&publish(
        false,
        "acme/acme-dev-1/t",
        b"during the flood",
        1,
        1,
        false,
    ))
    .await;
    assert_eq!(c.recv().await.unwrap().kind(), 4);
    for f in flood {
        assert_eq!(f.await.unwrap(), 4, "bad user name or password");
    }
    assert_eq!(broker.refusals(Refusal::BadCredentials), FLOOD as u64);
    // The person with the right password gets in.
    let mut p = Raw::tcp(broker.addr).await;
    let o = ConnectOpts {
        client_id: "person-1",
        username: Some("person"),
        password: Some("a password a person chose"),
        keep_alive: 30,
        ..ConnectOpts::default()
    };
    assert_eq!(p.connect(&o).await, 0);
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_while_others_keep_receiving() {
    let broker = TestBroker::start(
        "[limits]\nwrite_timeout = \"500ms\"\nmax_packet_size = 70000\n[router]\nsegment_bytes = 262144\nsegments = 2\n",
    )
    .await;
    // The slow one subscribes, then never reads again.
    let mut slow = Raw::tcp(broker.addr).await;
    assert_eq!(slow.connect(&device("acme-gw", false)).await, 0);
    slow.send(&subscribe(false, 1, &[("acme/#", 0)])).await;
    assert_eq!(slow.recv().await.unwrap().kind(), 9);
    let mut fast = Raw::tcp(broker.addr).await;
    assert_eq!(fast.connect(&device("acme-dev-2", false)).await, 0);
    fast.send(&subscribe(false, 1, &[("acme/acme-dev-2/#", 0)]))
        .await;
    assert_eq!(fast.recv().await.unwrap().kind(), 9);

    let mut publisher = Raw::tcp(broker.addr).await;
    assert_eq!(publisher.connect(&device("acme-dev-1", false)).await, 0);
    let payload = vec![b'x'; 60_000];
    let metrics = broker.handle.metrics();
    // Publish until the slow consumer has been cut off (bounded).
    let mut sent = 0;
    while broker.refusals(Refusal::SlowConsumer) == 0 {
        assert!(
            sent < 5_000,
            "slow consumer never disconnected after {sent} messages"
        );
        let mut batch = Vec::new();
        for _ in 0..20 {
            batch.extend(publish(
                false,
                "acme/acme-dev-1/bulk",
                &payload,
                0,
                0,
                false,
            ));
        }
        tokio::time::timeout(WAIT, publisher.send(&batch))
            .await
            .expect("the publisher is never held up by the slow consumer");
        sent += 20;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        metrics
            .messages_in
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // Others still get their messages.
    let mut gw = Raw::tcp(broker.addr).await;
    assert_eq!(
        gw.connect(&ConnectOpts {
            client_id: "gw-2",
            ..device("acme-gw", false)
        })
        .await,
        0
    );
    gw.send(&publish(
        false,
        "acme/acme-dev-2/cmd",
        b"still flowing",
        0,
        0,
        false,
    ))
    .await;
    let got = fast.recv_kind(3).await;
    assert!(got.body.ends_with(b"still flowing"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_once_and_counted() {
    let broker = TestBroker::start("[limits]\nmax_connections = 2\n").await;
    let mut a = Raw::tcp(broker.addr).await;
    assert_eq!(a.connect(&device("acme-dev-1", false)).await, 0);
    let mut b = Raw::tcp(broker.addr).await;
    assert_eq!(b.connect(&device("acme-dev-2", false)).await, 0);
    let mut c = Raw::tcp(broker.addr).await;
    assert!(c.closed().await.is_empty());
    assert_eq!(broker.refusals(Refusal::MaxConnections), 1);
    // A freed slot is usable again.
    a.send(&frame(0xe0, &[])).await;
    a.closed().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut d = Raw::tcp(broker.addr).await;
        d.send(&connect(&device("plant-dev-1", false))).await;
        if let Some(got) = d.recv().await {
            assert_eq!((got.kind(), got.body[1]), (2, 0));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let broker = TestBroker::start("").await;
    let mut link = broker.link(Some("acme"));
    let mut c = Raw::tcp(broker.addr).await;
    let mut o = device("acme-dev-1", true);
    o.keep_alive = 1;
    o.will = Some(("acme/acme-dev-1/status", "gone"));
    assert_eq!(c.connect(&o).await, 0);
    let start = tokio::time::Instant::now();
    let last = c.closed().await;
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        start.elapsed()
    );
    assert!(
        last.iter()
            .any(|g| g.kind() == 14 && g.body.first() == Some(&0x8d)),
        "{last:?}"
    );
    assert_eq!(broker.refusals(Refusal::KeepAliveTimeout), 1);
    assert!(matches!(
        next_event(&mut link).await,
        MqttEvent::Connected(_)
    ));
    assert!(
        matches!(next_event(&mut link).await, MqttEvent::Publish(_)),
        "the will"
    );
    let MqttEvent::Disconnected { reason, clean, .. } = next_event(&mut link).await else {
        panic!("Disconnected")
    };
    assert_eq!((reason.as_str(), clean), ("keep-alive timeout", false));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opened_late_is_told_who_is_connected_and_what_is_retained() {
    let broker = TestBroker::start("").await;
    let mut early = Raw::tcp(broker.addr).await;
    assert_eq!(early.connect(&device("acme-dev-1", false)).await, 0);
    let mut retained = publish(
        false,
        "acme/acme-dev-1/meta",
        b"{\"class\":\"operating\"}",
        1,
        1,
        false,
    );
    retained[0] |= 1; // RETAIN
    early.send(&retained).await;
    assert_eq!(early.recv().await.unwrap().kind(), 4, "PUBACK");
    let mut cleared = publish(false, "acme/acme-dev-1/old", b"x", 1, 2, false);
    cleared[0] |= 1;
    early.send(&cleared).await;
    assert_eq!(early.recv().await.unwrap().kind(), 4);
    let mut empty = publish(false, "acme/acme-dev-1/old", b"", 1, 3, false);
    empty[0] |= 1; // an empty retained message clears the topic
    early.send(&empty).await;
    assert_eq!(early.recv().await.unwrap().kind(), 4);
    let mut other = Raw::tcp(broker.addr).await;
    assert_eq!(other.connect(&device("plant-dev-1", false)).await, 0);

    // Opened after all that: the acme link hears of acme's client and its
    // retained message, and nothing of plant's.
    let mut link = broker.link(Some("acme"));
    let MqttEvent::Connected(info) = next_event(&mut link).await else {
        panic!("the connected client first")
    };
    assert_eq!(&*info.client_id, "acme-dev-1");
    let MqttEvent::Publish(meta) = next_event(&mut link).await else {
        panic!("then the retained message")
    };
    assert_eq!((&*meta.topic, meta.retain), ("acme/acme-dev-1/meta", true));
    assert_eq!(&meta.payload[..], b"{\"class\":\"operating\"}");
    early.send(&frame(0xe0, &[])).await; // DISCONNECT
    let MqttEvent::Disconnected { client, clean, .. } = next_event(&mut link).await else {
        panic!("then live events, in order")
    };
    assert_eq!((&*client.client_id, clean), ("acme-dev-1", true));

    // A link of every tenant sees plant's client, not the one that left.
    let mut all = broker.link(None);
    let MqttEvent::Connected(info) = next_event(&mut all).await else {
        panic!("plant's client")
    };
    assert_eq!(&*info.client_id, "plant-dev-1");
    let MqttEvent::Publish(meta) = next_event(&mut all).await else {
        panic!("the retained message stays after its publisher left")
    };
    assert_eq!(&*meta.topic, "acme/acme-dev-1/meta");
    assert!(
        all.events.try_recv().is_err(),
        "nothing else: the cleared topic is gone"
    );
    broker.stop().await;
}
