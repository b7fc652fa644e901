//! Exact figures as a small table of cells, one per (category, protocol,
//! cloud); every breakdown the API offers is a sum of cells.
//!
//! The API's tallies come from the [`ReadModel`](crate::read_model::ReadModel)
//! the committer keeps up to date. [`Tally::count`] is the full recount, one
//! pass over every device and the day's bitmap: the reference the read model
//! is tested against.

use std::collections::BTreeMap;

use fieldlink_model::{Category, Cloud, Day, DeviceClass, Protocol};
use serde::Serialize;

use crate::counters::Counters;

const CATEGORIES: usize = Category::ALL.len();
const PROTOCOLS: usize = Protocol::ALL.len();
const CLOUDS: usize = Cloud::ALL.len();
pub(crate) const CELLS: usize = CATEGORIES * PROTOCOLS * CLOUDS;

/// The three figures of a cell or group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Registered (可连接设备): announced and not retired.
    pub registered: u64,
    /// Online now.
    pub online: u64,
    /// Reporting on the day (日运行数量).
    pub reporting: u64,
}

impl Figures {
    pub(crate) fn add(&mut self, other: &Figures) {
        self.registered += other.registered;
        self.online += other.online;
        self.reporting += other.reporting;
    }

    fn is_zero(&self) -> bool {
        self.registered == 0 && self.online == 0 && self.reporting == 0
    }
}

/// The key of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellKey {
    /// Category (and so class).
    pub category: Category,
    /// Protocol.
    pub protocol: Protocol,
    /// Cloud.
    pub cloud: Cloud,
}

/// The position of a cell in a table of [`CELLS`].
pub(crate) fn cell_index(category: Category, protocol: Protocol, cloud: Cloud) -> usize {
    (category.index() * PROTOCOLS + protocol.index()) * CLOUDS + cloud.index()
}

fn cell_key(index: usize) -> CellKey {
    let cloud = index % CLOUDS;
    let protocol = (index / CLOUDS) % PROTOCOLS;
    let category = index / (CLOUDS * PROTOCOLS);
    CellKey {
        category: Category::ALL[category],
        protocol: Protocol::ALL[protocol],
        cloud: Cloud::ALL[cloud],
    }
}

/// Figures per cell for one day at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The day of the reporting figure.
    pub day: Day,
    cells: Vec<Figures>,
}

/// A dimension to group figures by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// Device class.
    Class,
    /// Category.
    Category,
    /// Protocol.
    Protocol,
    /// Cloud.
    Cloud,
}

impl Dimension {
    /// The name in `group_by` and in rows.
    pub const fn name(self) -> &'static str {
        match self {
            Dimension::Class => "class",
            Dimension::Category => "category",
            Dimension::Protocol => "protocol",
            Dimension::Cloud => "cloud",
        }
    }

    /// Parses a `group_by` item.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Dimension::Class,
            Dimension::Category,
            Dimension::Protocol,
            Dimension::Cloud,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }

    fn value(self, key: &CellKey) -> &'static str {
        match self {
            Dimension::Class => key.category.class().code(),
            Dimension::Category => key.category.code(),
            Dimension::Protocol => key.protocol.code(),
            Dimension::Cloud => key.cloud.code(),
        }
    }

    fn all_values(self) -> Vec<&'static str> {
        match self {
            Dimension::Class => DeviceClass::ALL.iter().map(|c| c.code()).collect(),
            Dimension::Category => Category::ALL.iter().map(|c| c.code()).collect(),
            Dimension::Protocol => Protocol::ALL.iter().map(|c| c.code()).collect(),
            Dimension::Cloud => Cloud::ALL.iter().map(|c| c.code()).collect(),
        }
    }
}

/// A group of figures: the values of the grouped dimensions, and the figures.
pub type Group = (Vec<(Dimension, &'static str)>, Figures);

impl Tally {
    /// A tally of `cells`, indexed by [`cell_index`].
    pub(crate) fn from_cells(day: Day, cells: Vec<Figures>) -> Tally {
        debug_assert_eq!(cells.len(), CELLS);
        Tally { day, cells }
    }

    /// Counts every figure for `day` as of `now` by visiting every device:
    /// O(devices). The reference recount; the API reads
    /// [`Counters::figures`] instead.
    pub fn count(counters: &Counters, day: Day, now: i64) -> Tally {
        let mut cells = vec![Figures::default(); CELLS];
        for slot in counters.slots() {
            if slot.retired {
                continue;
            }
            let cell = &mut cells[cell_index(slot.category, slot.protocol, slot.cloud)];
            cell.registered += 1;
            cell.online += u64::from(counters.is_online(slot, now));
        }
        if let Some(set) = counters.day(day) {
            for index in &set.devices {
                if let Some(slot) = counters.slot(index) {
                    cells[cell_index(slot.category, slot.protocol, slot.cloud)].reporting += 1;
                }
            }
        }
        Tally { day, cells }
    }

    /// Every non-empty cell.
    pub fn cells(&self) -> impl Iterator<Item = (CellKey, &Figures)> {
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.is_zero())
            .map(|(i, f)| (cell_key(i), f))
    }

    /// The sum of the cells for which `keep` holds.
    pub fn sum(&self, keep: impl Fn(&CellKey) -> bool) -> Figures {
        let mut total = Figures::default();
        for (key, figures) in self.cells() {
            if keep(&key) {
                total.add(figures);
            }
        }
        total
    }

    /// Figures grouped by `dimensions`, in code order of the values.
    ///
    /// Groups with all-zero figures are left out, except when grouping only by
    /// class and/or cloud: then every combination is listed, as the form has a
    /// column for each.
    pub fn group_by(&self, dimensions: &[Dimension]) -> Vec<Group> {
        let mut groups: BTreeMap<Vec<usize>, Figures> = BTreeMap::new();
        let position = |d: Dimension, value: &str| {
            d.all_values()
                .iter()
                .position(|v| *v == value)
                .unwrap_or(usize::MAX)
        };
        let full = dimensions
            .iter()
            .all(|d| matches!(d, Dimension::Class | Dimension::Cloud));
        if full {
            let mut combos: Vec<Vec<usize>> = vec![Vec::new()];
            for d in dimensions {
                let n = d.all_values().len();
                combos = combos
                    .into_iter()
                    .flat_map(|c| {
                        (0..n).map(move |i| {
                            let mut c = c.clone();
                            c.push(i);
                            c
                        })
                    })
                    .collect();
            }
            for combo in combos {
                groups.insert(combo, Figures::default());
            }
        }
        for (key, figures) in self.cells() {
            let group = dimensions
                .iter()
                .map(|d| position(*d, d.value(&key)))
                .collect();
            groups.entry(group).or_default().add(figures);
        }
        groups
            .into_iter()
            .map(|(positions, figures)| {
                let values = dimensions
                    .iter()
                    .zip(positions)
                    .map(|(d, p)| (*d, d.all_values()[p]))
                    .collect();
                (values, figures)
            })
            .collect()
    }

    /// Protocols with at least one registered device.
    pub fn adapted_protocols(&self) -> Vec<Protocol> {
        Protocol::ALL
            .iter()
            .copied()
            .filter(|p| self.sum(|k| k.protocol == *p).registered > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::Slot;
    use crate::store::{DayDelta, DayStats};
    use fieldlink_model::UtcOffset;

    fn slot(category: Category, cloud: Cloud, protocol: Protocol) -> Slot {
        Slot {
            category,
            protocol,
            cloud,
            online: true,
            retired: false,
            tenant: 0,
            gateway: 0,
            tags: 0,
            first_seen: 0,
            last_point: 0,
            status_time: 0,
        }
    }

    #[test]
    fn cells_round_trip() {
        for i in 0..CELLS {
            let k = cell_key(i);
            assert_eq!(cell_index(k.category, k.protocol, k.cloud), i);
        }
    }

    #[test]
    fn groups_sum_the_right_devices() {
        let mut c = Counters::new(UtcOffset::CHINA, 0, 0);
        let t = c.tenant("t");
        let g = c.gateway(t, "g", 0);
        c.session_start(g, "k", "", Default::default());
        let a = c.push_device(
            "a",
            slot(Category::Robots, Cloud::Public, Protocol::ModbusTcp),
        );
        c.push_device("b", slot(Category::Mining, Cloud::Private, Protocol::OpcUa));
        let mut retired = slot(Category::Robots, Cloud::Public, Protocol::ModbusTcp);
        retired.retired = true;
        c.push_device("c", retired);
        c.mark_reported(&DayDelta {
            day: Day(3),
            index: a,
            stats: DayStats::point(1),
        });
        let tally = Tally::count(&c, Day(3), 0);
        let by_class = tally.group_by(&[Dimension::Class]);
        assert_eq!(by_class.len(), 4, "every class listed");
        assert_eq!(by_class[0].0, [(Dimension::Class, "operating")]);
        assert_eq!(
            by_class[0].1,
            Figures {
                registered: 1,
                online: 1,
                reporting: 0
            }
        );
        assert_eq!(
            by_class[1].1,
            Figures {
                registered: 1,
                online: 1,
                reporting: 1
            }
        );
        let by_protocol = tally.group_by(&[Dimension::Protocol]);
        assert_eq!(by_protocol.len(), 2, "only protocols in use");
        assert_eq!(
            tally.adapted_protocols(),
            [Protocol::ModbusTcp, Protocol::OpcUa]
        );
        let other_day = Tally::count(&c, Day(4), 0);
        assert_eq!(other_day.sum(|_| true).reporting, 0);
    }
}
