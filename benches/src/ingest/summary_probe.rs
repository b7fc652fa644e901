//! `GET /api/v1/summary` in a loop while telemetry streams: how long the
//! registry's figures take to read under ingest load.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::load::latency_histogram;
use super::report::Latency;

/// Pause between one answer and the next request.
const PAUSE: Duration = Duration::from_millis(10);

/// What the probe measured.
#[derive(Debug, Serialize)]
pub(crate) struct SummaryOut {
    /// Requests answered with 200.
    pub(crate) requests: u64,
    /// Requests that failed or were answered otherwise.
    pub(crate) errors: u64,
    /// Request to complete body, of the answered ones.
    pub(crate) latency_us: Latency,
}

/// A running probe.
#[derive(Debug)]
pub(crate) struct SummaryProbe {
    stop: watch::Sender<bool>,
    task: JoinHandle<SummaryOut>,
}

impl SummaryProbe {
    /// Starts reading `<http>/api/v1/summary` every [`PAUSE`] after each answer.
    pub(crate) fn start(http: &str) -> Self {
        let url = format!("{}/api/v1/summary", http.trim_end_matches('/'));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latency = latency_histogram();
            let mut errors = 0u64;
            loop {
                let started = Instant::now();
                let answered = tokio::select! {
                    _ = stopped.changed() => break,
                    r = get(&client, &url) => r,
                };
                if answered {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    latency.saturating_record(micros.max(1));
                } else {
                    errors += 1;
                }
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(PAUSE) => {}
                }
            }
            SummaryOut {
                requests: latency.len(),
                errors,
                latency_us: Latency::of(&latency),
            }
        });
        SummaryProbe { stop, task }
    }

    /// Stops the probe and returns its figures.
    pub(crate) async fn finish(self) -> Option<SummaryOut> {
        let _ = self.stop.send(true);
        self.task.await.ok()
    }
}

async fn get(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
        _ => false,
    }
}
