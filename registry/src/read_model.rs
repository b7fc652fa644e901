//! The read model the API serves: per cell (category, protocol, cloud) the
//! devices registered, online and reporting on each retained day, kept up to
//! date as the live state changes, so a figure never needs a pass over the
//! devices.
//!
//! [`Counters`](crate::counters::Counters) owns one and updates it in every
//! method that changes a device: a new slot, a changed slot (re-announce,
//! status, retirement, load) and a device's first report of a day. Those
//! methods are called by the committer as it applies each round (and by the
//! start-up load, which so rebuilds the model), so the model is exact by
//! construction; [`Tally::count`](crate::tally::Tally::count), the full
//! recount, is the reference the tests hold it to.
//!
//! What each figure counts follows `Tally::count`:
//! - registered: devices not retired, in the cell of their current slot;
//! - online: devices marked online by their gateway and not retired, kept
//!   per gateway, because a gateway's liveness changes with time alone (its
//!   grace period runs out) and so takes all its devices with it; a query
//!   sums the cells of the gateways live at that instant: O(gateways × cells
//!   in use), never O(devices);
//! - reporting on day D: devices in D's set, retired or not, in the cell of
//!   their *current* slot; when a device's cell changes, each retained day
//!   that holds it moves one from the old cell to the new one.

use std::collections::BTreeMap;

use fieldlink_model::Day;
use foldhash::HashMap;

use crate::counters::{DaySet, GatewayState, Slot};
use crate::tally::{CELLS, Figures, Tally, cell_index};

/// Per-cell figures maintained incrementally; see the module docs.
#[derive(Debug, Clone)]
pub struct ReadModel {
    /// Devices not retired, by cell.
    registered: Box<[u64; CELLS]>,
    /// Devices online as reported and not retired, by gateway, then cell.
    online: HashMap<u32, GatewayCells>,
    /// Devices that reported on a day, by day, then cell.
    days: BTreeMap<Day, Box<[u64; CELLS]>>,
}

impl Default for ReadModel {
    fn default() -> Self {
        ReadModel {
            registered: Box::new([0; CELLS]),
            online: HashMap::default(),
            days: BTreeMap::new(),
        }
    }
}

/// One gateway's online devices by cell: the few cells it uses, unsorted.
#[derive(Debug, Clone, Default)]
struct GatewayCells {
    cells: Vec<(u16, u64)>,
}

impl GatewayCells {
    fn add(&mut self, cell: usize, up: bool) {
        // CELLS is far below u16::MAX.
        let cell = cell as u16;
        match self.cells.iter_mut().find(|(c, _)| *c == cell) {
            Some((_, n)) => *n = bump(*n, up),
            None if up => self.cells.push((cell, 1)),
            None => debug_assert!(false, "online count of cell {cell} below zero"),
        }
    }
}

fn bump(n: u64, up: bool) -> u64 {
    if up {
        n + 1
    } else {
        debug_assert!(n > 0, "a read model count below zero");
        n.saturating_sub(1)
    }
}

fn cell_of(slot: &Slot) -> usize {
    cell_index(slot.category, slot.protocol, slot.cloud)
}

fn counts_online(slot: &Slot) -> bool {
    slot.online && !slot.retired
}

impl ReadModel {
    /// A device slot appears at an index no day set holds yet.
    pub(crate) fn add_slot(&mut self, slot: &Slot) {
        let cell = cell_of(slot);
        if !slot.retired {
            self.registered[cell] += 1;
        }
        if counts_online(slot) {
            self.online.entry(slot.gateway).or_default().add(cell, true);
        }
    }

    /// The slot of device `index` changes from `old` to `new`; `days` are
    /// the retained per-day sets (which say where its reports are counted).
    pub(crate) fn change_slot(
        &mut self,
        index: u32,
        old: &Slot,
        new: &Slot,
        days: &BTreeMap<Day, DaySet>,
    ) {
        let (from, to) = (cell_of(old), cell_of(new));
        if old.retired != new.retired || from != to {
            if !old.retired {
                self.registered[from] -= 1;
            }
            if !new.retired {
                self.registered[to] += 1;
            }
        }
        let (was, is) = (counts_online(old), counts_online(new));
        if was != is || (was && (from != to || old.gateway != new.gateway)) {
            if was {
                self.online.entry(old.gateway).or_default().add(from, false);
            }
            if is {
                self.online.entry(new.gateway).or_default().add(to, true);
            }
        }
        if from != to {
            for (day, set) in days {
                if set.devices.contains(index)
                    && let Some(cells) = self.days.get_mut(day)
                {
                    cells[from] = bump(cells[from], false);
                    cells[to] += 1;
                }
            }
        }
    }

    /// A device in `slot` reports on `day` for the first time that day.
    pub(crate) fn first_report(&mut self, day: Day, slot: &Slot) {
        let cells = self.days.entry(day).or_insert_with(|| Box::new([0; CELLS]));
        cells[cell_of(slot)] += 1;
    }

    /// Forgets the days before `day`.
    pub(crate) fn prune_days_before(&mut self, day: Day) {
        self.days = self.days.split_off(&day);
    }

    /// The figures of `day` as of `now`: registered and the day's reporting
    /// by cell, plus the online cells of every gateway live at `now`.
    pub fn tally(&self, day: Day, now: i64, gateways: &[GatewayState], grace_nanos: i64) -> Tally {
        let mut cells: Vec<Figures> = self
            .registered
            .iter()
            .map(|&registered| Figures {
                registered,
                ..Figures::default()
            })
            .collect();
        if let Some(reporting) = self.days.get(&day) {
            for (cell, n) in cells.iter_mut().zip(reporting.iter()) {
                cell.reporting = *n;
            }
        }
        for (gateway, online) in &self.online {
            let live = gateways
                .get(*gateway as usize)
                .is_some_and(|g| g.is_live(now, grace_nanos));
            if live {
                for (cell, n) in &online.cells {
                    cells[usize::from(*cell)].online += n;
                }
            }
        }
        Tally::from_cells(day, cells)
    }
}
