//! The OPC UA driver against servers with tight limits and against hostile
//! ones: items split into calls and spread over subscriptions the server
//! accepts (also when it refuses calls its stated limits allow), the
//! cyclic-read fallback, and a server that accepts connections but never
//! answers the handshake (counted, stalling nobody).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use fieldlink_gateway::GatewayConfig;
use fieldlink_gateway::driver::opcua::OpcUaKind;
use fieldlink_gateway::driver::{DriverContext, DriverEvent, DriverKind, Limits, Sink};
use fieldlink_gateway::metrics::Metrics;
use fieldlink_model::Protocol;
use fieldlink_model::proto::Quality;
use fieldlink_sim::opcua::SimLimits;
use fieldlink_sim::{FleetPlan, FleetSpec, OpcUaFiles, OpcUaFleet, OpcUaOptions, TenantSpec};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::support::peers::free_port;

fn plan(devices: u32) -> FleetPlan {
    FleetPlan::new(FleetSpec {
        devices,
        protocols: fieldlink_sim::ProtocolMix::only(Protocol::OpcUa),
        interval: Duration::from_millis(200),
        tenants: vec![TenantSpec::new("t", fieldlink_model::Cloud::Public)],
        ..FleetSpec::default()
    })
    .unwrap()
}

/// The gateway config the face's files give for every device, with `extra`
/// appended to `[opcua.servers.sim-0]`.
fn config(plan: &FleetPlan, port: u16, dir: &std::path::Path, extra: &str) -> String {
    let files = OpcUaFiles {
        base_port: port,
        devices_per_server: plan.len(),
        ..OpcUaFiles::default()
    };
    let text = plan
        .gateway_toml_with(0, "http://127.0.0.1:1", &dir.join("data"), &[&files])
        .unwrap();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    let opcua = table["opcua"].as_table_mut().unwrap();
    opcua.insert(
        "pki_dir".into(),
        dir.join("pki").display().to_string().into(),
    );
    opcua.insert("request_timeout".into(), "2s".into());
    opcua.insert("reconnect_min".into(), "100ms".into());
    opcua.insert("reconnect_max".into(), "500ms".into());
    let mut text = toml::to_string(&table).unwrap();
    text = text.replacen(
        "[opcua.servers.sim-0]\n",
        &format!("[opcua.servers.sim-0]\n{extra}"),
        1,
    );
    text
}

struct Run {
    events: tokio::sync::mpsc::Receiver<DriverEvent>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn run(text: &str) -> Run {
    let config = GatewayConfig::from_toml(text).unwrap();
    let driver = OpcUaKind
        .configure(config.driver_config(&OpcUaKind).unwrap())
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let limits = Limits {
        max_devices: 10_000,
        max_tags_per_device: 1000,
    };
    let (sink, events) = Sink::channel(4096, limits, metrics.clone());
    let stop = CancellationToken::new();
    let ctx = DriverContext {
        sink,
        shutdown: stop.clone(),
        resources: Default::default(),
    };
    let task = tokio::spawn(driver.run(ctx));
    Run {
        events,
        metrics,
        stop,
        task,
    }
}

impl Run {
    /// Waits until every tag of every declared device has delivered a good
    /// value; returns (devices, tags).
    async fn every_tag_good(&mut self, devices: usize) -> (usize, usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tags: HashMap<u32, usize> = HashMap::new();
        let mut good: HashSet<(u32, u32)> = HashSet::new();
        loop {
            let all = tags.len() == devices
                && tags
                    .iter()
                    .all(|(d, n)| (0..*n as u32).all(|t| good.contains(&(*d, t))));
            if all {
                return (tags.len(), good.len());
            }
            match timeout_at(deadline, self.events.recv()).await {
                Ok(Some(DriverEvent::Announce {
                    device, tags: t, ..
                })) => {
                    tags.insert(device.index(), t.len());
                }
                Ok(Some(DriverEvent::Readings(readings))) => {
                    for r in readings {
                        if r.quality == Quality::Good && r.value.is_some() {
                            good.insert((r.device.index(), r.tag));
                        }
                    }
                }
                Ok(Some(DriverEvent::Status { .. })) => {}
                Ok(None) | Err(_) => panic!(
                    "{} of {devices} devices declared, {} good tags",
                    tags.len(),
                    good.len()
                ),
            }
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        let drain = async { while self.events.recv().await.is_some() {} };
        let (_, task) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(drain, &mut self.task)
        })
        .await
        .expect("the driver stops when cancelled");
        task.expect("the driver does not panic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_split_into_calls_and_subscriptions_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(40);
    let port = free_port();
    let fleet = OpcUaFleet::start(
        &plan,
        OpcUaOptions {
            base_port: port,
            devices_per_server: plan.len(),
            pki_dir: dir.path().join("sim-pki"),
            // States 1 000 items per call but decodes at most 150 (so the
            // gateway must halve), and 300 items per subscription.
            limits: SimLimits {
                items_per_call: 1000,
                items_per_subscription: 300,
                nodes_per_read: 1000,
                max_array_length: 150,
            },
            ..OpcUaOptions::default()
        },
    )
    .await
    .unwrap();
    let mut run = run(&config(&plan, port, dir.path(), ""));
    let (devices, tags) = run.every_tag_good(40).await;
    assert_eq!(devices, 40);
    assert!(tags > 900, "{tags} items, over several subscriptions");
    let d = run.metrics.driver(Protocol::OpcUa);
    // More create calls than 1 000-item calls would need: the batch was halved.
    assert!(
        d.requests.load(Relaxed) > (tags / 150) as u64,
        "{:?}",
        d.requests
    );
    run.stop().await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_reads_every_item_cyclically() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(5);
    let port = free_port();
    let fleet = OpcUaFleet::start(
        &plan,
        OpcUaOptions {
            base_port: port,
            devices_per_server: plan.len(),
            pki_dir: dir.path().join("sim-pki"),
            ..OpcUaOptions::default()
        },
    )
    .await
    .unwrap();
    let mut run = run(&config(
        &plan,
        port,
        dir.path(),
        "mode = \"poll\"\npoll_interval = \"200ms\"\n",
    ));
    assert_eq!(run.every_tag_good(5).await.0, 5);
    run.stop().await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_the_handshake_is_counted_and_stalls_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(3);
    let port = free_port();
    let fleet = OpcUaFleet::start(
        &plan,
        OpcUaOptions {
            base_port: port,
            devices_per_server: plan.len(),
            pki_dir: dir.path().join("sim-pki"),
            ..OpcUaOptions::default()
        },
    )
    .await
    .unwrap();
    // Accepts, reads, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let mut text = config(&plan, port, dir.path(), "");
    text.push_str(&format!(
        "\n[opcua.servers.silent]\nendpoint = \"opc.tcp://{silent_addr}/\"\n\
         [[devices]]\nid = \"silent-1\"\nclass = \"operating\"\ncategory = \"power\"\ntype = \"t\"\nname = \"n\"\nprotocol = \"opc-ua\"\n\
         [devices.opcua]\nserver = \"silent\"\ntags = [ {{ name = \"x\", node = \"ns=2;s=x\", type = \"double\" }} ]\n"
    ));
    let mut run = run(&text);
    // Four devices are declared; the three simulated ones deliver.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut good = HashSet::new();
    while good.len() < 3 {
        match timeout_at(deadline, run.events.recv()).await {
            Ok(Some(DriverEvent::Readings(rs))) => {
                good.extend(
                    rs.iter()
                        .filter(|r| r.quality == Quality::Good)
                        .map(|r| r.device),
                );
            }
            Ok(Some(_)) => {}
            _ => panic!("{} devices delivered", good.len()),
        }
    }
    crate::support::eventually("the silent server counted as a connect failure", || async {
        run.metrics
            .driver(Protocol::OpcUa)
            .connect_failures
            .load(Relaxed)
            > 0
    })
    .await;
    run.stop().await;
    hold.abort();
    fleet.stop().await;
}
