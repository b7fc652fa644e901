//! Device ids: globally unique, stable strings chosen by whoever installs the
//! device (serial numbers, asset tags, `site/line/plc-7`).

use crate::error::InvalidDeviceId;

/// Longest device id accepted, in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 128;

/// Checks that `id` can be a device id: 1 to 128 bytes, no control
/// characters, no leading or trailing white space.
///
/// # Errors
/// `InvalidDeviceId` naming the id and the rule it breaks.
pub fn validate_device_id(id: &str) -> Result<(), InvalidDeviceId> {
    let why = if id.is_empty() {
        Some("empty")
    } else if id.len() > MAX_DEVICE_ID_BYTES {
        Some("longer than 128 bytes")
    } else if id.chars().any(char::is_control) {
        Some("contains a control character")
    } else if id.trim() != id {
        Some("has leading or trailing white space")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(InvalidDeviceId {
            id: id.chars().take(200).collect(),
            why,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids_and_refuses_bad_ones() {
        for ok in ["plc-7", "站点A/线1/CNC-03", "SN:0012ab"] {
            assert!(validate_device_id(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in ["", " lead", "trail ", "a\nb", "nul\0", long.as_str()] {
            let err = validate_device_id(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid device id"), "{err}");
        }
    }
}
