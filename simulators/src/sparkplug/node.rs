//! One simulated edge node's Sparkplug B messages, without any transport:
//! bdSeq per session, seq 0..=255 wrapping across every message but NDEATH,
//! NBIRTH (seq 0) before DBIRTHs before data, aliases unique within the
//! node, each device's identity as properties of its first metric.

use fieldlink_model::sparkplug::proto::payload::{
    Metric, PropertySet, PropertyValue, metric, property_value,
};
use fieldlink_model::sparkplug::proto::{DataType, Payload};
use fieldlink_model::sparkplug::{
    BD_SEQ, CATEGORY_KEY, CLASS_KEY, MessageType, NAME_KEY, REBIRTH, TYPE_KEY, device_topic,
    node_topic,
};
use prost::Message;

use crate::catalog::{DataType as RegisterType, TagDef};
use crate::plan::PlannedDevice;
use crate::signal::SimDevice;

/// One device of a node.
#[derive(Debug, Clone)]
pub struct NodeDevice {
    /// Its plan entry.
    pub planned: PlannedDevice,
    /// Its signals.
    pub sim: SimDevice,
}

/// The state of one edge node's Sparkplug session.
#[derive(Debug, Clone)]
pub struct EdgeNode {
    /// Group id (the tenant).
    pub group: String,
    /// Edge node id.
    pub edge: String,
    /// Its devices.
    pub devices: Vec<NodeDevice>,
    bd_seq: u8,
    seq: u8,
    fresh: bool,
}

fn datatype(tag: &TagDef) -> DataType {
    match tag.data_type {
        RegisterType::Bool => DataType::Boolean,
        RegisterType::F32 | RegisterType::F64 => DataType::Double,
        _ if tag.scale != 1.0 || tag.offset != 0.0 => DataType::Double,
        _ => DataType::Int64,
    }
}

fn value(dt: DataType, v: f64) -> metric::Value {
    match dt {
        DataType::Boolean => metric::Value::BooleanValue(v != 0.0),
        DataType::Int64 => metric::Value::LongValue(v as i64 as u64),
        _ => metric::Value::DoubleValue(v),
    }
}

fn string_property(v: &str) -> PropertyValue {
    PropertyValue {
        r#type: Some(DataType::String as u32),
        is_null: None,
        value: Some(property_value::Value::StringValue(v.to_owned())),
    }
}

fn ms_u64(ms: i64) -> Option<u64> {
    u64::try_from(ms).ok()
}

impl EdgeNode {
    /// A node whose first session will have bdSeq 0.
    pub fn new(group: String, edge: String, devices: Vec<NodeDevice>) -> EdgeNode {
        EdgeNode {
            group,
            edge,
            devices,
            bd_seq: 0,
            seq: 0,
            fresh: true,
        }
    }

    /// Starts a new MQTT session: the next bdSeq (0..=255 wrapping).
    pub fn new_session(&mut self) {
        if !std::mem::replace(&mut self.fresh, false) {
            self.bd_seq = self.bd_seq.wrapping_add(1);
        }
    }

    /// The session's bdSeq.
    pub fn bd_seq(&self) -> u8 {
        self.bd_seq
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        u64::from(s)
    }

    /// Skips a sequence number (a forged gap).
    pub fn skip_seq(&mut self) {
        self.seq = self.seq.wrapping_add(1);
    }

    /// Gives back the last sequence number (a message that was built but
    /// replaced by garbage consumed none).
    pub fn unskip_seq(&mut self) {
        self.seq = self.seq.wrapping_sub(1);
    }

    fn bd_seq_metric(&self, ms: i64) -> Metric {
        Metric {
            name: Some(BD_SEQ.to_owned()),
            timestamp: ms_u64(ms),
            datatype: Some(DataType::Int64 as u32),
            value: Some(metric::Value::LongValue(u64::from(self.bd_seq))),
            ..Metric::default()
        }
    }

    /// The will: NDEATH with the session's bdSeq (no seq).
    pub fn ndeath(&self, ms: i64) -> (String, Vec<u8>) {
        let payload = Payload {
            timestamp: ms_u64(ms),
            metrics: vec![self.bd_seq_metric(ms)],
            ..Payload::default()
        };
        (
            node_topic(&self.group, MessageType::NDeath, &self.edge),
            payload.encode_to_vec(),
        )
    }

    /// NBIRTH: seq 0, bdSeq, `Node Control/Rebirth` = false.
    pub fn nbirth(&mut self, ms: i64) -> (String, Vec<u8>) {
        self.seq = 0;
        let seq = self.next_seq();
        let payload = Payload {
            timestamp: ms_u64(ms),
            seq: Some(seq),
            metrics: vec![
                Metric {
                    alias: Some(0),
                    ..self.bd_seq_metric(ms)
                },
                Metric {
                    name: Some(REBIRTH.to_owned()),
                    alias: Some(1),
                    timestamp: ms_u64(ms),
                    datatype: Some(DataType::Boolean as u32),
                    value: Some(metric::Value::BooleanValue(false)),
                    ..Metric::default()
                },
            ],
            ..Payload::default()
        };
        (
            node_topic(&self.group, MessageType::NBirth, &self.edge),
            payload.encode_to_vec(),
        )
    }

    fn alias(slot: usize, tag: usize) -> u64 {
        (slot as u64 + 1) * 1000 + tag as u64
    }

    /// The process tags of device `slot` with their indexes in the type's
    /// full tag list (strings left out).
    fn tags(&self, slot: usize) -> impl Iterator<Item = (usize, &'static TagDef)> + '_ {
        let ty = self.devices[slot].planned.device_type;
        let first = ty.tag_count() - ty.tags.len();
        ty.tags
            .iter()
            .enumerate()
            .filter(|(_, t)| t.data_type != RegisterType::String)
            .map(move |(i, t)| (first + i, t))
    }

    /// DBIRTH of device `slot`: every process tag with name, alias,
    /// datatype and value; identity as properties of the first metric.
    pub fn dbirth(&mut self, slot: usize, ms: i64) -> Option<(String, Vec<u8>)> {
        let d = self.devices.get(slot)?.clone();
        let mut metrics: Vec<Metric> = self
            .tags(slot)
            .map(|(i, t)| {
                let dt = datatype(t);
                Metric {
                    name: Some(t.name.to_owned()),
                    alias: Some(Self::alias(slot, i)),
                    timestamp: ms_u64(ms),
                    datatype: Some(dt as u32),
                    value: Some(value(dt, d.sim.value(i, ms))),
                    ..Metric::default()
                }
            })
            .collect();
        let ty = d.planned.device_type;
        if let Some(first) = metrics.first_mut() {
            first.properties = Some(PropertySet {
                keys: vec![
                    CLASS_KEY.to_owned(),
                    CATEGORY_KEY.to_owned(),
                    TYPE_KEY.to_owned(),
                    NAME_KEY.to_owned(),
                ],
                values: vec![
                    string_property(ty.class().code()),
                    string_property(ty.category.code()),
                    string_property(ty.model),
                    string_property(&d.planned.name()),
                ],
            });
        }
        let payload = Payload {
            timestamp: ms_u64(ms),
            seq: Some(self.next_seq()),
            metrics,
            ..Payload::default()
        };
        Some((
            device_topic(
                &self.group,
                MessageType::DBirth,
                &self.edge,
                &d.planned.id(),
            ),
            payload.encode_to_vec(),
        ))
    }

    /// DDATA of device `slot`: every process tag by alias only.
    pub fn ddata(&mut self, slot: usize, ms: i64) -> Option<(String, Vec<u8>)> {
        let d = self.devices.get(slot)?.clone();
        let metrics = self
            .tags(slot)
            .map(|(i, t)| Metric {
                alias: Some(Self::alias(slot, i)),
                timestamp: ms_u64(ms),
                value: Some(value(datatype(t), d.sim.value(i, ms))),
                ..Metric::default()
            })
            .collect();
        let payload = Payload {
            timestamp: ms_u64(ms),
            seq: Some(self.next_seq()),
            metrics,
            ..Payload::default()
        };
        Some((
            device_topic(&self.group, MessageType::DData, &self.edge, &d.planned.id()),
            payload.encode_to_vec(),
        ))
    }

    /// DDEATH of device `slot`.
    pub fn ddeath(&mut self, slot: usize, ms: i64) -> Option<(String, Vec<u8>)> {
        let id = self.devices.get(slot)?.planned.id();
        let payload = Payload {
            timestamp: ms_u64(ms),
            seq: Some(self.next_seq()),
            ..Payload::default()
        };
        Some((
            device_topic(&self.group, MessageType::DDeath, &self.edge, &id),
            payload.encode_to_vec(),
        ))
    }

    /// Whether an NCMD payload asks for a rebirth.
    pub fn is_rebirth(payload: &[u8]) -> bool {
        Payload::decode(payload).is_ok_and(|p| {
            p.metrics.iter().any(|m| {
                m.name.as_deref() == Some(REBIRTH)
                    && m.value == Some(metric::Value::BooleanValue(true))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FleetPlan, FleetSpec};

    #[test]
    fn sessions_follow_the_sequence_rules() {
        let plan = FleetPlan::new(FleetSpec {
            devices: 3,
            ..FleetSpec::default()
        })
        .unwrap();
        let devices = plan
            .devices()
            .map(|planned| NodeDevice {
                sim: plan.sim_device(planned.index).unwrap(),
                planned,
            })
            .collect();
        let mut node = EdgeNode::new("g".into(), "e".into(), devices);
        node.new_session();
        assert_eq!(node.bd_seq(), 0);
        let decode = |b: &[u8]| Payload::decode(b).unwrap();
        let (_, b) = node.nbirth(1);
        assert_eq!(decode(&b).seq, Some(0));
        let (t, b) = node.dbirth(0, 1).unwrap();
        assert!(t.starts_with("spBv1.0/g/DBIRTH/e/"));
        let birth = decode(&b);
        assert_eq!(birth.seq, Some(1));
        assert!(birth.metrics[0].properties.is_some());
        for expected in 2..300u64 {
            let (_, b) = node.ddata(0, 2).unwrap();
            assert_eq!(decode(&b).seq, Some(expected % 256));
        }
        let (_, death) = node.ndeath(3);
        assert_eq!(decode(&death).seq, None);
        node.new_session();
        assert_eq!(node.bd_seq(), 1);
        let (_, b) = node.nbirth(4);
        assert_eq!(decode(&b).seq, Some(0), "a new birth starts at 0");
    }
}
