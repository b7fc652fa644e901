//! One ingress connection, from CONNECT to its last event.
//!
//! While idle a connection is its task's state machine (the fields of
//! [`Conn`], the socket's readiness and keep-alive timer) and nothing else:
//! bytes are read into a chunk on the stack, decoded into owned events
//! before any await, and only a packet split across reads is kept in a heap
//! buffer until its last byte arrives.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use fieldlink_model::mqtt::{ClientInfo, MqttEvent, MqttPublish};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::codec::{self, CodecError, ConnAckProperties, ConnectRefusal, DisconnectReason, Packet};
use super::{Held, Kick, Shared, Slot, TAKEOVER_WAIT};
use crate::acl::{AclPatterns, Identity};
use crate::frame::Version;
use crate::metrics::Refusal;

/// Bytes read from the socket at once (on the stack).
const READ_CHUNK: usize = 2048;
/// Bytes the CONNECT phase's buffer grows by.
const CONNECT_CHUNK: usize = 256;

/// A will, owned.
#[derive(Debug)]
struct Will {
    topic: Arc<str>,
    payload: Bytes,
    qos: u8,
    retain: bool,
}

/// What one read produced, owned, so the bytes can go before any await.
#[derive(Debug)]
enum Incoming {
    Publish {
        qos: u8,
        retain: bool,
        packet_id: u16,
        topic: Arc<str>,
        payload: Bytes,
    },
    /// A publish the ACL refused (MQTT 5: answered with 0x87).
    Refused {
        qos: u8,
        packet_id: u16,
    },
    PubRel(u16),
    Subscribe(u16, usize),
    Unsubscribe(u16, usize),
    Ping,
    Disconnect {
        will: bool,
    },
}

/// How a connection ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT: no will.
    Clean,
    /// MQTT 5 DISCONNECT 0x04: clean, but the will is published.
    CleanWithWill,
    /// The network went away.
    Lost(String),
    /// Silent for 1.5× the keep-alive.
    KeepAlive,
    /// Took no bytes for `limits.write_timeout`.
    SlowConsumer,
    /// The same client id connected again.
    TakenOver,
    /// The ingress stops: no will.
    Shutdown,
    /// The client broke a rule.
    Refused(Refusal, String, DisconnectReason),
}

/// A connected client.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    version: Version,
    info: ClientInfo,
    acl: Arc<AclPatterns>,
    will: Option<Box<Will>>,
    /// 1.5× the keep-alive granted.
    silence: Duration,
    /// A packet split across reads; empty (no allocation) otherwise.
    partial: Vec<u8>,
    /// Packet ids of QoS 2 publishes delivered, awaiting PUBREL.
    qos2: Vec<u16>,
    conn: u64,
    slot: Arc<Slot>,
}

/// Serves one accepted socket.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // The CONNECT phase and the end are boxed, and so is the handling of
    // each read: the task itself keeps only what an idle connection needs
    // (its size is that of its largest state, held for the connection's
    // life).
    let Some(mut conn) = Box::pin(accept(stream, peer, &shared)).await else {
        return;
    };
    let end = conn.run().await;
    Box::pin(conn.finish(end)).await;
}

/// Logs a refusal within the shard's log budget and counts it.
fn refused(shared: &Shared, peer: SocketAddr, reason: Refusal, why: &str) {
    shared.metrics.refuse(reason);
    if shared.log.allow() {
        tracing::info!(%peer, reason = reason.label(), "ingress refused a client: {why}");
    }
}

/// The refusal and MQTT 5 reason of a codec error.
fn codec_end(e: &CodecError) -> End {
    let (refusal, reason) = match e {
        CodecError::TooLarge { .. } => (Refusal::TooLarge, DisconnectReason::TooLarge),
        CodecError::Malformed(_) => (Refusal::Malformed, DisconnectReason::Malformed),
        CodecError::Protocol(_) => (Refusal::ProtocolError, DisconnectReason::Protocol),
        CodecError::Unsupported { .. } => {
            (Refusal::UnsupportedProtocol, DisconnectReason::Protocol)
        }
    };
    End::Refused(refusal, e.to_string(), reason)
}

/// Writes `bytes` (a CONNACK refusing, or a last DISCONNECT), best effort.
async fn write_last(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(bytes)).await;
}

/// Reads and checks the CONNECT, takes the client id's slot and answers
/// CONNACK; `None` when the client is refused or gone.
async fn accept(mut stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) -> Option<Conn> {
    let limits = &shared.settings.limits;
    let deadline = Instant::now() + limits.connect_timeout;
    let mut buf: Vec<u8> = Vec::new();
    let header = loop {
        if buf.first().is_some_and(|&b| b != 0x10) {
            // Not MQTT (an HTTP probe, garbage): no need to wait for more.
            refused(
                shared,
                peer,
                Refusal::ProtocolError,
                &format!("first packet is not CONNECT (first byte {:#04x})", buf[0]),
            );
            return None;
        }
        match codec::header(&buf, limits.max_packet_size) {
            Ok(Some(h)) if buf.len() >= h.total() => break h,
            Ok(_) => {}
            Err(e) => {
                let End::Refused(reason, why, _) = codec_end(&e) else {
                    return None;
                };
                refused(shared, peer, reason, &why);
                return None;
            }
        }
        // A CONNECT is tens of bytes: grow only as far as it needs.
        buf.reserve(CONNECT_CHUNK);
        let read = tokio::select! {
            _ = shared.stop.cancelled() => return None,
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
        };
        match read {
            Err(_) => {
                refused(
                    shared,
                    peer,
                    Refusal::ConnectTimeout,
                    "no complete CONNECT in limits.connect_timeout",
                );
                return None;
            }
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(n)) => {
                shared.metrics.bytes_in.fetch_add(n as u64, Relaxed);
            }
        }
    };
    let connect = match codec::connect(header, &buf[header.header_len..header.total()]) {
        Ok(c) => c,
        Err(e) => {
            if let CodecError::Unsupported { .. } = e {
                let mut out = Vec::new();
                codec::connack_refused(&mut out, Version::V4, ConnectRefusal::Version);
                write_last(&mut stream, &out).await;
            }
            let End::Refused(reason, why, _) = codec_end(&e) else {
                return None;
            };
            refused(shared, peer, reason, &why);
            return None;
        }
    };
    let version = connect.version;
    let mut out = Vec::with_capacity(64);
    let refuse = |out: &mut Vec<u8>, why: ConnectRefusal| codec::connack_refused(out, version, why);

    // Authentication.
    if connect.auth_method {
        refuse(&mut out, ConnectRefusal::AuthMethod);
        write_last(&mut stream, &out).await;
        refused(
            shared,
            peer,
            Refusal::BadCredentials,
            "MQTT 5 enhanced authentication is not supported",
        );
        return None;
    }
    let Some(username) = connect.username else {
        refuse(&mut out, ConnectRefusal::Credentials);
        write_last(&mut stream, &out).await;
        refused(
            shared,
            peer,
            Refusal::BadCredentials,
            "no user name and password",
        );
        return None;
    };
    let password = connect.password.unwrap_or(&[]);
    let login = crate::auth::check_login(
        &shared.settings.users,
        &shared.auth_slots,
        username,
        password,
    );
    let user = match tokio::time::timeout_at(deadline, login).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            refuse(&mut out, ConnectRefusal::Credentials);
            write_last(&mut stream, &out).await;
            refused(
                shared,
                peer,
                Refusal::BadCredentials,
                &format!("bad credentials for user `{username}`"),
            );
            return None;
        }
        Err(_) => {
            refused(
                shared,
                peer,
                Refusal::ConnectTimeout,
                "password check not done in time",
            );
            return None;
        }
    };
    let (client_id, assigned) = match user.client_id_for(connect.client_id, connect.clean, || {
        shared.next_conn.fetch_add(1, Relaxed)
    }) {
        Ok(resolved) => resolved,
        Err(why) => {
            refuse(&mut out, ConnectRefusal::ClientId);
            write_last(&mut stream, &out).await;
            refused(
                shared,
                peer,
                Refusal::ClientIdRejected,
                &format!("client id `{}`: {why}", connect.client_id),
            );
            return None;
        }
    };
    let acl = shared
        .acls
        .get(&(user.tenant.clone(), user.role))
        .cloned()?;
    let client_id: Arc<str> = Arc::from(client_id);
    let who = Identity {
        username: Some(&user.username),
        client_id: Some(&client_id),
        tenant: Some(&user.tenant),
    };
    if let Some(w) = &connect.will
        && !acl.allows_publish(w.topic, &who)
    {
        refuse(&mut out, ConnectRefusal::NotAuthorized);
        write_last(&mut stream, &out).await;
        refused(
            shared,
            peer,
            Refusal::NotAuthorizedWill,
            &format!("will topic `{}` not authorized", w.topic),
        );
        return None;
    }
    if shared.stop.is_cancelled() {
        refuse(&mut out, ConnectRefusal::Unavailable);
        write_last(&mut stream, &out).await;
        return None;
    }
    let will = connect.will.as_ref().map(|w| {
        Box::new(Will {
            topic: Arc::from(w.topic),
            payload: Bytes::copy_from_slice(w.payload),
            qos: w.qos,
            retain: w.retain,
        })
    });
    let max_keep_alive = u16::try_from(limits.max_keep_alive.as_secs()).unwrap_or(u16::MAX);
    let keep_alive = if connect.keep_alive == 0 || connect.keep_alive > max_keep_alive {
        max_keep_alive
    } else {
        connect.keep_alive
    };
    let asked_keep_alive = connect.keep_alive;
    // Bytes after the CONNECT (a client may send before CONNACK).
    let partial = buf[header.total()..].to_vec();
    drop(buf);

    // One live connection per (tenant, client id).
    let conn = shared.next_conn.fetch_add(1, Relaxed);
    let slot = Arc::new(Slot::default());
    let key = (user.tenant.clone(), client_id.clone());
    claim(shared, &key, conn, &slot).await;

    let props = ConnAckProperties {
        assigned_client_id: assigned.then_some(&*client_id),
        server_keep_alive: (keep_alive != asked_keep_alive).then_some(keep_alive),
        receive_maximum: limits.max_inflight,
        maximum_packet_size: u32::try_from(limits.max_packet_size + 5).unwrap_or(u32::MAX),
    };
    codec::connack_ok(&mut out, version, &props);
    let written = tokio::time::timeout(limits.write_timeout, stream.write_all(&out)).await;
    if !matches!(written, Ok(Ok(()))) {
        release(shared, &key, conn, &slot);
        return None;
    }
    shared
        .metrics
        .bytes_out
        .fetch_add(out.len() as u64, Relaxed);

    let info = ClientInfo {
        client_id,
        username: Some(user.username.clone()),
        tenant: Some(user.tenant.clone()),
        time_unix_nano: fieldlink_model::now_unix_nanos(),
    };
    shared.metrics.connections.fetch_add(1, Relaxed);
    shared.metrics.connections_total.fetch_add(1, Relaxed);
    tracing::debug!(%peer, client_id = %info.client_id, tenant = %user.tenant, version = version.label(), keep_alive, "client connected");
    shared
        .links
        .emit(
            Some(&user.tenant),
            None,
            MqttEvent::Connected(info.clone()),
            &shared.metrics,
            &shared.stop,
        )
        .await;
    Some(Conn {
        stream,
        peer,
        shared: shared.clone(),
        version,
        info,
        acl,
        will,
        silence: Duration::from_millis(u64::from(keep_alive) * 1500),
        partial,
        qos2: Vec::new(),
        conn,
        slot,
    })
}

/// Takes the (tenant, client id) slot, closing a connection that holds it
/// and waiting until it has emitted its last event.
async fn claim(shared: &Shared, key: &super::SessionKey, conn: u64, slot: &Arc<Slot>) {
    loop {
        let old = {
            let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            match sessions.get(key) {
                Some(old) => Some(old.clone()),
                None => {
                    sessions.insert(
                        key.clone(),
                        Held {
                            conn,
                            slot: slot.clone(),
                        },
                    );
                    None
                }
            }
        };
        let Some(old) = old else { return };
        tracing::debug!(client_id = %key.1, tenant = %key.0, "client id connected again: closing the older connection");
        old.slot.kick(Kick::TakenOver);
        if tokio::time::timeout(TAKEOVER_WAIT, old.slot.wait_finished())
            .await
            .is_err()
        {
            tracing::warn!(client_id = %key.1, "older connection did not finish in time; taking its place");
            let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if sessions.get(key).is_some_and(|s| s.conn == old.conn) {
                sessions.remove(key);
            }
        }
    }
}

/// Frees the slot if this connection still holds it; wakes a successor.
fn release(shared: &Shared, key: &super::SessionKey, conn: u64, slot: &Slot) {
    {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.get(key).is_some_and(|s| s.conn == conn) {
            sessions.remove(key);
        }
    }
    slot.finish();
}

impl Conn {
    async fn run(&mut self) -> End {
        let (mut incoming, mut end) = self.take_bytes(&[]);
        let mut deadline = Instant::now() + self.silence;
        loop {
            if !incoming.is_empty()
                && let Some(end) = Box::pin(self.handle(incoming)).await
            {
                return end;
            }
            if let Some(end) = end.take() {
                return end;
            }
            let ready = tokio::select! {
                biased;
                _ = self.slot.kick.notified() => {
                    return match self.slot.kicked() {
                        Kick::TakenOver => End::TakenOver,
                        Kick::Shutdown | Kick::None => End::Shutdown,
                    };
                }
                ready = tokio::time::timeout_at(deadline, self.stream.readable()) => ready,
            };
            match ready {
                Err(_) => return End::KeepAlive,
                Ok(Err(e)) => return End::Lost(e.to_string()),
                Ok(Ok(())) => {}
            }
            let read = {
                let mut chunk = [0u8; READ_CHUNK];
                match self.stream.try_read(&mut chunk) {
                    Ok(0) => return End::Lost("connection closed without DISCONNECT".to_owned()),
                    Ok(n) => {
                        deadline = Instant::now() + self.silence;
                        self.shared.metrics.bytes_in.fetch_add(n as u64, Relaxed);
                        Some(self.take_bytes(&chunk[..n]))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) => return End::Lost(e.to_string()),
                }
            };
            (incoming, end) = read.unwrap_or_default();
        }
    }

    /// Decodes what `chunk` completes (with the bytes kept from earlier
    /// reads); keeps an incomplete packet's bytes. The end, if the bytes
    /// break a rule, comes after the packets decoded before it.
    fn take_bytes(&mut self, chunk: &[u8]) -> (Vec<Incoming>, Option<End>) {
        let mut incoming = Vec::new();
        if self.partial.is_empty() {
            let (used, end) = self.decode(chunk, &mut incoming);
            if end.is_none() && used < chunk.len() {
                self.partial = chunk[used..].to_vec();
            }
            (incoming, end)
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(chunk);
            let (used, end) = self.decode(&buf, &mut incoming);
            if end.is_none() && used < buf.len() {
                buf.drain(..used);
                self.partial = buf;
            }
            (incoming, end)
        }
    }

    /// Decodes the complete packets at the start of `buf`; returns the
    /// bytes they took.
    fn decode(&self, buf: &[u8], incoming: &mut Vec<Incoming>) -> (usize, Option<End>) {
        let max = self.shared.settings.limits.max_packet_size;
        let mut pos = 0;
        loop {
            let h = match codec::header(&buf[pos..], max) {
                Ok(Some(h)) if buf.len() - pos >= h.total() => h,
                Ok(_) => return (pos, None),
                Err(e) => return (pos, Some(codec_end(&e))),
            };
            let body = &buf[pos + h.header_len..pos + h.total()];
            pos += h.total();
            match codec::packet(h, body, self.version) {
                Ok(Packet::Publish(p)) => {
                    let who = Identity {
                        username: self.info.username.as_deref(),
                        client_id: Some(&self.info.client_id),
                        tenant: self.info.tenant.as_deref(),
                    };
                    if self.acl.allows_publish(p.topic, &who) {
                        incoming.push(Incoming::Publish {
                            qos: p.qos,
                            retain: p.retain,
                            packet_id: p.packet_id,
                            topic: Arc::from(p.topic),
                            payload: Bytes::copy_from_slice(p.payload),
                        });
                    } else if self.version == Version::V4 {
                        // 3.1.1 has no negative PUBACK: close (§3.3.5).
                        return (
                            pos,
                            Some(End::Refused(
                                Refusal::NotAuthorizedPublish,
                                format!("publish to `{}` not authorized", p.topic),
                                DisconnectReason::NotAuthorized,
                            )),
                        );
                    } else {
                        self.shared.metrics.refuse(Refusal::NotAuthorizedPublish);
                        if self.shared.log.allow() {
                            tracing::info!(peer = %self.peer, client_id = %self.info.client_id, topic = p.topic,
                                "ingress refused a publish: not authorized");
                        }
                        incoming.push(Incoming::Refused {
                            qos: p.qos,
                            packet_id: p.packet_id,
                        });
                    }
                }
                Ok(Packet::PubRel(id)) => incoming.push(Incoming::PubRel(id)),
                Ok(Packet::Ack) => {}
                Ok(Packet::Subscribe(id, n)) => incoming.push(Incoming::Subscribe(id, n)),
                Ok(Packet::Unsubscribe(id, n)) => incoming.push(Incoming::Unsubscribe(id, n)),
                Ok(Packet::PingReq) => incoming.push(Incoming::Ping),
                Ok(Packet::Disconnect(will)) => {
                    incoming.push(Incoming::Disconnect { will });
                    return (pos, None);
                }
                Ok(Packet::Connect) => {
                    return (
                        pos,
                        Some(End::Refused(
                            Refusal::ProtocolError,
                            "a second CONNECT".to_owned(),
                            DisconnectReason::Protocol,
                        )),
                    );
                }
                Err(e) => return (pos, Some(codec_end(&e))),
            }
        }
    }

    /// Acts on decoded packets in order and writes the answers; `Some`
    /// when the connection ends.
    async fn handle(&mut self, incoming: Vec<Incoming>) -> Option<End> {
        if incoming.is_empty() {
            return None;
        }
        let version = self.version;
        let mut out = Vec::new();
        let mut end = None;
        for item in incoming {
            match item {
                Incoming::Publish {
                    qos,
                    retain,
                    packet_id,
                    topic,
                    payload,
                } => {
                    if qos == 2 {
                        if self.qos2.contains(&packet_id) {
                            // A resent QoS 2 publish: delivered already.
                            codec::ack(&mut out, 0x50, packet_id, version, 0);
                            continue;
                        }
                        if self.qos2.len() >= usize::from(self.shared.settings.limits.max_inflight)
                        {
                            end = Some(End::Refused(
                                Refusal::QuotaExceeded,
                                "more QoS 2 publishes in flight than limits.max_inflight"
                                    .to_owned(),
                                DisconnectReason::ReceiveMaximum,
                            ));
                            break;
                        }
                        self.qos2.push(packet_id);
                    }
                    let received = fieldlink_model::now_unix_nanos();
                    let event = MqttEvent::Publish(MqttPublish {
                        client: Some(self.info.clone()),
                        topic,
                        payload,
                        qos,
                        retain,
                        received_unix_nano: received,
                    });
                    let shared = &self.shared;
                    shared.metrics.messages_in.fetch_add(1, Relaxed);
                    if !shared
                        .links
                        .emit(
                            self.info.tenant.as_deref(),
                            None,
                            event,
                            &shared.metrics,
                            &shared.stop,
                        )
                        .await
                    {
                        end = Some(End::Shutdown);
                        break;
                    }
                    match qos {
                        1 => codec::ack(&mut out, 0x40, packet_id, version, 0),
                        2 => codec::ack(&mut out, 0x50, packet_id, version, 0),
                        _ => {}
                    }
                }
                Incoming::Refused { qos, packet_id } => match qos {
                    1 => codec::ack(&mut out, 0x40, packet_id, version, 0x87),
                    2 => codec::ack(&mut out, 0x50, packet_id, version, 0x87),
                    _ => {}
                },
                Incoming::PubRel(id) => {
                    self.qos2.retain(|p| *p != id);
                    if self.qos2.is_empty() {
                        self.qos2 = Vec::new();
                    }
                    codec::ack(&mut out, 0x70, id, version, 0);
                }
                Incoming::Subscribe(id, n) => {
                    self.shared.metrics.refuse(Refusal::NotAuthorizedSubscribe);
                    codec::suback_refused(&mut out, id, n, version);
                }
                Incoming::Unsubscribe(id, n) => codec::unsuback(&mut out, id, n, version),
                Incoming::Ping => codec::pingresp(&mut out),
                Incoming::Disconnect { will } => {
                    end = Some(if will { End::CleanWithWill } else { End::Clean });
                    break;
                }
            }
        }
        if !out.is_empty()
            && let Err(e) = self.write(&out).await
        {
            return Some(end.unwrap_or(e));
        }
        end
    }

    /// Writes `bytes`, waiting at most `limits.write_timeout` for a client
    /// that does not read.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.stream.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let timeout = self.shared.settings.limits.write_timeout;
                    return match tokio::time::timeout(timeout, self.stream.write_all(rest)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(End::Lost(e.to_string())),
                        Err(_) => Err(End::SlowConsumer),
                    };
                }
                Err(e) => return Err(End::Lost(e.to_string())),
            }
        }
        self.shared
            .metrics
            .bytes_out
            .fetch_add(bytes.len() as u64, Relaxed);
        Ok(())
    }

    /// Emits the will (unless the client left cleanly or the ingress
    /// stops) and `Disconnected`, then frees the client id.
    async fn finish(mut self, end: End) {
        let metrics = self.shared.metrics.clone();
        let (clean, reason, will, code): (bool, String, bool, Option<DisconnectReason>) = match end
        {
            End::Clean => (true, "disconnect".into(), false, None),
            End::CleanWithWill => (true, "disconnect with will".into(), true, None),
            End::Lost(why) => (false, why, true, None),
            End::KeepAlive => {
                refused(
                    &self.shared,
                    self.peer,
                    Refusal::KeepAliveTimeout,
                    &format!(
                        "client `{}` silent for 1.5× its keep-alive",
                        self.info.client_id
                    ),
                );
                (
                    false,
                    "keep-alive timeout".into(),
                    true,
                    Some(DisconnectReason::KeepAlive),
                )
            }
            End::SlowConsumer => {
                metrics.refuse(Refusal::SlowConsumer);
                (
                    false,
                    "slow consumer: took no bytes in limits.write_timeout".into(),
                    true,
                    None,
                )
            }
            End::TakenOver => {
                metrics.takeovers.fetch_add(1, Relaxed);
                (
                    false,
                    "taken over".into(),
                    true,
                    Some(DisconnectReason::TakenOver),
                )
            }
            End::Shutdown => (
                false,
                "ingress shutting down".into(),
                false,
                Some(DisconnectReason::ShuttingDown),
            ),
            End::Refused(refusal, why, code) => {
                refused(
                    &self.shared,
                    self.peer,
                    refusal,
                    &format!("client `{}`: {why}", self.info.client_id),
                );
                (false, why, true, Some(code))
            }
        };
        if let Some(code) = code {
            let mut out = Vec::new();
            codec::disconnect(&mut out, self.version, code);
            if !out.is_empty() {
                let _ = self.stream.try_write(&out);
            }
        }
        tracing::debug!(peer = %self.peer, client_id = %self.info.client_id, clean, reason = %reason, "client disconnected");
        let shared = self.shared.clone();
        let tenant = self.info.tenant.clone();
        if will && let Some(w) = self.will.take() {
            metrics.wills.fetch_add(1, Relaxed);
            let received = fieldlink_model::now_unix_nanos();
            let event = MqttEvent::Publish(MqttPublish {
                client: Some(self.info.clone()),
                topic: w.topic,
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                received_unix_nano: received,
            });
            shared
                .links
                .emit(tenant.as_deref(), None, event, &metrics, &shared.stop)
                .await;
        }
        let mut info = self.info.clone();
        info.time_unix_nano = fieldlink_model::now_unix_nanos();
        let key = (
            tenant.clone().unwrap_or_else(|| Arc::from("")),
            self.info.client_id.clone(),
        );
        shared
            .links
            .emit(
                tenant.as_deref(),
                None,
                MqttEvent::Disconnected {
                    client: info,
                    clean,
                    reason,
                },
                &metrics,
                &shared.stop,
            )
            .await;
        metrics.connections.fetch_sub(1, Relaxed);
        drop(self.stream);
        release(&shared, &key, self.conn, &self.slot);
    }
}

#[cfg(test)]
mod tests {
    /// The task of a connection is allocated at the size of its largest
    /// state and kept for the connection's life: the boxed phases keep it
    /// small (it was 2 192 bytes with the CONNECT phase inline).
    #[test]
    fn an_idle_connection_task_stays_small() {
        fn size<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let settings = crate::BrokerConfig::from_toml("")
                .unwrap()
                .validate()
                .unwrap();
            let ingress = super::super::Ingress::new(settings, 10);
            let peer = stream.local_addr().unwrap();
            let serve = super::serve(stream, peer, ingress.shared.clone());
            assert!(
                size(&serve) <= 800,
                "connection task state is {} bytes",
                size(&serve)
            );
        });
    }
}
