//! Memory and CPU of processes, from Linux `/proc`.

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds (user + system) process `pid` used so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

/// CPU seconds of several processes together; `None` when any is gone.
pub(crate) fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// CPU seconds every process of the machine spent busy (not idle, not
/// waiting for I/O), from the first line of `/proc/stat`.
pub(crate) fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(stat.lines().next()?)
}

/// `cpu user nice system idle iowait irq softirq steal ...` → busy seconds.
fn parse_machine_busy(line: &str) -> Option<f64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = ticks[..] else {
        return None;
    };
    // USER_HZ is 100 on every Linux the bench runs on.
    Some((user + nice + system + irq + softirq + steal) as f64 / 100.0)
}

/// utime + stime of a `/proc/PID/stat` line, in seconds.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name sits in parentheses and may hold spaces or `)`:
    // the fields follow the last `)`; utime is field 14, stime 15.
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_rss_and_cpu() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(cpu_seconds(me).is_some());
        assert!(cpu_seconds_of(&[me, me]).is_some());
        assert!(machine_busy_seconds().is_some());
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "42 (tokio (w) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(line), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let line = "cpu  281015 5 28747 383366 1801 10 336 161 0 0";
        let busy = parse_machine_busy(line).expect("parses");
        assert!((busy - 3102.74).abs() < 1e-6, "{busy}");
        assert_eq!(parse_machine_busy("cpu0 1 2 3"), None);
    }
}
