//! The audit sample: a few manifest devices asked through their own
//! protocol, which proves they exist beyond the registry's word. For
//! Modbus TCP, the identification block every simulated device serves
//! (holding registers 0..=15, see `fieldlink_sim::catalog`): its class and
//! category indexes and model name must be the manifest's.
//!
//! Devices of other protocols are not probed yet (OPC UA node and MQTT
//! status probes are still to come); the report says how many were
//! skipped and why.

use std::net::SocketAddr;
use std::time::Duration;

use fieldlink_model::{Category, DeviceClass};
use serde::Serialize;
use tokio_modbus::client::{Reader, tcp};
use tokio_modbus::slave::{Slave, SlaveContext};

use super::manifest::Device;

/// Unit id of the simulated devices.
const UNIT_ID: u8 = 1;
/// First register and length of the identification block.
const IDENT_START: u16 = 0;
const IDENT_LEN: u16 = 16;
/// How long one device may take to answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// What the audit found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Audit {
    /// Devices asked and answering as the manifest says.
    pub(crate) confirmed: Vec<String>,
    /// Devices that did not answer, or answered otherwise (id: why).
    pub(crate) failed: Vec<String>,
    /// Devices of the sample whose protocol has no probe yet.
    pub(crate) skipped: usize,
}

/// `size` manifest devices (all when fewer), evenly spread over the file.
pub(crate) fn sample(manifest: &[Device], size: usize) -> Vec<&Device> {
    let n = size.min(manifest.len());
    (0..n).map(|i| &manifest[i * manifest.len() / n]).collect()
}

/// Probes the sample.
pub(crate) async fn run(sample: &[&Device]) -> Audit {
    let mut audit = Audit::default();
    for d in sample {
        if d.protocol != "modbus-tcp" {
            audit.skipped += 1;
            continue;
        }
        match probe_modbus(d, &d.endpoint).await {
            Ok(()) => audit.confirmed.push(d.id.clone()),
            Err(why) => audit
                .failed
                .push(format!("{} at `{}`: {why}", d.id, d.endpoint)),
        }
    }
    audit
}

/// Reads the identification block of `d` at `endpoint` and checks it.
async fn probe_modbus(d: &Device, endpoint: &str) -> Result<(), String> {
    let addr: SocketAddr = endpoint
        .parse()
        .map_err(|_| format!("`{endpoint}` is not HOST:PORT"))?;
    let read = async {
        let mut ctx = tcp::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        ctx.set_slave(Slave(UNIT_ID));
        let words = ctx
            .read_holding_registers(IDENT_START, IDENT_LEN)
            .await
            .map_err(|e| format!("read failed: {e}"))?
            .map_err(|e| format!("the device answered an exception: {e}"))?;
        Ok::<_, String>(words)
    };
    let words = tokio::time::timeout(TIMEOUT, read)
        .await
        .map_err(|_| format!("no answer within {TIMEOUT:?}"))??;
    check_ident(d, &words)
}

/// Compares an identification block with the manifest's row.
fn check_ident(d: &Device, words: &[u16]) -> Result<(), String> {
    if words.len() < usize::from(IDENT_LEN) {
        return Err(format!("{} registers, {IDENT_LEN} wanted", words.len()));
    }
    let class: DeviceClass = d
        .class
        .parse()
        .map_err(|_| format!("the manifest's class `{}` is unknown", d.class))?;
    let category: Category = d
        .category
        .parse()
        .map_err(|_| format!("the manifest's category `{}` is unknown", d.category))?;
    let got_class = DeviceClass::from_index(usize::from(words[5]));
    let got_category = Category::from_index(usize::from(words[6]));
    if got_class != Some(class) {
        return Err(format!("class index {} is not `{class}`", words[5]));
    }
    if got_category != Some(category) {
        return Err(format!("category index {} is not `{category}`", words[6]));
    }
    let model = model_name(&words[8..16]);
    if model != d.device_type {
        return Err(format!(
            "model `{model}` is not the manifest's `{}`",
            d.device_type
        ));
    }
    Ok(())
}

/// ASCII, NUL-padded, first character in the high byte.
fn model_name(words: &[u16]) -> String {
    words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .take_while(|b| *b != 0)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(model: &str) -> Device {
        Device {
            id: "d".into(),
            class: "operating".into(),
            category: "power".into(),
            device_type: model.into(),
            name: "n".into(),
            protocol: "modbus-tcp".into(),
            tenant: "t".into(),
            cloud: "public".into(),
            endpoint: String::new(),
        }
    }

    fn block(class: u16, category: u16, model: &str) -> Vec<u16> {
        let mut words = vec![0u16; 16];
        words[5] = class;
        words[6] = category;
        let bytes: Vec<u8> = model.bytes().collect();
        for (i, pair) in bytes.chunks(2).enumerate() {
            words[8 + i] = u16::from(pair[0]) << 8 | u16::from(*pair.get(1).unwrap_or(&0));
        }
        words
    }

    #[test]
    fn the_block_must_match_the_manifest() {
        let power = Category::Power.index() as u16;
        let operating = DeviceClass::Operating.index() as u16;
        assert_eq!(
            check_ident(&device("PM-3"), &block(operating, power, "PM-3")),
            Ok(())
        );
        assert!(check_ident(&device("PM-3"), &block(operating, power, "PM-4")).is_err());
        assert!(check_ident(&device("PM-3"), &block(operating + 1, power, "PM-3")).is_err());
        assert!(check_ident(&device("PM-3"), &block(operating, power + 1, "PM-3")).is_err());
        assert!(check_ident(&device("PM-3"), &[0; 4]).is_err());
    }

    #[test]
    fn the_sample_spreads_over_the_manifest() {
        let manifest: Vec<Device> = (0..10)
            .map(|i| Device {
                id: i.to_string(),
                ..device("m")
            })
            .collect();
        let ids: Vec<&str> = sample(&manifest, 3).iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["0", "3", "6"]);
        assert_eq!(sample(&manifest, 50).len(), 10);
        assert!(sample(&manifest, 0).is_empty());
    }
}
