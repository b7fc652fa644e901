//! `/api/v1/summary` and `/api/v1/counts`: the form's figures.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use fieldlink_model::{Cloud, Day, DeviceClass, Protocol, UtcOffset, now_unix_nanos};
use serde::Serialize;

use super::AppError;
use super::params::Params;
use crate::Shared;
use crate::tally::{Dimension, Figures, Tally};

/// One figure with its breakdown by class and cloud.
#[derive(Debug, Serialize)]
pub(crate) struct Breakdown {
    total: u64,
    by_class: ByClass,
    by_cloud: ByCloud,
}

#[derive(Debug, Default, Serialize)]
struct ByClass {
    operating: u64,
    processing: u64,
    mobile: u64,
    other: u64,
}

#[derive(Debug, Default, Serialize)]
struct ByCloud {
    public: u64,
    private: u64,
}

/// Protocols adapted: in use by registered devices, and offered by gateways.
#[derive(Debug, Serialize)]
pub(crate) struct Protocols {
    adapted: usize,
    list: Vec<Protocol>,
    supported: Vec<Protocol>,
}

/// The body of `/api/v1/summary`.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    day: Day,
    timezone: UtcOffset,
    registered: Breakdown,
    online: Breakdown,
    reporting: Breakdown,
    protocols: Protocols,
}

fn breakdown(tally: &Tally, pick: impl Fn(&Figures) -> u64) -> Breakdown {
    let class = |c: DeviceClass| pick(&tally.sum(|k| k.category.class() == c));
    let cloud = |c: Cloud| pick(&tally.sum(|k| k.cloud == c));
    Breakdown {
        total: pick(&tally.sum(|_| true)),
        by_class: ByClass {
            operating: class(DeviceClass::Operating),
            processing: class(DeviceClass::Processing),
            mobile: class(DeviceClass::Mobile),
            other: class(DeviceClass::Other),
        },
        by_cloud: ByCloud {
            public: cloud(Cloud::Public),
            private: cloud(Cloud::Private),
        },
    }
}

/// The figures of `day` from the read model, and the protocols gateways
/// offer; the shared lock is held for O(gateways × cells in use).
fn tally_and_supported(shared: &Shared, day: Day) -> (Tally, Vec<Protocol>) {
    let counters = shared.read_counters();
    let tally = counters.figures(day, now_unix_nanos());
    let mut supported: Vec<Protocol> = counters
        .gateways()
        .iter()
        .flat_map(|g| g.protocols.iter().copied())
        .collect();
    supported.sort();
    supported.dedup();
    (tally, supported)
}

/// `GET /api/v1/summary?day=YYYY-MM-DD`
pub(crate) async fn summary(
    State(shared): State<Arc<Shared>>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Summary>, AppError> {
    let params = Params::new(raw, &["day"])?;
    let day = params.day(&shared)?;
    let (tally, supported) = tally_and_supported(&shared, day);
    let list = tally.adapted_protocols();
    Ok(Json(Summary {
        day,
        timezone: shared.settings.utc_offset,
        registered: breakdown(&tally, |f| f.registered),
        online: breakdown(&tally, |f| f.online),
        reporting: breakdown(&tally, |f| f.reporting),
        protocols: Protocols {
            adapted: list.len(),
            list,
            supported,
        },
    }))
}

/// The body of `/api/v1/counts`.
#[derive(Debug, Serialize)]
pub(crate) struct Counts {
    day: Day,
    timezone: UtcOffset,
    group_by: Vec<&'static str>,
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// `GET /api/v1/counts?day=D&group_by=class,category,protocol,cloud`
pub(crate) async fn counts(
    State(shared): State<Arc<Shared>>,
    Query(raw): Query<HashMap<String, String>>,
) -> Result<Json<Counts>, AppError> {
    let params = Params::new(raw, &["day", "group_by"])?;
    let day = params.day(&shared)?;
    let mut dimensions = Vec::new();
    for name in params.get("group_by").unwrap_or("class").split(',') {
        let name = name.trim();
        let Some(d) = Dimension::parse(name) else {
            return Err(AppError::bad_request(format!(
                "group_by: unknown dimension `{name}` (accepted: class, category, protocol, cloud)"
            )));
        };
        if dimensions.contains(&d) {
            return Err(AppError::bad_request(format!(
                "group_by: `{name}` is listed twice"
            )));
        }
        dimensions.push(d);
    }
    let (tally, _) = tally_and_supported(&shared, day);
    let rows = tally
        .group_by(&dimensions)
        .into_iter()
        .map(|(keys, figures)| {
            let mut row = serde_json::Map::new();
            for (d, value) in keys {
                row.insert(d.name().to_owned(), value.into());
            }
            row.insert("registered".into(), figures.registered.into());
            row.insert("online".into(), figures.online.into());
            row.insert("reporting".into(), figures.reporting.into());
            row
        })
        .collect();
    Ok(Json(Counts {
        day,
        timezone: shared.settings.utc_offset,
        group_by: dimensions.iter().map(|d| d.name()).collect(),
        rows,
    }))
}
