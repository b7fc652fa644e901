//! The OPC UA driver against the simulator's OPC UA face: four devices,
//! each on its own server behind a fault proxy (a hung or garbled server
//! stalls only its own session), configured three ways — tags by NodeId,
//! tags by browse path, and `browse = true` (the device that grows a
//! variable at run time).

use fieldlink_gateway::conformance::{self, Face, Growth, KitOptions, Outcome};
use fieldlink_gateway::driver::opcua::OpcUaKind;
use fieldlink_model::Protocol;
use fieldlink_sim::opcua::nodes;
use fieldlink_sim::{
    Fault, FleetPlan, FleetSpec, OpcUaFaults, OpcUaFleet, OpcUaOptions, TenantSpec,
};

struct OpcUaFace {
    plan: FleetPlan,
    fleet: OpcUaFleet,
    faults: OpcUaFaults,
    dir: tempfile::TempDir,
}

impl OpcUaFace {
    async fn start() -> OpcUaFace {
        let plan = FleetPlan::new(FleetSpec {
            devices: 4,
            protocols: fieldlink_sim::ProtocolMix::only(Protocol::OpcUa),
            interval: std::time::Duration::from_millis(100),
            tenants: vec![TenantSpec::new("kit", fieldlink_model::Cloud::Public)],
            ..FleetSpec::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let faults = OpcUaFaults::default();
        let options = OpcUaOptions {
            base_port: 0,
            devices_per_server: 1,
            pki_dir: dir.path().join("sim-pki"),
            faults: Some(faults.clone()),
            ..OpcUaOptions::default()
        };
        let fleet = OpcUaFleet::start(&plan, options).await.unwrap();
        OpcUaFace {
            plan,
            fleet,
            faults,
            dir,
        }
    }

    fn index(&self, id: &str) -> u32 {
        self.plan
            .devices()
            .find(|d| d.id() == id)
            .map(|d| d.index)
            .unwrap_or_else(|| panic!("no device {id}"))
    }
}

impl Face for OpcUaFace {
    fn config(&self) -> String {
        let mut text = format!(
            "[opcua]\npki_dir = {:?}\nrequest_timeout = \"2s\"\nreconnect_min = \"100ms\"\nreconnect_max = \"500ms\"\nkeep_alive_interval = \"500ms\"\npublishing_interval = \"100ms\"\nsampling_interval = \"100ms\"\n",
            self.dir.path().join("gw-pki")
        );
        for k in 0..self.fleet.len() {
            text.push_str(&format!(
                "[opcua.servers.sim-{k}]\nendpoint = \"{}\"\n",
                self.fleet.endpoint(k).unwrap()
            ));
        }
        for (n, d) in self.plan.devices().enumerate() {
            let id = d.id();
            let ty = d.device_type;
            let k = self.fleet.server_of(d.index).unwrap();
            text.push_str(&format!(
                "[[devices]]\nid = \"{id}\"\nclass = \"{}\"\ncategory = \"{}\"\ntype = \"{}\"\nname = \"{}\"\nprotocol = \"opc-ua\"\n[devices.opcua]\nserver = \"sim-{k}\"\nroot = \"{}\"\n",
                ty.class().code(),
                ty.category.code(),
                ty.model,
                d.name(),
                nodes::device_node(&id)
            ));
            match n {
                // Tags by NodeId, typed.
                0 | 1 => {
                    text.push_str("tags = [\n");
                    for t in ty.all_tags() {
                        text.push_str(&format!(
                            "  {{ name = \"{}\", node = \"{}\" }},\n",
                            t.name,
                            nodes::tag_node(&id, t.name)
                        ));
                    }
                    text.push_str("]\n");
                }
                // Tags by browse path from the root, types read from the server.
                2 => {
                    text.push_str("tags = [\n");
                    for t in ty.all_tags() {
                        text.push_str(&format!(
                            "  {{ name = \"{}\", path = \"{}:{}\" }},\n",
                            t.name,
                            nodes::NS,
                            t.name
                        ));
                    }
                    text.push_str("]\n");
                }
                // Every variable under the root, browsed again at run time.
                _ => text.push_str("browse = true\nrebrowse_interval = \"300ms\"\n"),
            }
        }
        text
    }

    fn devices(&self) -> Vec<String> {
        self.plan.devices().map(|d| d.id()).collect()
    }

    async fn stop_device(&mut self, id: &str) {
        self.faults.set(self.index(id), Fault::Off);
    }

    async fn start_device(&mut self, id: &str) {
        self.faults.set(self.index(id), Fault::None);
    }

    async fn hang_device(&mut self, id: &str) -> bool {
        self.faults.set(self.index(id), Fault::Hung);
        true
    }

    async fn malform_device(&mut self, id: &str) -> bool {
        self.faults.set(self.index(id), Fault::Garbage);
        true
    }

    async fn heal_device(&mut self, id: &str) {
        self.faults.set(self.index(id), Fault::None);
    }

    async fn grow(&mut self) -> Option<Growth> {
        let d = self.plan.device(3).unwrap();
        let tag = self.fleet.grow(d.index).unwrap();
        Some(Growth::Tag(d.id(), tag))
    }

    async fn restart(&mut self) {
        self.fleet.restart().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opcua_driver_passes_the_conformance_kit() {
    if let Ok(filter) = std::env::var("KIT_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    let mut face = OpcUaFace::start().await;
    let report = conformance::run(&OpcUaKind, &mut face, &KitOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        report.checks,
        [
            ("connect", Outcome::Passed),
            ("discovery", Outcome::Passed),
            ("loss and return", Outcome::Passed),
            ("hung device stalls nobody", Outcome::Passed),
            ("malformed input", Outcome::Passed),
            ("reconnect", Outcome::Passed),
        ]
    );
    assert!(
        report.bad_readings > 0,
        "the switched-off device's values are bad"
    );
    face.fleet.stop().await;
}
