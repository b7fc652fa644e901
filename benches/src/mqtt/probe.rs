//! End-to-end latency, publish to counted, from outside every process.
//!
//! Each device stamps its telemetry with `ts` (Unix ms, the machine's
//! clock) when it publishes; the gateway takes `ts` as the points' time; the
//! registry's device list shows a device's `last_seen`, the time of its
//! latest accepted point, once the committer applied it. The probe reads
//! the list for a sample of devices every [`EVERY`]; when a device's
//! `last_seen` moved on, that point became visible between the previous
//! read's start and this read's end, so its latency lies between
//! `previous start − ts` (lower bound, at least 0) and `this end − ts`
//! (upper bound). Both bounds go into hdrhistograms; the gap between them
//! is the probe's resolution (the period plus one read).
//!
//! Status changes also move `last_seen`; none happen in the window (every
//! device stays connected), and a device that went offline would show in
//! the figures anyway.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fieldlink_model::{Day, UtcOffset};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::registry::RegistryProcess;

/// Time between two reads of the device list.
pub(crate) const EVERY: Duration = Duration::from_millis(50);
/// Devices read each time (the first of the list).
pub(crate) const SAMPLE: usize = 100;

/// Latency quantiles of one bound, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Quantiles {
    /// Median.
    pub(crate) p50_ms: Option<f64>,
    /// 99th percentile.
    pub(crate) p99_ms: Option<f64>,
    /// Largest.
    pub(crate) max_ms: Option<f64>,
    /// Mean.
    pub(crate) mean_ms: Option<f64>,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Quantiles {
            p50_ms: Some(ms(h.value_at_quantile(0.50))),
            p99_ms: Some(ms(h.value_at_quantile(0.99))),
            max_ms: Some(ms(h.max())),
            mean_ms: Some(h.mean() / 1e3),
        }
    }
}

/// What the probe measured.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct LatencyOut {
    /// How it was measured.
    pub(crate) method: &'static str,
    /// Devices sampled.
    pub(crate) devices: usize,
    /// Time between reads, ms.
    pub(crate) every_ms: f64,
    /// Reads of the device list.
    pub(crate) reads: u64,
    /// Reads that failed.
    pub(crate) failed_reads: u64,
    /// Mean time of one read, ms (part of the resolution).
    pub(crate) read_ms_mean: Option<f64>,
    /// Points seen arriving (one per device and change).
    pub(crate) samples: u64,
    /// Upper bounds: this read's end − `ts`.
    pub(crate) upper: Quantiles,
    /// Lower bounds: the previous read's start − `ts`, at least 0.
    pub(crate) lower: Quantiles,
}

const METHOD: &str = "publish (device's ts, ms) to visible as the device's last_seen in the registry's device list, read every 50 ms for the first 100 devices; the latency lies between lower and upper";

/// A histogram of microseconds, 1 µs to 10 min, 3 digits.
fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Reads the registry until `end`; returns the latency figures.
pub(crate) async fn run(registry: &RegistryProcess, end: Instant) -> LatencyOut {
    let mut upper = histogram();
    let mut lower = histogram();
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut out = LatencyOut {
        method: METHOD,
        every_ms: EVERY.as_secs_f64() * 1e3,
        ..LatencyOut::default()
    };
    let path = format!("api/v1/devices?protocol=mqtt-json&limit={SAMPLE}");
    let mut previous_start: Option<i64> = None;
    let mut read_ms_sum = 0.0;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        tick.tick().await;
        let started = unix_ms();
        let clock = Instant::now();
        let body = registry.get_json(&path).await;
        let ended = unix_ms();
        out.reads += 1;
        read_ms_sum += clock.elapsed().as_secs_f64() * 1e3;
        let Ok(body) = body else {
            out.failed_reads += 1;
            continue;
        };
        let seen = last_seen(&body);
        out.devices = out.devices.max(seen.len());
        for (id, at) in seen {
            match last.insert(id, at) {
                Some(before) if at > before => {
                    out.samples += 1;
                    let hi = ended.saturating_sub(at).max(0);
                    let lo = previous_start.map_or(0, |s| s.saturating_sub(at).max(0));
                    // Milliseconds to microseconds; at least 1 µs.
                    let _ = upper.record(u64::try_from(hi).unwrap_or(0).max(1) * 1000);
                    let _ = lower.record(u64::try_from(lo).unwrap_or(0).max(1) * 1000);
                }
                _ => {}
            }
        }
        previous_start = Some(started);
    }
    if out.reads > 0 {
        out.read_ms_mean = Some(read_ms_sum / out.reads as f64);
    }
    out.upper = Quantiles::of(&upper);
    out.lower = Quantiles::of(&lower);
    out
}

/// Unix time in ms.
fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `(device_id, last_seen in Unix ms)` of every row that has both.
fn last_seen(body: &serde_json::Value) -> Vec<(String, i64)> {
    let Some(rows) = body.get("devices").and_then(serde_json::Value::as_array) else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| {
            let id = row.get("device_id")?.as_str()?;
            let at = parse_local_ms(row.get("last_seen")?.as_str()?)?;
            Some((id.to_owned(), at))
        })
        .collect()
}

/// `2026-12-03T16:04:05.123+08:00` (the registry's local times) → Unix ms.
fn parse_local_ms(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once('T')?;
    // `HH:MM:SS.mmm` is 12 bytes, the offset follows.
    let (time, offset) = (rest.get(..12)?, rest.get(12..)?);
    let day = Day::from_str(date).ok()?;
    let offset = UtcOffset::from_str(offset).ok()?;
    let bytes = time.as_bytes();
    if bytes.get(2) != Some(&b':') || bytes.get(5) != Some(&b':') || bytes.get(8) != Some(&b'.') {
        return None;
    }
    let field = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = time.get(range)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (h, m, s, ms) = (field(0..2)?, field(3..5)?, field(6..8)?, field(9..12)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let start_ms = day.start_unix_nanos(offset) / 1_000_000;
    Some(start_ms + ((h * 60 + m) * 60 + s) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use fieldlink_model::time::LocalTime;

    use super::*;

    #[test]
    fn local_times_parse_back_to_unix_ms() {
        let offset = UtcOffset::CHINA;
        for unix_ms in [
            0i64,
            1_780_000_000_123,
            1_780_000_000_999,
            1_796_287_765_004,
        ] {
            let text = LocalTime {
                unix_nanos: unix_ms * 1_000_000,
                offset,
            }
            .to_string();
            assert_eq!(parse_local_ms(&text), Some(unix_ms), "{text}");
        }
        assert_eq!(
            parse_local_ms("2026-12-03T16:04:05.123Z"),
            Some(parse_local_ms("2026-12-04T00:04:05.123+08:00").unwrap())
        );
        for bad in [
            "",
            "2026-12-03",
            "2026-12-03T16:04:05+08:00",
            "2026-12-03T16-04-05.123+08:00",
            "2026-12-03T1a:04:05.123+08:00",
            "2026-13-03T16:04:05.123+08:00",
            "2026-12-03T16:04:05.123+8",
        ] {
            assert_eq!(parse_local_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn rows_without_a_last_seen_are_left_out() {
        let body = serde_json::json!({"devices": [
            {"device_id": "a", "last_seen": "2026-12-03T16:04:05.123+08:00"},
            {"device_id": "b", "last_seen": null},
            {"device_id": "c"},
        ]});
        let seen = last_seen(&body);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "a");
        assert!(last_seen(&serde_json::json!({"error": "x"})).is_empty());
    }

    #[test]
    fn quantiles_of_an_empty_histogram_are_absent() {
        let q = Quantiles::of(&histogram());
        assert_eq!(q.p50_ms, None);
        let mut h = histogram();
        for ms in 1..=100u64 {
            h.record(ms * 1000).unwrap();
        }
        let q = Quantiles::of(&h);
        assert!((q.p50_ms.unwrap() - 50.0).abs() < 0.1, "{q:?}");
        assert!((q.p99_ms.unwrap() - 99.0).abs() < 0.1, "{q:?}");
    }
}
