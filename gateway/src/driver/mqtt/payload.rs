//! From a JSON payload to values: tags by JSON pointer with type, scale and
//! offset; the source timestamp (epoch seconds/ms/µs/ns or RFC 3339); every
//! numeric or boolean top-level field for `tags = "auto"`. Parsing is
//! serde_json's, which refuses nesting deeper than 128 levels; the caller
//! refuses payloads over its size limit before parsing.

use fieldlink_model::proto::point::Value as PointValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::device::ValueKind;

/// The type a JSON field is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    /// A number (after scale and offset).
    Double,
    /// A whole number (a double when scaled).
    Int,
    /// `true`/`false` (or 0/1).
    Bool,
    /// A string.
    String,
}

/// How a timestamp field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Milliseconds since the epoch.
    #[default]
    EpochMs,
    /// Seconds since the epoch (fractions allowed).
    EpochS,
    /// Microseconds since the epoch.
    EpochUs,
    /// Nanoseconds since the epoch.
    EpochNs,
    /// An RFC 3339 string (`2026-11-30T08:00:00.5+08:00`).
    Rfc3339,
    /// A number is seconds when below 10^11, else milliseconds; a string is
    /// RFC 3339.
    Auto,
}

/// Why a value or time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The pointer leads nowhere.
    #[error("no field at `{0}`")]
    Missing(String),
    /// The field has another type.
    #[error("`{pointer}` is {found}, not {wanted}")]
    WrongType {
        /// Where.
        pointer: String,
        /// What was wanted.
        wanted: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// A number that does not fit.
    #[error("`{0}` is out of range")]
    OutOfRange(String),
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The kind a tag of `ty` carries after `scale`/`offset`.
pub fn value_kind(ty: JsonType, scale: f64, offset: f64) -> ValueKind {
    let scaled = scale != 1.0 || offset != 0.0;
    match ty {
        JsonType::Double => ValueKind::Double,
        JsonType::Int if scaled => ValueKind::Double,
        JsonType::Int => ValueKind::Int,
        JsonType::Bool => ValueKind::Bool,
        JsonType::String => ValueKind::String,
    }
}

/// Reads `v` (found at `pointer`) as `ty`; `Ok(None)` for JSON null (a
/// value the device says it does not have: bad quality).
///
/// # Errors
/// [`Problem::WrongType`] or [`Problem::OutOfRange`].
pub fn convert(
    v: &Value,
    pointer: &str,
    ty: JsonType,
    scale: f64,
    offset: f64,
) -> Result<Option<PointValue>, Problem> {
    let wrong = |wanted| Problem::WrongType {
        pointer: pointer.to_owned(),
        wanted,
        found: type_name(v),
    };
    if v.is_null() {
        return Ok(None);
    }
    let scaled = scale != 1.0 || offset != 0.0;
    let value = match ty {
        JsonType::Double => {
            let x = v.as_f64().ok_or_else(|| wrong("a number"))?;
            PointValue::DoubleValue(x * scale + offset)
        }
        JsonType::Int => {
            let n = match (v.as_i64(), v.as_f64()) {
                (Some(n), _) => n,
                (None, Some(x)) if x.fract() == 0.0 && x.abs() < 9.0e18 => x as i64,
                (None, Some(_)) => return Err(Problem::OutOfRange(pointer.to_owned())),
                (None, None) => return Err(wrong("a whole number")),
            };
            if scaled {
                PointValue::DoubleValue(n as f64 * scale + offset)
            } else {
                PointValue::IntValue(n)
            }
        }
        JsonType::Bool => match v {
            Value::Bool(b) => PointValue::BoolValue(*b),
            Value::Number(n) if n.as_u64() == Some(0) => PointValue::BoolValue(false),
            Value::Number(n) if n.as_u64() == Some(1) => PointValue::BoolValue(true),
            _ => return Err(wrong("a boolean")),
        },
        JsonType::String => match v {
            Value::String(s) => PointValue::StringValue(s.clone()),
            _ => return Err(wrong("a string")),
        },
    };
    if let PointValue::DoubleValue(x) = value
        && !x.is_finite()
    {
        return Err(Problem::OutOfRange(pointer.to_owned()));
    }
    Ok(Some(value))
}

/// An automatic tag's value: numbers as doubles, booleans as booleans;
/// `None` for anything else (strings, objects, arrays, null are not mapped).
pub fn auto_value(v: &Value) -> Option<PointValue> {
    match v {
        Value::Bool(b) => Some(PointValue::BoolValue(*b)),
        Value::Number(n) => n.as_f64().map(PointValue::DoubleValue),
        _ => None,
    }
}

/// Earliest source time accepted: 2000-01-01T00:00:00Z, in nanoseconds.
pub const MIN_TIME_NANOS: i64 = 946_684_800 * 1_000_000_000;
/// Latest accepted, ahead of the gateway's clock.
pub const MAX_AHEAD_NANOS: i64 = 86_400 * 1_000_000_000;

/// Reads a source time (nanoseconds since the epoch) from `v`, which must
/// lie between 2000-01-01 and one day after `now`.
///
/// # Errors
/// [`Problem::WrongType`] or [`Problem::OutOfRange`].
pub fn parse_time(v: &Value, pointer: &str, format: TimeFormat, now: i64) -> Result<i64, Problem> {
    let wrong = |wanted| Problem::WrongType {
        pointer: pointer.to_owned(),
        wanted,
        found: type_name(v),
    };
    let out_of_range = || Problem::OutOfRange(pointer.to_owned());
    let from_number = |unit_nanos: f64| -> Result<i64, Problem> {
        // Whole numbers exactly; fractions through f64.
        if let Some(n) = v.as_i64() {
            return n.checked_mul(unit_nanos as i64).ok_or_else(out_of_range);
        }
        let x = v.as_f64().ok_or_else(|| wrong("a number"))?;
        let nanos = x * unit_nanos;
        if !nanos.is_finite() || nanos.abs() > 9.0e18 {
            return Err(out_of_range());
        }
        Ok(nanos as i64)
    };
    let nanos = match format {
        TimeFormat::EpochS => from_number(1e9)?,
        TimeFormat::EpochMs => from_number(1e6)?,
        TimeFormat::EpochUs => from_number(1e3)?,
        TimeFormat::EpochNs => from_number(1.0)?,
        TimeFormat::Rfc3339 => {
            let s = v.as_str().ok_or_else(|| wrong("an RFC 3339 string"))?;
            parse_rfc3339(s).ok_or_else(out_of_range)?
        }
        TimeFormat::Auto => match v {
            Value::String(s) => parse_rfc3339(s).ok_or_else(out_of_range)?,
            Value::Number(n) => match n.as_f64() {
                Some(x) if x.abs() < 1e11 => from_number(1e9)?,
                _ => from_number(1e6)?,
            },
            _ => return Err(wrong("a number or an RFC 3339 string")),
        },
    };
    if nanos < MIN_TIME_NANOS || nanos > now.saturating_add(MAX_AHEAD_NANOS) {
        return Err(out_of_range());
    }
    Ok(nanos)
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0i64, |acc, d| {
        acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    })
}

/// Parses an RFC 3339 date-time (`T` or space, fractions to nanoseconds,
/// `Z` or `±hh:mm`) into nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return None;
    }
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    let shaped = sep(4, b'-')
        && sep(7, b'-')
        && sep(13, b':')
        && sep(16, b':')
        && matches!(b[10], b'T' | b't' | b' ');
    if !shaped {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[usize::try_from(month - 1).ok()?]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        let frac = &b[start..end.min(start + 9)];
        nanos = digits(frac)? * 10i64.pow(9 - u32::try_from(frac.len()).ok()?);
        i = end;
    }
    let offset_secs = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_780_000_000 * 1_000_000_000;

    #[test]
    fn values_convert_by_type_with_scale() {
        let v = json!({"t": 21.5, "n": 7, "b": true, "s": "run", "z": null, "f": 2.0});
        let get = |p: &str| v.pointer(p).unwrap();
        assert_eq!(
            convert(get("/t"), "/t", JsonType::Double, 2.0, 1.0),
            Ok(Some(PointValue::DoubleValue(44.0)))
        );
        assert_eq!(
            convert(get("/n"), "/n", JsonType::Int, 1.0, 0.0),
            Ok(Some(PointValue::IntValue(7)))
        );
        assert_eq!(
            convert(get("/f"), "/f", JsonType::Int, 1.0, 0.0),
            Ok(Some(PointValue::IntValue(2)))
        );
        assert_eq!(
            convert(get("/n"), "/n", JsonType::Bool, 1.0, 0.0),
            Err(Problem::WrongType {
                pointer: "/n".into(),
                wanted: "a boolean",
                found: "a number"
            })
        );
        assert_eq!(
            convert(get("/z"), "/z", JsonType::Double, 1.0, 0.0),
            Ok(None)
        );
        assert!(convert(get("/s"), "/s", JsonType::Double, 1.0, 0.0).is_err());
        assert!(convert(get("/t"), "/t", JsonType::Int, 1.0, 0.0).is_err());
        assert_eq!(
            convert(&json!(1e308), "/x", JsonType::Double, 10.0, 0.0),
            Err(Problem::OutOfRange("/x".into()))
        );
        assert_eq!(value_kind(JsonType::Int, 0.1, 0.0), ValueKind::Double);
    }

    #[test]
    fn times_in_every_format_and_range() {
        let ms = 1_779_999_000_123i64;
        assert_eq!(
            parse_time(&json!(ms), "/ts", TimeFormat::EpochMs, NOW),
            Ok(ms * 1_000_000)
        );
        assert_eq!(
            parse_time(&json!(1_779_999_000.5), "/ts", TimeFormat::EpochS, NOW),
            Ok(1_779_999_000_500_000_000)
        );
        assert_eq!(
            parse_time(&json!(ms), "/ts", TimeFormat::Auto, NOW),
            Ok(ms * 1_000_000)
        );
        assert_eq!(
            parse_time(&json!(1_779_999_000), "/ts", TimeFormat::Auto, NOW),
            Ok(1_779_999_000 * 1_000_000_000)
        );
        for bad in [
            json!(0),
            json!(-5),
            json!(1e300),
            json!(NOW / 1_000_000 + 2 * 86_400_000),
        ] {
            assert!(
                matches!(
                    parse_time(&bad, "/ts", TimeFormat::EpochMs, NOW),
                    Err(Problem::OutOfRange(_))
                ),
                "{bad}"
            );
        }
        assert!(parse_time(&json!("x"), "/ts", TimeFormat::EpochMs, NOW).is_err());
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-05-29T08:00:00.25+08:00"),
            Some(1_780_012_800 * 1_000_000_000 + 250_000_000)
        );
        assert_eq!(
            parse_rfc3339("2000-02-29 12:00:00-01:30"),
            parse_rfc3339("2000-02-29T13:30:00Z")
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T25:00:00Z",
            "garbage-garbage-garbage",
            "２０２６-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
