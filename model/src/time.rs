//! Time and day arithmetic: a fixed UTC offset (the registry's time zone,
//! default +08:00), calendar days in that zone, and RFC 3339 formatting.
//!
//! Timestamps are nanoseconds since the Unix epoch (`i64` covers 1677–2262).
//! Days are counted from 1970-01-01 in the configured zone, so a point's day
//! is one division: no time-zone database and no allocation on the hot path.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::TimeError;

/// Nanoseconds in a second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Seconds in a day.
pub const SECS_PER_DAY: i64 = 86_400;
/// Nanoseconds in a day.
pub const NANOS_PER_DAY: i64 = SECS_PER_DAY * NANOS_PER_SEC;

/// The current time in nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

/// A fixed offset from UTC, whole minutes, within ±23:59.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UtcOffset {
    seconds: i32,
}

impl UtcOffset {
    /// UTC+08:00, China Standard Time: the default of the registry.
    pub const CHINA: UtcOffset = UtcOffset { seconds: 8 * 3600 };
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset { seconds: 0 };

    /// An offset of `minutes` east of UTC.
    ///
    /// # Errors
    /// `TimeError::Offset` when beyond ±23:59.
    pub fn from_minutes(minutes: i32) -> Result<Self, TimeError> {
        if minutes.abs() >= 24 * 60 {
            return Err(TimeError::Offset(format!("{minutes} minutes")));
        }
        Ok(UtcOffset {
            seconds: minutes * 60,
        })
    }

    /// Seconds east of UTC.
    pub const fn seconds(self) -> i32 {
        self.seconds
    }

    fn nanos(self) -> i64 {
        i64::from(self.seconds) * NANOS_PER_SEC
    }
}

impl Default for UtcOffset {
    fn default() -> Self {
        UtcOffset::CHINA
    }
}

impl FromStr for UtcOffset {
    type Err = TimeError;

    /// Parses `+08:00`, `-05:30`, `Z` or `UTC`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TimeError::Offset(s.to_owned());
        if s == "Z" || s.eq_ignore_ascii_case("utc") {
            return Ok(UtcOffset::UTC);
        }
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = rest.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: i32 = h.parse().map_err(|_| bad())?;
        let m: i32 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        UtcOffset::from_minutes(sign * (h * 60 + m))
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.seconds < 0 { '-' } else { '+' };
        let abs = self.seconds.unsigned_abs() / 60;
        write!(f, "{sign}{:02}:{:02}", abs / 60, abs % 60)
    }
}

impl serde::Serialize for UtcOffset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for UtcOffset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A calendar day in some zone, counted from 1970-01-01 of that zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Day(pub i32);

impl Day {
    /// The day, in the zone `offset`, that contains the instant `unix_nanos`.
    pub fn of(unix_nanos: i64, offset: UtcOffset) -> Day {
        let local = unix_nanos.saturating_add(offset.nanos());
        // Days since epoch fit i32 for every i64 nanosecond instant.
        Day(local.div_euclid(NANOS_PER_DAY) as i32)
    }

    /// Today in the zone `offset`.
    pub fn today(offset: UtcOffset) -> Day {
        Day::of(now_unix_nanos(), offset)
    }

    /// The instant this day starts, in nanoseconds since the Unix epoch.
    pub fn start_unix_nanos(self, offset: UtcOffset) -> i64 {
        i64::from(self.0) * NANOS_PER_DAY - offset.nanos()
    }

    /// The day `n` days later (earlier for negative `n`).
    pub fn plus(self, n: i32) -> Day {
        Day(self.0.saturating_add(n))
    }

    /// Year, month (1–12) and day of month (1–31).
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(i64::from(self.0))
    }

    /// The day of a calendar date, if the date exists.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        i32::try_from(days_from_civil(year, month, day))
            .ok()
            .map(Day)
    }
}

impl FromStr for Day {
    type Err = TimeError;

    /// Parses `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TimeError::Day(s.to_owned());
        let mut parts = s.splitn(3, '-');
        let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if !(all_digits(y) && all_digits(m) && all_digits(d)) {
            return Err(bad());
        }
        let (y, m, d) = (
            y.parse().map_err(|_| bad())?,
            m.parse().map_err(|_| bad())?,
            d.parse().map_err(|_| bad())?,
        );
        Day::from_ymd(y, m, d).ok_or_else(bad)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl serde::Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An instant shown in a zone as RFC 3339 with milliseconds,
/// e.g. `2026-11-26T09:30:00.123+08:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Nanoseconds since the Unix epoch.
    pub unix_nanos: i64,
    /// The zone to show it in.
    pub offset: UtcOffset,
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = Day::of(self.unix_nanos, self.offset);
        let (y, mo, d) = day.ymd();
        let within = self.unix_nanos - day.start_unix_nanos(self.offset);
        let secs = within / NANOS_PER_SEC;
        let millis = (within % NANOS_PER_SEC) / 1_000_000;
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}{}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60,
            self.offset
        )
    }
}

impl serde::Serialize for LocalTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(secs: i64) -> i64 {
        secs * NANOS_PER_SEC
    }

    #[test]
    fn day_boundary_honours_offset() {
        let offset: UtcOffset = "+08:00".parse().unwrap();
        let day: Day = "2026-11-26".parse().unwrap();
        let midnight = day.start_unix_nanos(offset);
        // 2026-11-26T00:00:00+08:00 is 2026-11-25T16:00:00Z.
        assert_eq!(midnight, nanos(1_795_622_400));
        assert_eq!(Day::of(midnight, offset), day);
        assert_eq!(Day::of(midnight - nanos(1), offset), day.plus(-1));
        assert_eq!(Day::of(midnight - 1, offset).to_string(), "2026-11-25");
        // The same instant is still the 25th in UTC.
        assert_eq!(Day::of(midnight, UtcOffset::UTC).to_string(), "2026-11-25");
    }

    #[test]
    fn dates_round_trip_across_eras() {
        for days in (-800_000..800_000).step_by(997) {
            let day = Day(days);
            let text = day.to_string();
            if day.ymd().0 >= 1000 && day.ymd().0 <= 9999 {
                assert_eq!(text.parse::<Day>().unwrap(), day, "{text}");
            }
        }
        assert_eq!(Day(0).to_string(), "1970-01-01");
        assert_eq!(
            "2024-02-29".parse::<Day>().unwrap().plus(1).to_string(),
            "2024-03-01"
        );
    }

    #[test]
    fn bad_days_and_offsets_are_refused() {
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-11-01",
            "2026-11-26x",
            "",
            "2026-00-10",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
        for bad in ["08:00", "+8:00", "+24:00", "+08:60", "+0800", "east"] {
            assert!(bad.parse::<UtcOffset>().is_err(), "{bad}");
        }
        assert_eq!(
            "-05:30".parse::<UtcOffset>().unwrap().seconds(),
            -(5 * 3600 + 1800)
        );
        assert_eq!("-05:30".parse::<UtcOffset>().unwrap().to_string(), "-05:30");
    }

    #[test]
    fn local_time_is_rfc3339() {
        let t = LocalTime {
            unix_nanos: nanos(1_795_656_600) + 123_000_000,
            offset: UtcOffset::CHINA,
        };
        assert_eq!(t.to_string(), "2026-11-26T09:30:00.123+08:00");
        let before_epoch = LocalTime {
            unix_nanos: -1,
            offset: UtcOffset::UTC,
        };
        assert_eq!(before_epoch.to_string(), "1969-12-31T23:59:59.999+00:00");
    }
}
