//! Run-time controls of the MQTT faces beyond [`crate::Faults`]: growth for
//! the conformance kit's discovery check — an MQTT JSON device that starts
//! sending a field it never sent, a Sparkplug device held back until it is
//! born at run time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::faults::Faults;

#[derive(Debug, Default)]
struct State {
    extra_field: HashSet<u32>,
    hidden: HashSet<u32>,
}

/// Faults and growth of a face's devices, by device index. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// Per-device faults (off, hung, garbage) and restarts.
    pub faults: Faults,
    /// Faults of Sparkplug edge nodes, by node number: `Off` drops the
    /// node's connection without DISCONNECT, so its NDEATH will fires.
    pub node_faults: Faults,
    state: Arc<Mutex<State>>,
}

impl Controls {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// MQTT JSON: device `index` adds the field
    /// [`crate::mqtt::EXTRA_FIELD`] to its telemetry from now on.
    pub fn add_field(&self, index: u32) {
        self.state().extra_field.insert(index);
    }

    /// Whether device `index` sends the extra field.
    pub fn has_extra_field(&self, index: u32) -> bool {
        self.state().extra_field.contains(&index)
    }

    /// Sparkplug: device `index` is not born until [`Controls::reveal`].
    pub fn hide(&self, index: u32) {
        self.state().hidden.insert(index);
    }

    /// Sparkplug: device `index` is born (DBIRTH) at the next tick.
    pub fn reveal(&self, index: u32) {
        self.state().hidden.remove(&index);
    }

    /// Whether device `index` is held back.
    pub fn is_hidden(&self, index: u32) -> bool {
        self.state().hidden.contains(&index)
    }
}
