//! Small helpers every bench shares: rates, a free loopback port, JSON
//! over HTTP, TOML strings for the configs the benches write.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;

/// `n / seconds`, 0 for an empty window.
pub(crate) fn per_sec(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// A loopback address with a port free right now (for a child's metrics
/// or a broker's listener).
///
/// # Errors
/// When no port can be bound.
pub(crate) fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free loopback port")?;
    listener.local_addr().context("no local address")
}

/// `GET url` as JSON.
///
/// # Errors
/// When the server does not answer 200 with JSON (the URL is named).
pub(crate) async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<serde_json::Value> {
    client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("cannot GET {url}"))?
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))
}

/// A TOML basic string (JSON's escapes are valid TOML escapes).
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(per_sec(10, 0.0), 0.0);
        assert_eq!(per_sec(10, 2.0), 5.0);
        assert_eq!(quote("a \"b\"\\"), "\"a \\\"b\\\"\\\\\"");
        assert_eq!(
            format!("k = {}", quote("x\ny"))
                .parse::<toml::Table>()
                .unwrap()["k"]
                .as_str(),
            Some("x\ny")
        );
        assert!(free_local_addr().unwrap().ip().is_loopback());
    }
}
