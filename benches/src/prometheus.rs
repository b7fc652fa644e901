//! Prometheus text from a process's `/metrics`: fetched over HTTP
//! ([`Endpoint`]) and read as samples by name and labels ([`Scrape`]).

use std::time::Duration;

use anyhow::Context;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// A `/metrics` URL and a client for it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    client: reqwest::Client,
    url: String,
}

impl Endpoint {
    /// The endpoint at `url` (e.g. `http://127.0.0.1:9883/metrics`).
    ///
    /// # Errors
    /// When no HTTP client can be built.
    pub(crate) fn new(url: String) -> anyhow::Result<Endpoint> {
        let client = reqwest::Client::builder()
            .timeout(SCRAPE_TIMEOUT)
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Endpoint { client, url })
    }

    /// The text of one scrape.
    ///
    /// # Errors
    /// When the process does not answer 200 with text.
    pub(crate) async fn text(&self) -> anyhow::Result<String> {
        self.client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot scrape {}", self.url))?
            .text()
            .await
            .with_context(|| format!("cannot read {}", self.url))
    }

    /// One scrape, parsed.
    ///
    /// # Errors
    /// As [`Endpoint::text`].
    pub(crate) async fn scrape(&self) -> anyhow::Result<Scrape> {
        Ok(Scrape::parse(&self.text().await?))
    }
}

/// The samples of one scrape: `(name, labels, value)`, labels as written
/// between the braces (`protocol="mqtt-json"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Scrape {
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    /// Parses Prometheus text; comments and lines that are not samples are
    /// skipped, values that are not numbers read as 0.
    pub(crate) fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                let value = value.trim().parse::<f64>().unwrap_or(0.0);
                let (name, labels) = match key.split_once('{') {
                    Some((name, labels)) => (name, labels.trim_end_matches('}')),
                    None => (key, ""),
                };
                Some((name.to_owned(), labels.to_owned(), value))
            })
            .collect();
        Scrape { samples }
    }

    /// The sum of every sample named `name` (over all its label sets);
    /// `None` when there is none.
    pub(crate) fn value(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
            .reduce(|a, b| a + b)
    }

    /// The sample named `name` whose labels include `label` (`k="v"`).
    pub(crate) fn labelled(&self, name: &str, label: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, labels, _)| n == name && labels.split(',').any(|l| l == label))
            .map(|(_, _, v)| *v)
    }

    /// [`Scrape::value`] as a count: missing or negative is 0.
    pub(crate) fn count(&self, name: &str) -> u64 {
        to_count(self.value(name))
    }

    /// [`Scrape::labelled`] as a count: missing or negative is 0.
    pub(crate) fn labelled_count(&self, name: &str, label: &str) -> u64 {
        to_count(self.labelled(name, label))
    }
}

fn to_count(value: Option<f64>) -> u64 {
    // Counters are whole numbers well below 2^53.
    value.map_or(0, |v| v.max(0.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_label() {
        let text = "\
# HELP a_total Something.
# TYPE a_total counter
a_total 12
b_total{protocol=\"mqtt-json\"} 3
b_total{protocol=\"modbus-tcp\",x=\"y\"} 4
gauge -2
broken
";
        let s = Scrape::parse(text);
        assert_eq!(s.count("a_total"), 12);
        assert_eq!(s.value("b_total"), Some(7.0));
        assert_eq!(s.labelled("b_total", "protocol=\"modbus-tcp\""), Some(4.0));
        assert_eq!(s.labelled_count("b_total", "protocol=\"mqtt-json\""), 3);
        assert_eq!(s.labelled("b_total", "protocol=\"opc-ua\""), None);
        assert_eq!(s.value("gauge"), Some(-2.0));
        assert_eq!(s.count("gauge"), 0);
        assert_eq!(s.value("missing"), None);
        assert_eq!(s.count("broken"), 0);
    }
}
