//! The Modbus TCP driver against the simulator's Modbus face, with its
//! fault injection.

use std::time::Duration;

use fieldlink_gateway::conformance::{self, Face, Growth, KitOptions, Outcome};
use fieldlink_gateway::driver::modbus::ModbusKind;
use fieldlink_sim::{BoundFleet, Fault, Faults, FleetPlan, FleetSpec, ServeOptions, TenantSpec};
use tokio::sync::oneshot;

use crate::support::peers::free_port;

/// Four simulated devices in this process, every fault under the kit's control.
struct ModbusFace {
    plan: FleetPlan,
    faults: Faults,
    _stop: oneshot::Sender<()>,
}

impl ModbusFace {
    async fn start() -> ModbusFace {
        let plan = FleetPlan::new(FleetSpec {
            devices: 4,
            port: free_port(),
            interval: Duration::from_millis(100),
            tenants: vec![TenantSpec::new("kit", fieldlink_model::Cloud::Public)],
            ..FleetSpec::default()
        })
        .unwrap();
        let faults = Faults::default();
        let options = ServeOptions {
            faults: faults.clone(),
            ..ServeOptions::default()
        };
        let bound = BoundFleet::bind(&plan, 0..plan.len(), options)
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(bound.serve_until(async {
            let _ = stopped.await;
        }));
        ModbusFace {
            plan,
            faults,
            _stop: stop,
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

impl Face for ModbusFace {
    fn config(&self) -> String {
        let text = self
            .plan
            .gateway_toml(0, "http://127.0.0.1:1", std::path::Path::new("unused"))
            .unwrap();
        let mut table: toml::Table = toml::from_str(&text).unwrap();
        for key in ["gateway_id", "data_dir", "uplink"] {
            table.remove(key);
        }
        let modbus = table["modbus"].as_table_mut().unwrap();
        modbus.insert("timeout".into(), "300ms".into());
        modbus.insert("backoff_min".into(), "100ms".into());
        modbus.insert("backoff_max".into(), "300ms".into());
        modbus.insert("failures_before_offline".into(), 2.into());
        toml::to_string(&table).unwrap()
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
        None // Modbus has no run-time discovery: tags are the config's.
    }

    async fn restart(&mut self) {
        self.faults.restart();
    }
}

#[tokio::test]
async fn the_modbus_driver_passes_the_conformance_kit() {
    let mut face = ModbusFace::start().await;
    let report = conformance::run(&ModbusKind, &mut face, &KitOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let outcomes: Vec<(&str, Outcome)> = report.checks.clone();
    assert_eq!(
        outcomes,
        [
            ("connect", Outcome::Passed),
            ("discovery", Outcome::NotApplicable),
            ("loss and return", Outcome::Passed),
            ("hung device stalls nobody", Outcome::Passed),
            ("malformed input", Outcome::Passed),
            ("reconnect", Outcome::Passed),
        ]
    );
    assert!(
        report.bad_readings > 0,
        "the hung and garbled devices' reads are bad"
    );
}
