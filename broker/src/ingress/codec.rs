//! The lean ingress's MQTT 3.1.1 / 5 codec: packets read as borrowed views
//! of the bytes they arrived in, and the few packets a server sends written
//! into a caller's buffer.
//!
//! Only what a device sends to a telemetry endpoint is decoded in full
//! (CONNECT, PUBLISH, PUBREL, PINGREQ, DISCONNECT); SUBSCRIBE and
//! UNSUBSCRIBE are read for their packet id and entry count so they can be
//! answered (refused); MQTT 5 properties are walked and checked by type,
//! and only the ones the ingress acts on are kept.

use std::fmt;

/// MQTT version of a connection.
pub use crate::frame::Version;

/// Why bytes cannot be a packet; ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The fixed header declares more than the limit.
    #[error("declared packet length {declared} bytes is over limits.max_packet_size ({max})")]
    TooLarge {
        /// Remaining length declared.
        declared: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that break MQTT's encoding (what is named).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well-formed packets MQTT forbids here (what is named).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A CONNECT for a protocol version we do not speak.
    #[error("unsupported protocol `{name}` level {level}")]
    Unsupported {
        /// Protocol name given.
        name: String,
        /// Protocol level given.
        level: u8,
    },
}

/// Fixed header of a complete packet at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// First byte: type and flags.
    pub first: u8,
    /// Bytes of the fixed header.
    pub header_len: usize,
    /// Remaining length.
    pub body_len: usize,
}

impl Header {
    /// Bytes of the whole packet.
    pub fn total(&self) -> usize {
        self.header_len + self.body_len
    }
}

/// Reads the fixed header at the start of `buf`: `Ok(None)` while it is
/// incomplete. A declared length over `max` is refused before the body is
/// buffered.
///
/// # Errors
/// `Malformed` for a remaining length of more than four bytes, `TooLarge`.
pub fn header(buf: &[u8], max: usize) -> Result<Option<Header>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len: usize = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if len > max {
                return Err(CodecError::TooLarge { declared: len, max });
            }
            return Ok(Some(Header {
                first,
                header_len: 2 + i,
                body_len: len,
            }));
        }
    }
    Err(CodecError::Malformed(
        "remaining length of more than four bytes",
    ))
}

/// A Last Will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// QoS 0..=2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
}

/// A CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// 3.1.1 or 5.
    pub version: Version,
    /// Clean session (3.1.1) / clean start (5).
    pub clean: bool,
    /// Keep-alive asked for, seconds (0: none).
    pub keep_alive: u16,
    /// Client id (may be empty).
    pub client_id: &'a str,
    /// Will, if any.
    pub will: Option<Will<'a>>,
    /// User name, if any.
    pub username: Option<&'a str>,
    /// Password, if any.
    pub password: Option<&'a [u8]>,
    /// MQTT 5 enhanced authentication asked for (not supported).
    pub auth_method: bool,
}

/// A PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// QoS 0..=2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Topic name.
    pub topic: &'a str,
    /// Packet id (QoS 1 and 2), else 0.
    pub packet_id: u16,
    /// Payload.
    pub payload: &'a [u8],
}

/// A packet a client sends, once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// PUBLISH.
    Publish(Publish<'a>),
    /// PUBREL of a QoS 2 PUBLISH (packet id).
    PubRel(u16),
    /// PUBACK, PUBREC or PUBCOMP: the ingress never sends QoS > 0 to
    /// clients, so these acknowledge nothing and are ignored.
    Ack,
    /// SUBSCRIBE (packet id, filters).
    Subscribe(u16, usize),
    /// UNSUBSCRIBE (packet id, filters).
    Unsubscribe(u16, usize),
    /// PINGREQ.
    PingReq,
    /// DISCONNECT; `true` when an MQTT 5 client asks for its will (0x04).
    Disconnect(bool),
    /// A second CONNECT.
    Connect,
}

/// A cursor over a packet's body.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(CodecError::Malformed("packet ends early"))?;
        self.buf = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError::Malformed("field longer than the packet"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn binary(&mut self) -> Result<&'a [u8], CodecError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    fn string(&mut self) -> Result<&'a str, CodecError> {
        let bytes = self.binary()?;
        let s =
            std::str::from_utf8(bytes).map_err(|_| CodecError::Malformed("string is not UTF-8"))?;
        if s.contains('\0') {
            return Err(CodecError::Malformed("string holds U+0000"));
        }
        Ok(s)
    }

    fn varint(&mut self) -> Result<usize, CodecError> {
        let mut value = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            value |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::Malformed(
            "variable byte integer of more than four bytes",
        ))
    }

    /// An MQTT 5 property block, each property checked by its type; calls
    /// `seen(id, value)` for the numeric ones.
    fn properties(
        &mut self,
        mut seen: impl FnMut(u8, u32) -> Result<(), CodecError>,
    ) -> Result<(), CodecError> {
        let len = self.varint()?;
        let mut block = Reader {
            buf: self.take(len)?,
        };
        while !block.buf.is_empty() {
            let id = block.u8()?;
            let value = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => u32::from(block.u8()?),
                0x13 | 0x21 | 0x22 | 0x23 => u32::from(block.u16()?),
                0x02 | 0x11 | 0x18 | 0x27 => {
                    u32::from_be_bytes([block.u8()?, block.u8()?, block.u8()?, block.u8()?])
                }
                0x0B => u32::try_from(block.varint()?).unwrap_or(u32::MAX),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => {
                    block.string()?;
                    0
                }
                0x09 | 0x16 => {
                    block.binary()?;
                    0
                }
                0x26 => {
                    block.string()?;
                    block.string()?;
                    0
                }
                _ => return Err(CodecError::Malformed("unknown MQTT 5 property")),
            };
            seen(id, value)?;
        }
        Ok(())
    }
}

/// Decodes the first packet of a connection, which must be a CONNECT.
///
/// # Errors
/// `Protocol` when it is not a CONNECT, `Unsupported` for a protocol other
/// than MQTT 3.1.1 and 5, `Malformed`.
pub fn connect<'a>(h: Header, body: &'a [u8]) -> Result<Connect<'a>, CodecError> {
    if h.first != 0x10 {
        return Err(CodecError::Protocol("first packet is not CONNECT"));
    }
    let mut r = Reader { buf: body };
    let name = r.string()?;
    let level = r.u8()?;
    let version = match (name, level) {
        ("MQTT", 4) => Version::V4,
        ("MQTT", 5) => Version::V5,
        _ => {
            return Err(CodecError::Unsupported {
                name: name.to_owned(),
                level,
            });
        }
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(CodecError::Malformed("CONNECT reserved flag set"));
    }
    let keep_alive = r.u16()?;
    let mut auth_method = false;
    if version == Version::V5 {
        r.properties(|id, _| {
            auth_method |= id == 0x15;
            Ok(())
        })?;
    }
    let client_id = r.string()?;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(CodecError::Malformed("will QoS or retain without a will"));
    }
    if will_qos == 3 {
        return Err(CodecError::Malformed("will QoS 3"));
    }
    let will = if will_flag {
        if version == Version::V5 {
            r.properties(|_, _| Ok(()))?;
        }
        Some(Will {
            topic: r.string()?,
            payload: r.binary()?,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & 0x40 != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    if version == Version::V4 && password.is_some() && username.is_none() {
        return Err(CodecError::Malformed("password without a user name"));
    }
    if !r.buf.is_empty() {
        return Err(CodecError::Malformed("bytes after the CONNECT payload"));
    }
    Ok(Connect {
        version,
        clean: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        auth_method,
    })
}

/// Decodes a packet of a connected client.
///
/// # Errors
/// `Malformed` or `Protocol`, naming what is wrong.
pub fn packet<'a>(h: Header, body: &'a [u8], version: Version) -> Result<Packet<'a>, CodecError> {
    let v5 = version == Version::V5;
    let mut r = Reader { buf: body };
    let flags = h.first & 0x0f;
    match h.first >> 4 {
        1 => Ok(Packet::Connect),
        3 => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(CodecError::Malformed("PUBLISH QoS 3"));
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(CodecError::Malformed("DUP set on a QoS 0 PUBLISH"));
            }
            let topic = r.string()?;
            let packet_id = if qos > 0 { r.u16()? } else { 0 };
            if qos > 0 && packet_id == 0 {
                return Err(CodecError::Malformed("packet id 0"));
            }
            if v5 {
                r.properties(|id, _| match id {
                    // CONNACK says topic alias maximum 0: none may be used.
                    0x23 => Err(CodecError::Protocol("topic alias (none allowed)")),
                    0x0B => Err(CodecError::Protocol(
                        "subscription identifier from a client",
                    )),
                    _ => Ok(()),
                })?;
            }
            if topic.is_empty() {
                return Err(CodecError::Protocol("empty topic name"));
            }
            Ok(Packet::Publish(Publish {
                qos,
                retain: flags & 0x01 != 0,
                topic,
                packet_id,
                payload: r.buf,
            }))
        }
        4 | 5 | 7 => {
            if flags != 0 {
                return Err(CodecError::Malformed("reserved flags of an ack"));
            }
            r.u16()?;
            Ok(Packet::Ack)
        }
        6 => {
            if flags != 0x02 {
                return Err(CodecError::Malformed("PUBREL flags must be 0010"));
            }
            Ok(Packet::PubRel(r.u16()?))
        }
        8 | 10 => {
            if flags != 0x02 {
                return Err(CodecError::Malformed(
                    "SUBSCRIBE/UNSUBSCRIBE flags must be 0010",
                ));
            }
            let id = r.u16()?;
            if v5 {
                r.properties(|_, _| Ok(()))?;
            }
            let subscribe = h.first >> 4 == 8;
            let mut count = 0;
            while !r.buf.is_empty() {
                r.string()?;
                if subscribe {
                    r.u8()?;
                }
                count += 1;
            }
            if count == 0 {
                return Err(CodecError::Protocol(
                    "SUBSCRIBE/UNSUBSCRIBE without a filter",
                ));
            }
            Ok(if subscribe {
                Packet::Subscribe(id, count)
            } else {
                Packet::Unsubscribe(id, count)
            })
        }
        12 => {
            if flags != 0 || h.body_len != 0 {
                return Err(CodecError::Malformed("PINGREQ with flags or a body"));
            }
            Ok(Packet::PingReq)
        }
        14 => {
            if flags != 0 {
                return Err(CodecError::Malformed("DISCONNECT flags"));
            }
            let reason = if v5 && !r.buf.is_empty() { r.u8()? } else { 0 };
            Ok(Packet::Disconnect(reason == 0x04))
        }
        15 if v5 => Err(CodecError::Protocol(
            "AUTH (enhanced authentication is not supported)",
        )),
        _ => Err(CodecError::Protocol("a packet type a client does not send")),
    }
}

/// CONNACK reason of a refused CONNECT, written for the client's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// Unsupported protocol version.
    Version,
    /// Client id not allowed.
    ClientId,
    /// Bad user name or password.
    Credentials,
    /// Not authorized (will topic).
    NotAuthorized,
    /// Server unavailable (stopping, full).
    Unavailable,
    /// Bad authentication method (MQTT 5 AUTH).
    AuthMethod,
}

impl ConnectRefusal {
    fn code(self, version: Version) -> u8 {
        match (version, self) {
            (Version::V4, ConnectRefusal::Version) => 0x01,
            (Version::V4, ConnectRefusal::ClientId) => 0x02,
            (Version::V4, ConnectRefusal::Unavailable) => 0x03,
            (Version::V4, ConnectRefusal::Credentials | ConnectRefusal::AuthMethod) => 0x04,
            (Version::V4, ConnectRefusal::NotAuthorized) => 0x05,
            (Version::V5, ConnectRefusal::Version) => 0x84,
            (Version::V5, ConnectRefusal::ClientId) => 0x85,
            (Version::V5, ConnectRefusal::Credentials) => 0x86,
            (Version::V5, ConnectRefusal::NotAuthorized) => 0x87,
            (Version::V5, ConnectRefusal::Unavailable) => 0x88,
            (Version::V5, ConnectRefusal::AuthMethod) => 0x8C,
        }
    }
}

/// What a successful CONNACK tells an MQTT 5 client.
#[derive(Debug, Clone, Default)]
pub struct ConnAckProperties<'a> {
    /// Client id the server assigned to an empty one.
    pub assigned_client_id: Option<&'a str>,
    /// Keep-alive the server uses instead of the client's.
    pub server_keep_alive: Option<u16>,
    /// QoS 2 messages the client may have in flight.
    pub receive_maximum: u16,
    /// Largest packet the server takes (whole packet).
    pub maximum_packet_size: u32,
}

fn put_len(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len & 0x7f) as u8;
        len >>= 7;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

/// A successful CONNACK (session present 0: sessions are not kept).
pub fn connack_ok(out: &mut Vec<u8>, version: Version, props: &ConnAckProperties<'_>) {
    match version {
        Version::V4 => out.extend_from_slice(&[0x20, 0x02, 0x00, 0x00]),
        Version::V5 => {
            let mut p: Vec<u8> = Vec::with_capacity(48);
            p.push(0x21);
            p.extend_from_slice(&props.receive_maximum.to_be_bytes());
            p.push(0x27);
            p.extend_from_slice(&props.maximum_packet_size.to_be_bytes());
            // Retain is passed on to the gateway; wildcard, shared and
            // identified subscriptions are not offered (nothing can be
            // subscribed here); topic alias maximum stays 0 (absent).
            p.extend_from_slice(&[0x25, 1, 0x28, 0, 0x29, 0, 0x2A, 0]);
            if let Some(k) = props.server_keep_alive {
                p.push(0x13);
                p.extend_from_slice(&k.to_be_bytes());
            }
            if let Some(id) = props.assigned_client_id {
                p.push(0x12);
                p.extend_from_slice(&(id.len() as u16).to_be_bytes());
                p.extend_from_slice(id.as_bytes());
            }
            out.push(0x20);
            let mut plen = Vec::with_capacity(4);
            put_len(&mut plen, p.len());
            put_len(out, 2 + plen.len() + p.len());
            out.extend_from_slice(&[0x00, 0x00]);
            out.extend_from_slice(&plen);
            out.extend_from_slice(&p);
        }
    }
}

/// A refusing CONNACK.
pub fn connack_refused(out: &mut Vec<u8>, version: Version, why: ConnectRefusal) {
    let code = why.code(version);
    match version {
        Version::V4 => out.extend_from_slice(&[0x20, 0x02, 0x00, code]),
        Version::V5 => out.extend_from_slice(&[0x20, 0x03, 0x00, code, 0x00]),
    }
}

/// PUBACK (`kind` 0x40), PUBREC (0x50) or PUBCOMP (0x70) of `id`, with an
/// MQTT 5 reason when it is not success.
pub fn ack(out: &mut Vec<u8>, kind: u8, id: u16, version: Version, reason: u8) {
    let [hi, lo] = id.to_be_bytes();
    if version == Version::V5 && reason != 0 {
        out.extend_from_slice(&[kind, 0x03, hi, lo, reason]);
    } else {
        out.extend_from_slice(&[kind, 0x02, hi, lo]);
    }
}

/// SUBACK refusing every one of `count` filters.
pub fn suback_refused(out: &mut Vec<u8>, id: u16, count: usize, version: Version) {
    let (code, props) = match version {
        // 0x80 failure; MQTT 5: 0x87 not authorized.
        Version::V4 => (0x80, 0),
        Version::V5 => (0x87, 1),
    };
    out.push(0x90);
    put_len(out, 2 + props + count);
    out.extend_from_slice(&id.to_be_bytes());
    if props == 1 {
        out.push(0);
    }
    out.extend(std::iter::repeat_n(code, count));
}

/// UNSUBACK of `count` filters (none was subscribed).
pub fn unsuback(out: &mut Vec<u8>, id: u16, count: usize, version: Version) {
    out.push(0xB0);
    match version {
        Version::V4 => {
            out.push(0x02);
            out.extend_from_slice(&id.to_be_bytes());
        }
        Version::V5 => {
            put_len(out, 3 + count);
            out.extend_from_slice(&id.to_be_bytes());
            out.push(0);
            // 0x11: no subscription existed.
            out.extend(std::iter::repeat_n(0x11, count));
        }
    }
}

/// PINGRESP.
pub fn pingresp(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xD0, 0x00]);
}

/// A server DISCONNECT with a reason (MQTT 5 only; 3.1.1 just closes).
pub fn disconnect(out: &mut Vec<u8>, version: Version, reason: DisconnectReason) {
    if version == Version::V5 {
        out.extend_from_slice(&[0xE0, 0x01, reason as u8]);
    }
}

/// Why the server ends a connection (MQTT 5 reason codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DisconnectReason {
    /// 0x81.
    Malformed = 0x81,
    /// 0x82.
    Protocol = 0x82,
    /// 0x87.
    NotAuthorized = 0x87,
    /// 0x8B.
    ShuttingDown = 0x8B,
    /// 0x8D.
    KeepAlive = 0x8D,
    /// 0x8E.
    TakenOver = 0x8E,
    /// 0x93 (QoS 2 receive maximum exceeded).
    ReceiveMaximum = 0x93,
    /// 0x95.
    TooLarge = 0x95,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DisconnectReason::Malformed => "malformed packet",
            DisconnectReason::Protocol => "protocol error",
            DisconnectReason::NotAuthorized => "not authorized",
            DisconnectReason::ShuttingDown => "server shutting down",
            DisconnectReason::KeepAlive => "keep-alive timeout",
            DisconnectReason::TakenOver => "taken over",
            DisconnectReason::ReceiveMaximum => "receive maximum exceeded",
            DisconnectReason::TooLarge => "packet too large",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        put_len(&mut out, body.len());
        out.extend_from_slice(body);
        out
    }

    fn connect_body(level: u8, flags: u8, tail: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
        if level == 5 {
            b.push(0);
        }
        b.extend_from_slice(tail);
        b
    }

    fn str_field(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    fn decode_connect(bytes: &[u8]) -> Result<Connect<'_>, CodecError> {
        let h = header(bytes, 1 << 20)?.expect("complete");
        connect(h, &bytes[h.header_len..h.total()])
    }

    #[test]
    fn connect_with_credentials_and_will_is_read_in_both_versions() {
        for level in [4u8, 5] {
            let mut tail = str_field("dev-1");
            if level == 5 {
                tail.push(0); // will properties
            }
            tail.extend(str_field("acme/dev-1/status"));
            tail.extend(str_field("offline"));
            tail.extend(str_field("dev-1"));
            tail.extend(str_field("s3cret"));
            // user, password, will retain, will QoS 1, will, clean
            let bytes = frame(
                0x10,
                &connect_body(level, 0xC0 | 0x20 | 0x08 | 0x04 | 0x02, &tail),
            );
            let c = decode_connect(&bytes).expect("valid CONNECT");
            assert_eq!(c.client_id, "dev-1");
            assert_eq!(c.username, Some("dev-1"));
            assert_eq!(c.password, Some(&b"s3cret"[..]));
            assert!(c.clean);
            assert_eq!(c.keep_alive, 60);
            let will = c.will.expect("will");
            assert_eq!(
                (will.topic, will.payload, will.qos, will.retain),
                ("acme/dev-1/status", &b"offline"[..], 1, true)
            );
        }
    }

    #[test]
    fn bad_connects_are_named() {
        let bad_level = frame(0x10, &connect_body(3, 0x02, &str_field("x")));
        assert!(matches!(
            decode_connect(&bad_level),
            Err(CodecError::Unsupported { level: 3, .. })
        ));
        let reserved = frame(0x10, &connect_body(4, 0x03, &str_field("x")));
        assert!(matches!(
            decode_connect(&reserved),
            Err(CodecError::Malformed(_))
        ));
        let short = frame(0x10, &connect_body(4, 0x80, &str_field("x")));
        assert!(matches!(
            decode_connect(&short),
            Err(CodecError::Malformed(_))
        ));
        let publish_first = frame(0x30, &str_field("a"));
        assert!(matches!(
            decode_connect(&publish_first),
            Err(CodecError::Protocol(_))
        ));
        let bad_utf8 = frame(0x10, &connect_body(4, 0x02, &[0, 2, 0xff, 0xfe]));
        assert!(matches!(
            decode_connect(&bad_utf8),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn headers_are_checked_before_bodies_arrive() {
        assert_eq!(header(&[0x30], 100), Ok(None));
        assert_eq!(header(&[0x30, 0x80], 100), Ok(None));
        assert!(matches!(
            header(&[0x30, 0xff, 0xff, 0x7f], 100),
            Err(CodecError::TooLarge {
                declared: 2_097_151,
                max: 100
            })
        ));
        assert!(matches!(
            header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Err(CodecError::Malformed(_))
        ));
        let h = header(&[0x30, 0xc8, 0x01], 1000)
            .expect("ok")
            .expect("complete");
        assert_eq!((h.header_len, h.body_len), (3, 200));
    }

    #[test]
    fn publishes_of_every_qos_are_read() {
        let mut body = str_field("acme/dev-1/telemetry");
        body.extend_from_slice(&[0x12, 0x34]);
        body.extend_from_slice(br#"{"t":1}"#);
        let bytes = frame(0x32 | 0x01, &body);
        let h = header(&bytes, 1000).expect("ok").expect("complete");
        let p = packet(h, &bytes[h.header_len..], Version::V4).expect("publish");
        assert_eq!(
            p,
            Packet::Publish(Publish {
                qos: 1,
                retain: true,
                topic: "acme/dev-1/telemetry",
                packet_id: 0x1234,
                payload: br#"{"t":1}"#
            })
        );
        // MQTT 5: properties between packet id and payload; an alias refused.
        let mut v5 = str_field("a/b");
        v5.extend_from_slice(&[0x00, 0x07, 3, 0x23, 0x00, 0x01]);
        let bytes = frame(0x34, &v5);
        let h = header(&bytes, 1000).expect("ok").expect("complete");
        assert!(matches!(
            packet(h, &bytes[h.header_len..], Version::V5),
            Err(CodecError::Protocol(_))
        ));
        let qos3 = frame(0x36, &str_field("a"));
        let h = header(&qos3, 1000).expect("ok").expect("complete");
        assert!(matches!(
            packet(h, &qos3[h.header_len..], Version::V4),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn server_packets_are_encoded_as_the_spec_says() {
        let mut out = Vec::new();
        connack_ok(&mut out, Version::V4, &ConnAckProperties::default());
        assert_eq!(out, [0x20, 0x02, 0x00, 0x00]);
        out.clear();
        connack_refused(&mut out, Version::V5, ConnectRefusal::Credentials);
        assert_eq!(out, [0x20, 0x03, 0x00, 0x86, 0x00]);
        out.clear();
        suback_refused(&mut out, 7, 2, Version::V4);
        assert_eq!(out, [0x90, 0x04, 0x00, 0x07, 0x80, 0x80]);
        out.clear();
        ack(&mut out, 0x40, 9, Version::V5, 0x87);
        assert_eq!(out, [0x40, 0x03, 0x00, 0x09, 0x87]);
        out.clear();
        connack_ok(
            &mut out,
            Version::V5,
            &ConnAckProperties {
                assigned_client_id: Some("auto-1"),
                server_keep_alive: Some(30),
                receive_maximum: 32,
                maximum_packet_size: 1000,
            },
        );
        let h = header(&out, 1000).expect("ok").expect("complete");
        assert_eq!(h.total(), out.len());
        // Flags, reason, then a property block that walks cleanly.
        let mut r = Reader {
            buf: &out[h.header_len + 2..],
        };
        let mut ids = Vec::new();
        r.properties(|id, _| {
            ids.push(id);
            Ok(())
        })
        .expect("valid properties");
        assert!(r.buf.is_empty());
        assert_eq!(ids, [0x21, 0x27, 0x25, 0x28, 0x29, 0x2A, 0x13, 0x12]);
    }
}
