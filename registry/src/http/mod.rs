//! The HTTP API: figures (`/api/v1/summary`, `/api/v1/counts`), the device
//! list and running logs (`/api/v1/devices...`), `/metrics` and `/healthz`.
//!
//! Every failure is JSON `{"error": "..."}` with a 4xx status naming the bad
//! parameter, or a 500 with a generic body and a log line.

mod devices;
mod error;
mod figures;
pub(crate) mod own_runtime;
mod params;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Shared;

pub use error::AppError;

/// The API's routes over the shared registry state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/summary", get(figures::summary))
        .route("/api/v1/counts", get(figures::counts))
        .route("/api/v1/devices", get(devices::list))
        .route("/api/v1/devices/{id}", get(devices::detail))
        .route("/api/v1/devices/{id}/days", get(devices::days))
        .fallback(not_found)
        .with_state(shared)
}

async fn index() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "service": "fieldlink registry",
        "version": env!("CARGO_PKG_VERSION"),
        "endpoints": [
            "/api/v1/summary?day=YYYY-MM-DD",
            "/api/v1/counts?day=YYYY-MM-DD&group_by=class,category,protocol,cloud",
            "/api/v1/devices?class=&category=&protocol=&cloud=&tenant=&online=&day=&reporting=&format=json|csv",
            "/api/v1/devices/{id}",
            "/api/v1/devices/{id}/days",
            "/metrics",
            "/healthz"
        ]
    }))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found(uri: axum::http::Uri) -> AppError {
    AppError::not_found(format!("no such endpoint `{}`", uri.path()))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    use std::fmt::Write;
    let mut out = String::with_capacity(8192);
    shared.metrics.render(&mut out);
    let day = shared.today();
    let tally = {
        let counters = shared.read_counters();
        counters.figures(day, fieldlink_model::now_unix_nanos())
    };
    let _ = writeln!(
        out,
        "# HELP fieldlink_registry_devices Devices by class and cloud: registered, online now, reporting today.\n# TYPE fieldlink_registry_devices gauge"
    );
    for (keys, figures) in tally.group_by(&[
        crate::tally::Dimension::Class,
        crate::tally::Dimension::Cloud,
    ]) {
        let (class, cloud) = (keys[0].1, keys[1].1);
        for (state, value) in [
            ("registered", figures.registered),
            ("online", figures.online),
            ("reporting", figures.reporting),
        ] {
            let _ = writeln!(
                out,
                "fieldlink_registry_devices{{class=\"{class}\",cloud=\"{cloud}\",state=\"{state}\"}} {value}"
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
