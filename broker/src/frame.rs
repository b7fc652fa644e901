//! Bytes ↔ MQTT packets for one connection.
//!
//! A frame is checked on the buffered bytes first ([`check`]: fixed header
//! only; a declared length over the limit is refused before the rest is
//! read), then decoded by rumqttd's v4 or v5 codec, which consumes it.
//! Incomplete input is `Ok(None)`; the caller keeps reading into the same
//! `BytesMut`, so a read cancelled by `select!` loses nothing.
//!
//! rumqttd keeps a decoded PUBLISH's QoS and packet id crate-private, so
//! [`Frame`] carries them, read from the checked bytes.

use bytes::BytesMut;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{self, Packet, Protocol};

/// MQTT version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5 (protocol level 5).
    V5,
}

impl Version {
    /// `3.1.1` or `5`.
    pub fn label(self) -> &'static str {
        match self {
            Version::V4 => "3.1.1",
            Version::V5 => "5",
        }
    }
}

/// Why bytes cannot be a packet; ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The fixed header declares more than the limit.
    #[error("declared packet length {declared} bytes is over limits.max_packet_size ({max})")]
    TooLarge {
        /// Remaining length declared.
        declared: usize,
        /// The limit.
        max: usize,
    },
    /// A remaining length of more than four bytes.
    #[error("malformed remaining length")]
    BadLength,
    /// The first packet is not a CONNECT.
    #[error("first packet is not CONNECT (first byte {0:#04x})")]
    NotConnect(u8),
    /// A CONNECT for a protocol we do not speak.
    #[error("unsupported protocol `{name}` level {level}")]
    Unsupported {
        /// Protocol name given.
        name: String,
        /// Protocol level given.
        level: u8,
    },
    /// A packet type a client never sends to a server (CONNACK, SUBACK,
    /// UNSUBACK, PINGRESP, AUTH, reserved).
    #[error("packet type {0} is not one a client sends")]
    Unexpected(u8),
    /// The codec refused the packet.
    #[error("bad packet: {0}")]
    Codec(protocol::Error),
    /// The codec panicked on the packet (a rumqttd bug; caught, the
    /// connection ends).
    #[error("packet the decoder cannot handle")]
    CodecPanic,
}

/// One decoded packet.
#[derive(Debug)]
pub struct Frame {
    /// The packet.
    pub packet: Packet,
    /// Bytes it took on the wire.
    pub wire_len: usize,
    /// QoS of a PUBLISH (0 otherwise).
    pub qos: u8,
    /// Packet id of a PUBLISH with QoS > 0 (0 otherwise).
    pub pkid: u16,
}

/// Checks the fixed header at the start of `buf`: `Ok(None)` when more
/// bytes are needed, else (fixed header length, remaining length).
///
/// # Errors
/// `TooLarge` as soon as the declared length is known to be over `max`,
/// `BadLength` for a length field of more than four bytes.
pub fn check(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, FrameError> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining += usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if remaining > max {
                return Err(FrameError::TooLarge {
                    declared: remaining,
                    max,
                });
            }
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(FrameError::BadLength)
}

/// Reads the first packet of a connection, which must be CONNECT; returns
/// its version too.
///
/// # Errors
/// `NotConnect`, `Unsupported`, `TooLarge`, `BadLength`, `Codec`.
pub fn read_connect(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Version, Frame)>, FrameError> {
    if let Some(&first) = buf.first()
        && first != 0x10
    {
        return Err(FrameError::NotConnect(first));
    }
    let Some((header, remaining)) = check(buf, max)? else {
        return Ok(None);
    };
    let total = header + remaining;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[header..total];
    let name_len = match body.get(..2) {
        Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
        None => return Err(FrameError::Codec(protocol::Error::MalformedPacket)),
    };
    let name = body
        .get(2..2 + name_len)
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .ok_or(FrameError::Codec(protocol::Error::MalformedPacket))?;
    let level = *body
        .get(2 + name_len)
        .ok_or(FrameError::Codec(protocol::Error::MalformedPacket))?;
    let version = match (name.as_str(), level) {
        ("MQTT", 4) => Version::V4,
        ("MQTT", 5) => Version::V5,
        _ => {
            return Err(FrameError::Unsupported {
                name: name.chars().take(16).collect(),
                level,
            });
        }
    };
    let frame = read(buf, version, max)?;
    Ok(frame.map(|f| (version, f)))
}

/// Reads the next packet, if complete.
///
/// # Errors
/// `TooLarge`, `BadLength`, `Codec`.
pub fn read(buf: &mut BytesMut, version: Version, max: usize) -> Result<Option<Frame>, FrameError> {
    let Some((header, remaining)) = check(buf, max)? else {
        return Ok(None);
    };
    let total = header + remaining;
    if buf.len() < total {
        return Ok(None);
    }
    // rumqttd's v5 decoder reaches `unreachable!()` on CONNACK and UNSUBACK:
    // only the types a server receives go to it.
    let kind = buf[0] >> 4;
    if !matches!(kind, 1 | 3..=8 | 10 | 12 | 14) {
        return Err(FrameError::Unexpected(kind));
    }
    let (mut qos, mut pkid) = (0, 0);
    if kind == 3 {
        qos = (buf[0] >> 1) & 0b11;
        if qos > 0 {
            let body = &buf[header..total];
            if let Some(len) = body.get(..2) {
                let at = 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
                if let Some(id) = body.get(at..at + 2) {
                    pkid = u16::from_be_bytes([id[0], id[1]]);
                }
            }
        }
    }
    // A last guard: a decoder panic must end this connection cleanly, not
    // unwind through the handler (which would skip its cleanup).
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match version {
        Version::V4 => V4.read_mut(buf, max),
        Version::V5 => V5.read_mut(buf, max),
    }));
    let packet = match decoded {
        Ok(packet) => packet.map_err(FrameError::Codec)?,
        Err(_) => return Err(FrameError::CodecPanic),
    };
    Ok(Some(Frame {
        packet,
        wire_len: total,
        qos,
        pkid,
    }))
}

/// Appends `packet` to `out` in the connection's version; properties are
/// dropped for MQTT 3.1.1 (its encoder panics on them).
///
/// # Errors
/// `Codec` when the packet cannot be encoded (a topic over 65 535 bytes).
pub fn write(out: &mut BytesMut, version: Version, packet: Packet) -> Result<usize, FrameError> {
    match version {
        Version::V4 => V4.write(strip(packet), out),
        Version::V5 => V5.write(packet, out),
    }
    .map_err(FrameError::Codec)
}

/// The packet without MQTT 5 properties.
fn strip(packet: Packet) -> Packet {
    match packet {
        Packet::Connect(c, _, will, _, login) => Packet::Connect(c, None, will, None, login),
        Packet::ConnAck(a, _) => Packet::ConnAck(a, None),
        Packet::Publish(p, _) => Packet::Publish(p, None),
        Packet::PubAck(p, _) => Packet::PubAck(p, None),
        Packet::Subscribe(s, _) => Packet::Subscribe(s, None),
        Packet::SubAck(s, _) => Packet::SubAck(s, None),
        Packet::PubRec(p, _) => Packet::PubRec(p, None),
        Packet::PubRel(p, _) => Packet::PubRel(p, None),
        Packet::PubComp(p, _) => Packet::PubComp(p, None),
        Packet::Unsubscribe(u, _) => Packet::Unsubscribe(u, None),
        Packet::UnsubAck(u, _) => Packet::UnsubAck(u, None),
        Packet::Disconnect(d, _) => Packet::Disconnect(d, None),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(level: u8) -> Vec<u8> {
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
        if level == 5 {
            body.push(0); // no properties
        }
        body.extend([0, 2, b'c', b'1']);
        let mut out = vec![0x10, u8::try_from(body.len()).unwrap()];
        out.extend(body);
        out
    }

    #[test]
    fn huge_declared_length_is_refused_from_the_header_alone() {
        // 256 MB declared, five bytes sent.
        let buf = [0x10, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            check(&buf, 1 << 20),
            Err(FrameError::TooLarge {
                declared: 268_435_455,
                max: 1 << 20
            })
        );
        let mut b = BytesMut::from(&buf[..]);
        assert!(matches!(
            read_connect(&mut b, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(
            check(&[0x10, 0x80, 0x80, 0x80, 0x80], 1 << 30),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn partial_input_waits_for_more() {
        let full = connect(4);
        for cut in 0..full.len() {
            let mut b = BytesMut::from(&full[..cut]);
            assert!(read_connect(&mut b, 1024).unwrap().is_none(), "cut {cut}");
            assert_eq!(b.len(), cut, "nothing consumed");
        }
        let mut b = BytesMut::from(&full[..]);
        let (version, frame) = read_connect(&mut b, 1024).unwrap().unwrap();
        assert_eq!(version, Version::V4);
        assert!(matches!(frame.packet, Packet::Connect(..)));
        assert!(b.is_empty());
    }

    #[test]
    fn versions_and_strangers() {
        let mut b = BytesMut::from(&connect(5)[..]);
        assert_eq!(read_connect(&mut b, 1024).unwrap().unwrap().0, Version::V5);
        let mut b = BytesMut::from(&connect(3)[..]);
        assert!(matches!(
            read_connect(&mut b, 1024),
            Err(FrameError::Unsupported { level: 3, .. })
        ));
        let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert_eq!(
            read_connect(&mut b, 1024).unwrap_err(),
            FrameError::NotConnect(b'G')
        );
    }

    #[test]
    fn publish_qos_and_packet_id_are_read() {
        // QoS 1, topic "a/b", pkid 0x1234, payload "x".
        let frame = [0x32, 8, 0, 3, b'a', b'/', b'b', 0x12, 0x34, b'x'];
        let mut b = BytesMut::from(&frame[..]);
        let f = read(&mut b, Version::V4, 1024).unwrap().unwrap();
        assert_eq!((f.qos, f.pkid, f.wire_len), (1, 0x1234, frame.len()));
        let Packet::Publish(p, _) = f.packet else {
            panic!("not a publish")
        };
        assert_eq!(&p.topic[..], b"a/b");
        assert_eq!(&p.payload[..], b"x");
    }

    #[test]
    fn packets_only_servers_send_are_refused_before_decoding() {
        // A CONNACK with a body reached `unreachable!()` in the v5 decoder.
        for first in [0x20u8, 0x90, 0xb0, 0xd0, 0xf0, 0x00] {
            let mut b = BytesMut::from(&[first, 2, 0, 1][..]);
            assert_eq!(
                read(&mut b, Version::V5, 1024).unwrap_err(),
                FrameError::Unexpected(first >> 4)
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep of short inputs and a pseudo-random walk.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000 {
            let len = (round % 40) + 1;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed & 0xff) as u8
                })
                .collect();
            for version in [Version::V4, Version::V5] {
                let mut b = BytesMut::from(&bytes[..]);
                let _ = read(&mut b, version, 1024);
                let mut b = BytesMut::from(&bytes[..]);
                let _ = read_connect(&mut b, 1024);
            }
        }
    }
}
