//! The binary's log: `FIELDLINK_LOG` (an `EnvFilter`) or a default that
//! keeps the libraries' chatter down, to stderr.
//!
//! One line of rumqttd's router is dropped whatever the filter: `no-connection
//! id N is already gone`, logged at ERROR when a client's DISCONNECT and the
//! data before it reach the router as two wake-ups and the first already
//! closed the connection (the router's own comment calls it the "double
//! Disconnect"). Nothing is lost; every clean disconnect of a client that
//! published just before would otherwise print an error.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::prelude::*;

/// The default filter when `FIELDLINK_LOG` is not set.
const DEFAULT_FILTER: &str = "info,rumqttd=warn,opcua_client::config=error";
/// Where rumqttd's router logs.
const ROUTER_TARGET: &str = "rumqttd::router";
/// The end of the benign line.
const ALREADY_GONE: &str = "is already gone";

/// Installs the global subscriber.
pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FIELDLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .with_filter(WithoutDoubleDisconnect),
        )
        .init();
}

/// Drops rumqttd's "already gone" errors (see the module docs).
#[derive(Debug, Clone, Copy)]
struct WithoutDoubleDisconnect;

impl<S: Subscriber> Filter<S> for WithoutDoubleDisconnect {
    fn enabled(&self, _: &tracing::Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        !is_double_disconnect(event)
    }
}

fn is_double_disconnect(event: &Event<'_>) -> bool {
    let meta = event.metadata();
    if *meta.level() != Level::ERROR || !meta.target().starts_with(ROUTER_TARGET) {
        return false;
    }
    let mut message = Message(false);
    event.record(&mut message);
    message.0
}

/// Whether the `message` field ends in [`ALREADY_GONE`].
struct Message(bool);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}").ends_with(ALREADY_GONE);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Counts the events that reach it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> tracing_subscriber::Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut m = Text(String::new());
            event.record(&mut m);
            self.0.lock().unwrap().push(m.0);
        }
    }

    struct Text(String);

    impl Visit for Text {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    #[test]
    fn only_the_routers_already_gone_error_is_dropped() {
        let seen = Seen::default();
        let subscriber =
            tracing_subscriber::registry().with(seen.clone().with_filter(WithoutDoubleDisconnect));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "rumqttd::router::routing", "no-connection id {} is already gone", 20);
            tracing::error!(target: "rumqttd::router::routing", "no space for new connection");
            tracing::warn!(target: "rumqttd::router::routing", "no-connection id 3 is already gone");
            tracing::error!(target: "fieldlink_broker", "client 7 is already gone");
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "no space for new connection",
                "no-connection id 3 is already gone",
                "client 7 is already gone"
            ]
        );
    }
}
