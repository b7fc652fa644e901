//! Checks a received batch and folds its points per device and day, on the
//! stream's own task: per-point work happens here, in parallel across streams,
//! so the single committer only handles one entry per device and day.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use fieldlink_model::proto::{self, RejectReason, Rejection, device_status::State};
use fieldlink_model::{Category, Day, DeviceClass, Protocol, UtcOffset, validate_device_id};

use super::lean::{LeanBatch, LeanPoint};
use crate::store::DayStats;

/// A checked device announcement.
#[derive(Debug, Clone)]
pub(crate) struct Announce {
    pub(crate) id: String,
    pub(crate) category: Category,
    pub(crate) protocol: Protocol,
    pub(crate) device_type: String,
    pub(crate) name: String,
    pub(crate) endpoint: String,
    pub(crate) attributes: BTreeMap<String, String>,
    /// Entries of its tag table: points' tag ids must be below.
    pub(crate) tags: u32,
}

/// A checked status change.
#[derive(Debug, Clone)]
pub(crate) struct StatusChange {
    pub(crate) id: String,
    pub(crate) online: bool,
    pub(crate) time: i64,
    pub(crate) reason: String,
}

/// One device's accepted points of a batch, folded per day. Its id and
/// days are ranges of the batch's [`Checked::ids`] and [`Checked::days`]:
/// no allocation per device.
#[derive(Debug, Clone)]
pub(crate) struct DevicePoints {
    id: Range<usize>,
    pub(crate) points: u64,
    days: Range<usize>,
    /// The highest tag id among the points (points that named their tag,
    /// as old spools hold, are not checked), if any.
    pub(crate) max_tag: Option<u32>,
    /// The device's dense index, looked up on the stream's task (see
    /// [`Checked::resolve`]); `None` when it was not known then.
    pub(crate) index: Option<u32>,
}

/// What a batch asks for, checked.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub(crate) announces: Vec<Announce>,
    pub(crate) statuses: Vec<StatusChange>,
    pub(crate) retires: Vec<(String, String)>,
    pub(crate) telemetry: Vec<DevicePoints>,
    /// Device ids of `telemetry`, end to end.
    ids: String,
    /// Days of `telemetry`.
    days: Vec<(Day, DayStats)>,
    pub(crate) rejections: Vec<Rejection>,
    pub(crate) rejected_points: u64,
    /// Points without a value (quality BAD): acknowledged, not counted.
    pub(crate) bad_quality_points: u64,
}

impl Checked {
    /// The id of a device of `telemetry`.
    pub(crate) fn id(&self, device: &DevicePoints) -> &str {
        self.ids.get(device.id.clone()).unwrap_or("")
    }

    /// The days of a device of `telemetry`.
    pub(crate) fn days(&self, device: &DevicePoints) -> &[(Day, DayStats)] {
        self.days.get(device.days.clone()).unwrap_or(&[])
    }

    /// Looks up the dense index of every telemetry device with `index_of`,
    /// on the stream's own task, so that the single committer does not
    /// hash ids (a third of its work at one point per device). An id's
    /// index never changes once assigned, so a hint found in the live
    /// state stays right; a device not known yet is left to the committer.
    pub(crate) fn resolve(&mut self, index_of: impl Fn(&str) -> Option<u32>) {
        let Checked { telemetry, ids, .. } = self;
        for device in telemetry.iter_mut() {
            device.index = ids.get(device.id.clone()).and_then(&index_of);
        }
    }

    /// Adds accepted points of device `id` on `day` with tag ids up to
    /// `max_tag` (for tests that build checked batches by hand).
    #[cfg(test)]
    pub(crate) fn add_points(&mut self, id: &str, day: Day, stats: DayStats, max_tag: u32) {
        let (id_start, days_start) = (self.ids.len(), self.days.len());
        self.ids.push_str(id);
        self.days.push((day, stats));
        self.telemetry.push(DevicePoints {
            id: id_start..self.ids.len(),
            points: stats.points,
            days: days_start..self.days.len(),
            max_tag: Some(max_tag),
            index: None,
        });
    }
}

/// The window a point's time must fall in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) offset: UtcOffset,
    pub(crate) earliest: i64,
    pub(crate) latest: i64,
}

impl Window {
    /// The window around `now`.
    pub(crate) fn around(now: i64, backfill: Duration, skew: Duration, offset: UtcOffset) -> Self {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Window {
            offset,
            earliest: now.saturating_sub(nanos(backfill)),
            latest: now.saturating_add(nanos(skew)),
        }
    }
}

fn reject(out: &mut Checked, device_id: &str, reason: RejectReason, detail: String, count: u32) {
    out.rejections.push(Rejection {
        device_id: device_id.to_owned(),
        reason: reason as i32,
        detail,
        count,
    });
}

/// Checks `batch` against the code lists and the time window.
pub(crate) fn check(batch: LeanBatch, window: Window) -> Checked {
    let mut out = Checked::default();
    for a in batch.announces {
        if let Some(announce) = check_announce(&mut out, a) {
            out.announces.push(announce);
        }
    }
    for s in batch.statuses {
        if let Err(e) = validate_device_id(&s.device_id) {
            reject(
                &mut out,
                &s.device_id,
                RejectReason::InvalidDeviceId,
                e.to_string(),
                1,
            );
            continue;
        }
        let online = match s.state() {
            State::Online => true,
            State::Offline => false,
            State::Unspecified => {
                let detail = format!("status of `{}` has no state", s.device_id);
                reject(
                    &mut out,
                    &s.device_id,
                    RejectReason::InvalidStatus,
                    detail,
                    1,
                );
                continue;
            }
        };
        out.statuses.push(StatusChange {
            time: i64::try_from(s.time_unix_nano).unwrap_or(i64::MAX),
            id: s.device_id,
            online,
            reason: s.reason,
        });
    }
    for r in batch.retires {
        out.retires.push((r.device_id, r.reason));
    }
    for (id, points) in batch.telemetry.devices() {
        check_points(&mut out, id, points, window);
    }
    out
}

fn check_announce(out: &mut Checked, a: proto::DeviceAnnounce) -> Option<Announce> {
    if let Err(e) = validate_device_id(&a.device_id) {
        reject(
            out,
            &a.device_id,
            RejectReason::InvalidDeviceId,
            e.to_string(),
            1,
        );
        return None;
    }
    let class = match a.class.parse::<DeviceClass>() {
        Ok(class) => class,
        Err(e) => {
            reject(
                out,
                &a.device_id,
                RejectReason::InvalidClass,
                e.to_string(),
                1,
            );
            return None;
        }
    };
    let category = match a.category.parse::<Category>() {
        Ok(category) if category.class() == class => category,
        Ok(category) => {
            let detail = format!(
                "category `{category}` belongs to class `{}`, not `{class}`",
                category.class()
            );
            reject(out, &a.device_id, RejectReason::InvalidCategory, detail, 1);
            return None;
        }
        Err(e) => {
            reject(
                out,
                &a.device_id,
                RejectReason::InvalidCategory,
                e.to_string(),
                1,
            );
            return None;
        }
    };
    let protocol = match a.protocol.parse::<Protocol>() {
        Ok(protocol) => protocol,
        Err(e) => {
            reject(
                out,
                &a.device_id,
                RejectReason::InvalidProtocol,
                e.to_string(),
                1,
            );
            return None;
        }
    };
    Some(Announce {
        id: a.device_id,
        category,
        protocol,
        device_type: a.r#type,
        name: a.name,
        endpoint: a.endpoint,
        attributes: a.attributes.into_iter().collect(),
        tags: u32::try_from(a.tags.len()).unwrap_or(u32::MAX),
    })
}

fn check_points(out: &mut Checked, device_id: &str, points: &[LeanPoint], window: Window) {
    let days_start = out.days.len();
    let (mut too_old, mut in_future) = (0u32, 0u32);
    let (mut oldest, mut newest) = (i64::MAX, i64::MIN);
    let mut max_tag: Option<u32> = None;
    for point in points {
        if point.quality == proto::Quality::Bad as i32 {
            out.bad_quality_points += 1;
            continue;
        }
        let time = i64::try_from(point.time).unwrap_or(i64::MAX);
        if time < window.earliest {
            too_old += 1;
            oldest = oldest.min(time);
            continue;
        }
        if time > window.latest {
            in_future += 1;
            newest = newest.max(time);
            continue;
        }
        if !point.named {
            max_tag = Some(max_tag.map_or(point.tag, |m| m.max(point.tag)));
        }
        let day = Day::of(time, window.offset);
        // Points of a batch nearly always fall on one day: a short scan.
        match out.days[days_start..].iter_mut().find(|(d, _)| *d == day) {
            Some((_, stats)) => stats.merge(&DayStats::point(time)),
            None => out.days.push((day, DayStats::point(time))),
        }
    }
    let show = |nanos: i64| fieldlink_model::LocalTime {
        unix_nanos: nanos,
        offset: window.offset,
    };
    if too_old > 0 {
        let detail = format!(
            "{too_old} point(s) stamped before the backfill window (oldest {}, earliest accepted {})",
            show(oldest),
            show(window.earliest)
        );
        reject(out, device_id, RejectReason::TooOld, detail, too_old);
        out.rejected_points += u64::from(too_old);
    }
    if in_future > 0 {
        let detail = format!(
            "{in_future} point(s) stamped beyond the allowed clock skew (newest {}, latest accepted {})",
            show(newest),
            show(window.latest)
        );
        reject(out, device_id, RejectReason::InFuture, detail, in_future);
        out.rejected_points += u64::from(in_future);
    }
    let points = out.days[days_start..].iter().map(|(_, s)| s.points).sum();
    if points > 0 {
        let id_start = out.ids.len();
        out.ids.push_str(device_id);
        out.telemetry.push(DevicePoints {
            id: id_start..out.ids.len(),
            points,
            days: days_start..out.days.len(),
            max_tag,
            index: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldlink_model::NANOS_PER_SEC;

    #[test]
    fn resolve_names_each_device_by_its_own_id() {
        let mut checked = Checked::default();
        checked.add_points("a", Day(1), DayStats::point(5), 0);
        checked.add_points("bb", Day(1), DayStats::point(6), 0);
        checked.add_points("ccc", Day(2), DayStats::point(7), 0);
        checked.resolve(|id| (id != "bb").then_some(id.len() as u32 * 10));
        let found: Vec<_> = checked.telemetry.iter().map(|t| t.index).collect();
        assert_eq!(found, [Some(10), None, Some(30)]);
    }

    fn lean(batch: proto::Batch) -> LeanBatch {
        use prost::Message;
        let message = proto::GatewayMessage {
            body: Some(proto::gateway_message::Body::Batch(batch)),
        };
        match super::super::lean::decode(&message.encode_to_vec()) {
            Ok(super::super::lean::Inbound::Batch(batch)) => batch,
            other => panic!("not a batch: {other:?}"),
        }
    }

    fn point(t: i64) -> proto::Point {
        proto::Point {
            tag: String::new(),
            tag_id: 3,
            time_unix_nano: t as u64,
            quality: 0,
            value: Some(proto::point::Value::DoubleValue(1.0)),
        }
    }

    fn announce(class: &str, category: &str, protocol: &str) -> proto::DeviceAnnounce {
        proto::DeviceAnnounce {
            device_id: "d".into(),
            class: class.into(),
            category: category.into(),
            protocol: protocol.into(),
            ..Default::default()
        }
    }

    #[test]
    fn points_fold_per_day_and_out_of_window_ones_are_rejected() {
        let now = 1_795_656_600 * NANOS_PER_SEC;
        let window = Window::around(
            now,
            Duration::from_secs(7 * 86_400),
            Duration::from_secs(300),
            UtcOffset::CHINA,
        );
        let day = Day::of(now, UtcOffset::CHINA);
        let midnight = day.start_unix_nanos(UtcOffset::CHINA);
        let batch = proto::Batch {
            sequence: 1,
            telemetry: vec![proto::DeviceTelemetry {
                device_id: "d".into(),
                points: vec![
                    point(midnight - 1),
                    point(midnight),
                    point(now),
                    point(now - 8 * 86_400 * NANOS_PER_SEC),
                    point(now + 301 * NANOS_PER_SEC),
                ],
            }],
            ..Default::default()
        };
        let checked = check(lean(batch), window);
        let d = &checked.telemetry[0];
        assert_eq!(checked.id(d), "d");
        assert_eq!(d.points, 3);
        assert_eq!(d.max_tag, Some(3));
        let days = checked.days(d);
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].0, day.plus(-1));
        assert_eq!(days[1].1.points, 2);
        assert_eq!(checked.rejected_points, 2);
        let reasons: Vec<_> = checked.rejections.iter().map(|r| r.reason()).collect();
        assert_eq!(reasons, [RejectReason::TooOld, RejectReason::InFuture]);
        assert!(checked.rejections[0].detail.contains("backfill"));
    }

    #[test]
    fn announces_with_bad_codes_are_rejected_by_name() {
        let batch = proto::Batch {
            announces: vec![
                announce("processing", "robots", "modbus-tcp"),
                announce("factory", "robots", "modbus-tcp"),
                announce("processing", "mining", "modbus-tcp"),
                announce("processing", "lasers", "modbus-tcp"),
                announce("processing", "robots", "profinet"),
            ],
            ..Default::default()
        };
        let window = Window::around(0, Duration::ZERO, Duration::ZERO, UtcOffset::CHINA);
        let checked = check(lean(batch), window);
        assert_eq!(checked.announces.len(), 1);
        let got: Vec<_> = checked
            .rejections
            .iter()
            .map(|r| (r.reason(), r.detail.clone()))
            .collect();
        assert_eq!(got[0].0, RejectReason::InvalidClass);
        assert!(got[0].1.contains("`factory`"));
        assert_eq!(got[1].0, RejectReason::InvalidCategory);
        assert!(got[1].1.contains("belongs to class `operating`"));
        assert_eq!(got[2].0, RejectReason::InvalidCategory);
        assert!(got[2].1.contains("`lasers`"));
        assert_eq!(got[3].0, RejectReason::InvalidProtocol);
    }
}
