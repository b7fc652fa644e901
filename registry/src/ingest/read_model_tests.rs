//! Property test: whatever sequence of rounds the committer applies, and
//! whatever the gateways' sessions and the clock do, the read model's figures
//! equal a full recount ([`Tally::count`]) for every day and instant; and a
//! restart (a reload from the store) rebuilds the same registered and
//! reporting figures.

use std::sync::Arc;

use fieldlink_model::{Category, Cloud, Day, NANOS_PER_SEC, Protocol, now_unix_nanos};
use proptest::prelude::*;
use tokio::sync::{Semaphore, mpsc};

use super::committer::{Pending, StreamCtx, commit_round};
use super::prepare::{Announce, Checked, StatusChange};
use crate::config::{RegistryConfig, Tenant};
use crate::counters::Counters;
use crate::store::{DayStats, RedbStore, Store};
use crate::tally::Tally;
use crate::{Registry, Shared};

/// Devices the operations pick from.
const DEVICES: u8 = 10;
/// Days the operations report on: today - 3 ..= today + 1.
const DAYS: u8 = 5;
/// Grace period of dropped gateways in the test.
const GRACE_SECS: i64 = 10;

/// The gateway streams: (tenant, gateway id). Two gateways of one tenant,
/// one gateway id used by both tenants, so devices can move between
/// gateways, and between clouds only by being refused.
const STREAMS: [(usize, &str); 4] = [(0, "gw-a"), (0, "gw-b"), (1, "gw-a"), (1, "gw-c")];

#[derive(Debug, Clone)]
enum Op {
    /// A stream announces a device (new, re-announced or re-classified).
    Announce {
        device: u8,
        category: usize,
        protocol: usize,
        stream: usize,
    },
    /// A stream reports a device online or offline.
    Status {
        device: u8,
        online: bool,
        stream: usize,
    },
    /// A stream retires a device.
    Retire { device: u8, stream: usize },
    /// A stream sends points of a device on a day.
    Report { device: u8, day: u8, stream: usize },
    /// Several of the above in one round.
    Round(Vec<Op>),
    /// A session of a stream starts.
    SessionStart { stream: usize },
    /// The oldest open session of a stream ends.
    SessionEnd { stream: usize },
    /// The clock moves on.
    Advance { secs: i64 },
    /// Days before `day` are pruned.
    Prune { day: u8 },
    /// The registry restarts from its store.
    Restart,
}

fn item() -> impl Strategy<Value = Op> {
    let device = 0..DEVICES;
    let stream = 0..STREAMS.len();
    prop_oneof![
        3 => (device.clone(), 0..Category::ALL.len(), 0..2usize, stream.clone()).prop_map(
            |(device, category, protocol, stream)| Op::Announce {
                device,
                // Two protocols so re-announces often keep the cell.
                category: category % 3,
                protocol,
                stream,
            }
        ),
        2 => (device.clone(), any::<bool>(), stream.clone())
            .prop_map(|(device, online, stream)| Op::Status { device, online, stream }),
        1 => (device.clone(), stream.clone()).prop_map(|(device, stream)| Op::Retire { device, stream }),
        3 => (device, 0..DAYS, stream)
            .prop_map(|(device, day, stream)| Op::Report { device, day, stream }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS.len();
    prop_oneof![
        8 => item(),
        2 => prop::collection::vec(item(), 1..6).prop_map(Op::Round),
        2 => stream.clone().prop_map(|stream| Op::SessionStart { stream }),
        1 => stream.prop_map(|stream| Op::SessionEnd { stream }),
        2 => (1..2 * GRACE_SECS).prop_map(|secs| Op::Advance { secs }),
        1 => (0..DAYS).prop_map(|day| Op::Prune { day }),
        1 => Just(Op::Restart),
    ]
}

/// A registry under test with its own store, and what the test drives it by.
struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    settings: crate::Settings,
    registry: Registry,
    /// The virtual clock of sessions and queries.
    now: i64,
    /// First day of the range operations report on.
    first_day: Day,
    /// Next batch sequence of each stream.
    sequences: [u64; STREAMS.len()],
    /// Open sessions of each stream, oldest first.
    sessions: [Vec<u64>; STREAMS.len()],
    /// Keeps the responders' far ends open.
    answers: Vec<mpsc::UnboundedReceiver<super::committer::Outbound>>,
}

const TENANTS: [(&str, Cloud); 2] = [("public-t", Cloud::Public), ("private-t", Cloud::Private)];

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = RegistryConfig::default()
            .validate()
            .expect("defaults valid");
        settings.data_dir = dir.path().to_path_buf();
        settings.offline_grace = std::time::Duration::from_secs(GRACE_SECS as u64);
        settings.tenants = TENANTS
            .iter()
            .map(|(name, cloud)| Tenant {
                name: (*name).to_owned(),
                cloud: *cloud,
                token: format!("{name}-token-0123456789"),
            })
            .collect();
        let store: Arc<dyn Store> = Arc::new(
            RedbStore::open(&settings.data_dir, settings.store_cache_bytes).expect("store opens"),
        );
        let registry = Registry::with_store(settings.clone(), store.clone()).expect("loads");
        Harness {
            _dir: dir,
            store,
            first_day: Day::today(settings.utc_offset).plus(-3),
            settings,
            registry,
            now: now_unix_nanos(),
            sequences: [0; STREAMS.len()],
            sessions: Default::default(),
            answers: Vec::new(),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        self.registry.shared()
    }

    fn key(stream: usize) -> String {
        let (tenant, gateway) = STREAMS[stream];
        format!("{}\u{1f}{gateway}\u{1f}s{stream}", TENANTS[tenant].0)
    }

    /// The stream's context, interning its tenant and gateway.
    fn stream(&mut self, stream: usize) -> Arc<StreamCtx> {
        let (tenant, gateway_id) = STREAMS[stream];
        let (name, cloud) = TENANTS[tenant];
        let (tenant, gateway) = {
            let mut counters = self.shared().write_counters();
            let tenant = counters.tenant(name);
            (tenant, counters.gateway(tenant, gateway_id, self.now))
        };
        let (responder, answers) = mpsc::unbounded_channel();
        self.answers.push(answers);
        Arc::new(StreamCtx {
            key: Self::key(stream),
            tenant,
            tenant_name: name.to_owned(),
            cloud,
            gateway,
            gateway_id: gateway_id.to_owned(),
            responder,
        })
    }

    /// One committer round with a batch per item.
    fn round(&mut self, items: &[Op]) {
        let permits = Arc::new(Semaphore::new(items.len()));
        let mut round = Vec::new();
        for item in items {
            self.now += 1;
            let (stream, mut checked) = self.batch(item);
            // As the stream's task does: indexes looked up before the
            // round, so devices announced in the round have none.
            checked.resolve(|id| self.shared().read_counters().index_of(id));
            self.sequences[stream] += 1;
            round.push(Pending {
                stream: self.stream(stream),
                sequence: self.sequences[stream],
                checked,
                permit: permits.clone().try_acquire_owned().expect("a permit each"),
            });
        }
        commit_round(self.shared(), &mut round);
        self.answers.clear();
    }

    fn batch(&self, item: &Op) -> (usize, Checked) {
        let id = |device: u8| format!("dev-{device}");
        let mut checked = Checked::default();
        let stream = match *item {
            Op::Announce {
                device,
                category,
                protocol,
                stream,
            } => {
                checked.announces.push(Announce {
                    id: id(device),
                    category: Category::ALL[category],
                    protocol: Protocol::ALL[protocol],
                    device_type: "t".into(),
                    name: "n".into(),
                    endpoint: "e".into(),
                    attributes: Default::default(),
                    tags: 1,
                });
                stream
            }
            Op::Status {
                device,
                online,
                stream,
            } => {
                checked.statuses.push(StatusChange {
                    id: id(device),
                    online,
                    time: self.now,
                    reason: String::new(),
                });
                stream
            }
            Op::Retire { device, stream } => {
                checked.retires.push((id(device), "test".into()));
                stream
            }
            Op::Report {
                device,
                day,
                stream,
            } => {
                let day = self.first_day.plus(i32::from(day));
                checked.add_points(&id(device), day, DayStats::point(self.now), 0);
                stream
            }
            _ => unreachable!("only batch items are batched"),
        };
        (stream, checked)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Round(items) => self.round(items),
            Op::SessionStart { stream } => {
                let ctx = self.stream(*stream);
                let (generation, _) = self.shared().write_counters().session_start(
                    ctx.gateway,
                    &ctx.key,
                    "test",
                    Default::default(),
                );
                self.sessions[*stream].push(generation);
            }
            Op::SessionEnd { stream } => {
                if !self.sessions[*stream].is_empty() {
                    let generation = self.sessions[*stream].remove(0);
                    let ctx = self.stream(*stream);
                    self.shared().write_counters().session_end(
                        ctx.gateway,
                        &ctx.key,
                        generation,
                        self.now,
                    );
                }
            }
            Op::Advance { secs } => self.now += secs * NANOS_PER_SEC,
            Op::Prune { day } => {
                let day = self.first_day.plus(i32::from(*day));
                self.store.prune_days_before(day).expect("prunes");
                self.shared().write_counters().prune_days_before(day);
            }
            Op::Restart => {
                let before = self.stored_figures();
                self.registry = Registry::with_store(self.settings.clone(), self.store.clone())
                    .expect("reloads");
                self.sessions = Default::default();
                self.now = self.now.max(now_unix_nanos());
                assert_eq!(
                    self.stored_figures(),
                    before,
                    "a restart keeps registered and reporting"
                );
            }
            item => self.round(std::slice::from_ref(item)),
        }
    }

    fn days(&self) -> impl Iterator<Item = Day> + use<> {
        let first = self.first_day;
        (0..i32::from(DAYS)).map(move |d| first.plus(d))
    }

    /// Registered and reporting of every day, from the read model (online
    /// depends on sessions, which a restart ends).
    fn stored_figures(&self) -> Vec<Vec<(String, u64, u64)>> {
        let counters = self.shared().read_counters();
        self.days()
            .map(|day| {
                let tally = counters.figures(day, self.now);
                tally
                    .cells()
                    .filter(|(_, f)| f.registered + f.reporting > 0)
                    .map(|(key, f)| (format!("{key:?}"), f.registered, f.reporting))
                    .collect()
            })
            .collect()
    }

    /// The read model equals the recount for every day, now and once every
    /// gateway's grace period has run out.
    fn check(&self) -> Result<(), TestCaseError> {
        let counters: &Counters = &self.shared().read_counters();
        for day in self.days() {
            for now in [self.now, self.now + (GRACE_SECS + 1) * NANOS_PER_SEC] {
                let model = counters.figures(day, now);
                let recount = Tally::count(counters, day, now);
                prop_assert_eq!(model, recount, "day {} at {}", day, now);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_read_model_equals_a_recount(ops in prop::collection::vec(op(), 1..40)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op);
            harness.check()?;
        }
    }
}

#[test]
fn a_gateway_past_its_grace_takes_its_devices_offline_without_a_device_event() {
    let mut h = Harness::new();
    h.apply(&Op::SessionStart { stream: 0 });
    h.apply(&Op::Round(vec![
        Op::Announce {
            device: 1,
            category: 0,
            protocol: 0,
            stream: 0,
        },
        Op::Status {
            device: 1,
            online: true,
            stream: 0,
        },
    ]));
    let online = |h: &Harness| {
        let day = h.first_day;
        h.shared()
            .read_counters()
            .figures(day, h.now)
            .sum(|_| true)
            .online
    };
    assert_eq!(online(&h), 1);
    h.apply(&Op::SessionEnd { stream: 0 });
    h.apply(&Op::Advance { secs: GRACE_SECS });
    assert_eq!(online(&h), 1, "still within the grace period");
    h.apply(&Op::Advance { secs: 1 });
    assert_eq!(online(&h), 0);
    h.check().expect("model equals recount");
}
