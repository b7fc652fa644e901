//! The load: which registers the gateway (and the peer) read on every
//! device, per poll.
//!
//! The simulated devices answer only addresses that belong to a tag, and the
//! catalog maps one contiguous block of input registers from address 0 on
//! every type — 9 (gas detector) to 25 (CNC) registers long, not 125. The
//! bench therefore uses the block every device of the fleet has
//! ([`mapped_block`], `W` registers; 9 once the fleet has a gas detector)
//! and lays its `T` u16 tags over it:
//!
//! - **contiguous**: tags in groups of 125 (one poll group each, the
//!   protocol's largest read); tag `j` of a group sits at address `j mod W`.
//!   Tags sharing an address are served by the same register, so the
//!   gateway's planner merges a group into **one request** of `min(len, W)`
//!   registers: `ceil(T/125)` requests and `T` points per device and poll,
//!   as a device with `T` consecutive registers would need, but only
//!   `min(T, W)` registers per request on the wire.
//! - **scattered**: tags at every other address (0, 2, 4, … below `W`), so
//!   no two merge; `ceil(W/2)` tags per poll group, as many groups as
//!   needed: **`T` requests** of one register each per device and poll.
//!
//! The reads are what the gateway's own planner
//! ([`fieldlink_gateway::driver::modbus::plan`]) makes of the tags, so the
//! peer is handed exactly the gateway's requests.

use std::time::Duration;

use anyhow::{Context, bail};
use fieldlink_gateway::driver::modbus::config::{
    Area, DataType, Order, PollGroupConfig, TagConfig,
};
use fieldlink_gateway::driver::modbus::plan;
use fieldlink_sim::FleetPlan;
use fieldlink_sim::catalog::{Area as SimArea, DeviceType};
use serde::Serialize;

/// The protocol's largest register read, the gateway's default
/// `modbus.max_registers_per_read`.
pub(crate) const MAX_REGISTERS: u16 = 125;
/// The gateway's default `modbus.max_bits_per_read` (no bits are read here).
const MAX_BITS: u16 = 2000;

/// How the tags of a device are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Consecutive addresses: merged into reads of up to 125 registers.
    Contiguous,
    /// Every tag its own request.
    Scattered,
}

impl Layout {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Contiguous => "contiguous",
            Layout::Scattered => "scattered",
        }
    }
}

/// One read request: input registers `start..start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Read {
    /// First address.
    pub(crate) start: u16,
    /// Registers.
    pub(crate) count: u16,
}

/// The load every device gets.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    /// Tag layout.
    pub(crate) layout: Layout,
    /// Tags (u16 points) per device.
    pub(crate) tags: u32,
    /// Input registers mapped from 0 on every device of the fleet.
    pub(crate) block: u16,
    /// Poll interval of every group.
    pub(crate) interval: Duration,
    /// The gateway's poll groups.
    pub(crate) groups: Vec<PollGroupConfig>,
    /// The reads of each group, as the gateway plans them.
    pub(crate) reads: Vec<Vec<Read>>,
}

impl Load {
    /// Lays `tags` tags over a block of `block` registers.
    ///
    /// # Errors
    /// When there are no tags, the block is empty, or the planner does not
    /// make the reads the layout promises (a bench bug).
    pub(crate) fn new(
        layout: Layout,
        tags: u32,
        block: u16,
        interval: Duration,
    ) -> anyhow::Result<Load> {
        if tags == 0 {
            bail!("--tags must be at least 1");
        }
        if block == 0 {
            bail!("the devices have no input registers mapped from address 0");
        }
        let per_group = match layout {
            Layout::Contiguous => u32::from(MAX_REGISTERS),
            Layout::Scattered => u32::from(block.div_ceil(2)),
        };
        let mut groups = Vec::new();
        let mut first = 0u32;
        while first < tags {
            let len = per_group.min(tags - first);
            let tags = (0..len)
                .map(|j| {
                    let address = match layout {
                        Layout::Contiguous => j % u32::from(block),
                        Layout::Scattered => 2 * j,
                    };
                    // Below `block` (or 125): fits u16.
                    tag(first + j, address as u16)
                })
                .collect();
            groups.push(PollGroupConfig { interval, tags });
            first += len;
        }
        let reads: Vec<Vec<Read>> = groups
            .iter()
            .map(|g| {
                plan::plan(&g.tags, MAX_REGISTERS, MAX_BITS)
                    .into_iter()
                    .map(|r| Read {
                        start: r.start,
                        count: r.count,
                    })
                    .collect()
            })
            .collect();
        let load = Load {
            layout,
            tags,
            block,
            interval,
            groups,
            reads,
        };
        load.check()
            .context("the gateway plans other reads than the layout needs")?;
        Ok(load)
    }

    /// Requests per device and poll.
    pub(crate) fn requests_per_poll(&self) -> u64 {
        self.reads.iter().map(|r| r.len() as u64).sum()
    }

    /// Registers on the wire per device and poll.
    pub(crate) fn registers_per_poll(&self) -> u64 {
        self.reads
            .iter()
            .flatten()
            .map(|r| u64::from(r.count))
            .sum()
    }

    /// Mean registers per request.
    pub(crate) fn registers_per_request(&self) -> f64 {
        self.registers_per_poll() as f64 / self.requests_per_poll().max(1) as f64
    }

    /// The layout's promise: contiguous, one read per group of at most 125
    /// tags; scattered, one read per tag.
    fn check(&self) -> anyhow::Result<()> {
        for (g, (group, reads)) in self.groups.iter().zip(&self.reads).enumerate() {
            let n = group.tags.len();
            let ok = match self.layout {
                Layout::Contiguous => {
                    reads.len() == 1
                        && reads[0].start == 0
                        && usize::from(reads[0].count) == n.min(usize::from(self.block))
                }
                Layout::Scattered => reads.len() == n && reads.iter().all(|r| r.count == 1),
            };
            if !ok {
                bail!("group {g} of {n} tags is read as {reads:?}");
            }
        }
        Ok(())
    }
}

/// Tag `k`: a u16 input register at `address`.
fn tag(k: u32, address: u16) -> TagConfig {
    TagConfig {
        name: format!("t{k:04}"),
        area: Area::InputRegister,
        address,
        data_type: DataType::U16,
        length: 0,
        bit: None,
        byte_order: Order::Big,
        word_order: Order::Big,
        scale: 1.0,
        offset: 0.0,
        unit: String::new(),
    }
}

/// Input registers mapped from address 0 without a hole on a type.
pub(crate) fn type_block(ty: &DeviceType) -> u16 {
    let mut spans: Vec<(u32, u32)> = ty
        .all_tags()
        .filter(|t| t.area == SimArea::InputRegister)
        .map(|t| {
            (
                u32::from(t.address),
                u32::from(t.address) + u32::from(t.span()),
            )
        })
        .collect();
    spans.sort_unstable();
    let mut end = 0u32;
    for (start, stop) in spans {
        if start > end {
            break;
        }
        end = end.max(stop);
    }
    u16::try_from(end).unwrap_or(u16::MAX)
}

/// The block of input registers from 0 that every device of `plan` maps:
/// the shortest [`type_block`] of the types in the plan.
pub(crate) fn mapped_block(plan: &FleetPlan) -> u16 {
    let mut seen = Vec::new();
    let mut block = u16::MAX;
    for d in plan.devices() {
        if !seen.contains(&d.type_index) {
            seen.push(d.type_index);
            block = block.min(type_block(d.device_type));
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use fieldlink_sim::{CATALOG, FleetSpec};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn every_catalog_type_maps_a_block_from_zero() {
        for ty in &CATALOG {
            let block = type_block(ty);
            assert!((8..=MAX_REGISTERS).contains(&block), "{}: {block}", ty.key);
        }
        let plan = FleetPlan::new(FleetSpec {
            devices: 200,
            ..FleetSpec::default()
        })
        .unwrap();
        let block = mapped_block(&plan);
        assert_eq!(
            block,
            CATALOG.iter().map(type_block).min().unwrap(),
            "200 devices cover every type"
        );
    }

    #[test]
    fn contiguous_tags_make_one_read_per_125() {
        let load = Load::new(Layout::Contiguous, 125, 10, SECOND).unwrap();
        assert_eq!(load.groups.len(), 1);
        assert_eq!(
            load.reads,
            vec![vec![Read {
                start: 0,
                count: 10
            }]]
        );
        assert_eq!(load.requests_per_poll(), 1);
        assert_eq!(load.registers_per_poll(), 10);

        let load = Load::new(Layout::Contiguous, 300, 10, SECOND).unwrap();
        assert_eq!(load.requests_per_poll(), 3);
        assert_eq!(load.groups.iter().map(|g| g.tags.len()).sum::<usize>(), 300);

        let load = Load::new(Layout::Contiguous, 6, 10, SECOND).unwrap();
        assert_eq!(load.reads, vec![vec![Read { start: 0, count: 6 }]]);
    }

    #[test]
    fn scattered_tags_are_one_request_each() {
        let load = Load::new(Layout::Scattered, 125, 10, SECOND).unwrap();
        assert_eq!(load.groups.len(), 25);
        assert_eq!(load.requests_per_poll(), 125);
        assert_eq!(load.registers_per_poll(), 125);
        assert!(load.reads.iter().flatten().all(|r| r.start < 10));
        let load = Load::new(Layout::Scattered, 7, 11, SECOND).unwrap();
        assert_eq!(load.groups.len(), 2);
        assert_eq!(load.requests_per_poll(), 7);
    }

    #[test]
    fn tag_names_are_unique_per_device() {
        let load = Load::new(Layout::Scattered, 40, 10, SECOND).unwrap();
        let mut names: Vec<&str> = load
            .groups
            .iter()
            .flat_map(|g| g.tags.iter().map(|t| t.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 40);
    }

    #[test]
    fn no_tags_or_no_block_is_refused() {
        assert!(Load::new(Layout::Contiguous, 0, 10, SECOND).is_err());
        assert!(Load::new(Layout::Scattered, 5, 0, SECOND).is_err());
    }
}
