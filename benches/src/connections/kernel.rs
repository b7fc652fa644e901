//! What the kernel needs and spends for many loopback connections: the
//! sysctls a million connections need, raised when they are lower (and
//! said), and the kernel's memory from `/proc/meminfo` and
//! `/proc/net/sockstat`.

use std::path::Path;

use serde::Serialize;

/// One sysctl the bench looked at.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sysctl {
    /// Its name, e.g. `fs.file-max`.
    pub(crate) name: &'static str,
    /// Why the bench needs it.
    pub(crate) why: &'static str,
    /// The value the bench asked for at least.
    pub(crate) wanted: u64,
    /// Its value before.
    pub(crate) before: Option<u64>,
    /// Its value after (raised or not).
    pub(crate) after: Option<u64>,
    /// Why it could not be raised, when it could not.
    pub(crate) error: Option<String>,
}

impl Sysctl {
    /// Whether the value now meets the need (an absent sysctl — e.g. no
    /// conntrack module — needs nothing).
    pub(crate) fn met(&self) -> bool {
        self.after.is_none_or(|v| v >= self.wanted)
    }

    /// Whether the bench raised it.
    pub(crate) fn raised(&self) -> bool {
        self.before != self.after
    }
}

/// The kernel limits `connections` loopback connections (both ends on
/// this machine) need.
fn needs(connections: u64) -> Vec<(&'static str, &'static str, u64)> {
    // Both ends of every connection are a file here, plus room for the
    // rest of the machine.
    let files = 2 * connections + 200_000;
    // Queues for a ramp of thousands of connects a second; small fleets
    // need no more than the defaults.
    let queue = (connections / 8).clamp(1024, 65_535);
    vec![
        (
            "fs.file-max",
            "open files of the whole machine: both ends of every connection are a socket here",
            files,
        ),
        (
            "net.core.somaxconn",
            "accept queue of each listening socket, for a ramp of thousands of connects a second",
            queue,
        ),
        (
            "net.ipv4.tcp_max_syn_backlog",
            "half-open connections queued during the ramp",
            queue,
        ),
        (
            "net.netfilter.nf_conntrack_max",
            "connections tracked, when conntrack is loaded (a full table drops new connections)",
            files,
        ),
        (
            "net.netfilter.nf_conntrack_buckets",
            "hash buckets of the conntrack table, one per connection (long chains slow every packet)",
            connections.next_power_of_two(),
        ),
    ]
}

/// Raises every sysctl `connections` need that is lower; leaves higher
/// ones alone. A sysctl that cannot be written keeps its error.
pub(crate) fn raise_for(connections: u64) -> Vec<Sysctl> {
    needs(connections)
        .into_iter()
        .map(|(name, why, wanted)| raise(&proc_path(name), name, why, wanted))
        .collect()
}

fn proc_path(name: &str) -> String {
    format!("/proc/sys/{}", name.replace('.', "/"))
}

fn raise(path: &str, name: &'static str, why: &'static str, wanted: u64) -> Sysctl {
    let before = read_number(Path::new(path));
    let mut sysctl = Sysctl {
        name,
        why,
        wanted,
        before,
        after: before,
        error: None,
    };
    if before.is_some_and(|v| v < wanted) {
        match std::fs::write(path, wanted.to_string()) {
            Ok(()) => sysctl.after = read_number(Path::new(path)),
            Err(e) => sysctl.error = Some(format!("cannot write {path}: {e}")),
        }
    }
    sysctl
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The kernel's memory at one moment, bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct KernelMemory {
    /// `Slab` of /proc/meminfo (sockets, inodes, dentries, ...).
    pub(crate) slab: u64,
    /// `SUnreclaim`: the slab the kernel cannot give back.
    pub(crate) slab_unreclaimable: u64,
    /// TCP buffer memory (`TCP ... mem` of /proc/net/sockstat, pages).
    pub(crate) tcp_buffers: u64,
    /// TCP sockets in use (`TCP: inuse`).
    pub(crate) tcp_sockets: u64,
    /// `MemAvailable` of /proc/meminfo.
    pub(crate) available: u64,
    /// `MemFree` of /proc/meminfo: memory no page cache holds either.
    pub(crate) free: u64,
}

impl KernelMemory {
    /// Reads it now; zeros for what cannot be read.
    pub(crate) fn now() -> KernelMemory {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
        KernelMemory::parse(&meminfo, &sockstat)
    }

    fn parse(meminfo: &str, sockstat: &str) -> KernelMemory {
        let kib = |key: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |k| k * 1024)
        };
        let tcp = sockstat
            .lines()
            .find_map(|l| l.strip_prefix("TCP:"))
            .unwrap_or_default();
        let field = |key: &str| {
            let words: Vec<&str> = tcp.split_whitespace().collect();
            words
                .windows(2)
                .find(|w| w[0] == key)
                .and_then(|w| w[1].parse::<u64>().ok())
                .unwrap_or(0)
        };
        KernelMemory {
            slab: kib("Slab"),
            slab_unreclaimable: kib("SUnreclaim"),
            tcp_buffers: field("mem") * page_size(),
            tcp_sockets: field("inuse"),
            available: kib("MemAvailable"),
            free: kib("MemFree"),
        }
    }

    /// What the kernel holds more than at `before`, per connection: slab
    /// plus TCP buffers (both ends of each connection).
    pub(crate) fn per_connection(&self, before: &KernelMemory, connections: u64) -> Option<f64> {
        let grown = (self.slab + self.tcp_buffers).saturating_sub(before.slab + before.tcp_buffers);
        (connections > 0).then(|| grown as f64 / connections as f64)
    }
}

/// Memory one held connection takes on this machine, both ends, user and
/// kernel (measured at a million: ingress shards with their gateways
/// 2.6 KiB, fleet 3.0 KiB, kernel 10.0 KiB), rounded up.
const BYTES_PER_CONNECTION: u64 = 16 * 1024;

/// A note when `connections` need more memory than is free: what page
/// cache holds must be reclaimed during the ramp, and on a VM that hands
/// freed pages back to its host (free page reporting) that slows the ramp
/// down several times.
pub(crate) fn low_memory_note(now: &KernelMemory, connections: u64) -> Option<String> {
    const GIB: f64 = (1u64 << 30) as f64;
    let needed = connections.saturating_mul(BYTES_PER_CONNECTION);
    (now.free < needed).then(|| {
        format!(
            "note: {} connections need about {:.1} GiB and {:.1} GiB is free ({:.1} GiB available): \
             the ramp will be slower while the kernel reclaims page cache; \
             `sync; echo 3 > /proc/sys/vm/drop_caches` (as root) first frees it",
            connections,
            needed as f64 / GIB,
            now.free as f64 / GIB,
            now.available as f64 / GIB
        )
    })
}

/// The page size /proc/net/sockstat counts in.
fn page_size() -> u64 {
    // Every Linux this runs on (x86-64, aarch64 with 4 KiB pages).
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_sockstat_are_read() {
        let meminfo = "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\nSlab:             300000 kB\nSReclaimable:     100000 kB\nSUnreclaim:       200000 kB\n";
        let sockstat = "sockets: used 2000\nTCP: inuse 1500 orphan 0 tw 3 alloc 1600 mem 250\nUDP: inuse 2 mem 1\n";
        let k = KernelMemory::parse(meminfo, sockstat);
        assert_eq!(k.slab, 300_000 * 1024);
        assert_eq!(k.slab_unreclaimable, 200_000 * 1024);
        assert_eq!(k.available, 20_000_000 * 1024);
        assert_eq!(k.free, 0, "no MemFree line here");
        assert_eq!(k.tcp_sockets, 1500);
        assert_eq!(k.tcp_buffers, 250 * 4096);
        let empty = KernelMemory::parse("", "");
        assert_eq!(empty.slab, 0);
        let grown = KernelMemory {
            slab: k.slab + 10_000,
            tcp_buffers: k.tcp_buffers + 2_000,
            ..k
        };
        assert_eq!(grown.per_connection(&k, 4), Some(3_000.0));
        assert_eq!(grown.per_connection(&k, 0), None);
    }

    #[test]
    fn too_little_free_memory_for_the_connections_is_said_with_the_remedy() {
        let meminfo = "MemFree:         1048576 kB\nMemAvailable:   20971520 kB\n";
        let k = KernelMemory::parse(meminfo, "");
        assert_eq!(k.free, 1 << 30);
        let note = low_memory_note(&k, 1_000_000).expect("1 GiB free is short of 1 M connections");
        assert!(note.contains("15.3 GiB"), "{note}");
        assert!(
            note.contains("1.0 GiB is free") && note.contains("20.0 GiB available"),
            "{note}"
        );
        assert!(note.contains("drop_caches"), "{note}");
        assert_eq!(
            low_memory_note(&k, 10_000),
            None,
            "10 000 connections fit in 1 GiB"
        );
    }

    #[test]
    fn a_lower_sysctl_is_raised_and_a_higher_one_left() {
        let dir = tempfile::tempdir().unwrap();
        let low = dir.path().join("low");
        std::fs::write(&low, "4096\n").unwrap();
        let s = raise(low.to_str().unwrap(), "low", "test", 65_535);
        assert_eq!((s.before, s.after), (Some(4096), Some(65_535)));
        assert!(s.raised() && s.met());
        let high = dir.path().join("high");
        std::fs::write(&high, "100000\n").unwrap();
        let s = raise(high.to_str().unwrap(), "high", "test", 65_535);
        assert_eq!((s.before, s.after), (Some(100_000), Some(100_000)));
        assert!(!s.raised() && s.met());
        let s = raise(
            dir.path().join("absent").to_str().unwrap(),
            "absent",
            "test",
            1,
        );
        assert_eq!(s.after, None);
        assert!(s.met());
        assert_eq!(proc_path("fs.file-max"), "/proc/sys/fs/file-max");
        let names: Vec<_> = needs(1_000_000).iter().map(|n| n.0).collect();
        assert!(names.contains(&"fs.file-max"));
        assert_eq!(needs(1_000_000)[0].2, 2_200_000);
        assert_eq!(needs(1_000_000)[1].2, 65_535);
        assert_eq!(needs(300)[1].2, 1024);
    }
}
