//! A fleet's ground truth: `manifest.csv` as the simulators write it
//! (`device_id,class,category,type,name,protocol,tenant,cloud,endpoint`,
//! fields with `,` or `"` quoted, `""` for a quote).

use std::path::Path;

use anyhow::{Context, bail};

/// The columns a manifest must have, in this order.
const COLUMNS: [&str; 9] = [
    "device_id",
    "class",
    "category",
    "type",
    "name",
    "protocol",
    "tenant",
    "cloud",
    "endpoint",
];

/// One device of the manifest (or of the registry's list, compared
/// field by field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// Device id.
    pub(crate) id: String,
    /// Class code (`operating`, ...).
    pub(crate) class: String,
    /// Category code.
    pub(crate) category: String,
    /// Device type (model).
    pub(crate) device_type: String,
    /// Name.
    pub(crate) name: String,
    /// Protocol code.
    pub(crate) protocol: String,
    /// Tenant name.
    pub(crate) tenant: String,
    /// Cloud (`public`, `private`).
    pub(crate) cloud: String,
    /// Where the device is reached (empty in the registry's list, which
    /// does not carry it; never compared).
    pub(crate) endpoint: String,
}

/// Reads `path`; devices in file order.
///
/// # Errors
/// When the file cannot be read, its header is not a manifest's, or a
/// line is malformed or repeats an id (the line is named).
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<Device>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not a fleet manifest", path.display()))
}

/// Parses a manifest's text.
///
/// # Errors
/// As [`read`].
pub(crate) fn parse(text: &str) -> anyhow::Result<Vec<Device>> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim_end_matches('\r'));
    if header != Some(COLUMNS.join(",").as_str()) {
        bail!(
            "line 1: the header must be `{}`, got `{}`",
            COLUMNS.join(","),
            header.unwrap_or("")
        );
    }
    let mut devices = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let fields = split(line).with_context(|| format!("line {n}"))?;
        let Ok(fields) = <[String; 9]>::try_from(fields) else {
            bail!("line {n}: {} columns wanted", COLUMNS.len());
        };
        let [
            id,
            class,
            category,
            device_type,
            name,
            protocol,
            tenant,
            cloud,
            endpoint,
        ] = fields;
        if id.is_empty() {
            bail!("line {n}: empty device_id");
        }
        if !seen.insert(id.clone()) {
            bail!("line {n}: device `{id}` is listed twice");
        }
        devices.push(Device {
            id,
            class,
            category,
            device_type,
            name,
            protocol,
            tenant,
            cloud,
            endpoint,
        });
    }
    Ok(devices)
}

/// One CSV line's fields.
fn split(line: &str) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => {
                quoted = false;
                if !matches!(chars.peek(), None | Some(',')) {
                    bail!("text after a closing quote");
                }
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            (_, c) => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        bail!("a quote is not closed");
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "device_id,class,category,type,name,protocol,tenant,cloud,endpoint\n";

    #[test]
    fn rows_and_quotes() {
        let text = format!(
            "{HEADER}d-1,operating,power,PM-3,\"Meter, \"\"one\"\"\",modbus-tcp,acme,public,127.1.0.1:5020\r\n\nd-2,other,safety,GD,Gas,mqtt-json,acme,private,mqtt://h/acme/d-2\n"
        );
        let devices = parse(&text).unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].name, "Meter, \"one\"");
        assert_eq!(devices[0].cloud, "public");
        assert_eq!(devices[1].protocol, "mqtt-json");
    }

    #[test]
    fn bad_manifests_name_the_line() {
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        assert!(err("id,class\n").contains("line 1: the header"));
        assert!(err(&format!("{HEADER}d-1,operating\n")).contains("line 2: 9 columns"));
        assert!(
            err(&format!("{HEADER}a,b,c,d,e,f,g,h,i\na,b,c,d,e,f,g,h,i\n"))
                .contains("line 3: device `a` is listed twice")
        );
        assert!(err(&format!("{HEADER}\"a,b,c,d,e,f,g,h,i\n")).contains("line 2: a quote"));
        assert!(err(&format!("{HEADER},b,c,d,e,f,g,h,i\n")).contains("empty device_id"));
    }
}
