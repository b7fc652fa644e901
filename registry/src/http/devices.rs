//! The device list (附件1) and per-device running logs (附件11).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fieldlink_model::{
    Category, Cloud, Day, DeviceClass, LocalTime, Protocol, UtcOffset, now_unix_nanos,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::AppError;
use super::params::Params;
use crate::Shared;
use crate::counters::Slot;
use crate::store::{DayStats, DeviceRecord};

/// Rows per chunk of a streamed export.
const ROWS_PER_CHUNK: usize = 512;

/// Filters of the device list.
#[derive(Debug, Default)]
struct Filter {
    class: Option<DeviceClass>,
    category: Option<Category>,
    protocol: Option<Protocol>,
    cloud: Option<Cloud>,
    tenant: Option<String>,
    online: Option<bool>,
    reporting: Option<bool>,
    include_retired: bool,
}

/// A device of the page being written, with its live state.
struct Live {
    record: DeviceRecord,
    slot: Slot,
    online: bool,
    reported: bool,
}

impl Filter {
    fn keeps(&self, slot: &Slot, online: bool, tenant: &str, reported: bool) -> bool {
        // A retired device still shows in the day it reported, as it counts there.
        (self.include_retired || !slot.retired || (self.reporting == Some(true) && reported))
            && self.class.is_none_or(|c| slot.category.class() == c)
            && self.category.is_none_or(|c| slot.category == c)
            && self.protocol.is_none_or(|p| slot.protocol == p)
            && self.cloud.is_none_or(|c| slot.cloud == c)
            && self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.online.is_none_or(|o| o == online)
            && self.reporting.is_none_or(|r| r == reported)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

/// What an export has written so far.
struct Page {
    /// Text not sent yet.
    out: String,
    rows: usize,
    /// Where a next request continues, once the limit is reached.
    next_after: Option<String>,
    last_id: String,
    failed: Option<String>,
    /// Done early: limit, failure or client gone.
    stopped: bool,
}

/// One row of the device list.
#[derive(Debug, Serialize)]
struct Row<'a> {
    device_id: &'a str,
    class: DeviceClass,
    category: Category,
    #[serde(rename = "type")]
    device_type: &'a str,
    name: &'a str,
    protocol: Protocol,
    tenant: &'a str,
    cloud: Cloud,
    first_seen: LocalTime,
    last_seen: Option<LocalTime>,
    online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_point: Option<LocalTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_point: Option<LocalTime>,
}

const CSV_HEADER: &str =
    "device_id,class,category,type,name,protocol,tenant,cloud,first_seen,last_seen,online";

fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

impl Row<'_> {
    fn write_csv(&self, out: &mut String, with_day: bool) {
        let opt = |t: Option<LocalTime>| t.map(|t| t.to_string()).unwrap_or_default();
        let fields = [
            self.device_id.to_owned(),
            self.class.to_string(),
            self.category.to_string(),
            self.device_type.to_owned(),
            self.name.to_owned(),
            self.protocol.to_string(),
            self.tenant.to_owned(),
            self.cloud.to_string(),
            self.first_seen.to_string(),
            opt(self.last_seen),
            self.online.to_string(),
        ];
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(out, field);
        }
        if with_day {
            out.push(',');
            out.push_str(&self.points.unwrap_or(0).to_string());
            out.push(',');
            out.push_str(&opt(self.first_point));
            out.push(',');
            out.push_str(&opt(self.last_point));
        }
        out.push('\n');
    }
}

/// `GET /api/v1/devices?class=&category=&protocol=&cloud=&tenant=&online=&day=&reporting=&include_retired=&after=&limit=&format=json|csv`
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Response, AppError> {
    let params = Params::new(
        raw,
        &[
            "class",
            "category",
            "protocol",
            "cloud",
            "tenant",
            "online",
            "day",
            "reporting",
            "include_retired",
            "after",
            "limit",
            "format",
        ],
    )?;
    let format = match params.get("format").unwrap_or("json") {
        "json" => Format::Json,
        "csv" => Format::Csv,
        other => {
            return Err(AppError::bad_request(format!(
                "format: `{other}` is not json or csv"
            )));
        }
    };
    let day_given = params.get("day").is_some();
    let day = params.day(&shared)?;
    let filter = Filter {
        class: params.parse("class")?,
        category: params.parse("category")?,
        protocol: params.parse("protocol")?,
        cloud: params.parse("cloud")?,
        tenant: params.get("tenant").map(str::to_owned),
        online: params.flag("online")?,
        reporting: params.flag("reporting")?,
        include_retired: params.flag("include_retired")?.unwrap_or(false),
    };
    let limit = match params.parse::<usize>("limit")? {
        Some(0) => return Err(AppError::bad_request("limit: must be at least 1")),
        other => other,
    };
    let after = params.get("after").map(str::to_owned);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let export = Export {
        shared: shared.clone(),
        filter,
        format,
        list_day: day,
        day: day_given.then_some(day),
        offset: shared.settings.utc_offset,
        after,
        limit,
    };
    tokio::task::spawn_blocking(move || export.run(&tx));
    let content_type = match format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let mut response = Body::from_stream(ReceiverStream::new(rx)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if format == Format::Csv {
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            header::HeaderValue::from_static("attachment; filename=\"devices.csv\""),
        );
    }
    Ok(response)
}

/// A device-list export running on a blocking thread.
///
/// It pages through the store's device index (id order) and looks each
/// page's devices up in the live state under one short shared lock per page
/// of [`ROWS_PER_CHUNK`] records: never a copy of every slot.
struct Export {
    shared: Arc<Shared>,
    filter: Filter,
    format: Format,
    /// The day `reporting` and `online` filters refer to.
    list_day: Day,
    /// The day whose running log is added to each row, when asked for.
    day: Option<Day>,
    offset: UtcOffset,
    after: Option<String>,
    limit: Option<usize>,
}

impl Export {
    fn run(self, tx: &mpsc::Sender<Result<Bytes, std::io::Error>>) {
        let mut out = String::with_capacity(64 * 1024);
        match self.format {
            Format::Json => out.push_str("{\"devices\":["),
            Format::Csv => {
                out.push_str(CSV_HEADER);
                if self.day.is_some() {
                    out.push_str(",points,first_point,last_point");
                }
                out.push('\n');
            }
        }
        let mut page = Page {
            out,
            rows: 0,
            next_after: None,
            last_id: String::new(),
            failed: None,
            stopped: false,
        };
        let mut records = Vec::with_capacity(ROWS_PER_CHUNK);
        let result = self
            .shared
            .store
            .scan_devices(self.after.as_deref(), &mut |record| {
                records.push(record);
                if records.len() < ROWS_PER_CHUNK {
                    return true;
                }
                self.write_page(&mut records, &mut page, tx)
            });
        if !page.stopped && result.is_ok() {
            self.write_page(&mut records, &mut page, tx);
        }
        if let Err(e) = result.map_err(|e| e.to_string()).and(match page.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }) {
            tracing::error!(error = %e, "device export failed");
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
            return;
        }
        let (mut out, rows, next_after) = (page.out, page.rows, page.next_after);
        if self.format == Format::Json {
            out.push_str(&format!("],\"count\":{rows}"));
            if let Some(day) = self.day {
                out.push_str(&format!(",\"day\":\"{day}\""));
            }
            if let Some(after) = next_after {
                // The last row's id continues the list.
                out.push_str(&format!(
                    ",\"next_after\":{}",
                    serde_json::to_string(&after).unwrap_or_default()
                ));
            }
            out.push('}');
        }
        let _ = tx.blocking_send(Ok(Bytes::from(out)));
    }

    /// The live state of `records` in order, `None` for those the filter
    /// drops (or announced since the scan began), under one short shared lock.
    fn look_up(&self, records: &mut Vec<DeviceRecord>) -> Vec<Option<Live>> {
        let counters = self.shared.read_counters();
        let now = now_unix_nanos();
        let reported = counters.day(self.list_day).map(|d| &d.devices);
        records
            .drain(..)
            .map(|record| {
                let slot = *counters.slot(record.index)?;
                let online = counters.is_online(&slot, now);
                let tenant = counters.tenant_name(slot.tenant);
                let reported = reported.is_some_and(|r| r.contains(record.index));
                self.filter
                    .keeps(&slot, online, tenant, reported)
                    .then_some(Live {
                        record,
                        slot,
                        online,
                        reported,
                    })
            })
            .collect()
    }

    /// Writes the kept devices of `records` and sends the chunk; false when
    /// the export is done (limit reached, client gone, or a failure).
    fn write_page(
        &self,
        records: &mut Vec<DeviceRecord>,
        page: &mut Page,
        tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> bool {
        let devices = self.look_up(records);
        for live in devices {
            if self.limit.is_some_and(|l| page.rows >= l) {
                page.next_after = Some(std::mem::take(&mut page.last_id));
                page.stopped = true;
                return false;
            }
            let Some(live) = live else {
                continue;
            };
            let day_stats = match self.day_stats(&live.record, live.reported) {
                Ok(stats) => stats,
                Err(e) => {
                    page.failed = Some(e);
                    page.stopped = true;
                    return false;
                }
            };
            let row = self.row(&live.record, &live.slot, live.online, day_stats);
            match self.format {
                Format::Json => {
                    if page.rows > 0 {
                        page.out.push(',');
                    }
                    // Serializing plain strings and numbers cannot fail.
                    if let Ok(json) = serde_json::to_string(&row) {
                        page.out.push_str(&json);
                    }
                }
                Format::Csv => row.write_csv(&mut page.out, self.day.is_some()),
            }
            page.rows += 1;
            page.last_id.clear();
            page.last_id.push_str(&live.record.id);
        }
        let chunk = Bytes::from(std::mem::take(&mut page.out));
        if !chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err() {
            page.stopped = true;
            return false; // The client went away.
        }
        true
    }

    fn day_stats(&self, record: &DeviceRecord, reported: bool) -> Result<Option<DayStats>, String> {
        let Some(day) = self.day else {
            return Ok(None);
        };
        if !reported {
            return Ok(Some(DayStats {
                points: 0,
                first: 0,
                last: 0,
            }));
        }
        let days = self
            .shared
            .store
            .device_days(record.index, day, day)
            .map_err(|e| e.to_string())?;
        Ok(days.first().map(|d| d.stats))
    }

    fn row<'a>(
        &'a self,
        record: &'a DeviceRecord,
        slot: &Slot,
        online: bool,
        day: Option<DayStats>,
    ) -> Row<'a> {
        let at = |unix_nanos: i64| LocalTime {
            unix_nanos,
            offset: self.offset,
        };
        let last_seen = slot.last_seen();
        Row {
            device_id: &record.id,
            class: record.category.class(),
            category: record.category,
            device_type: &record.device_type,
            name: &record.name,
            protocol: record.protocol,
            tenant: &record.tenant,
            cloud: record.cloud,
            first_seen: at(record.first_seen),
            last_seen: (last_seen > 0).then(|| at(last_seen)),
            online,
            points: day.map(|d| d.points),
            first_point: day.filter(|d| d.points > 0).map(|d| at(d.first)),
            last_point: day.filter(|d| d.points > 0).map(|d| at(d.last)),
        }
    }
}

/// `GET /api/v1/devices/{id}`
pub(crate) async fn detail(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let store = shared.store.clone();
    let lookup = id.clone();
    let record = tokio::task::spawn_blocking(move || store.device(&lookup))
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?
        .ok_or_else(|| AppError::not_found(format!("unknown device `{id}`")))?;
    let status = {
        let store = shared.store.clone();
        let index = record.index;
        tokio::task::spawn_blocking(move || store.status(index))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::internal)?
    };
    let (online, last_seen) = {
        let counters = shared.read_counters();
        counters
            .slot(record.index)
            .map(|s| (counters.is_online(s, now_unix_nanos()), s.last_seen()))
            .unwrap_or((false, 0))
    };
    let offset = shared.settings.utc_offset;
    let at = |unix_nanos: i64| LocalTime { unix_nanos, offset }.to_string();
    Ok(Json(serde_json::json!({
        "device_id": record.id,
        "class": record.category.class(),
        "category": record.category,
        "type": record.device_type,
        "name": record.name,
        "protocol": record.protocol,
        "endpoint": record.endpoint,
        "attributes": record.attributes,
        "tenant": record.tenant,
        "cloud": record.cloud,
        "gateway_id": record.gateway_id,
        "first_seen": at(record.first_seen),
        "last_seen": (last_seen > 0).then(|| at(last_seen)),
        "online": online,
        "retired": record.retired,
        "status": status.map(|s| serde_json::json!({
            "online": s.online,
            "time": at(s.time),
            "reason": s.reason,
        })),
    })))
}

/// `GET /api/v1/devices/{id}/days?from=&to=`: points and first/last point
/// time per day, the running log of the device.
pub(crate) async fn days(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, AppError> {
    let params = Params::new(raw, &["from", "to"])?;
    let oldest = shared.oldest_day();
    let today = shared.today();
    let from = params.parse::<Day>("from")?.unwrap_or(oldest).max(oldest);
    let to = params.parse::<Day>("to")?.unwrap_or(today.plus(1));
    if to < from {
        return Err(AppError::bad_request(format!(
            "to: {to} is before from ({from})"
        )));
    }
    let index = shared
        .read_counters()
        .index_of(&id)
        .ok_or_else(|| AppError::not_found(format!("unknown device `{id}`")))?;
    let store = shared.store.clone();
    let days = tokio::task::spawn_blocking(move || store.device_days(index, from, to))
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?;
    let offset = shared.settings.utc_offset;
    let at = |unix_nanos: i64| LocalTime { unix_nanos, offset }.to_string();
    let days: Vec<_> = days
        .iter()
        .map(|d| {
            serde_json::json!({
                "day": d.day,
                "points": d.stats.points,
                "first_point": at(d.stats.first),
                "last_point": at(d.stats.last),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "device_id": id,
        "timezone": offset,
        "days": days,
    })))
}
