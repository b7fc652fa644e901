//! Reads the registry's counts back over HTTP and compares them with what
//! the bench knows it sent; reads its commit metrics for the report.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

/// What the bench expects the registry to count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected {
    /// Devices announced.
    pub(crate) registered: u64,
    /// Distinct devices with at least one accepted point.
    pub(crate) reporting: u64,
    /// Devices announced per cloud (public, private), when the bench knows
    /// the clouds of its tokens.
    pub(crate) by_cloud: Option<(u64, u64)>,
}

/// The registry's counts beside the expected ones.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Reconciliation {
    /// Whether the counts were read at all.
    pub(crate) checked: bool,
    /// Why not, or what else to know.
    pub(crate) note: Option<String>,
    /// The registry's day of the counts.
    pub(crate) day: Option<String>,
    /// `registered.total`.
    pub(crate) registered: Option<u64>,
    /// Devices announced.
    pub(crate) expected_registered: u64,
    /// `reporting.total`.
    pub(crate) reporting: Option<u64>,
    /// Distinct devices with accepted points.
    pub(crate) expected_reporting: u64,
    /// `registered.by_cloud.public`.
    pub(crate) registered_public: Option<u64>,
    /// `registered.by_cloud.private`.
    pub(crate) registered_private: Option<u64>,
    /// Devices announced with the public tenant's token, if known.
    pub(crate) expected_public: Option<u64>,
    /// Devices announced with the private tenant's token, if known.
    pub(crate) expected_private: Option<u64>,
    /// Every checked figure matches.
    pub(crate) ok: bool,
}

impl Reconciliation {
    /// No HTTP URL: nothing read.
    pub(crate) fn skipped(expected: Expected, why: &str) -> Self {
        Reconciliation {
            checked: false,
            note: Some(why.to_owned()),
            day: None,
            registered: None,
            expected_registered: expected.registered,
            reporting: None,
            expected_reporting: expected.reporting,
            registered_public: None,
            registered_private: None,
            expected_public: expected.by_cloud.map(|c| c.0),
            expected_private: expected.by_cloud.map(|c| c.1),
            ok: true,
        }
    }

    /// `OK`, `MISMATCH` or `SKIPPED`.
    pub(crate) fn verdict(&self) -> &'static str {
        match (self.checked, self.ok) {
            (false, _) => "SKIPPED",
            (true, true) => "OK",
            (true, false) => "MISMATCH",
        }
    }
}

/// Reads `GET {http}/api/v1/summary` and compares.
///
/// # Errors
/// When the registry cannot be reached or answers something else than a
/// summary.
pub(crate) async fn reconcile(http: &str, expected: Expected) -> anyhow::Result<Reconciliation> {
    let url = format!("{}/api/v1/summary", http.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build an HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot GET {url}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("cannot read the answer of {url}"))?;
    if !status.is_success() {
        anyhow::bail!("GET {url}: {status}: {body}");
    }
    let summary: Value =
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))?;
    Ok(compare(&summary, expected))
}

/// Metrics read from `/metrics` around the telemetry phase.
const METRICS: [&str; 4] = [
    "fieldlink_registry_commit_seconds_count",
    "fieldlink_registry_commit_seconds_sum",
    "fieldlink_registry_batches_applied_total",
    "fieldlink_registry_stream_errors_total",
];

/// The unlabelled samples of [`METRICS`] in `GET {http}/metrics`; `None`
/// when they cannot be read (the report then goes without them).
pub(crate) async fn scrape(http: &str) -> Option<BTreeMap<String, f64>> {
    let url = format!("{}/metrics", http.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    Some(parse_metrics(&text))
}

fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            let value = value.trim().parse().ok()?;
            METRICS.contains(&name).then(|| (name.to_owned(), value))
        })
        .collect()
}

/// Group commits of the registry during the telemetry phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Commits {
    /// Storage commits (rounds).
    pub(crate) rounds: u64,
    /// Batches applied per round.
    pub(crate) batches_per_round: f64,
    /// Mean storage commit time, milliseconds.
    pub(crate) mean_ms: f64,
    /// Seconds spent in storage commits.
    pub(crate) seconds: f64,
    /// Stream errors the registry counted.
    pub(crate) stream_errors: u64,
}

impl Commits {
    /// The difference of two scrapes.
    pub(crate) fn between(
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
    ) -> Option<Self> {
        let delta = |name: &str| Some(after.get(name)? - before.get(name)?);
        let rounds = delta(METRICS[0])?;
        let seconds = delta(METRICS[1])?;
        let batches = delta(METRICS[2])?;
        let errors = delta(METRICS[3])?;
        let per_round = |x: f64| if rounds > 0.0 { x / rounds } else { 0.0 };
        Some(Commits {
            rounds: rounds as u64,
            batches_per_round: per_round(batches),
            mean_ms: per_round(seconds) * 1000.0,
            seconds,
            stream_errors: errors as u64,
        })
    }
}

fn compare(summary: &Value, expected: Expected) -> Reconciliation {
    let n = |pointer: &str| summary.pointer(pointer).and_then(Value::as_u64);
    let registered = n("/registered/total");
    let reporting = n("/reporting/total");
    let public = n("/registered/by_cloud/public");
    let private = n("/registered/by_cloud/private");
    let mut ok = registered == Some(expected.registered) && reporting == Some(expected.reporting);
    if let Some((want_public, want_private)) = expected.by_cloud {
        ok &= public == Some(want_public) && private == Some(want_private);
    }
    let note = (registered.is_none() || reporting.is_none())
        .then(|| "the summary lacks registered.total or reporting.total".to_owned());
    Reconciliation {
        checked: true,
        note,
        day: summary
            .get("day")
            .and_then(Value::as_str)
            .map(str::to_owned),
        registered,
        expected_registered: expected.registered,
        reporting,
        expected_reporting: expected.reporting,
        registered_public: public,
        registered_private: private,
        expected_public: expected.by_cloud.map(|c| c.0),
        expected_private: expected.by_cloud.map(|c| c.1),
        ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(registered: u64, reporting: u64, public: u64) -> Value {
        serde_json::json!({
            "day": "2026-11-26",
            "registered": {"total": registered, "by_cloud": {"public": public, "private": registered - public}},
            "reporting": {"total": reporting, "by_cloud": {"public": 0, "private": 0}},
        })
    }

    #[test]
    fn commit_figures_come_from_two_scrapes() {
        let before = parse_metrics(
            "# HELP x\nfieldlink_registry_commit_seconds_count 10\nfieldlink_registry_commit_seconds_sum 1.5\n\
             fieldlink_registry_batches_applied_total 100\nfieldlink_registry_stream_errors_total 0\n\
             fieldlink_registry_commit_seconds_bucket{le=\"0.1\"} 3\n",
        );
        assert_eq!(before.len(), 4);
        let mut after = before.clone();
        after.insert(METRICS[0].into(), 20.0);
        after.insert(METRICS[1].into(), 2.5);
        after.insert(METRICS[2].into(), 600.0);
        let c = Commits::between(&before, &after).expect("all present");
        assert_eq!(c.rounds, 10);
        assert!((c.batches_per_round - 50.0).abs() < 1e-9);
        assert!((c.mean_ms - 100.0).abs() < 1e-9);
        assert!(Commits::between(&BTreeMap::new(), &after).is_none());
    }

    #[test]
    fn counts_must_all_match() {
        let expected = Expected {
            registered: 10,
            reporting: 7,
            by_cloud: Some((5, 5)),
        };
        let r = compare(&summary(10, 7, 5), expected);
        assert_eq!(r.verdict(), "OK");
        assert_eq!(r.day.as_deref(), Some("2026-11-26"));
        assert_eq!(compare(&summary(10, 6, 5), expected).verdict(), "MISMATCH");
        assert_eq!(compare(&summary(10, 7, 4), expected).verdict(), "MISMATCH");
        let unknown_clouds = Expected {
            by_cloud: None,
            ..expected
        };
        assert_eq!(compare(&summary(10, 7, 4), unknown_clouds).verdict(), "OK");
        assert_eq!(
            compare(&serde_json::json!({}), expected).verdict(),
            "MISMATCH"
        );
    }
}
