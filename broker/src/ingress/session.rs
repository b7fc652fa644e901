//! One ingress connection, from CONNECT to its last event.
//!
//! While idle a connection is its task's state machine (the fields of
//! [`Conn`], the socket's readiness and keep-alive timer) and nothing else:
//! bytes are read into a chunk on the stack, decoded into owned events
//! before any await, and only a packet split across reads is kept in a heap
//! buffer until its last byte arrives.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use fieldlink_model::mqtt::{ClientInfo, MqttEvent, MqttPublish};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::codec::{self, CodecError, ConnAckProperties, ConnectRefusal, DisconnectReason, Packet};
use super::{Kick, Presence, Shared, TAKEOVER_WAIT};
use crate::acl::{AclPatterns, Identity};
use crate::frame::Version;
use crate::metrics::Refusal;

/// Bytes read from the socket at once (on the stack).
const READ_CHUNK: usize = 2048;
/// Bytes the CONNECT phase's buffer grows by: a CONNECT and the
/// registration a device pipelines behind it come in one read.
const CONNECT_CHUNK: usize = 1024;

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

/// A connected client. Dropped, it leaves the session table before its
/// socket closes (fields drop after [`Drop::drop`]).
struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
    me: Arc<Presence>,
    acl: Arc<AclPatterns>,
    will: Option<Box<Will>>,
    /// What is pending between reads, only while something is.
    pending: Option<Box<Pending>>,
    version: Version,
}

/// A connection's state between reads that an idle one does not have.
#[derive(Debug, Default)]
struct Pending {
    /// A packet split across reads.
    partial: Vec<u8>,
    /// Packet ids of QoS 2 publishes delivered, awaiting PUBREL.
    qos2: Vec<u16>,
    /// The CONNACK, until the first write.
    greeting: Vec<u8>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.me);
        self.shared.released.notify_waiters();
        self.shared.conn_slots.add_permits(1);
    }
}

/// Serves one accepted socket, holding `permit` (one of
/// `max_connections`) for the connection's life.
///
/// The CONNECT phase, each read's handling and the end are boxed: the
/// task itself keeps only what an idle connection needs (a task is
/// allocated at the size of its largest state, for its whole life, and an
/// async fn's arguments stay in it too: hence the CONNECT phase is boxed
/// before the task's future is made).
pub(super) fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) -> impl std::future::Future<Output = ()> + Send {
    let accept = Box::pin(accept(stream, peer, shared, permit));
    async move {
        let Some(mut conn) = accept.await else {
            return;
        };
        let end = conn.run().await;
        Box::pin(conn.finish(end)).await;
    }
}

/// Logs a refusal within the shard's log budget and counts it.
fn refused(shared: &Shared, peer: Option<SocketAddr>, reason: Refusal, why: &str) {
    shared.metrics.refuse(reason);
    if shared.log.allow() {
        tracing::info!(peer = ?peer, reason = reason.label(), "ingress refused a client: {why}");
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
async fn accept(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) -> Option<Conn> {
    let shared = &shared;
    let limits = &shared.settings.limits;
    let deadline = Instant::now() + limits.connect_timeout;
    let mut buf: Vec<u8> = Vec::new();
    let header = loop {
        if buf.first().is_some_and(|&b| b != 0x10) {
            // Not MQTT (an HTTP probe, garbage): no need to wait for more.
            refused(
                shared,
                Some(peer),
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
                refused(shared, Some(peer), reason, &why);
                return None;
            }
        }
        // A CONNECT is tens of bytes: grow a chunk at a time.
        buf.reserve(CONNECT_CHUNK);
        let read = tokio::select! {
            _ = shared.stop.cancelled() => return None,
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
        };
        match read {
            Err(_) => {
                refused(
                    shared,
                    Some(peer),
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
            refused(shared, Some(peer), reason, &why);
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
            Some(peer),
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
            Some(peer),
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
                Some(peer),
                Refusal::BadCredentials,
                &format!("bad credentials for user `{username}`"),
            );
            return None;
        }
        Err(_) => {
            refused(
                shared,
                Some(peer),
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
                Some(peer),
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
            Some(peer),
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
    let me = Arc::new(Presence {
        info: ClientInfo {
            client_id,
            username: Some(user.username.clone()),
            tenant: Some(user.tenant.clone()),
            time_unix_nano: fieldlink_model::now_unix_nanos(),
        },
        fd: stream.as_raw_fd(),
        why: AtomicU8::new(Kick::None as u8),
        last_read_ms: AtomicU64::new(shared.now_ms()),
        silence_ms: u64::from(keep_alive) * 1500,
        announced: AtomicBool::new(false),
    });
    claim(shared, &me).await;
    shared.watch_silence(&me);
    // Given back when the connection is dropped.
    permit.forget();
    let mut conn = Conn {
        stream,
        shared: shared.clone(),
        me,
        acl,
        will,
        pending: (!partial.is_empty()).then(|| {
            Box::new(Pending {
                partial,
                ..Pending::default()
            })
        }),
        version,
    };

    let props = ConnAckProperties {
        assigned_client_id: assigned.then_some(&*conn.me.info.client_id),
        server_keep_alive: (keep_alive != asked_keep_alive).then_some(keep_alive),
        receive_maximum: limits.max_inflight,
        maximum_packet_size: u32::try_from(limits.max_packet_size + 5).unwrap_or(u32::MAX),
    };
    codec::connack_ok(&mut out, version, &props);
    // The CONNACK goes out with the acks of what came behind the CONNECT
    // (`Conn::handle`): one segment where a device pipelines its
    // registration.
    conn.pending.get_or_insert_default().greeting = out;

    shared.metrics.connections.fetch_add(1, Relaxed);
    shared.metrics.connections_total.fetch_add(1, Relaxed);
    tracing::debug!(%peer, client_id = %conn.me.info.client_id, tenant = %user.tenant, version = version.label(), keep_alive, "client connected");
    shared
        .links
        .emit_marking(
            Some(&user.tenant),
            None,
            MqttEvent::Connected(conn.me.info.clone()),
            &shared.metrics,
            &shared.stop,
            || conn.me.announced.store(true, Relaxed),
        )
        .await;
    Some(conn)
}

/// Puts `me` in the session table, closing a connection that holds its
/// (tenant, client id) and waiting until it has emitted its last event
/// (at most [`TAKEOVER_WAIT`]).
async fn claim(shared: &Shared, me: &Arc<Presence>) {
    let deadline = Instant::now() + TAKEOVER_WAIT;
    loop {
        let released = shared.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let old = {
            let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            match sessions.holder(me) {
                Some(old) => {
                    old.kick(Kick::TakenOver);
                    old.clone()
                }
                None => {
                    sessions.insert(me.clone());
                    if shared.stop.is_cancelled() {
                        // The stop's sweep of the table may have run already.
                        me.kick(Kick::Shutdown);
                    }
                    return;
                }
            }
        };
        let client_id = &me.info.client_id;
        tracing::debug!(%client_id, tenant = ?me.info.tenant, "client id connected again: closing the older connection");
        if tokio::time::timeout_at(deadline, released).await.is_err() {
            tracing::warn!(%client_id, "older connection did not finish in time; taking its place");
            shared
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&old);
        }
    }
}

impl Conn {
    async fn run(&mut self) -> End {
        // Bytes that came with the CONNECT. (No decoded state outlives an
        // await here: it is made and acted on in boxed futures.)
        if let Some(end) = {
            let first = self.take_bytes(&[]);
            Box::pin(self.act(first))
        }
        .await
        {
            return end;
        }
        loop {
            // Idle: nothing but the socket's readiness is awaited (a kick
            // shuts the socket's read side, which makes it readable).
            let ready = std::future::poll_fn(|cx| self.stream.poll_read_ready(cx)).await;
            if let Some(end) = self.kicked() {
                return end;
            }
            if let Err(e) = ready {
                return End::Lost(e.to_string());
            }
            if let Some(end) = Box::pin(self.read_and_act()).await {
                return end;
            }
        }
    }

    /// Reads what the socket has and acts on the packets it completes.
    async fn read_and_act(&mut self) -> Option<End> {
        let read = {
            let mut chunk = [0u8; READ_CHUNK];
            match self.stream.try_read(&mut chunk) {
                Ok(0) => {
                    return Some(self.kicked().unwrap_or_else(|| {
                        End::Lost("connection closed without DISCONNECT".to_owned())
                    }));
                }
                Ok(n) => {
                    self.me.last_read_ms.store(self.shared.now_ms(), Relaxed);
                    self.shared.metrics.bytes_in.fetch_add(n as u64, Relaxed);
                    self.take_bytes(&chunk[..n])
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(End::Lost(e.to_string())),
            }
        };
        self.act(read).await
    }

    /// Acts on what a read decoded, then on the end it came with.
    async fn act(&mut self, (incoming, end): (Vec<Incoming>, Option<End>)) -> Option<End> {
        if let Some(end) = self.handle(incoming).await {
            return Some(end);
        }
        end
    }

    /// How the connection ends if it was told to stop.
    fn kicked(&self) -> Option<End> {
        match self.me.kicked() {
            Kick::None => None,
            Kick::TakenOver => Some(End::TakenOver),
            Kick::Shutdown => Some(End::Shutdown),
            Kick::KeepAlive => Some(End::KeepAlive),
        }
    }

    /// The client's address, for logs.
    fn peer(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// Decodes what `chunk` completes (with the bytes kept from earlier
    /// reads); keeps an incomplete packet's bytes. The end, if the bytes
    /// break a rule, comes after the packets decoded before it.
    fn take_bytes(&mut self, chunk: &[u8]) -> (Vec<Incoming>, Option<End>) {
        let mut incoming = Vec::new();
        let mut buf = self
            .pending
            .as_mut()
            .map(|p| std::mem::take(&mut p.partial))
            .unwrap_or_default();
        let end = if buf.is_empty() {
            let (used, end) = self.decode(chunk, &mut incoming);
            if end.is_none() {
                buf.extend_from_slice(&chunk[used..]);
            }
            end
        } else {
            buf.extend_from_slice(chunk);
            let (used, end) = self.decode(&buf, &mut incoming);
            if end.is_none() {
                buf.drain(..used);
            } else {
                buf.clear();
            }
            end
        };
        if !buf.is_empty() {
            self.pending.get_or_insert_default().partial = buf;
        }
        self.tidy_pending();
        (incoming, end)
    }

    /// Frees the pending state once nothing is pending.
    fn tidy_pending(&mut self) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.partial.is_empty() && p.qos2.is_empty() && p.greeting.is_empty())
        {
            self.pending = None;
        }
    }

    /// Packet ids of QoS 2 publishes delivered, awaiting PUBREL.
    fn qos2(&self) -> &[u16] {
        self.pending.as_ref().map_or(&[], |p| &p.qos2)
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
                        username: self.me.info.username.as_deref(),
                        client_id: Some(&self.me.info.client_id),
                        tenant: self.me.info.tenant.as_deref(),
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
                            tracing::info!(peer = ?self.peer(), client_id = %self.me.info.client_id, topic = p.topic,
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
        // The CONNACK, written with the first acks.
        let mut out = self
            .pending
            .as_mut()
            .map(|p| std::mem::take(&mut p.greeting))
            .unwrap_or_default();
        self.tidy_pending();
        if incoming.is_empty() && out.is_empty() {
            return None;
        }
        let version = self.version;
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
                        if self.qos2().contains(&packet_id) {
                            // A resent QoS 2 publish: delivered already.
                            codec::ack(&mut out, 0x50, packet_id, version, 0);
                            continue;
                        }
                        if self.qos2().len()
                            >= usize::from(self.shared.settings.limits.max_inflight)
                        {
                            end = Some(End::Refused(
                                Refusal::QuotaExceeded,
                                "more QoS 2 publishes in flight than limits.max_inflight"
                                    .to_owned(),
                                DisconnectReason::ReceiveMaximum,
                            ));
                            break;
                        }
                        self.pending.get_or_insert_default().qos2.push(packet_id);
                    }
                    let received = fieldlink_model::now_unix_nanos();
                    let event = MqttEvent::Publish(MqttPublish {
                        client: Some(self.me.info.clone()),
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
                            self.me.info.tenant.as_deref(),
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
                    if let Some(p) = self.pending.as_mut() {
                        p.qos2.retain(|p| *p != id);
                    }
                    self.tidy_pending();
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
                    self.peer(),
                    Refusal::KeepAliveTimeout,
                    &format!(
                        "client `{}` silent for 1.5× its keep-alive",
                        self.me.info.client_id
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
                    self.peer(),
                    refusal,
                    &format!("client `{}`: {why}", self.me.info.client_id),
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
        tracing::debug!(peer = ?self.peer(), client_id = %self.me.info.client_id, clean, reason = %reason, "client disconnected");
        let shared = self.shared.clone();
        let tenant = self.me.info.tenant.clone();
        if will && let Some(w) = self.will.take() {
            metrics.wills.fetch_add(1, Relaxed);
            let received = fieldlink_model::now_unix_nanos();
            let event = MqttEvent::Publish(MqttPublish {
                client: Some(self.me.info.clone()),
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
        let mut info = self.me.info.clone();
        info.time_unix_nano = fieldlink_model::now_unix_nanos();
        let me = self.me.clone();
        shared
            .links
            .emit_marking(
                tenant.as_deref(),
                None,
                MqttEvent::Disconnected {
                    client: info,
                    clean,
                    reason,
                },
                &metrics,
                &shared.stop,
                || me.announced.store(false, Relaxed),
            )
            .await;
        metrics.connections.fetch_sub(1, Relaxed);
        // Leaves the session table (a successor waits for it), then closes.
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    /// The task of a connection is allocated at the size of its largest
    /// state and kept for the connection's life: the boxed phases keep it
    /// small: 136 bytes in release, 144 in debug (it was 2 192 with the CONNECT phase inline, 784 with a timer and a stop signal per connection); with tokio's header and trailer that is the 256-byte class of its 128-byte-aligned task cells.
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
            let permit = std::sync::Arc::new(tokio::sync::Semaphore::new(1))
                .try_acquire_owned()
                .unwrap();
            let serve = super::serve(stream, peer, ingress.shared.clone(), permit);
            assert!(
                size(&serve) <= 144,
                "connection task state is {} bytes",
                size(&serve)
            );
        });
    }
}
