//! What the broker's and the ingress's behaviour tests share: a raw MQTT
//! client spoken to in bytes, user lines for configs, waiting helpers.
#![allow(dead_code)]

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fieldlink_broker::auth::{HashKind, PasswordHash};
use fieldlink_model::mqtt::{MqttEvent, MqttLink};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn token(user: &str) -> String {
    format!("{user}-token-0123456789abcdef")
}

pub fn user(username: &str, tenant: &str, role: &str, kind: HashKind, password: &str) -> String {
    let hash = PasswordHash::generate(kind, password.as_bytes()).unwrap();
    format!(
        "[[users]]\nusername = \"{username}\"\npassword_hash = \"{hash}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\n"
    )
}

/// Waits until `check` holds, polling; panics with `what` after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn next_event(link: &mut MqttLink) -> MqttEvent {
    tokio::time::timeout(WAIT, link.events.recv())
        .await
        .expect("an event in time")
        .expect("link open")
}

// ---- a raw MQTT client -------------------------------------------------

pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(u16::try_from(s.len()).unwrap().to_be_bytes());
    out.extend(s);
}

pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(first);
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out.to_vec()
}

#[derive(Default)]
pub struct ConnectOpts<'a> {
    pub v5: bool,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub keep_alive: u16,
    pub will: Option<(&'a str, &'a str)>,
}

pub fn connect(o: &ConnectOpts<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(if o.v5 { 5 } else { 4 });
    let mut flags = 0x02;
    if o.will.is_some() {
        flags |= 0x04 | 0x08; // will, QoS 1
    }
    if o.username.is_some() {
        flags |= 0x80;
    }
    if o.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend(o.keep_alive.to_be_bytes());
    if o.v5 {
        body.push(0);
    }
    put_str(&mut body, o.client_id.as_bytes());
    if let Some((topic, message)) = o.will {
        if o.v5 {
            body.push(0);
        }
        put_str(&mut body, topic.as_bytes());
        put_str(&mut body, message.as_bytes());
    }
    if let Some(u) = o.username {
        put_str(&mut body, u.as_bytes());
    }
    if let Some(p) = o.password {
        put_str(&mut body, p.as_bytes());
    }
    frame(0x10, &body)
}

pub fn publish(v5: bool, topic: &str, payload: &[u8], qos: u8, pkid: u16, dup: bool) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend(pkid.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend(payload);
    frame(0x30 | (qos << 1) | if dup { 0x08 } else { 0 }, &body)
}

pub fn subscribe(v5: bool, pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for (f, qos) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*qos);
    }
    frame(0x82, &body)
}

pub struct Raw<S> {
    pub stream: S,
    pub buf: BytesMut,
}

/// One frame as received: first byte and body.
#[derive(Debug)]
pub struct Got {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Got {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

impl Raw<TcpStream> {
    pub async fn tcp(addr: std::net::SocketAddr) -> Raw<TcpStream> {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame; `None` when the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Got> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(Some((header, len))) =
                    fieldlink_broker::frame::check(&self.buf, usize::MAX)
                    && self.buf.len() >= header + len
                {
                    let f = self.buf.split_to(header + len);
                    return Some(Got {
                        first: f[0],
                        body: f[header..].to_vec(),
                    });
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a frame or close in time")
    }

    /// The next frame that is not `kind` (skipping, e.g., PUBACKs).
    pub async fn recv_kind(&mut self, kind: u8) -> Got {
        loop {
            let got = self.recv().await.expect("connection open");
            if got.kind() == kind {
                return got;
            }
        }
    }

    /// Connects and returns the CONNACK's code.
    pub async fn connect(&mut self, o: &ConnectOpts<'_>) -> u8 {
        self.send(&connect(o)).await;
        let got = self.recv().await.expect("a CONNACK");
        assert_eq!(got.kind(), 2, "{got:?}");
        got.body[1]
    }

    /// Waits until the broker closes; frames before that are returned.
    pub async fn closed(&mut self) -> Vec<Got> {
        let mut before = Vec::new();
        while let Some(got) = self.recv().await {
            before.push(got);
        }
        before
    }
}

pub fn device(id: &str, v5: bool) -> ConnectOpts<'static> {
    let id: &'static str = Box::leak(id.to_owned().into_boxed_str());
    let password: &'static str = Box::leak(token(id).into_boxed_str());
    ConnectOpts {
        v5,
        client_id: id,
        username: Some(id),
        password: Some(password),
        keep_alive: 30,
        will: None,
    }
}
