//! A broker served by the test process: two tenants (`acme`, `plant`), a
//! device and a service user in each, tokens made here.

use std::net::SocketAddr;

use fieldlink_broker::auth::{HashKind, PasswordHash};
use fieldlink_broker::{Broker, BrokerConfig, BrokerHandle, Listeners};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Token of a device user `NAME`: `NAME-token-0123456789abcdef`.
pub fn token(user: &str) -> String {
    format!("{user}-token-0123456789abcdef")
}

/// `[[users]]` for a device or service with its token hashed (sha256).
pub fn user(username: &str, tenant: &str, role: &str) -> String {
    let hash = PasswordHash::generate(HashKind::Sha256, token(username).as_bytes())
        .expect("hash a test token");
    format!(
        "[[users]]\nusername = \"{username}\"\npassword_hash = \"{hash}\"\ntenant = \"{tenant}\"\nrole = \"{role}\"\n"
    )
}

/// Config text: two tenants, devices `acme-dev-1`, `acme-dev-2`,
/// `plant-dev-1`, services `acme-gw`, `plant-gw`, then `extra`.
pub fn config_text(extra: &str) -> String {
    let mut text = String::from("[[tenants]]\nname = \"acme\"\n[[tenants]]\nname = \"plant\"\n");
    for (name, tenant, role) in [
        ("acme-dev-1", "acme", "device"),
        ("acme-dev-2", "acme", "device"),
        ("plant-dev-1", "plant", "device"),
        ("acme-gw", "acme", "service"),
        ("plant-gw", "plant", "service"),
    ] {
        text.push_str(&user(name, tenant, role));
    }
    text.push_str(extra);
    text
}

/// A running in-process broker.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub handle: BrokerHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// Starts one on 127.0.0.1:0 with [`config_text`]`(extra)`.
    pub async fn start(extra: &str) -> TestBroker {
        let settings = BrokerConfig::from_toml(&config_text(extra))
            .expect("test config parses")
            .validate()
            .expect("test config is valid");
        let mqtt = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = mqtt.local_addr().expect("addr");
        let broker = Broker::new(settings);
        let handle = broker.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            mqtt,
            tls: None,
            metrics: None,
        };
        let task = tokio::spawn(async move {
            broker
                .run(listeners, async {
                    let _ = stopped.await;
                })
                .await
                .expect("broker runs");
        });
        TestBroker {
            addr,
            handle,
            stop: Some(stop),
            task,
        }
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("broker task");
    }
}
