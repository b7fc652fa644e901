//! The restart figure: how long a restarted registry takes to serve the
//! counts it had before. The registry listens only once its store is
//! loaded; this polls `GET /api/v1/summary` from then until the counts
//! match, since a listening registry that counts wrong is not back yet.

use std::time::{Duration, Instant};

use super::reconcile::{self, Expected, Reconciliation};

/// How long the counts may take to come right after the registry listens.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between two polls.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// What the polling found.
#[derive(Debug)]
pub(crate) struct Settled {
    /// Time from the first poll to the first correct answer; `None` if the
    /// counts never came right.
    pub(crate) after: Option<Duration>,
    /// The last comparison.
    pub(crate) reconciliation: Reconciliation,
}

/// Polls the registry at `http` until its counts equal `expected`, or
/// [`SETTLE_TIMEOUT`] passes.
pub(crate) async fn until_correct(http: &str, expected: Expected) -> Settled {
    let started = Instant::now();
    loop {
        let reconciliation = match reconcile::reconcile(http, expected).await {
            Ok(r) => r,
            Err(e) => Reconciliation::skipped(expected, &format!("{e:#}")),
        };
        if reconciliation.checked && reconciliation.ok {
            return Settled {
                after: Some(started.elapsed()),
                reconciliation,
            };
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            return Settled {
                after: None,
                reconciliation,
            };
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
