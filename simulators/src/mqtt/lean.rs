//! The lean MQTT device: a fleet of very many MQTT JSON devices in one
//! process, each a small task with its own TCP connection from its own
//! loopback address (the plan's endpoint), speaking just the MQTT 3.1.1 a
//! field device needs: CONNECT with the tenant's fleet login (client id =
//! device id) and a Last Will (`offline` on its status topic), its
//! registration on `{tenant}/{id}/meta` and `online` on `{tenant}/{id}/status`
//! (QoS 1, retained), then telemetry JSON every interval on
//! `{tenant}/{id}/telemetry` (QoS 0), PINGREQ when it has been quiet for half
//! its keep-alive, DISCONNECT after `offline` when the fleet stops.
//!
//! rumqttc costs tens of kilobytes per client; this costs a task, a socket
//! and no buffers while idle, for fleets at the scale of
//! `fieldlink bench connections`. A lost or refused connection is retried
//! with backoff (0.5 s doubling to 30 s); at most [`LeanOptions::connecting`]
//! devices of a process are in the CONNECT phase at once (a fleet in many
//! processes shares [`FLEET_CONNECTING`] among them), so a ramp queues no
//! more CONNECTs at the broker than it answers well within
//! [`CONNACK_TIMEOUT`]: a deeper queue makes CONNACKs late, late clients
//! retry, and the retries crowd out the ramp.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fieldlink_model::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{MqttFleetStats, device_topic, meta_json, telemetry_json};
use crate::plan::{FleetPlan, PlannedDevice};
use crate::signal::SimDevice;
use crate::stop::Stop;

/// Devices of a whole fleet in the CONNECT phase at once: at 10 000
/// connects/s a CONNECT waits about 0.4 s in the queue.
pub const FLEET_CONNECTING: usize = 4096;
/// Fewest devices of one process in the CONNECT phase at once.
pub const MIN_CONNECTING: usize = 16;
/// Longest wait for CONNACK.
pub const CONNACK_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest wait between connection attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// A tenant's fleet login (one user for all its devices, with
/// `client_id_must_match = false` at the broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLogin {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// How a lean fleet runs.
#[derive(Debug, Clone)]
pub struct LeanOptions {
    /// The brokers or ingress: device `index` connects to
    /// `brokers[index % len]` (one address for an ingress however many
    /// shards it has; mosquitto shards each have their own).
    pub brokers: Vec<SocketAddr>,
    /// Login of each tenant, by tenant name.
    pub logins: HashMap<String, FleetLogin>,
    /// Telemetry interval; devices spread their first publish over it.
    pub interval: Duration,
    /// Devices of this process in the CONNECT phase at once (at least
    /// [`MIN_CONNECTING`]).
    pub connecting: usize,
}

/// What a lean fleet's devices did, beyond [`MqttFleetStats`].
#[derive(Debug, Default)]
pub struct LeanStats {
    /// The counts the other MQTT fleets keep.
    pub mqtt: MqttFleetStats,
    /// Connection attempts that failed (refused, reset, timed out).
    pub failed_attempts: AtomicU64,
}

/// What every device of a lean fleet shares.
#[derive(Debug)]
struct Shared {
    options: LeanOptions,
    /// The grid devices' wake-ups are rounded up to ([`WAKE_SLOT`]).
    epoch: Instant,
    connecting: Semaphore,
    stats: Arc<LeanStats>,
    stop: Stop,
}

/// A running lean fleet (a task per device).
#[derive(Debug)]
pub struct LeanFleet {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    devices: u32,
}

impl LeanFleet {
    /// Starts the MQTT JSON devices of `plan` whose index is in `range`;
    /// returns at once (they connect in the background and retry).
    ///
    /// # Errors
    /// No broker address, or a tenant of the range's devices without a
    /// login in `options`.
    pub fn start(
        plan: &FleetPlan,
        range: std::ops::Range<u32>,
        options: LeanOptions,
    ) -> Result<LeanFleet, crate::SimError> {
        if options.brokers.is_empty() {
            return Err(crate::SimError::spec("brokers", "no broker address"));
        }
        for d in plan
            .devices()
            .filter(|d| d.protocol == Protocol::MqttJson && range.contains(&d.index))
        {
            let tenant = &plan.tenants()[d.tenant].name;
            if !options.logins.contains_key(tenant) {
                return Err(crate::SimError::spec(
                    "logins",
                    format!("no fleet login for tenant `{tenant}`"),
                ));
            }
        }
        let shared = Arc::new(Shared {
            connecting: Semaphore::new(options.connecting.max(MIN_CONNECTING)),
            options,
            stats: Arc::new(LeanStats::default()),
            epoch: Instant::now(),
            stop: Stop::default(),
        });
        let tenants: Vec<Arc<str>> = plan
            .tenants()
            .iter()
            .map(|t| Arc::from(t.name.as_str()))
            .collect();
        let mut tasks = JoinSet::new();
        let mut devices = 0;
        for d in plan
            .devices()
            .filter(|d| d.protocol == Protocol::MqttJson && range.contains(&d.index))
        {
            let Ok(sim) = plan.sim_device(d.index) else {
                continue;
            };
            devices += 1;
            let device = Device {
                tenant: tenants[d.tenant].clone(),
                planned: d,
                sim,
            };
            tasks.spawn(device.run(shared.clone()));
        }
        Ok(LeanFleet {
            shared,
            tasks,
            devices,
        })
    }

    /// Devices run.
    pub fn devices(&self) -> u32 {
        self.devices
    }

    /// What the devices did so far.
    pub fn stats(&self) -> Arc<LeanStats> {
        self.shared.stats.clone()
    }

    /// Tells every device to say `offline` and DISCONNECT, and waits.
    pub async fn stop(mut self) {
        self.shared.stop.stop();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One simulated device.
struct Device {
    planned: PlannedDevice,
    sim: SimDevice,
    tenant: Arc<str>,
}

/// Why a session ended.
enum End {
    Stop,
    Lost,
}

impl Device {
    async fn run(self, shared: Arc<Shared>) {
        let mut backoff = BACKOFF.0;
        loop {
            let connected = {
                let Ok(_slot) = shared.connecting.acquire().await else {
                    return;
                };
                tokio::select! {
                    () = shared.stop.wait() => return,
                    c = self.connect(&shared) => c,
                }
            };
            match connected {
                Ok(stream) => {
                    backoff = BACKOFF.0;
                    let stats = &shared.stats.mqtt;
                    stats.connected.fetch_add(1, Relaxed);
                    stats.sessions.fetch_add(1, Relaxed);
                    let end = Box::pin(self.session(stream, &shared)).await;
                    stats.connected.fetch_sub(1, Relaxed);
                    if let End::Stop = end {
                        return;
                    }
                }
                Err(e) => {
                    let failed = shared.stats.failed_attempts.fetch_add(1, Relaxed) + 1;
                    // The 1st, 2nd, 4th, 8th .. failure of the process: why
                    // without a line per device.
                    if failed.is_power_of_two() {
                        tracing::warn!(device = %self.planned.id(), failed, error = %e, "connection attempt failed");
                    }
                }
            }
            // Jittered so that a fleet refused together does not retry together.
            let jitter = u64::from(self.planned.index % 97) * backoff.as_millis() as u64 / 97;
            tokio::select! {
                () = shared.stop.wait() => return,
                () = tokio::time::sleep(backoff / 2 + Duration::from_millis(jitter / 2)) => {}
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Connects from the device's own address and logs in, sending its
    /// registration (`meta`, then `online`) right behind the CONNECT in the
    /// same segment, as MQTT lets a client do before CONNACK; the stream
    /// after a successful CONNACK.
    async fn connect(&self, shared: &Shared) -> std::io::Result<TcpStream> {
        let options = &shared.options;
        let socket = TcpSocket::new_v4()?;
        bind_address_no_port(&socket)?;
        let source = SocketAddr::from((*self.planned.endpoint.ip(), 0));
        socket.bind(source)?;
        let broker = options.brokers[self.planned.index as usize % options.brokers.len()];
        let mut stream = socket.connect(broker).await?;
        let login = options
            .logins
            .get(&*self.tenant)
            .ok_or_else(|| std::io::Error::other("no login"))?;
        let id = self.planned.id();
        let tenant = &*self.tenant;
        let status = device_topic(tenant, &id, "status");
        let mut out = Vec::with_capacity(512);
        wire::connect(
            &mut out,
            &id,
            keep_alive(options.interval),
            &login.username,
            &login.password,
            &status,
            b"offline",
        );
        wire::publish(
            &mut out,
            &device_topic(tenant, &id, "meta"),
            meta_json(&self.planned, tenant).as_bytes(),
            1,
            true,
            1,
        );
        wire::publish(&mut out, &status, b"online", 1, true, 2);
        stream.write_all(&out).await?;
        drop(out);
        let ack = tokio::time::timeout(CONNACK_TIMEOUT, read_connack(&mut stream))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
            return Err(std::io::Error::other(format!(
                "CONNACK refused: {ack:02x?}"
            )));
        }
        Ok(stream)
    }

    /// Telemetry every interval until the fleet stops or the connection is
    /// lost.
    async fn session(&self, mut stream: TcpStream, shared: &Shared) -> End {
        let options = &shared.options;
        let stats = &shared.stats.mqtt;
        let id = self.planned.id();
        let tenant = &*self.tenant;
        let mut out = Vec::new();
        let telemetry = device_topic(tenant, &id, "telemetry");
        let keep_alive = Duration::from_secs(u64::from(keep_alive(options.interval)));
        // The first publish is spread over the interval by the device's index.
        let spread = options.interval.as_millis() as u64;
        let offset = if spread == 0 {
            0
        } else {
            u64::from(self.planned.index).wrapping_mul(7919) % spread
        };
        let mut next = Instant::now() + Duration::from_millis(offset);
        let mut last_sent = Instant::now();
        let mut body = String::new();
        loop {
            let ping_at = last_sent + keep_alive / 2;
            let wake = next.min(ping_at);
            let readable = tokio::select! {
                () = shared.stop.wait() => {
                    out.clear();
                    wire::publish(&mut out, &device_topic(tenant, &id, "status"), b"offline", 1, true, 3);
                    out.extend_from_slice(&[0xE0, 0]);
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&out)).await;
                    return End::Stop;
                }
                r = stream.readable() => Some(r),
                () = tokio::time::sleep_until(on_slot(shared.epoch, wake, options.interval)) => None,
            };
            match readable {
                Some(Err(_)) => return End::Lost,
                Some(Ok(())) => {
                    // PUBACKs and PINGRESPs: read and dropped.
                    let mut sink = [0u8; 256];
                    match stream.try_read(&mut sink) {
                        Ok(0) => return End::Lost,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return End::Lost,
                    }
                    continue;
                }
                None => {}
            }
            out.clear();
            let now = Instant::now();
            if now >= next {
                body.clear();
                telemetry_json(
                    &self.sim,
                    crate::server::Clock::System.now_ms(),
                    false,
                    &mut body,
                );
                wire::publish(&mut out, &telemetry, body.as_bytes(), 0, false, 0);
                next += options.interval.max(Duration::from_millis(1));
                if next < now {
                    // Fell behind (a stalled broker): no burst to catch up.
                    next = now + options.interval;
                }
            } else {
                wire::pingreq(&mut out);
            }
            if stream.write_all(&out).await.is_err() {
                return End::Lost;
            }
            if !body.is_empty() {
                stats.published.fetch_add(1, Relaxed);
                body = String::new();
            }
            out = Vec::new();
            last_sent = now;
        }
    }
}

/// Reads until the 4 bytes of a CONNACK are in; the PUBACKs a broker
/// sends in the same segment are read with it and dropped (the device
/// does not wait for them).
async fn read_connack(stream: &mut TcpStream) -> std::io::Result<[u8; 4]> {
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 4 {
        match stream.read(&mut buf[got..]).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok([buf[0], buf[1], buf[2], buf[3]])
}

/// Longest a wake-up is put off so that the devices of a process due
/// within the same slot wake together: one timer tick and one pass of the
/// process for several publishes, instead of a wake-up of its own for
/// each (a million devices every 300 s are 60 wake-ups a second in each of
/// 56 processes).
const WAKE_SLOT: Duration = Duration::from_millis(100);

/// `at` rounded up to the next slot since `epoch`; slots are at most a
/// tenth of `interval`, so a publish is late by at most that.
fn on_slot(epoch: Instant, at: Instant, interval: Duration) -> Instant {
    let slot = WAKE_SLOT.min(interval / 10);
    let slot_ns = slot.as_nanos();
    if slot_ns == 0 {
        return at;
    }
    let since = at.saturating_duration_since(epoch).as_nanos();
    let slots = since.div_ceil(slot_ns);
    let rounded = u64::try_from(slots * slot_ns).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(rounded)
}

/// Lets the kernel choose the source port at `connect`, knowing the
/// destination, instead of at `bind` (`IP_BIND_ADDRESS_NO_PORT`): a bind to
/// port 0 reserves a port for every destination at once.
fn bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option of its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The keep-alive a device asks for: twice its interval, 10 s to 600 s.
fn keep_alive(interval: Duration) -> u16 {
    let secs = interval.as_secs().saturating_mul(2).clamp(10, 600);
    u16::try_from(secs).unwrap_or(600)
}

/// MQTT 3.1.1 packets, encoded.
mod wire {
    fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&s[..usize::from(len)]);
    }

    /// CONNECT: clean session, user name and password, a QoS 1 retained will.
    pub(super) fn connect(
        out: &mut Vec<u8>,
        client_id: &str,
        keep_alive: u16,
        username: &str,
        password: &str,
        will_topic: &str,
        will: &[u8],
    ) {
        let mut body = Vec::with_capacity(96);
        string(&mut body, b"MQTT");
        body.push(4);
        // user name, password, will retain, will QoS 1, will, clean session
        body.push(0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02);
        body.extend_from_slice(&keep_alive.to_be_bytes());
        string(&mut body, client_id.as_bytes());
        string(&mut body, will_topic.as_bytes());
        string(&mut body, will);
        string(&mut body, username.as_bytes());
        string(&mut body, password.as_bytes());
        out.push(0x10);
        remaining_length(out, body.len());
        out.extend_from_slice(&body);
    }

    /// PUBLISH (`packet_id` is used at QoS 1).
    pub(super) fn publish(
        out: &mut Vec<u8>,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        packet_id: u16,
    ) {
        out.push(0x30 | (qos << 1) | u8::from(retain));
        let id_len = if qos > 0 { 2 } else { 0 };
        remaining_length(out, 2 + topic.len() + id_len + payload.len());
        string(out, topic.as_bytes());
        if qos > 0 {
            out.extend_from_slice(&packet_id.to_be_bytes());
        }
        out.extend_from_slice(payload);
    }

    /// PINGREQ.
    pub(super) fn pingreq(out: &mut Vec<u8>) {
        out.extend_from_slice(&[0xC0, 0]);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn lengths_over_127_take_two_bytes() {
            let mut out = Vec::new();
            publish(&mut out, "a/b", &[7u8; 200], 0, false, 0);
            // 2 + 3 + 200 = 205 = 0xCD 0x01
            assert_eq!(&out[..3], &[0x30, 0xCD, 0x01]);
            assert_eq!(out.len(), 3 + 205);
        }

        #[test]
        fn connect_carries_will_and_login() {
            let mut out = Vec::new();
            connect(&mut out, "dev", 20, "u", "p", "t/dev/status", b"offline");
            assert_eq!(out[0], 0x10);
            assert_eq!(usize::from(out[1]), out.len() - 2);
            assert_eq!(&out[2..8], b"\x00\x04MQTT");
            assert_eq!(out[8], 4);
            assert_eq!(out[9], 0xEE);
            assert_eq!(&out[10..12], &20u16.to_be_bytes());
            assert!(out.ends_with(b"\x00\x01u\x00\x01p"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_round_up_to_the_slot_grid_and_are_late_by_less_than_a_slot() {
        let epoch = Instant::now();
        let interval = Duration::from_secs(300);
        for ms in [0u64, 1, 99, 100, 101, 250, 12_345] {
            let at = epoch + Duration::from_millis(ms);
            let woken = on_slot(epoch, at, interval);
            let late = woken - at;
            assert!(late < WAKE_SLOT, "{ms} ms: {late:?}");
            assert_eq!(
                (woken - epoch).as_nanos() % WAKE_SLOT.as_nanos(),
                0,
                "{ms} ms"
            );
        }
        // A short interval gets a slot of a tenth of it; none, none.
        let at = epoch + Duration::from_millis(7);
        assert_eq!(
            on_slot(epoch, at, Duration::from_millis(200)),
            epoch + Duration::from_millis(20)
        );
        assert_eq!(on_slot(epoch, at, Duration::ZERO), at);
    }
}
