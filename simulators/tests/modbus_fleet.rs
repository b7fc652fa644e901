//! A small fleet served in-process, read over Modbus TCP with tokio-modbus's
//! client.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use fieldlink_model::Category;
use fieldlink_sim::catalog::{Area, DataType, SERIAL_BASE};
use fieldlink_sim::signal::decode;
use fieldlink_sim::{
    BoundFleet, CATALOG, Clock, FleetPlan, FleetSpec, MANIFEST_HEADER, ServeOptions,
};
use tokio::sync::oneshot;
use tokio_modbus::client::{Context, Reader, Writer, tcp};
use tokio_modbus::{ExceptionCode, Slave};

const DEVICES: u32 = 24;
const T0: i64 = 1_780_000_000_000;

fn plan(seed: u64) -> FleetPlan {
    FleetPlan::new(FleetSpec {
        devices: DEVICES,
        seed,
        port: 0,
        ..FleetSpec::default()
    })
    .expect("plan")
}

/// Serves `plan` in a task; returns each device's address and the stop
/// switch (dropping it stops the fleet).
async fn start(plan: &FleetPlan, clock: Clock) -> (Vec<SocketAddr>, oneshot::Sender<()>) {
    let bound = BoundFleet::bind(
        plan,
        0..plan.len(),
        ServeOptions {
            clock,
            ..ServeOptions::default()
        },
    )
    .await
    .expect("bind");
    let addrs = (0..plan.len())
        .map(|i| bound.local_addr(i).expect("address"))
        .collect();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(bound.serve_until(async {
        let _ = stopped.await;
    }));
    (addrs, stop)
}

async fn connect(addr: SocketAddr, unit: u8) -> Context {
    tcp::connect_slave(addr, Slave(unit))
        .await
        .expect("connect")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn string_words(text: &str, registers: usize) -> Vec<u16> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(registers * 2, 0);
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

#[tokio::test]
async fn identification_registers_read_exactly() {
    let plan = plan(11);
    let (addrs, _stop) = start(&plan, Clock::System).await;
    for d in plan.devices() {
        let ty = d.device_type;
        // Unit 1, and the TCP conventions 0 and 255, answer the same.
        for unit in [1, 0, 255] {
            let mut ctx = connect(addrs[d.index as usize], unit).await;
            let words = ctx
                .read_holding_registers(0, 16)
                .await
                .expect("transport")
                .expect("no exception");
            let serial = SERIAL_BASE + d.index;
            let mut expected = vec![
                ty.code,
                1,
                (serial >> 16) as u16,
                serial as u16,
                ty.firmware,
                ty.class().index() as u16,
                ty.category.index() as u16,
                2016 + (d.index % 9) as u16,
            ];
            expected.extend(string_words(ty.model, 8));
            assert_eq!(words, expected, "{} unit {unit}", d.id());
        }
    }
}

#[tokio::test]
async fn registers_equal_the_pure_function() {
    let plan = plan(12);
    let (addrs, _stop) = start(&plan, Clock::Fixed(T0)).await;
    for d in plan.devices() {
        let sim = plan.sim_device(d.index).expect("device");
        let mut ctx = connect(addrs[d.index as usize], 1).await;
        for (i, tag) in d.device_type.all_tags().enumerate() {
            let span = tag.span();
            let expected = sim.words(i, T0);
            let got: Vec<u16> = match tag.area {
                Area::InputRegister => ctx.read_input_registers(tag.address, span).await,
                Area::HoldingRegister => ctx.read_holding_registers(tag.address, span).await,
                Area::Coil => ctx
                    .read_coils(tag.address, 1)
                    .await
                    .map(|r| r.map(|b| vec![u16::from(b[0])])),
                Area::DiscreteInput => ctx
                    .read_discrete_inputs(tag.address, 1)
                    .await
                    .map(|r| r.map(|b| vec![u16::from(b[0])])),
            }
            .expect("transport")
            .expect("no exception");
            assert_eq!(got, expected.as_slice(), "{}.{}", d.id(), tag.name);
        }
    }
}

#[tokio::test]
async fn live_values_track_the_pure_function() {
    let plan = plan(13);
    let (addrs, _stop) = start(&plan, Clock::System).await;
    let mut checked = 0;
    for d in plan.devices() {
        let sim = plan.sim_device(d.index).expect("device");
        let mut ctx = connect(addrs[d.index as usize], 1).await;
        for (i, tag) in d.device_type.all_tags().enumerate() {
            if tag.area != Area::InputRegister || tag.data_type == DataType::String {
                continue;
            }
            let before = now_ms();
            let words = ctx
                .read_input_registers(tag.address, tag.span())
                .await
                .expect("transport")
                .expect("no exception");
            let after = now_ms();
            let got = decode(tag, &words).expect("decode");
            let (a, b) = (sim.value(i, before), sim.value(i, after));
            // The server read its clock between `before` and `after`: the
            // value is that of one end, give or take the smooth part's
            // movement in those milliseconds.
            let tolerance = 0.01 * got.abs().max(1.0) + 2.0 * tag.scale;
            assert!(
                (got - a).abs() <= tolerance || (got - b).abs() <= tolerance,
                "{}.{}: read {got}, pure function {a} .. {b}",
                d.id(),
                tag.name
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

#[tokio::test]
async fn exceptions_for_unmapped_addresses_units_and_read_only_registers() {
    let plan = plan(14);
    let (addrs, _stop) = start(&plan, Clock::System).await;
    let mut ctx = connect(addrs[0], 1).await;
    assert_eq!(
        ctx.read_holding_registers(100, 1).await.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_input_registers(60_000, 4)
            .await
            .expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_holding_registers(0, 17).await.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.write_single_register(0, 1).await.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // A setpoint write is stored and read back.
    assert_eq!(
        ctx.write_single_register(200, 123)
            .await
            .expect("transport"),
        Ok(())
    );
    assert_eq!(
        ctx.read_holding_registers(200, 1).await.expect("transport"),
        Ok(vec![123])
    );
    let mut other_unit = connect(addrs[0], 7).await;
    assert_eq!(
        other_unit
            .read_holding_registers(0, 1)
            .await
            .expect("transport"),
        Err(ExceptionCode::GatewayTargetDevice)
    );
}

#[tokio::test]
async fn manifest_covers_every_category_and_is_deterministic() {
    let n = CATALOG.len() as u32 + 3;
    let spec = FleetSpec {
        devices: n,
        seed: 21,
        ..FleetSpec::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let files = FleetPlan::new(spec.clone())
        .expect("plan")
        .write_files(dir.path(), "http://127.0.0.1:7600")
        .expect("write");
    let text = std::fs::read_to_string(&files.manifest).expect("manifest");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(MANIFEST_HEADER));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), n as usize);
    let categories: HashSet<&str> = rows
        .iter()
        .map(|r| r.split(',').nth(2).expect("category"))
        .collect();
    assert_eq!(categories.len(), Category::ALL.len());
    for r in &rows {
        let endpoint = r.rsplit(',').next().expect("endpoint");
        let addr: SocketAddr = endpoint.parse().expect("endpoint parses");
        assert_eq!(addr.port(), 5020);
    }
    // Same seed, same rows.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let files2 = FleetPlan::new(spec)
        .expect("plan")
        .write_files(dir2.path(), "http://127.0.0.1:7600")
        .expect("write");
    assert_eq!(
        std::fs::read_to_string(files2.manifest).expect("manifest"),
        text
    );
}
