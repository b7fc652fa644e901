//! Prometheus metrics of the broker.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Why the broker refused a client, a packet or a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Unknown user, wrong password or no credentials.
    BadCredentials,
    /// A publish outside the client's ACL.
    NotAuthorizedPublish,
    /// A subscription filter outside the client's ACL.
    NotAuthorizedSubscribe,
    /// A will topic outside the client's ACL.
    NotAuthorizedWill,
    /// A client id that is not allowed (not the user name, too long, ...).
    ClientIdRejected,
    /// No complete CONNECT (or TLS handshake) in time.
    ConnectTimeout,
    /// Every connection slot was taken.
    MaxConnections,
    /// Bytes that are not MQTT.
    Malformed,
    /// A declared packet length over `limits.max_packet_size`.
    TooLarge,
    /// Valid packets in an order or with values MQTT forbids.
    ProtocolError,
    /// An MQTT version other than 3.1.1 and 5.
    UnsupportedProtocol,
    /// A TLS handshake that failed.
    TlsHandshake,
    /// Silent for 1.5× the keep-alive.
    KeepAliveTimeout,
    /// Took no bytes for `limits.write_timeout` while messages waited.
    SlowConsumer,
    /// More QoS 2 messages in flight than `limits.max_inflight`, or more
    /// subscriptions than `limits.max_subscriptions`.
    QuotaExceeded,
    /// The router could not take the connection.
    ServerUnavailable,
}

impl Refusal {
    /// Every reason, in label order of the metric.
    pub const ALL: [Refusal; 16] = [
        Refusal::BadCredentials,
        Refusal::NotAuthorizedPublish,
        Refusal::NotAuthorizedSubscribe,
        Refusal::NotAuthorizedWill,
        Refusal::ClientIdRejected,
        Refusal::ConnectTimeout,
        Refusal::MaxConnections,
        Refusal::Malformed,
        Refusal::TooLarge,
        Refusal::ProtocolError,
        Refusal::UnsupportedProtocol,
        Refusal::TlsHandshake,
        Refusal::KeepAliveTimeout,
        Refusal::SlowConsumer,
        Refusal::QuotaExceeded,
        Refusal::ServerUnavailable,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadCredentials => "bad_credentials",
            Refusal::NotAuthorizedPublish => "not_authorized_publish",
            Refusal::NotAuthorizedSubscribe => "not_authorized_subscribe",
            Refusal::NotAuthorizedWill => "not_authorized_will",
            Refusal::ClientIdRejected => "client_id_rejected",
            Refusal::ConnectTimeout => "connect_timeout",
            Refusal::MaxConnections => "max_connections",
            Refusal::Malformed => "malformed",
            Refusal::TooLarge => "too_large",
            Refusal::ProtocolError => "protocol_error",
            Refusal::UnsupportedProtocol => "unsupported_protocol",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::KeepAliveTimeout => "keep_alive_timeout",
            Refusal::SlowConsumer => "slow_consumer",
            Refusal::QuotaExceeded => "quota_exceeded",
            Refusal::ServerUnavailable => "server_unavailable",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Broker counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Authenticated client connections now.
    pub connections: AtomicI64,
    /// Client connections accepted (CONNACK success) since start.
    pub connections_total: AtomicU64,
    /// PUBLISH packets received from clients and accepted.
    pub messages_in: AtomicU64,
    /// PUBLISH packets written to clients.
    pub messages_out: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Events handed to in-process links.
    pub link_events: AtomicU64,
    /// Times a publisher waited because a link's channel was full.
    pub link_waits: AtomicU64,
    /// Events not delivered to a link because the broker stopped while it
    /// was full.
    pub link_dropped: AtomicU64,
    /// Retained messages not kept for new links (past `links::MAX_RETAINED`).
    pub link_retained_dropped: AtomicU64,
    /// Publishes from in-process links refused by the service ACL.
    pub link_refused: AtomicU64,
    /// Wills published.
    pub wills: AtomicU64,
    /// Connections closed because the same client id connected again.
    pub takeovers: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
}

impl Metrics {
    /// Counts one refusal.
    pub fn refuse(&self, reason: Refusal) {
        self.refusals[reason.index()].fetch_add(1, Relaxed);
    }

    /// Refusals so far for `reason`.
    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.refusals[reason.index()].load(Relaxed)
    }

    /// Renders Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let c = |a: &AtomicU64| a.load(Relaxed).to_string();
        line(
            "fieldlink_broker_connections",
            "gauge",
            "Authenticated client connections now.",
            self.connections.load(Relaxed).to_string(),
        );
        line(
            "fieldlink_broker_connections_total",
            "counter",
            "Client connections accepted (CONNACK success).",
            c(&self.connections_total),
        );
        line(
            "fieldlink_broker_messages_in_total",
            "counter",
            "PUBLISH packets received from clients and accepted.",
            c(&self.messages_in),
        );
        line(
            "fieldlink_broker_messages_out_total",
            "counter",
            "PUBLISH packets written to clients.",
            c(&self.messages_out),
        );
        line(
            "fieldlink_broker_bytes_in_total",
            "counter",
            "Bytes read from clients.",
            c(&self.bytes_in),
        );
        line(
            "fieldlink_broker_bytes_out_total",
            "counter",
            "Bytes written to clients.",
            c(&self.bytes_out),
        );
        line(
            "fieldlink_broker_link_events_total",
            "counter",
            "Events handed to in-process links.",
            c(&self.link_events),
        );
        line(
            "fieldlink_broker_link_waits_total",
            "counter",
            "Times a publisher waited for a full in-process link (backpressure).",
            c(&self.link_waits),
        );
        line(
            "fieldlink_broker_link_dropped_total",
            "counter",
            "Events a full link did not get because the broker stopped.",
            c(&self.link_dropped),
        );
        line(
            "fieldlink_broker_link_retained_dropped_total",
            "counter",
            "Retained messages not kept for links created later (past the broker's bound).",
            c(&self.link_retained_dropped),
        );
        line(
            "fieldlink_broker_link_refused_total",
            "counter",
            "Publishes from in-process links refused by the service ACL.",
            c(&self.link_refused),
        );
        line(
            "fieldlink_broker_wills_total",
            "counter",
            "Will messages published.",
            c(&self.wills),
        );
        line(
            "fieldlink_broker_takeovers_total",
            "counter",
            "Connections closed because their client id connected again.",
            c(&self.takeovers),
        );
        let _ = writeln!(
            out,
            "# HELP fieldlink_broker_refusals_total Clients, packets and connections refused, by reason.\n# TYPE fieldlink_broker_refusals_total counter"
        );
        for reason in Refusal::ALL {
            let _ = writeln!(
                out,
                "fieldlink_broker_refusals_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.refusals(reason)
            );
        }
        out
    }
}

/// Serves `/metrics` (Prometheus text of `metrics`) and `/healthz` on
/// `listener` until `stop`.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    serve_with(listener, metrics, axum::Router::new(), stop)
}

/// [`serve`], with the routes of `extra` beside `/metrics` and `/healthz`.
pub(crate) fn serve_with(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    extra: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = extra
        .route(
            "/metrics",
            axum::routing::get(move || async move { metrics.render() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "metrics server failed");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_rendered_with_its_count() {
        let m = Metrics::default();
        m.refuse(Refusal::TooLarge);
        m.refuse(Refusal::TooLarge);
        let text = m.render();
        assert!(text.contains("fieldlink_broker_refusals_total{reason=\"too_large\"} 2"));
        for r in Refusal::ALL {
            assert!(text.contains(&format!("reason=\"{}\"", r.label())), "{r:?}");
        }
    }
}
