//! The Modbus TCP probe: the identification block every simulated device
//! serves (holding registers 0..=15, see `fieldlink_sim::catalog`): its
//! class and category indexes and model name must be the manifest's.

use std::net::SocketAddr;
use std::time::Duration;

use fieldlink_model::{Category, DeviceClass};
use tokio_modbus::client::{Reader, tcp};
use tokio_modbus::slave::{Slave, SlaveContext};

use super::Outcome;
use crate::verify::manifest::Device;

/// Unit id of the simulated devices.
const UNIT_ID: u8 = 1;
/// First register and length of the identification block.
const IDENT_START: u16 = 0;
const IDENT_LEN: u16 = 16;

/// Reads the identification block of `d` at `endpoint` and checks it.
pub(super) async fn probe(d: &Device, endpoint: &str, timeout: Duration) -> Outcome {
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
    let words = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))??;
    check_ident(d, &words)
}

/// Compares an identification block with the manifest's row.
fn check_ident(d: &Device, words: &[u16]) -> Outcome {
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
}
