//! Modbus TCP driver on `tokio-modbus`, served by the core's poller
//! ([`crate::driver::poll`]): one TCP session per device, poll groups planned
//! into the fewest reads ([`plan`]), registers decoded per tag ([`decode`]).
//! An exception response makes the tags of that request bad; a timeout or
//! I/O error breaks the session (a late answer would confuse the next
//! transaction), and the poller reconnects with backoff. [`config`] owns the
//! `[modbus]` and `[devices.modbus]` sections.

pub mod config;
pub mod decode;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use fieldlink_model::Protocol;
use fieldlink_model::proto::{Quality, point::Value};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::slave::Slave;

use self::config::{Area, DataType, Layout, ModbusSection, Order, TagConfig, Target};
use super::poll::{self, PolledDevice, PolledSession, Poller, ReadStats};
use super::{BoxRun, DriverConfig, DriverContext, DriverInstance, DriverKind, Reading};
use crate::device::TagId;
use crate::error::DriverError;

/// The Modbus protocol family: section `modbus`, protocol `modbus-tcp`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModbusKind;

impl DriverKind for ModbusKind {
    fn section(&self) -> &'static str {
        "modbus"
    }

    fn protocols(&self) -> &'static [Protocol] {
        &[Protocol::ModbusTcp]
    }

    fn configure(&self, config: DriverConfig<'_>) -> Result<Arc<dyn DriverInstance>, Vec<String>> {
        Ok(Arc::new(ModbusDriver::configure(config)?))
    }
}

/// The configured Modbus driver.
#[derive(Debug)]
pub struct ModbusDriver {
    section: ModbusSection,
    devices: Vec<PolledDevice<Target>>,
}

impl ModbusDriver {
    /// Validates `[modbus]` and the devices' `[devices.modbus]`.
    ///
    /// # Errors
    /// Every problem, each naming its key path.
    pub fn configure(config: DriverConfig<'_>) -> Result<ModbusDriver, Vec<String>> {
        let configured = config::configure(config)?;
        Ok(ModbusDriver {
            section: configured.section,
            devices: configured.devices,
        })
    }

    /// The configured devices.
    pub fn devices(&self) -> &[PolledDevice<Target>] {
        &self.devices
    }

    /// What opens sessions to them.
    pub fn poller(&self) -> ModbusPoller {
        ModbusPoller {
            timeout: self.section.timeout,
        }
    }
}

impl DriverInstance for ModbusDriver {
    fn device_count(&self) -> usize {
        self.devices.len()
    }

    fn run(self: Arc<Self>, ctx: DriverContext) -> BoxRun {
        let devices = self.devices.clone();
        let timing = self.section.timing();
        let poller = Arc::new(self.poller());
        Box::pin(poll::run(poller, devices, timing, ctx.sink, ctx.shutdown))
    }
}

/// Opens Modbus TCP sessions.
#[derive(Debug, Clone)]
pub struct ModbusPoller {
    /// Time allowed for one request.
    pub timeout: Duration,
}

/// A session with one Modbus TCP device.
pub struct ModbusSession {
    ctx: Context,
    timeout: Duration,
    layout: Arc<Layout>,
}

impl Poller for ModbusPoller {
    type Target = Target;
    type Session = ModbusSession;

    async fn connect(&self, target: &Target) -> Result<ModbusSession, DriverError> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        let ctx = tokio_modbus::client::tcp::attach_slave(stream, Slave(target.unit_id));
        Ok(ModbusSession {
            ctx,
            timeout: self.timeout,
            layout: target.layout.clone(),
        })
    }
}

impl std::fmt::Debug for ModbusSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusSession")
            .field("timeout", &self.timeout)
            .field("plans", &self.layout.plans)
            .finish_non_exhaustive()
    }
}

/// Bits or words of one answered request.
enum Answer {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}

impl ModbusSession {
    /// Sends one read; `Ok(Err(exception))` when the device refused it.
    async fn request(
        ctx: &mut Context,
        limit: Duration,
        read: &plan::Read,
    ) -> Result<Result<Answer, String>, DriverError> {
        let (start, count) = (read.start, read.count);
        let answer = async {
            Ok::<_, tokio_modbus::Error>(match read.area {
                Area::Coil => ctx.read_coils(start, count).await?.map(Answer::Bits),
                Area::DiscreteInput => ctx
                    .read_discrete_inputs(start, count)
                    .await?
                    .map(Answer::Bits),
                Area::InputRegister => ctx
                    .read_input_registers(start, count)
                    .await?
                    .map(Answer::Words),
                Area::HoldingRegister => ctx
                    .read_holding_registers(start, count)
                    .await?
                    .map(Answer::Words),
            })
        };
        match timeout(limit, answer).await {
            Err(_) => Err(DriverError::Timeout(limit)),
            Ok(Err(e)) => Err(modbus_error(e)),
            Ok(Ok(Err(exception))) => Ok(Err(format!("{exception}"))),
            Ok(Ok(Ok(answer))) => Ok(Ok(answer)),
        }
    }
}

fn modbus_error(e: tokio_modbus::Error) -> DriverError {
    match e {
        tokio_modbus::Error::Transport(io) => DriverError::Io(io),
        other => DriverError::BadResponse(other.to_string()),
    }
}

impl PolledSession for ModbusSession {
    async fn read_group(
        &mut self,
        group: usize,
        out: &mut [Reading],
    ) -> Result<ReadStats, DriverError> {
        let layout = self.layout.clone();
        let (Some(reads), Some(tags)) = (layout.plans.get(group), layout.group_tags(group)) else {
            return Err(DriverError::Invalid(format!("no poll group {group}")));
        };
        let mut stats = ReadStats::default();
        let mut set = |tag: usize, value: Option<Value>| {
            if let (Some(value), Some(reading)) = (value, out.get_mut(tag)) {
                reading.value = Some(value);
                reading.quality = Quality::Good;
            }
        };
        for read in reads {
            stats.requests += 1;
            match Self::request(&mut self.ctx, self.timeout, read).await? {
                Err(_exception) => stats.exceptions += 1,
                Ok(Answer::Bits(bits)) => {
                    for (tag, offset) in &read.tags {
                        set(
                            *tag,
                            bits.get(usize::from(*offset)).map(|b| Value::BoolValue(*b)),
                        );
                    }
                }
                Ok(Answer::Words(words)) => {
                    if words.len() < usize::from(read.count) {
                        return Err(DriverError::BadResponse(format!(
                            "asked {} registers at {}, got {}",
                            read.count,
                            read.start,
                            words.len()
                        )));
                    }
                    for (tag, offset) in &read.tags {
                        let from = usize::from(*offset);
                        let value = tags
                            .get(*tag)
                            .and_then(|config| decode::decode_registers(config, &words[from..]));
                        set(*tag, value);
                    }
                }
            }
        }
        Ok(stats)
    }

    async fn write(&mut self, tag: TagId, value: &Value) -> Result<(), DriverError> {
        let Some(config) = self.layout.tags.get(tag as usize).cloned() else {
            return Err(DriverError::Invalid(format!("no tag {tag}")));
        };
        let words = encode_write(&config, value)?;
        let ctx = &mut self.ctx;
        let request = async {
            match (config.area, words) {
                (Area::Coil, Write::Bit(bit)) => ctx.write_single_coil(config.address, bit).await,
                (Area::HoldingRegister, Write::Words(words)) if words.len() == 1 => {
                    ctx.write_single_register(config.address, words[0]).await
                }
                (Area::HoldingRegister, Write::Words(words)) => {
                    ctx.write_multiple_registers(config.address, &words).await
                }
                _ => Ok(Ok(())),
            }
        };
        match timeout(self.timeout, request).await {
            Err(_) => Err(DriverError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(modbus_error(e)),
            Ok(Ok(Err(exception))) => Err(DriverError::Exception(format!("{exception}"))),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }
}

enum Write {
    Bit(bool),
    Words(Vec<u16>),
}

/// Encodes a value for a writable tag (coil or holding register).
fn encode_write(tag: &TagConfig, value: &Value) -> Result<Write, DriverError> {
    let refuse = |why: &str| Err(DriverError::Invalid(format!("tag `{}`: {why}", tag.name)));
    match tag.area {
        Area::Coil => match value {
            Value::BoolValue(b) => Ok(Write::Bit(*b)),
            _ => refuse("a coil takes a bool"),
        },
        Area::HoldingRegister => {
            let number = match value {
                Value::DoubleValue(d) => (*d - tag.offset) / tag.scale,
                Value::IntValue(i) => (*i as f64 - tag.offset) / tag.scale,
                Value::BoolValue(b) => f64::from(u8::from(*b)),
                _ => return refuse("takes a number"),
            };
            let words: Vec<u16> = match tag.data_type {
                DataType::U16 | DataType::Bool => vec![number.round() as u16],
                DataType::I16 => vec![number.round() as i16 as u16],
                DataType::U32 => split32(number.round() as u32),
                DataType::I32 => split32(number.round() as i32 as u32),
                DataType::F32 => split32((number as f32).to_bits()),
                _ => return refuse("writing this type is not supported"),
            };
            let words = match (tag.word_order, tag.byte_order) {
                (Order::Big, Order::Big) => words,
                (word, byte) => {
                    let mut w = words;
                    if word == Order::Little {
                        w.reverse();
                    }
                    if byte == Order::Little {
                        w.iter_mut().for_each(|x| *x = x.swap_bytes());
                    }
                    w
                }
            };
            Ok(Write::Words(words))
        }
        Area::DiscreteInput | Area::InputRegister => refuse("the area is read-only"),
    }
}

fn split32(v: u32) -> Vec<u16> {
    vec![(v >> 16) as u16, v as u16]
}
