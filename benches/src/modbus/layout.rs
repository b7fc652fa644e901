//! The load: which registers the gateway (and the peer) read on every
//! device, per poll.
//!
//! Every simulated device serves, besides its catalog map, the scan block
//! ([`fieldlink_sim::scan`]): 125 input registers from address 5000, live
//! values. The bench lays its `T` u16 tags over that block ([`Block::SCAN`],
//! `W` = 125 registers):
//!
//! - **contiguous**: tags in groups of 125 (one poll group each, the
//!   protocol's largest read); tag `j` of a group sits at `start + j mod W`,
//!   so the gateway's planner makes a group **one request** of `min(len, W)`
//!   registers: `ceil(T/125)` requests, `T` points and (for `T` ≥ 125)
//!   125 registers per request on the wire.
//! - **scattered**: tags at every other address of the block, so no two
//!   merge; `ceil(W/2)` tags per poll group, as many groups as needed:
//!   **`T` requests** of one register each per device and poll.
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
use fieldlink_sim::scan::{SCAN_BASE, SCAN_REGISTERS};
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

/// A run of input registers every device of the fleet serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Block {
    /// First address.
    pub(crate) start: u16,
    /// Registers.
    pub(crate) len: u16,
}

impl Block {
    /// The simulator's scan block: 125 input registers from 5000.
    pub(crate) const SCAN: Block = Block {
        start: SCAN_BASE,
        len: SCAN_REGISTERS,
    };
}

/// One read request: input registers `start..start + count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Read {
    /// First address.
    pub(crate) start: u16,
    /// Registers.
    pub(crate) count: u16,
    /// The u16 tags it serves: (name, offset from `start`).
    pub(crate) tags: Vec<(String, u16)>,
}

/// The load every device gets.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    /// Tag layout.
    pub(crate) layout: Layout,
    /// Tags (u16 points) per device.
    pub(crate) tags: u32,
    /// The input registers the tags lie on.
    pub(crate) block: Block,
    /// Poll interval of every group.
    pub(crate) interval: Duration,
    /// The gateway's poll groups.
    pub(crate) groups: Vec<PollGroupConfig>,
    /// The reads of each group, as the gateway plans them.
    pub(crate) reads: Vec<Vec<Read>>,
}

impl Load {
    /// Lays `tags` tags over `block`.
    ///
    /// # Errors
    /// When there are no tags, the block is empty, or the planner does not
    /// make the reads the layout promises (a bench bug).
    pub(crate) fn new(
        layout: Layout,
        tags: u32,
        block: Block,
        interval: Duration,
    ) -> anyhow::Result<Load> {
        if tags == 0 {
            bail!("--tags must be at least 1");
        }
        if block.len == 0 || u32::from(block.start) + u32::from(block.len) > 65_536 {
            bail!("the register block {block:?} is empty or past address 65535");
        }
        let per_group = match layout {
            Layout::Contiguous => u32::from(MAX_REGISTERS),
            Layout::Scattered => u32::from(block.len.div_ceil(2)),
        };
        let mut groups = Vec::new();
        let mut first = 0u32;
        while first < tags {
            let len = per_group.min(tags - first);
            let tags = (0..len)
                .map(|j| {
                    let offset = match layout {
                        Layout::Contiguous => j % u32::from(block.len),
                        Layout::Scattered => 2 * j,
                    };
                    // Inside the block (checked above): fits u16.
                    tag(first + j, (u32::from(block.start) + offset) as u16)
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
                        tags: r
                            .tags
                            .iter()
                            .map(|&(i, offset)| (g.tags[i].name.clone(), offset))
                            .collect(),
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
                        && reads[0].start == self.block.start
                        && usize::from(reads[0].count) == n.min(usize::from(self.block.len))
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    const TEN: Block = Block { start: 0, len: 10 };

    #[test]
    fn the_scan_block_makes_full_reads() {
        let load = Load::new(Layout::Contiguous, 250, Block::SCAN, SECOND).unwrap();
        assert_eq!(load.reads.len(), 2);
        for reads in &load.reads {
            assert_eq!(reads.len(), 1);
            assert_eq!((reads[0].start, reads[0].count), (5000, 125));
            assert_eq!(reads[0].tags.len(), 125);
        }
        let t128 = load.reads[1][0]
            .tags
            .iter()
            .find(|(name, _)| name == "t0128");
        assert_eq!(t128.map(|t| t.1), Some(3));
        assert_eq!(load.registers_per_poll(), 250);
        let load = Load::new(Layout::Scattered, 125, Block::SCAN, SECOND).unwrap();
        assert_eq!(load.requests_per_poll(), 125);
        assert!(
            load.reads
                .iter()
                .flatten()
                .all(|r| (5000..5125).contains(&r.start))
        );
    }

    #[test]
    fn contiguous_tags_make_one_read_per_125() {
        let load = Load::new(Layout::Contiguous, 125, TEN, SECOND).unwrap();
        assert_eq!(load.groups.len(), 1);
        assert_eq!(load.reads.len(), 1);
        assert_eq!((load.reads[0][0].start, load.reads[0][0].count), (0, 10));
        assert_eq!(load.reads[0][0].tags.len(), 125, "every tag is served");
        let t12 = load.reads[0][0]
            .tags
            .iter()
            .find(|(name, _)| name == "t0012");
        assert_eq!(t12.map(|t| t.1), Some(2), "t0012 reads address 12 mod 10");
        assert_eq!(load.requests_per_poll(), 1);
        assert_eq!(load.registers_per_poll(), 10);

        let load = Load::new(Layout::Contiguous, 300, TEN, SECOND).unwrap();
        assert_eq!(load.requests_per_poll(), 3);
        assert_eq!(load.groups.iter().map(|g| g.tags.len()).sum::<usize>(), 300);

        let load = Load::new(Layout::Contiguous, 6, TEN, SECOND).unwrap();
        assert_eq!(load.reads.len(), 1);
        assert_eq!((load.reads[0][0].start, load.reads[0][0].count), (0, 6));
    }

    #[test]
    fn scattered_tags_are_one_request_each() {
        let load = Load::new(Layout::Scattered, 125, TEN, SECOND).unwrap();
        assert_eq!(load.groups.len(), 25);
        assert_eq!(load.requests_per_poll(), 125);
        assert_eq!(load.registers_per_poll(), 125);
        assert!(load.reads.iter().flatten().all(|r| r.start < 10));
        let load = Load::new(Layout::Scattered, 7, Block { start: 0, len: 11 }, SECOND).unwrap();
        assert_eq!(load.groups.len(), 2);
        assert_eq!(load.requests_per_poll(), 7);
    }

    #[test]
    fn tag_names_are_unique_per_device() {
        let load = Load::new(Layout::Scattered, 40, TEN, SECOND).unwrap();
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
        assert!(Load::new(Layout::Contiguous, 0, TEN, SECOND).is_err());
        let empty = Block { start: 0, len: 0 };
        assert!(Load::new(Layout::Scattered, 5, empty, SECOND).is_err());
        let past = Block {
            start: 65_530,
            len: 10,
        };
        assert!(Load::new(Layout::Scattered, 5, past, SECOND).is_err());
    }
}
