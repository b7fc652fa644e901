//! The registry's HTTP API as the report uses it: GET with a query, JSON
//! bodies, streamed pass-through, and errors that say what went wrong.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Response, Url};
use serde::de::DeserializeOwned;

/// How long to wait for a TCP connection to the registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a reply may stall between two reads (large exports stream for a
/// while, so there is no limit on the whole reply).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// At most this much of a non-JSON error body is quoted.
const ERROR_BODY_CHARS: usize = 200;

/// A registry's HTTP API at a base URL.
#[derive(Debug, Clone)]
pub(super) struct Registry {
    /// The base URL without a trailing `/`, e.g. `http://127.0.0.1:7680` or
    /// `http://proxy/fieldlink`.
    base: String,
    client: reqwest::Client,
}

/// The registry's error body: `{"error":"..."}`.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    error: String,
}

impl Registry {
    /// Checks the `--registry` URL and sets up the HTTP client.
    ///
    /// # Errors
    /// The URL is not an absolute `http://` (or `https://`) URL with a host,
    /// or carries a query or fragment.
    pub(super) fn new(base: &str) -> anyhow::Result<Self> {
        let trimmed = base.trim().trim_end_matches('/');
        let url = Url::parse(trimmed).with_context(|| {
            format!("--registry: `{base}` is not a URL (expected like http://127.0.0.1:7680)")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!(
                "--registry: `{base}` is not an http:// URL (expected like http://127.0.0.1:7680)"
            );
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("--registry: `{base}` has a query or fragment; give only the base URL");
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("fieldlink-report/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Registry {
            base: trimmed.to_owned(),
            client,
        })
    }

    /// The base URL, as shown in reports and errors.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// The URL of an API path with its query (values are percent-encoded).
    fn url(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Url> {
        let mut url = Url::parse(&format!("{}{path}", self.base))
            .with_context(|| format!("cannot form a URL from {} and {path}", self.base))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends `GET path?query`; a reply that is not 2xx becomes an error
    /// carrying the registry's message.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<(Response, String)> {
        let url = self.url(path, query)?;
        let what = match url.query() {
            Some(q) => format!("GET {path}?{q}"),
            None => format!("GET {path}"),
        };
        let response = self.client.get(url).send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the registry at {}: {}",
                self.base,
                root_cause(&e)
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok((response, what));
        }
        let body = response.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ErrorBody>(&body) {
            Ok(b) => b.error,
            Err(_) => quote_body(&body),
        };
        if status.is_client_error() {
            bail!(
                "the registry at {} rejected {what} ({status}): {message}",
                self.base
            );
        }
        bail!(
            "the registry at {} failed {what} ({status}): {message}",
            self.base
        )
    }

    /// `GET path?query` and parse the JSON body as `T`.
    ///
    /// # Errors
    /// The registry cannot be reached, answers with an error status, cuts
    /// the reply off, or the body is not the expected JSON.
    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<T> {
        let (response, what) = self.get(path, query).await?;
        let bytes = response.bytes().await.map_err(|e| {
            anyhow::anyhow!(
                "the registry's reply to {what} was cut off: {}",
                root_cause(&e)
            )
        })?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "cannot read the registry's reply to {what} (is {} a Fieldlink registry?)",
                self.base
            )
        })
    }

    /// `GET path?query` and copy the body to `out` as it arrives; returns
    /// the body's last byte, if any.
    ///
    /// # Errors
    /// As [`Registry::get_json`], or `out` cannot be written.
    pub(super) async fn copy_to(
        &self,
        path: &str,
        query: &[(&str, &str)],
        out: &mut impl Write,
    ) -> anyhow::Result<Option<u8>> {
        let (mut response, what) = self.get(path, query).await?;
        let mut last = None;
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                anyhow::anyhow!(
                    "the registry's reply to {what} was cut off: {}",
                    root_cause(&e)
                )
            })?;
            let Some(chunk) = chunk else {
                return Ok(last);
            };
            out.write_all(&chunk)?;
            last = chunk.last().copied().or(last);
        }
    }
}

/// The innermost cause of an HTTP error (e.g. `Connection refused (os error
/// 111)`), which says more than reqwest's outer "error sending request".
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A non-JSON error body on one line, cut to a readable length.
fn quote_body(body: &str) -> String {
    let one_line: String = body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(ERROR_BODY_CHARS)
        .collect();
    if one_line.is_empty() {
        "(no message)".to_owned()
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn registry_url_is_checked_and_trimmed() {
        let r = Registry::new(" http://127.0.0.1:7680/ ").unwrap();
        assert_eq!(r.base(), "http://127.0.0.1:7680");
        for bad in [
            "127.0.0.1:7680",
            "ftp://host/",
            "http://h/?x=1",
            "not a url",
        ] {
            let err = Registry::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("--registry: "), "{bad}: {err}");
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_the_query() {
        let r = Registry::new("http://proxy:8080/fieldlink/").unwrap();
        let url = r
            .url(
                "/api/v1/counts",
                &[("day", "2026-11-26"), ("group_by", "class,category")],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://proxy:8080/fieldlink/api/v1/counts?day=2026-11-26&group_by=class%2Ccategory"
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_named_in_the_error() {
        // A port that was just free: nothing listens there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let base = format!("http://{addr}");
        let r = Registry::new(&base).unwrap();
        let err = r
            .get_json::<serde_json::Value>("/api/v1/summary", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot reach the registry at {base}: ")),
            "{err}"
        );
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }

    /// Serves one HTTP reply to one request on a free port.
    async fn one_reply(reply: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            stream.write_all(reply.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_4xx_shows_the_registry_message() {
        let body = r#"{"error":"day: 2020-01-01 is before the retention window (oldest kept: 2026-10-28)"}"#;
        let reply = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let base = one_reply(reply).await;
        let r = Registry::new(&base).unwrap();
        let err = r
            .get_json::<serde_json::Value>("/api/v1/summary", &[("day", "2020-01-01")])
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "the registry at {base} rejected GET /api/v1/summary?day=2020-01-01 \
                 (400 Bad Request): day: 2020-01-01 is before the retention window \
                 (oldest kept: 2026-10-28)"
            )
        );
    }

    #[tokio::test]
    async fn a_reply_that_is_not_the_api_is_named() {
        let base = one_reply(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\nconnection: close\r\n\r\n<html></html>"
                .to_owned(),
        )
        .await;
        let r = Registry::new(&base).unwrap();
        let err = r
            .get_json::<serde_json::Value>("/api/v1/summary", &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read the registry's reply to GET /api/v1/summary \
                 (is {base} a Fieldlink registry?)"
            )
        );
    }
}
