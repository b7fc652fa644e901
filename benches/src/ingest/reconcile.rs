//! Reads the registry's counts back over HTTP and compares them with what
//! the bench knows it sent.

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
