//! One client connection: CONNECT, authentication, ACL, the router link,
//! then packets both ways until the connection ends.
//!
//! The handler owns the socket halves, a read buffer (partial frames stay in
//! it, so every `select!` branch is cancel-safe) and a write buffer. One
//! `select!` loop reads the client, writes what is pending, takes router
//! notifications (only while the write buffer is below its mark, so a slow
//! reader is bounded: the router keeps its backlog in its commit log and
//! unschedules it), and watches the keep-alive, the write deadline, a
//! takeover and the broker's stop.
//!
//! QoS is terminated here: QoS 1 is acknowledged when the message is handed
//! on, QoS 2 is deduplicated by packet id until PUBREL (exactly once to the
//! router and the links). The router gets QoS 0 publishes and forwards at the
//! subscription's QoS (granted at most 1); the client's PUBACKs for those go
//! back to the router in the order it sent them.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fieldlink_model::mqtt::{ClientInfo, MqttEvent, MqttPublish};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectReasonCode, Filter,
    LastWill, Packet, PingResp, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason,
    Publish, PublishProperties, QoS, SubAck, Subscribe, SubscribeReasonCode, UnsubAck,
    UnsubAckReason, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::acl::{ClientAcl, Identity, valid_filter, valid_topic};
use crate::config::Role;
use crate::frame::{self, Frame, FrameError, Version};
use crate::metrics::Refusal;

/// Most bytes waiting to be written before the handler stops taking more
/// (router notifications, client packets that need answers).
const OUT_HIGH_WATER: usize = 256 * 1024;
/// Longest a closing connection waits to flush its last packets.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Longest a new connection waits for the one it takes over to finish.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Serves one accepted (and, on the TLS listener, handshaken) stream.
/// `deadline` bounds the time to a complete CONNECT.
pub(crate) async fn serve<S>(stream: S, peer: SocketAddr, deadline: Instant, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut rbuf = BytesMut::with_capacity(1024);
    let max = shared.settings.limits.max_packet_size;
    let first = loop {
        match frame::read_connect(&mut rbuf, max) {
            Ok(Some(first)) => break first,
            Ok(None) => {}
            Err(e) => {
                let reason = refusal_of(&e);
                shared.metrics.refuse(reason);
                tracing::info!(%peer, error = %e, reason = reason.label(), "connection refused before CONNECT");
                if let FrameError::Unsupported { .. } = e {
                    // MQTT 3.1.1 §3.1.2.2: answer 0x01 in the 3.1.1 format.
                    let _ = refuse_connect(
                        &mut writer,
                        Version::V4,
                        ConnectReturnCode::RefusedProtocolVersion,
                    )
                    .await;
                }
                return;
            }
        }
        let read = tokio::select! {
            _ = shared.stop.cancelled() => return,
            read = tokio::time::timeout_at(deadline, reader.read_buf(&mut rbuf)) => read,
        };
        match read {
            Err(_) => {
                shared.metrics.refuse(Refusal::ConnectTimeout);
                tracing::info!(%peer, buffered = rbuf.len(), "no CONNECT in time; closed");
                return;
            }
            Ok(Ok(0)) => {
                tracing::debug!(%peer, "closed before CONNECT");
                return;
            }
            Ok(Ok(n)) => {
                shared.metrics.bytes_in.fetch_add(n as u64, Relaxed);
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "read failed before CONNECT");
                return;
            }
        }
    };
    let (version, frame) = first;
    let Packet::Connect(connect, props, will, _will_props, login) = frame.packet else {
        return;
    };

    // Authentication.
    let Some(login) = login else {
        shared.metrics.refuse(Refusal::BadCredentials);
        tracing::info!(%peer, client_id = %connect.client_id, "refused: no user name and password");
        let _ = refuse_connect(&mut writer, version, bad_credentials(version)).await;
        return;
    };
    let user = match tokio::time::timeout_at(
        deadline,
        crate::auth::check_login(
            &shared.settings.users,
            &shared.auth_slots,
            &login.username,
            login.password.as_bytes(),
        ),
    )
    .await
    {
        Ok(Some(user)) => user,
        Ok(None) => {
            shared.metrics.refuse(Refusal::BadCredentials);
            tracing::info!(%peer, username = %login.username, client_id = %connect.client_id, "refused: bad credentials");
            let _ = refuse_connect(&mut writer, version, bad_credentials(version)).await;
            return;
        }
        Err(_) => {
            shared.metrics.refuse(Refusal::ConnectTimeout);
            tracing::info!(%peer, username = %login.username, "refused: password check not done in time");
            return;
        }
    };

    // Client id.
    let (client_id, assigned) =
        match user.client_id_for(&connect.client_id, connect.clean_session, || {
            shared.next_conn.fetch_add(1, Relaxed)
        }) {
            Ok(resolved) => resolved,
            Err(why) => {
                return refuse_client_id(
                    &shared,
                    &mut writer,
                    version,
                    peer,
                    &connect.client_id,
                    why,
                )
                .await;
            }
        };
    let assigned = assigned.then(|| client_id.clone());
    tracing::Span::current().record("client_id", client_id.as_str());

    // ACL and the will.
    let Some(tenant) = shared.settings.tenants.get(&user.tenant) else {
        return;
    };
    let patterns = match user.role {
        Role::Device => &tenant.device,
        Role::Service => &tenant.service,
    };
    let acl = patterns.expand(&Identity {
        username: Some(&user.username),
        client_id: Some(&client_id),
        tenant: Some(&tenant.name),
    });
    if let Some(w) = &will {
        let topic = std::str::from_utf8(&w.topic).unwrap_or("");
        if !acl.may_publish(topic) {
            shared.metrics.refuse(Refusal::NotAuthorizedWill);
            tracing::warn!(%peer, client_id = %client_id, tenant = %tenant.name, topic, "refused: will topic not authorized");
            let code = match version {
                Version::V4 => ConnectReturnCode::NotAuthorized,
                Version::V5 => ConnectReturnCode::NotAuthorized,
            };
            let _ = refuse_connect(&mut writer, version, code).await;
            return;
        }
    }

    // Keep-alive: the client's, capped (0 = none is not granted).
    let max_keep_alive =
        u16::try_from(shared.settings.limits.max_keep_alive.as_secs()).unwrap_or(u16::MAX);
    let keep_alive = if connect.keep_alive == 0 || connect.keep_alive > max_keep_alive {
        max_keep_alive
    } else {
        connect.keep_alive
    };

    // Takeover: one live connection per (tenant, client id).
    let conn = shared.next_conn.fetch_add(1, Relaxed);
    let key = (tenant.name.clone(), client_id.clone());
    let kick = CancellationToken::new();
    let finished = CancellationToken::new();
    claim(&shared, &key, conn, &kick, &finished).await;

    // The router link (LinkBuilder::build blocks on the router's answer).
    let router = shared.router.clone();
    let router_id = router_client_id(&tenant.name, &client_id);
    let link =
        tokio::task::spawn_blocking(move || router.link(&router_id).map_err(|e| e.to_string()))
            .await;
    let (link_tx, link_rx) = match link {
        Ok(Ok(link)) => link,
        other => {
            let why = match other {
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
                Ok(Ok(_)) => String::new(),
            };
            shared.metrics.refuse(Refusal::ServerUnavailable);
            tracing::error!(%peer, client_id = %client_id, error = %why, "refused: the router did not take the connection");
            let code = match version {
                Version::V4 => ConnectReturnCode::ServiceUnavailable,
                Version::V5 => ConnectReturnCode::ServerUnavailable,
            };
            let _ = refuse_connect(&mut writer, version, code).await;
            release(&shared, &key, conn, &finished);
            return;
        }
    };

    let limits = &shared.settings.limits;
    let mut out = BytesMut::with_capacity(256);
    let properties = match version {
        Version::V4 => None,
        Version::V5 => Some(ConnAckProperties {
            receive_max: Some(limits.max_inflight),
            max_packet_size: u32::try_from(limits.max_packet_size + 5).ok(),
            assigned_client_identifier: assigned,
            retain_available: Some(1),
            subscription_identifiers_available: Some(0),
            shared_subscription_available: Some(1),
            wildcard_subscription_available: Some(1),
            server_keep_alive: (keep_alive != connect.keep_alive).then_some(keep_alive),
            ..ConnAckProperties::default()
        }),
    };
    let connack = Packet::ConnAck(
        ConnAck {
            session_present: false,
            code: ConnectReturnCode::Success,
        },
        properties,
    );
    if frame::write(&mut out, version, connack).is_err() {
        release(&shared, &key, conn, &finished);
        return;
    }
    let _ = props;

    let info = ClientInfo {
        client_id: Arc::from(client_id.as_str()),
        username: Some(user.username.clone()),
        tenant: Some(tenant.name.clone()),
        time_unix_nano: fieldlink_model::now_unix_nanos(),
    };
    shared.metrics.connections.fetch_add(1, Relaxed);
    shared.metrics.connections_total.fetch_add(1, Relaxed);
    tracing::info!(%peer, client_id = %client_id, tenant = %tenant.name, username = %user.username,
        role = user.role.label(), version = version.label(), keep_alive, "client connected");
    shared
        .links
        .emit(
            Some(&tenant.name),
            None,
            MqttEvent::Connected(info.clone()),
            &shared.metrics,
            &shared.stop,
        )
        .await;

    let mut handler = Handler {
        reader,
        writer,
        rbuf,
        out,
        write_deadline: None,
        version,
        info,
        tenant: tenant.name.clone(),
        acl,
        link_tx,
        link_rx,
        qos2_in: HashSet::new(),
        out_inflight: VecDeque::new(),
        pending_subacks: VecDeque::new(),
        subscriptions: HashSet::new(),
        will,
        keep_alive: Duration::from_millis(u64::from(keep_alive) * 1500),
        shared: shared.clone(),
        kick,
        peer,
    };
    let end = handler.run().await;
    handler.finish(end, &key, conn, &finished).await;
}

/// Takes the (tenant, client id) slot, closing a connection that holds it
/// and waiting until it has emitted its last event.
async fn claim(
    shared: &Shared,
    key: &(Arc<str>, String),
    conn: u64,
    kick: &CancellationToken,
    finished: &CancellationToken,
) {
    loop {
        let old = {
            let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
            match sessions.get(key) {
                Some(old) => Some(old.clone()),
                None => {
                    sessions.insert(
                        key.clone(),
                        crate::Session {
                            conn,
                            kick: kick.clone(),
                            finished: finished.clone(),
                        },
                    );
                    None
                }
            }
        };
        let Some(old) = old else { return };
        tracing::info!(client_id = %key.1, tenant = %key.0, "client id connected again: closing the older connection");
        old.kick.cancel();
        if tokio::time::timeout(TAKEOVER_WAIT, old.finished.cancelled())
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

/// Frees the slot if this connection still holds it; wakes a waiting
/// successor.
fn release(shared: &Shared, key: &(Arc<str>, String), conn: u64, finished: &CancellationToken) {
    {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.get(key).is_some_and(|s| s.conn == conn) {
            sessions.remove(key);
        }
    }
    finished.cancel();
}

/// The router's name for a client: tenant and client id, with the
/// characters rumqttd refuses in ids (`+ $ # /`) escaped reversibly.
fn router_client_id(tenant: &str, client_id: &str) -> String {
    let mut id = String::with_capacity(tenant.len() + client_id.len() + 4);
    id.push_str("c.");
    id.push_str(tenant);
    id.push('.');
    for c in client_id.chars() {
        match c {
            '%' | '+' | '$' | '#' | '/' => id.push_str(&format!("%{:02X}", u32::from(c))),
            c => id.push(c),
        }
    }
    id
}

fn refusal_of(e: &FrameError) -> Refusal {
    match e {
        FrameError::TooLarge { .. } => Refusal::TooLarge,
        FrameError::Unsupported { .. } => Refusal::UnsupportedProtocol,
        FrameError::BadLength
        | FrameError::NotConnect(_)
        | FrameError::Unexpected(_)
        | FrameError::Codec(_)
        | FrameError::CodecPanic => Refusal::Malformed,
    }
}

fn bad_credentials(version: Version) -> ConnectReturnCode {
    match version {
        // 0x04 in 3.1.1, 0x86 in 5: the codec maps the one variant to both.
        Version::V4 | Version::V5 => ConnectReturnCode::BadUserNamePassword,
    }
}

async fn refuse_client_id<W: AsyncWrite + Unpin>(
    shared: &Shared,
    writer: &mut W,
    version: Version,
    peer: SocketAddr,
    client_id: &str,
    why: &str,
) {
    shared.metrics.refuse(Refusal::ClientIdRejected);
    tracing::info!(%peer, client_id = %client_id.chars().take(64).collect::<String>(), why, "refused: client id");
    let _ = refuse_connect(writer, version, ConnectReturnCode::ClientIdentifierNotValid).await;
}

/// Writes a refusing CONNACK and closes.
async fn refuse_connect<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: Version,
    code: ConnectReturnCode,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(8);
    let packet = Packet::ConnAck(
        ConnAck {
            session_present: false,
            code,
        },
        None,
    );
    if frame::write(&mut out, version, packet).is_ok() {
        tokio::time::timeout(CLOSE_FLUSH, writer.write_all(&out))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH, writer.shutdown()).await;
    Ok(())
}

/// Why the loop ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT: no will.
    Clean,
    /// MQTT 5 DISCONNECT 0x04: clean, but the will is published.
    CleanWithWill,
    /// The network went away.
    Lost(String),
    /// Silent too long.
    KeepAlive,
    /// Took no bytes too long.
    SlowConsumer,
    /// The same client id connected again.
    TakenOver,
    /// The broker stops: no will.
    Shutdown,
    /// The client broke a rule.
    Refused(Refusal, String, DisconnectReasonCode),
    /// The router dropped the link.
    RouterGone(String),
}

struct Handler<S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    /// Bytes read, not yet a complete frame.
    rbuf: BytesMut,
    /// Bytes to write.
    out: BytesMut,
    /// When a write that has been waiting gives up (slow consumer).
    write_deadline: Option<Instant>,
    version: Version,
    info: ClientInfo,
    tenant: Arc<str>,
    acl: ClientAcl,
    link_tx: LinkTx,
    link_rx: LinkRx,
    /// QoS 2 packet ids received, not yet released.
    qos2_in: HashSet<u16>,
    /// QoS 1 packet ids forwarded by the router, in its order, and whether
    /// the client acknowledged them.
    out_inflight: VecDeque<(u16, bool)>,
    /// Our SUBACKs, waiting for the router's (in order).
    pending_subacks: VecDeque<(u16, Vec<SubscribeReasonCode>)>,
    subscriptions: HashSet<String>,
    will: Option<LastWill>,
    /// 1.5 × keep-alive.
    keep_alive: Duration,
    shared: Arc<Shared>,
    kick: CancellationToken,
    peer: SocketAddr,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Handler<S> {
    async fn run(&mut self) -> End {
        let max = self.shared.settings.limits.max_packet_size;
        let write_timeout = self.shared.settings.limits.write_timeout;
        let mut keep_alive_at = Instant::now() + self.keep_alive;
        // A far-away instant for disarmed timers.
        let never = Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            // Every complete frame, while there is room to answer.
            while self.out.len() < OUT_HIGH_WATER {
                match frame::read(&mut self.rbuf, self.version, max) {
                    Ok(Some(frame)) => {
                        if let Some(end) = self.packet(frame).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let code = match e {
                            FrameError::TooLarge { .. } => DisconnectReasonCode::PacketTooLarge,
                            _ => DisconnectReasonCode::MalformedPacket,
                        };
                        return End::Refused(refusal_of(&e), e.to_string(), code);
                    }
                }
            }
            if !self.out.is_empty() && self.write_deadline.is_none() {
                self.write_deadline = Some(Instant::now() + write_timeout);
            }
            let room = self.out.len() < OUT_HIGH_WATER;
            tokio::select! {
                biased;
                _ = self.shared.stop.cancelled() => return End::Shutdown,
                _ = self.kick.cancelled() => return End::TakenOver,
                _ = tokio::time::sleep_until(keep_alive_at) => return End::KeepAlive,
                _ = tokio::time::sleep_until(self.write_deadline.unwrap_or(never)), if self.write_deadline.is_some() => {
                    return End::SlowConsumer;
                }
                written = self.writer.write(&self.out), if !self.out.is_empty() => match written {
                    Ok(0) => return End::Lost("connection closed while writing".into()),
                    Ok(n) => {
                        self.out.advance(n);
                        self.shared.metrics.bytes_out.fetch_add(n as u64, Relaxed);
                        self.write_deadline = (!self.out.is_empty()).then(|| Instant::now() + write_timeout);
                    }
                    Err(e) => return End::Lost(format!("write: {e}")),
                },
                read = self.reader.read_buf(&mut self.rbuf), if room => match read {
                    Ok(0) => return End::Lost("connection closed by the client".into()),
                    Ok(n) => {
                        self.shared.metrics.bytes_in.fetch_add(n as u64, Relaxed);
                        keep_alive_at = Instant::now() + self.keep_alive;
                    }
                    Err(e) => return End::Lost(format!("read: {e}")),
                },
                notification = self.link_rx.next(), if room => match notification {
                    Ok(Some(n)) => {
                        if let Some(end) = self.notification(n).await {
                            return end;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return End::RouterGone(e.to_string()),
                },
            }
        }
    }

    /// Appends a packet for the client.
    fn send(&mut self, packet: Packet) -> Option<End> {
        match frame::write(&mut self.out, self.version, packet) {
            Ok(_) => None,
            Err(e) => Some(End::Refused(
                Refusal::ProtocolError,
                format!("cannot encode: {e}"),
                DisconnectReasonCode::ImplementationSpecificError,
            )),
        }
    }

    async fn route(&mut self, packet: Packet) -> Option<End> {
        match self.link_tx.send(packet).await {
            Ok(_) => None,
            Err(e) => Some(End::RouterGone(e.to_string())),
        }
    }

    fn protocol_error(what: &str) -> Option<End> {
        Some(End::Refused(
            Refusal::ProtocolError,
            what.to_owned(),
            DisconnectReasonCode::ProtocolError,
        ))
    }

    async fn packet(&mut self, frame: Frame) -> Option<End> {
        let Frame {
            packet, qos, pkid, ..
        } = frame;
        match packet {
            Packet::Publish(publish, props) => self.publish(publish, props, qos, pkid).await,
            Packet::PubRel(rel, _) => {
                let known = self.qos2_in.remove(&rel.pkid);
                let reason = if known {
                    PubCompReason::Success
                } else {
                    PubCompReason::PacketIdentifierNotFound
                };
                self.send(Packet::PubComp(
                    PubComp {
                        pkid: rel.pkid,
                        reason,
                    },
                    None,
                ))
            }
            Packet::PubAck(ack, _) => self.client_puback(ack.pkid).await,
            Packet::Subscribe(subscribe, _) => self.subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe, _) => self.unsubscribe(unsubscribe).await,
            Packet::PingReq(_) => self.send(Packet::PingResp(PingResp)),
            Packet::Disconnect(d, _) => Some(
                if d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage {
                    End::CleanWithWill
                } else {
                    End::Clean
                },
            ),
            Packet::Connect(..) => Self::protocol_error("a second CONNECT"),
            Packet::PubRec(..) | Packet::PubComp(..) => {
                Self::protocol_error("PUBREC/PUBCOMP for a QoS 2 message never sent")
            }
            other => Self::protocol_error(&format!("unexpected {}", packet_name(&other))),
        }
    }

    async fn publish(
        &mut self,
        publish: Publish,
        props: Option<PublishProperties>,
        qos: u8,
        pkid: u16,
    ) -> Option<End> {
        let Ok(topic) = std::str::from_utf8(&publish.topic) else {
            return Some(End::Refused(
                Refusal::Malformed,
                "topic is not UTF-8".into(),
                DisconnectReasonCode::MalformedPacket,
            ));
        };
        if let Some(p) = &props {
            if p.topic_alias.is_some() {
                return Some(End::Refused(
                    Refusal::ProtocolError,
                    "topic alias used (maximum 0)".into(),
                    DisconnectReasonCode::TopicAliasInvalid,
                ));
            }
            if !p.subscription_identifiers.is_empty() {
                return Self::protocol_error("subscription identifier in a PUBLISH from a client");
            }
        }
        if !valid_topic(topic) {
            return Some(End::Refused(
                Refusal::ProtocolError,
                format!("invalid topic name `{}`", topic.escape_debug()),
                DisconnectReasonCode::TopicNameInvalid,
            ));
        }
        if qos == 2 && self.qos2_in.contains(&pkid) {
            // A resent QoS 2 message: already delivered once.
            return self.send(Packet::PubRec(
                PubRec {
                    pkid,
                    reason: PubRecReason::Success,
                },
                None,
            ));
        }
        if !self.acl.may_publish(topic) {
            tracing::warn!(peer = %self.peer, client_id = %self.info.client_id, tenant = %self.tenant, topic, qos,
                "publish refused: not authorized");
            return match self.version {
                // 3.1.1 has no negative PUBACK: close (§3.3.5).
                Version::V4 => Some(End::Refused(
                    Refusal::NotAuthorizedPublish,
                    format!("publish to `{topic}` not authorized"),
                    DisconnectReasonCode::NotAuthorized,
                )),
                Version::V5 => {
                    self.shared.metrics.refuse(Refusal::NotAuthorizedPublish);
                    match qos {
                        1 => self.send(Packet::PubAck(
                            PubAck {
                                pkid,
                                reason: PubAckReason::NotAuthorized,
                            },
                            None,
                        )),
                        2 => self.send(Packet::PubRec(
                            PubRec {
                                pkid,
                                reason: PubRecReason::NotAuthorized,
                            },
                            None,
                        )),
                        _ => None,
                    }
                }
            };
        }
        if qos == 2 && self.qos2_in.len() >= usize::from(self.shared.settings.limits.max_inflight) {
            return Some(End::Refused(
                Refusal::QuotaExceeded,
                "more QoS 2 messages in flight than the receive maximum".into(),
                DisconnectReasonCode::ReceiveMaximumExceeded,
            ));
        }
        let received = fieldlink_model::now_unix_nanos();
        let topic_arc: Arc<str> = Arc::from(topic);
        let retain = publish.retain;
        let payload = publish.payload.clone();
        let router_props = props.map(|mut p| {
            p.topic_alias = None;
            p
        });
        let router_publish = Publish::new(publish.topic, publish.payload, retain);
        if let Some(end) = self
            .route(Packet::Publish(router_publish, router_props))
            .await
        {
            return Some(end);
        }
        self.shared.metrics.messages_in.fetch_add(1, Relaxed);
        let event = MqttEvent::Publish(MqttPublish {
            client: Some(self.info.clone()),
            topic: topic_arc,
            payload,
            qos,
            retain,
            received_unix_nano: received,
        });
        self.shared
            .links
            .emit(
                Some(&self.tenant),
                None,
                event,
                &self.shared.metrics,
                &self.shared.stop,
            )
            .await;
        match qos {
            1 => self.send(Packet::PubAck(
                PubAck {
                    pkid,
                    reason: PubAckReason::Success,
                },
                None,
            )),
            2 => {
                self.qos2_in.insert(pkid);
                self.send(Packet::PubRec(
                    PubRec {
                        pkid,
                        reason: PubRecReason::Success,
                    },
                    None,
                ))
            }
            _ => None,
        }
    }

    /// A PUBACK for a message the router forwarded: relayed in the router's
    /// order (it refuses out-of-order acks), unknown ids ignored.
    async fn client_puback(&mut self, pkid: u16) -> Option<End> {
        match self
            .out_inflight
            .iter_mut()
            .find(|(id, acked)| *id == pkid && !*acked)
        {
            Some(entry) => entry.1 = true,
            None => {
                tracing::debug!(client_id = %self.info.client_id, pkid, "PUBACK for no message in flight; ignored");
                return None;
            }
        }
        while let Some(&(id, true)) = self.out_inflight.front() {
            self.out_inflight.pop_front();
            let ack = Packet::PubAck(
                PubAck {
                    pkid: id,
                    reason: PubAckReason::Success,
                },
                None,
            );
            if let Some(end) = self.route(ack).await {
                return Some(end);
            }
        }
        None
    }

    async fn subscribe(&mut self, subscribe: Subscribe) -> Option<End> {
        let limits = &self.shared.settings.limits;
        let v5 = self.version == Version::V5;
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut allowed = Vec::new();
        for filter in subscribe.filters {
            let inner = match filter.path.strip_prefix("$share/") {
                Some(rest) => match rest.split_once('/') {
                    Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) => {
                        Some(inner)
                    }
                    _ => None,
                },
                None if filter.path.starts_with('$') => None,
                None => Some(filter.path.as_str()),
            };
            let code = match inner {
                Some(inner) if valid_filter(inner) => {
                    if !self.acl.may_subscribe(inner) {
                        self.shared.metrics.refuse(Refusal::NotAuthorizedSubscribe);
                        tracing::warn!(peer = %self.peer, client_id = %self.info.client_id, tenant = %self.tenant,
                            filter = %filter.path, "subscription refused: not authorized");
                        if v5 {
                            SubscribeReasonCode::NotAuthorized
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    } else if !self.subscriptions.contains(&filter.path)
                        && self.subscriptions.len() >= limits.max_subscriptions
                    {
                        self.shared.metrics.refuse(Refusal::QuotaExceeded);
                        tracing::warn!(client_id = %self.info.client_id, filter = %filter.path,
                            "subscription refused: limits.max_subscriptions reached");
                        if v5 {
                            SubscribeReasonCode::QuotaExceeded
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    } else {
                        let qos = if filter.qos == QoS::AtMostOnce {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        };
                        self.subscriptions.insert(filter.path.clone());
                        allowed.push(Filter { qos, ..filter });
                        SubscribeReasonCode::Success(qos)
                    }
                }
                _ => {
                    if v5 {
                        SubscribeReasonCode::TopicFilterInvalid
                    } else {
                        SubscribeReasonCode::Failure
                    }
                }
            };
            codes.push(code);
        }
        let pkid = subscribe.pkid;
        if allowed.is_empty() {
            return self.send(Packet::SubAck(
                SubAck {
                    pkid,
                    return_codes: codes,
                },
                None,
            ));
        }
        // Our SUBACK goes out when the router has taken the filters, so it
        // comes before any retained message they bring.
        self.pending_subacks.push_back((pkid, codes));
        self.route(Packet::Subscribe(
            Subscribe {
                pkid,
                filters: allowed,
            },
            None,
        ))
        .await
    }

    async fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Option<End> {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        let mut removed = Vec::new();
        for filter in unsubscribe.filters {
            if self.subscriptions.remove(&filter) {
                removed.push(filter);
                reasons.push(UnsubAckReason::Success);
            } else {
                reasons.push(UnsubAckReason::NoSubscriptionExisted);
            }
        }
        let pkid = unsubscribe.pkid;
        if !removed.is_empty() {
            // The router answers one UNSUBACK per filter it knew; ours is
            // the one the client gets.
            if let Some(end) = self
                .route(Packet::Unsubscribe(
                    Unsubscribe {
                        pkid,
                        filters: removed,
                    },
                    None,
                ))
                .await
            {
                return Some(end);
            }
        }
        self.send(Packet::UnsubAck(UnsubAck { pkid, reasons }, None))
    }

    async fn notification(&mut self, notification: Notification) -> Option<End> {
        match notification {
            Notification::Forward(forward) => {
                let props = match self.version {
                    Version::V4 => None,
                    Version::V5 => forward.properties.map(|mut p| {
                        p.topic_alias = None;
                        p
                    }),
                };
                let start = self.out.len();
                if let Some(end) = self.send(Packet::Publish(forward.publish, props)) {
                    return Some(end);
                }
                self.shared.metrics.messages_out.fetch_add(1, Relaxed);
                // The router set QoS and packet id (crate-private fields):
                // read them back from the bytes just encoded.
                if let Some((qos, pkid)) = encoded_publish_id(&self.out[start..])
                    && qos > 0
                {
                    self.out_inflight.push_back((pkid, false));
                }
                None
            }
            Notification::Unschedule => match self.link_rx.wake().await {
                Ok(()) => None,
                Err(e) => Some(End::RouterGone(e.to_string())),
            },
            Notification::Disconnect(d, _) => Some(End::RouterGone(format!(
                "router disconnected the link: {:?}",
                d.reason_code
            ))),
            other => {
                if let Some(Packet::SubAck(..)) = Option::<Packet>::from(other)
                    && let Some((pkid, codes)) = self.pending_subacks.pop_front()
                {
                    return self.send(Packet::SubAck(
                        SubAck {
                            pkid,
                            return_codes: codes,
                        },
                        None,
                    ));
                }
                None
            }
        }
    }

    /// Ends the connection: will (when due), router link, last event, slot,
    /// then a last flush.
    async fn finish(
        mut self,
        end: End,
        key: &(Arc<str>, String),
        conn: u64,
        finished: &CancellationToken,
    ) {
        let metrics = &self.shared.metrics;
        let (clean, reason, will, code): (bool, String, bool, Option<DisconnectReasonCode>) =
            match end {
                End::Clean => (true, "disconnect".into(), false, None),
                End::CleanWithWill => (true, "disconnect with will".into(), true, None),
                End::Lost(why) => (false, why, true, None),
                End::KeepAlive => {
                    metrics.refuse(Refusal::KeepAliveTimeout);
                    (
                        false,
                        "keep-alive timeout".into(),
                        true,
                        Some(DisconnectReasonCode::KeepAliveTimeout),
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
                        Some(DisconnectReasonCode::SessionTakenOver),
                    )
                }
                End::Shutdown => (
                    false,
                    "broker shutting down".into(),
                    false,
                    Some(DisconnectReasonCode::ServerShuttingDown),
                ),
                End::Refused(refusal, why, code) => {
                    metrics.refuse(refusal);
                    tracing::warn!(peer = %self.peer, client_id = %self.info.client_id, tenant = %self.tenant,
                    reason = refusal.label(), "connection closed: {why}");
                    (false, why, true, Some(code))
                }
                End::RouterGone(why) => (false, format!("router link: {why}"), true, None),
            };
        tracing::info!(peer = %self.peer, client_id = %self.info.client_id, tenant = %self.tenant, clean, reason = %reason,
            "client disconnected");
        let stop = self.shared.stop.clone();
        if will && let Some(w) = self.will.take() {
            metrics.wills.fetch_add(1, Relaxed);
            let topic = String::from_utf8_lossy(&w.topic).into_owned();
            let _ = self
                .link_tx
                .send(Packet::Publish(
                    Publish::new(w.topic.clone(), w.message.clone(), w.retain),
                    None,
                ))
                .await;
            let now = fieldlink_model::now_unix_nanos();
            let event = MqttEvent::Publish(MqttPublish {
                client: Some(self.info.clone()),
                topic: Arc::from(topic),
                payload: w.message,
                qos: w.qos as u8,
                retain: w.retain,
                received_unix_nano: now,
            });
            self.shared
                .links
                .emit(Some(&self.tenant), None, event, metrics, &stop)
                .await;
        }
        let _ = self
            .link_tx
            .send(Packet::Disconnect(
                Disconnect {
                    reason_code: DisconnectReasonCode::NormalDisconnection,
                },
                None,
            ))
            .await;
        let mut client = self.info.clone();
        client.time_unix_nano = fieldlink_model::now_unix_nanos();
        self.shared
            .links
            .emit(
                Some(&self.tenant),
                None,
                MqttEvent::Disconnected {
                    client,
                    clean,
                    reason,
                },
                metrics,
                &stop,
            )
            .await;
        metrics.connections.fetch_sub(1, Relaxed);
        release(&self.shared, key, conn, finished);
        // MQTT 5 tells the client why; 3.1.1 has no server DISCONNECT.
        if let (Version::V5, Some(code)) = (self.version, code) {
            let _ = self.send(Packet::Disconnect(Disconnect { reason_code: code }, None));
        }
        if !matches!(self.write_deadline, Some(d) if d <= Instant::now()) && !self.out.is_empty() {
            let _ = tokio::time::timeout(CLOSE_FLUSH, self.writer.write_all(&self.out)).await;
        }
        let _ = tokio::time::timeout(CLOSE_FLUSH, self.writer.shutdown()).await;
    }
}

/// QoS and packet id of an encoded PUBLISH at the start of `bytes`.
fn encoded_publish_id(bytes: &[u8]) -> Option<(u8, u16)> {
    let qos = (bytes.first()? >> 1) & 0b11;
    if qos == 0 {
        return Some((0, 0));
    }
    let (header, _) = frame::check(bytes, usize::MAX).ok()??;
    let len = bytes.get(header..header + 2)?;
    let at = header + 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    let id = bytes.get(at..at + 2)?;
    Some((qos, u16::from_be_bytes([id[0], id[1]])))
}

fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(..) => "CONNACK",
        Packet::Publish(..) => "PUBLISH",
        Packet::PubAck(..) => "PUBACK",
        Packet::PingReq(..) => "PINGREQ",
        Packet::PingResp(..) => "PINGRESP",
        Packet::Subscribe(..) => "SUBSCRIBE",
        Packet::SubAck(..) => "SUBACK",
        Packet::PubRec(..) => "PUBREC",
        Packet::PubRel(..) => "PUBREL",
        Packet::PubComp(..) => "PUBCOMP",
        Packet::Unsubscribe(..) => "UNSUBSCRIBE",
        Packet::UnsubAck(..) => "UNSUBACK",
        Packet::Disconnect(..) => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn router_ids_are_unique_and_valid() {
        let a = router_client_id("acme", "dev/1");
        let b = router_client_id("acme", "dev%2F1");
        assert_ne!(a, b);
        for id in [a, b, router_client_id("acme", "+#$")] {
            assert!(!id.contains(['+', '$', '#', '/']), "{id}");
        }
    }

    #[test]
    fn encoded_publish_ids_are_read_back() {
        let mut out = BytesMut::new();
        let publish = rumqttd::protocol::Publish::new(
            Bytes::from_static(b"a/b"),
            Bytes::from_static(b"x"),
            false,
        );
        frame::write(&mut out, Version::V4, Packet::Publish(publish, None)).unwrap();
        assert_eq!(encoded_publish_id(&out), Some((0, 0)));
        let qos1 = [0x32, 8, 0, 3, b'a', b'/', b'b', 0, 7, b'x'];
        assert_eq!(encoded_publish_id(&qos1), Some((1, 7)));
    }
}
