//! The Modbus TCP face: one listener per simulated device.
//!
//! Each device listens on its own loopback address (see
//! [`crate::plan::device_addr`]) and answers:
//! - reads of coils (1), discrete inputs (2), holding registers (3) and input
//!   registers (4): every address of the range must belong to a tag, or (for
//!   input registers) lie inside the [`crate::scan`] block, else
//!   `IllegalDataAddress`; at most 125 registers or 2000 bits, else
//!   `IllegalDataValue`;
//! - writes of coils (5, 15) and holding registers (6, 16) to writable tags
//!   (not the identification block): the written words are stored and read
//!   back until the process stops (they do not feed back into other
//!   signals); a write touching any other address answers `IllegalDataAddress`;
//! - anything else: `IllegalFunction`.
//!
//! Unit ids: the device answers unit id 1, and 0 and 255 (the Modbus TCP
//! "this device" convention); any other unit id answers
//! `GatewayTargetDevice` (0x0B), as a TCP gateway with no such slave does.

use std::future::{Future, Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::catalog::{Area, TypeMap, maps};
use crate::error::SimError;
use crate::faults::{Fault, Faults};
use crate::plan::FleetPlan;
use crate::scan;
use crate::signal::SimDevice;

/// Unit ids a device answers.
pub const UNIT_IDS: [u8; 3] = [1, 0, 255];
/// Most registers in one read or write (protocol limit).
pub const MAX_REGISTERS: u16 = 125;
/// Most bits in one read (protocol limit).
pub const MAX_BITS: u16 = 2000;

/// Where the server's time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A fixed instant (Unix milliseconds): every read answers the values of
    /// that instant. For tests.
    Fixed(i64),
}

impl Clock {
    /// The current Unix time in milliseconds.
    pub fn now_ms(self) -> i64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            Clock::Fixed(ms) => ms,
        }
    }
}

/// Options of the Modbus face.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Time source of the signals.
    pub clock: Clock,
    /// Faults to apply per device (none set: every device works).
    pub faults: Faults,
}

/// One device's Modbus service, shared by its connections.
#[derive(Debug)]
pub(crate) struct DeviceService {
    device: SimDevice,
    clock: Clock,
    written: AtomicBool,
    /// Client writes: (area, address, word); few, searched linearly.
    overrides: Mutex<Vec<(Area, u16, u16)>>,
}

impl DeviceService {
    pub(crate) fn new(device: SimDevice, clock: Clock) -> DeviceService {
        DeviceService {
            device,
            clock,
            written: AtomicBool::new(false),
            overrides: Mutex::new(Vec::new()),
        }
    }

    fn map(&self) -> &'static TypeMap {
        &maps()[self.device.type_index()]
    }

    /// Answers one request.
    pub(crate) fn handle(&self, req: &Request<'_>) -> Result<Response, ExceptionCode> {
        match *req {
            Request::ReadCoils(addr, n) => {
                self.read_bits(Area::Coil, addr, n).map(Response::ReadCoils)
            }
            Request::ReadDiscreteInputs(addr, n) => self
                .read_bits(Area::DiscreteInput, addr, n)
                .map(Response::ReadDiscreteInputs),
            Request::ReadHoldingRegisters(addr, n) => self
                .read_registers(Area::HoldingRegister, addr, n)
                .map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(addr, n) => self
                .read_registers(Area::InputRegister, addr, n)
                .map(Response::ReadInputRegisters),
            Request::WriteSingleCoil(addr, on) => {
                self.write(Area::Coil, addr, &[u16::from(on)])?;
                Ok(Response::WriteSingleCoil(addr, on))
            }
            Request::WriteMultipleCoils(addr, ref bits) => {
                let words: Vec<u16> = bits.iter().map(|&b| u16::from(b)).collect();
                if words.is_empty() || words.len() > usize::from(MAX_BITS) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                self.write(Area::Coil, addr, &words)?;
                Ok(Response::WriteMultipleCoils(addr, words.len() as u16))
            }
            Request::WriteSingleRegister(addr, word) => {
                self.write(Area::HoldingRegister, addr, &[word])?;
                Ok(Response::WriteSingleRegister(addr, word))
            }
            Request::WriteMultipleRegisters(addr, ref words) => {
                if words.is_empty() || words.len() > usize::from(MAX_REGISTERS) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                self.write(Area::HoldingRegister, addr, words)?;
                Ok(Response::WriteMultipleRegisters(addr, words.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn read_registers(&self, area: Area, addr: u16, n: u16) -> Result<Vec<u16>, ExceptionCode> {
        if n == 0 || n > MAX_REGISTERS {
            return Err(ExceptionCode::IllegalDataValue);
        }
        if area == Area::InputRegister && scan::covers(addr, n) {
            let mut out = Vec::with_capacity(usize::from(n));
            scan::read(&self.device, addr, n, self.clock.now_ms(), &mut out);
            return Ok(out);
        }
        let spans = self
            .map()
            .cover(area, addr, n)
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        let now = self.clock.now_ms();
        let end = u32::from(addr) + u32::from(n);
        let mut out = Vec::with_capacity(usize::from(n));
        for span in spans {
            let words = self.device.words(usize::from(span.tag), now);
            let from = u32::from(addr).max(u32::from(span.start));
            let to = end.min(span.end);
            let skip = (from - u32::from(span.start)) as usize;
            let take = (to - from) as usize;
            out.extend(words.as_slice().iter().skip(skip).take(take));
        }
        self.apply_overrides(area, addr, &mut out);
        Ok(out)
    }

    fn read_bits(&self, area: Area, addr: u16, n: u16) -> Result<Vec<bool>, ExceptionCode> {
        if n == 0 || n > MAX_BITS {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let spans = self
            .map()
            .cover(area, addr, n)
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        let now = self.clock.now_ms();
        let mut words: Vec<u16> = spans
            .iter()
            .map(|s| self.device.words(usize::from(s.tag), now).as_slice()[0])
            .collect();
        self.apply_overrides(area, addr, &mut words);
        Ok(words.into_iter().map(|w| w != 0).collect())
    }

    fn write(&self, area: Area, addr: u16, words: &[u16]) -> Result<(), ExceptionCode> {
        let n = u16::try_from(words.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
        let ty = self.device.device_type();
        let spans = self
            .map()
            .cover(area, addr, n)
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        if spans
            .iter()
            .any(|s| !ty.tag(usize::from(s.tag)).is_some_and(|t| t.writable()))
        {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let mut overrides = self
            .overrides
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        for (i, &word) in words.iter().enumerate() {
            let a = addr + i as u16;
            match overrides
                .iter_mut()
                .find(|(ar, ad, _)| *ar == area && *ad == a)
            {
                Some(slot) => slot.2 = word,
                None => overrides.push((area, a, word)),
            }
        }
        self.written.store(true, Ordering::Release);
        Ok(())
    }

    fn apply_overrides(&self, area: Area, addr: u16, out: &mut [u16]) {
        if !self.written.load(Ordering::Acquire) {
            return;
        }
        let Ok(overrides) = self.overrides.lock() else {
            return;
        };
        for &(ar, a, word) in overrides.iter() {
            if ar == area
                && a >= addr
                && let Some(slot) = out.get_mut(usize::from(a - addr))
            {
                *slot = word;
            }
        }
    }
}

impl Service for DeviceService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if !UNIT_IDS.contains(&req.slave) {
            return ready(Err(ExceptionCode::GatewayTargetDevice));
        }
        ready(self.handle(&req.request))
    }
}

/// Listeners bound for a range of a plan's devices, not yet serving.
#[derive(Debug)]
pub struct BoundFleet {
    first: u32,
    listeners: Vec<(u32, TcpListener, Arc<DeviceService>)>,
    addrs: Vec<SocketAddr>,
    faults: Faults,
}

impl BoundFleet {
    /// Binds one listener per Modbus TCP device of `plan` with index in
    /// `range` (clamped to the plan's Modbus devices), on the device's
    /// endpoint.
    ///
    /// # Errors
    /// [`SimError::Bind`] naming the address that could not be bound.
    pub async fn bind(
        plan: &FleetPlan,
        range: std::ops::Range<u32>,
        options: ServeOptions,
    ) -> Result<BoundFleet, SimError> {
        let modbus = plan.range_of(fieldlink_model::Protocol::ModbusTcp);
        let end = range.end.min(modbus.end);
        let start = range.start.max(modbus.start).min(end);
        let mut listeners = Vec::with_capacity((end - start) as usize);
        let mut addrs = Vec::with_capacity((end - start) as usize);
        for index in start..end {
            let device = plan.sim_device(index)?;
            let addr = SocketAddr::V4(plan.endpoint(index)?);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| SimError::Bind { addr, source })?;
            addrs.push(listener.local_addr().unwrap_or(addr));
            listeners.push((
                index,
                listener,
                Arc::new(DeviceService::new(device, options.clock)),
            ));
        }
        Ok(BoundFleet {
            first: start,
            listeners,
            addrs,
            faults: options.faults,
        })
    }

    /// Number of bound devices.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// True when no device is bound.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Index of the first bound device.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// The bound address of device `index` (differs from the plan's endpoint
    /// only when the plan's port is 0).
    pub fn local_addr(&self, index: u32) -> Option<SocketAddr> {
        let i = index.checked_sub(self.first)?;
        self.addrs.get(i as usize).copied()
    }

    /// Serves until `shutdown` completes, then closes every listener and
    /// connection.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        for (index, listener, service) in self.listeners {
            tasks.spawn(accept_loop(index, listener, service, self.faults.clone()));
        }
        shutdown.await;
        tasks.shutdown().await;
    }
}

/// Serves one device: tokio-modbus spawns a task per connection; an accept
/// error (out of file descriptors) pauses the device briefly.
async fn accept_loop(
    index: u32,
    listener: TcpListener,
    service: Arc<DeviceService>,
    faults: Faults,
) {
    let addr = listener.local_addr().ok();
    let server = Server::new(listener);
    let on_connected = |stream: TcpStream, _peer: SocketAddr| {
        let service = Arc::clone(&service);
        let faults = faults.clone();
        async move {
            if faults.get(index) == Fault::Off {
                return io::Result::Ok(None); // dropped at once: switched off
            }
            let _ = stream.set_nodelay(true);
            io::Result::Ok(Some((service, faults.wrap(index, stream))))
        }
    };
    loop {
        let on_error = |e: io::Error| tracing::debug!("modbus connection ended: {e}");
        if let Err(e) = server.serve(&on_connected, on_error).await {
            tracing::warn!(?addr, "accept failed: {e}; retrying in 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Binds every device of `plan` in this process and serves until
/// `shutdown` completes.
///
/// # Errors
/// [`SimError::Bind`] when an endpoint cannot be bound.
pub async fn serve(
    plan: &FleetPlan,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let bound = BoundFleet::bind(plan, 0..plan.len(), options).await?;
    bound.serve_until(shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::catalog::CATALOG;

    const T0: i64 = 1_780_000_000_000;

    fn service(key: &str) -> DeviceService {
        let ty = CATALOG.iter().position(|t| t.key == key).unwrap();
        DeviceService::new(SimDevice::new(3, 42, ty).unwrap(), Clock::Fixed(T0))
    }

    #[test]
    fn reads_match_the_pure_function() {
        let s = service("cnc");
        let d = s.device;
        let Response::ReadInputRegisters(words) =
            s.handle(&Request::ReadInputRegisters(0, 25)).unwrap()
        else {
            panic!()
        };
        let expected: Vec<u16> = (0..d.device_type().tag_count())
            .filter(|&i| {
                let t = d.device_type().tag(i).unwrap();
                t.area == Area::InputRegister && t.address < 25
            })
            .flat_map(|i| d.words(i, T0).as_slice().to_vec())
            .collect();
        assert_eq!(words, expected);
        // Partial read inside a multi-register value.
        let Response::ReadHoldingRegisters(w) =
            s.handle(&Request::ReadHoldingRegisters(3, 1)).unwrap()
        else {
            panic!()
        };
        assert_eq!(w, [(crate::catalog::SERIAL_BASE + 42) as u16]);
    }

    #[test]
    fn the_scan_block_answers_whole_and_partial_reads() {
        use crate::scan::{SCAN_BASE, SCAN_REGISTERS};
        let s = service("gas-detector");
        let Ok(Response::ReadInputRegisters(words)) =
            s.handle(&Request::ReadInputRegisters(SCAN_BASE, SCAN_REGISTERS))
        else {
            panic!()
        };
        let expected: Vec<u16> = (0..SCAN_REGISTERS)
            .map(|c| crate::scan::word(&s.device, c, T0))
            .collect();
        assert_eq!(words, expected);
        assert_eq!(
            s.handle(&Request::ReadInputRegisters(SCAN_BASE + 120, 5)),
            Ok(Response::ReadInputRegisters(expected[120..].to_vec()))
        );
        for req in [
            Request::ReadInputRegisters(SCAN_BASE + 120, 6),
            Request::ReadInputRegisters(SCAN_BASE - 1, 2),
            Request::ReadHoldingRegisters(SCAN_BASE, 1),
        ] {
            assert_eq!(
                s.handle(&req),
                Err(ExceptionCode::IllegalDataAddress),
                "{req:?}"
            );
        }
    }

    #[test]
    fn unmapped_and_oversized_reads_are_refused() {
        let s = service("pump");
        for req in [
            Request::ReadHoldingRegisters(16, 1),
            Request::ReadHoldingRegisters(10, 10),
            Request::ReadInputRegisters(500, 2),
            Request::ReadCoils(1, 1),
            Request::ReadDiscreteInputs(0, 5),
        ] {
            assert_eq!(
                s.handle(&req),
                Err(ExceptionCode::IllegalDataAddress),
                "{req:?}"
            );
        }
        assert_eq!(
            s.handle(&Request::ReadInputRegisters(0, 126)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            s.handle(&Request::ReportServerId),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            s.handle(&Request::MaskWriteRegister(200, 0, 1)),
            Err(ExceptionCode::IllegalFunction)
        );
    }

    #[test]
    fn writes_are_stored_and_identification_is_read_only() {
        let s = service("pump");
        assert_eq!(
            s.handle(&Request::WriteSingleRegister(200, 700)),
            Ok(Response::WriteSingleRegister(200, 700))
        );
        assert_eq!(
            s.handle(&Request::ReadHoldingRegisters(200, 2)),
            Ok(Response::ReadHoldingRegisters(vec![700, 850]))
        );
        assert_eq!(
            s.handle(&Request::WriteMultipleRegisters(0, Cow::Owned(vec![1]))),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            s.handle(&Request::WriteSingleCoil(0, false)),
            Ok(Response::WriteSingleCoil(0, false))
        );
        let Ok(Response::ReadCoils(bits)) = s.handle(&Request::ReadCoils(0, 1)) else {
            panic!()
        };
        assert!(!bits[0]);
        assert_eq!(
            s.handle(&Request::WriteSingleCoil(5, true)),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn other_unit_ids_are_refused() {
        let s = service("agv");
        let req = |slave| SlaveRequest {
            slave,
            request: Request::ReadHoldingRegisters(0, 1),
        };
        for unit in UNIT_IDS {
            assert!(s.call(req(unit)).into_inner().is_ok());
        }
        assert_eq!(
            s.call(req(7)).into_inner(),
            Err(ExceptionCode::GatewayTargetDevice)
        );
    }
}
