//! The current announce of every declared device, shared by the normalizer
//! (which keeps it up to date as drivers declare devices and tags) and the
//! uplink (which starts every new live stream with it, so that points on
//! that stream never arrive before the announces still waiting in a
//! backlog stream).

use std::sync::{Arc, Mutex};

use fieldlink_model::proto::Batch;
use prost::Message;

use crate::device::DeviceInfo;
use crate::driver::TagTable;

/// Most devices announced per batch.
const ANNOUNCES_PER_BATCH: usize = 2_000;
/// Most encoded announce bytes per batch (the registry takes 4 MiB by default).
const ANNOUNCE_BYTES_PER_BATCH: usize = 1 << 20;

#[derive(Debug, Default)]
struct Inner {
    /// The identity and tag table the sink keeps (shared, not copied): the
    /// announce is made from them only when a new stream needs it.
    devices: Vec<Option<(Arc<DeviceInfo>, Arc<TagTable>)>>,
    encoded: Option<Arc<Vec<Vec<u8>>>>,
}

/// Every device's latest announce.
#[derive(Debug, Default)]
pub struct Announcements {
    inner: Mutex<Inner>,
}

impl Announcements {
    /// Records device `index`'s latest announce.
    pub(crate) fn set(&self, index: u32, info: Arc<DeviceInfo>, tags: Arc<TagTable>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let index = index as usize;
        if inner.devices.len() <= index {
            inner.devices.resize(index + 1, None);
        }
        inner.devices[index] = Some((info, tags));
        inner.encoded = None;
    }

    /// Encoded batches announcing every device declared so far (cached
    /// until the next change).
    pub fn batches(&self) -> Arc<Vec<Vec<u8>>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(encoded) = &inner.encoded {
            return encoded.clone();
        }
        let mut batches = Vec::new();
        let mut batch = Batch::default();
        let mut bytes = 0;
        for (info, tags) in inner.devices.iter().flatten() {
            let announce = info.announce(tags);
            let len = announce.encoded_len();
            if !batch.announces.is_empty()
                && (batch.announces.len() >= ANNOUNCES_PER_BATCH
                    || bytes + len > ANNOUNCE_BYTES_PER_BATCH)
            {
                batches.push(std::mem::take(&mut batch).encode_to_vec());
                bytes = 0;
            }
            bytes += len + 4;
            batch.announces.push(announce);
        }
        if !batch.announces.is_empty() {
            batches.push(batch.encode_to_vec());
        }
        let encoded = Arc::new(batches);
        inner.encoded = Some(encoded.clone());
        encoded
    }
}

#[cfg(test)]
mod tests {
    use fieldlink_model::{Category, Protocol};

    use super::*;

    fn info(id: String, name: &str) -> Arc<DeviceInfo> {
        Arc::new(DeviceInfo {
            id,
            category: Category::Robots,
            protocol: Protocol::MqttJson,
            device_type: "t".into(),
            name: name.into(),
            endpoint: String::new(),
            attributes: Default::default(),
        })
    }

    #[test]
    fn batches_cover_every_device_once_with_its_latest_announce() {
        let set = Announcements::default();
        let tags = Arc::new(TagTable::default());
        for i in 0..4500u32 {
            set.set(i, info(format!("d{i}"), "n"), tags.clone());
        }
        set.set(7, info("d7".into(), "renamed"), tags);
        let batches = set.batches();
        let decoded: Vec<Batch> = batches
            .iter()
            .map(|b| Batch::decode(b.as_slice()).unwrap())
            .collect();
        assert_eq!(
            decoded
                .iter()
                .map(|b| b.announces.len())
                .collect::<Vec<_>>(),
            [2000, 2000, 500]
        );
        assert_eq!(decoded[0].announces[7].name, "renamed");
        assert!(Arc::ptr_eq(&batches, &set.batches()), "cached");
    }
}
