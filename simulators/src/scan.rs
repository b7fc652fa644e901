//! The scan block: 125 input registers every simulated Modbus TCP device
//! serves beside its catalog map, so that one request can carry the
//! protocol's largest read.
//!
//! The catalog's own maps are short (9 to 25 input registers from address
//! 0): realistic for the devices, but a poll of them never moves 125
//! registers at once. The scan block is what a multi-channel recorder or a
//! PLC's process image offers: input registers [`SCAN_BASE`] ..
//! `SCAN_BASE + 124`, one u16 channel each, in tenths of a unit (20.0 to
//! 80.0 around a per-channel base), each moving on its own slow cycle (30 s
//! to 10 min) with noise that changes every second. Like every other
//! register, a channel's word is a pure function of (seed, device index,
//! channel, time): [`word`].
//!
//! The block is not part of [`crate::catalog`]: the gateway configs and the
//! manifest the simulator writes do not poll it; benches and tests that
//! want whole-block reads ask for it by address. A read that covers part of
//! the block and part of anything else answers `IllegalDataAddress`, as
//! every read touching an unmapped address does.

use std::f64::consts::TAU;

use crate::signal::{NOISE_STEP_MS, SimDevice, mix};

/// First input register of the block (at least 125 addresses away from
/// every catalog block, so no legal read spans both).
pub const SCAN_BASE: u16 = 5000;
/// Registers in the block: the protocol's largest read.
pub const SCAN_REGISTERS: u16 = 125;

/// Hash domain of the block's draws, so they share no stream with tags.
const SCAN_DOMAIN: u64 = 0x5CA7_B10C;

/// True when input registers `start..start + count` lie inside the block.
pub fn covers(start: u16, count: u16) -> bool {
    let end = u32::from(start) + u32::from(count);
    start >= SCAN_BASE && end <= u32::from(SCAN_BASE) + u32::from(SCAN_REGISTERS)
}

/// The raw word of channel `channel` (0..125) of `device` at `unix_ms`.
pub fn word(device: &SimDevice, channel: u16, unix_ms: i64) -> u16 {
    let key =
        mix(device.seed() ^ SCAN_DOMAIN) ^ (u64::from(device.index()) << 16) ^ u64::from(channel);
    let h = mix(key);
    let part = |shift: u32| ((h >> shift) & 0xFFFF) as f64 / 65_536.0;
    let base = 200.0 + 600.0 * part(0);
    let amp = base * (0.02 + 0.08 * part(16));
    let period_ms = 30_000.0 + 570_000.0 * part(32);
    let phase = TAU * part(48);
    let at = unix_ms.rem_euclid(period_ms as i64) as f64 / period_ms;
    let step = unix_ms.div_euclid(NOISE_STEP_MS) as u64;
    let noise = ((mix(h ^ step) >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
    let value = base + amp * (TAU * at + phase).sin() + 0.003 * base * noise;
    // 200 ± 10 % .. 800 ± 10 %: inside u16.
    value.round() as u16
}

/// Appends the words of input registers `start..start + count` (inside the
/// block, see [`covers`]) of `device` at `unix_ms` to `out`.
pub fn read(device: &SimDevice, start: u16, count: u16, unix_ms: i64, out: &mut Vec<u16>) {
    let first = start.saturating_sub(SCAN_BASE);
    out.extend((first..first.saturating_add(count)).map(|c| word(device, c, unix_ms)));
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_780_000_000_000;

    fn dev(index: u32) -> SimDevice {
        SimDevice::new(7, index, 0).unwrap()
    }

    #[test]
    fn the_block_is_bounded() {
        assert!(covers(SCAN_BASE, SCAN_REGISTERS));
        assert!(covers(SCAN_BASE + 124, 1));
        assert!(!covers(SCAN_BASE - 1, 2));
        assert!(!covers(SCAN_BASE + 1, SCAN_REGISTERS));
        assert!(!covers(0, 10));
    }

    #[test]
    fn channels_are_plausible_distinct_and_move() {
        let d = dev(3);
        let mut out = Vec::new();
        read(&d, SCAN_BASE, SCAN_REGISTERS, T0, &mut out);
        assert_eq!(out.len(), 125);
        assert!(out.iter().all(|w| (150..=900).contains(w)), "{out:?}");
        let mut distinct = out.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 60, "channels differ: {distinct:?}");
        // A minute later most channels have moved.
        let mut later = Vec::new();
        read(&d, SCAN_BASE, SCAN_REGISTERS, T0 + 60_000, &mut later);
        let moved = out.iter().zip(&later).filter(|(a, b)| a != b).count();
        assert!(moved > 100, "{moved} of 125 moved");
        // Deterministic, and per device.
        let mut again = Vec::new();
        read(&d, SCAN_BASE, SCAN_REGISTERS, T0, &mut again);
        assert_eq!(out, again);
        let mut other = Vec::new();
        read(&dev(4), SCAN_BASE, SCAN_REGISTERS, T0, &mut other);
        assert_ne!(out, other);
    }

    #[test]
    fn partial_reads_are_slices_of_the_block() {
        let d = dev(9);
        let mut all = Vec::new();
        read(&d, SCAN_BASE, SCAN_REGISTERS, T0, &mut all);
        let mut part = Vec::new();
        read(&d, SCAN_BASE + 10, 5, T0, &mut part);
        assert_eq!(part, all[10..15]);
    }
}
