//! Modbus TCP driver on `tokio-modbus`: one TCP session per device, poll
//! groups planned into the fewest reads ([`plan`]), registers decoded per
//! tag ([`decode`]). An exception response makes the tags of that request
//! bad; a timeout or I/O error breaks the session (a late answer would
//! confuse the next transaction), and the core reconnects with backoff.

pub mod decode;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use fieldlink_model::Protocol;
use fieldlink_model::proto::point::Value;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::slave::Slave;

use super::{Driver, GroupRead, Reading, Session};
use crate::config::{Area, DataType, Device, ModbusConfig, PollGroupConfig, TagConfig};
use crate::error::DriverError;

/// The Modbus TCP driver.
#[derive(Debug, Clone)]
pub struct ModbusDriver {
    config: ModbusConfig,
}

impl ModbusDriver {
    /// A driver with these defaults.
    pub fn new(config: ModbusConfig) -> Self {
        ModbusDriver { config }
    }
}

/// A session with one Modbus TCP device.
pub struct ModbusSession {
    ctx: Context,
    timeout: Duration,
    groups: Arc<[PollGroupConfig]>,
    plans: Vec<Vec<plan::Read>>,
}

impl Driver for ModbusDriver {
    type Session = ModbusSession;

    fn protocol(&self) -> Protocol {
        Protocol::ModbusTcp
    }

    async fn connect(&self, device: &Device) -> Result<ModbusSession, DriverError> {
        let stream = TcpStream::connect(device.addr).await?;
        stream.set_nodelay(true)?;
        let ctx = tokio_modbus::client::tcp::attach_slave(stream, Slave(device.unit_id));
        let groups = device.poll_groups.clone();
        let plans = groups
            .iter()
            .map(|group| {
                plan::plan(
                    &group.tags,
                    self.config.max_registers_per_read,
                    self.config.max_bits_per_read,
                )
            })
            .collect();
        Ok(ModbusSession {
            ctx,
            timeout: self.config.timeout,
            groups,
            plans,
        })
    }
}

impl std::fmt::Debug for ModbusSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusSession")
            .field("timeout", &self.timeout)
            .field("plans", &self.plans)
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

impl Session for ModbusSession {
    async fn read_group(&mut self, group: usize) -> Result<GroupRead, DriverError> {
        let (Some(reads), Some(group)) = (self.plans.get(group), self.groups.get(group)) else {
            return Err(DriverError::Invalid(format!("no poll group {group}")));
        };
        let tags = &group.tags;
        let mut out = GroupRead {
            readings: vec![Reading::bad(); tags.len()],
            requests: 0,
            exceptions: 0,
        };
        for read in reads {
            out.requests += 1;
            match Self::request(&mut self.ctx, self.timeout, read).await? {
                Err(_exception) => out.exceptions += 1,
                Ok(Answer::Bits(bits)) => {
                    for (tag, offset) in &read.tags {
                        if let Some(bit) = bits.get(usize::from(*offset)) {
                            out.readings[*tag] = Reading::good(Value::BoolValue(*bit));
                        }
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
                        if let Some(value) = decode::decode_registers(&tags[*tag], &words[from..]) {
                            out.readings[*tag] = Reading::good(value);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    async fn write(&mut self, tag: &str, value: &Value) -> Result<(), DriverError> {
        let Some(config) = self
            .groups
            .iter()
            .flat_map(|g| &g.tags)
            .find(|t| t.name == tag)
            .cloned()
        else {
            return Err(DriverError::Invalid(format!("no tag `{tag}`")));
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
                (crate::config::Order::Big, crate::config::Order::Big) => words,
                (word, byte) => {
                    let mut w = words;
                    if word == crate::config::Order::Little {
                        w.reverse();
                    }
                    if byte == crate::config::Order::Little {
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
