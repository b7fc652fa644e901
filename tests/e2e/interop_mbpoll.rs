//! mbpoll, a Modbus client nobody here wrote, reads a simulated device and
//! gets the values the catalog defines.

use std::time::Duration;

use fieldlink_sim::{FleetPlan, FleetSpec, RunOptions, RunningFleet};

use crate::support::peers::{free_port, mbpoll};

/// Holding registers 0.. as mbpoll prints them (`[1]: \t1001`).
fn parse(output: &str) -> Vec<u16> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix('['))
        .filter_map(|l| l.split_once("]:"))
        .filter_map(|(_, v)| v.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn mbpoll_reads_the_identification_block_of_a_simulated_device() {
    let Some(mbpoll) = mbpoll() else { return };
    let port = free_port();
    let plan = FleetPlan::new(FleetSpec {
        devices: 3,
        port,
        interval: Duration::from_secs(1),
        ..FleetSpec::default()
    })
    .unwrap();
    let fleet = RunningFleet::start(&plan, RunOptions::default())
        .await
        .unwrap();
    let device = plan.device(2).unwrap();
    let endpoint = device.endpoint;
    let output = tokio::process::Command::new(mbpoll)
        .args([
            "-m", "tcp", "-a", "1", "-t", "4", "-r", "1", "-c", "8", "-1", "-p",
        ])
        .arg(port.to_string())
        .arg(endpoint.ip().to_string())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let words = parse(&text);
    let serial = device.serial();
    assert_eq!(
        words,
        [
            device.device_type.code,
            1,
            (serial >> 16) as u16,
            serial as u16,
            device.device_type.firmware,
            device.device_type.category.class().index() as u16,
            device.device_type.category.index() as u16,
            words[7],
        ],
        "{text}"
    );
    assert!((2016..=2024).contains(&words[7]), "year {}", words[7]);
    // An address with no tag is refused, as the catalog says.
    let refused = tokio::process::Command::new("mbpoll")
        .args([
            "-m", "tcp", "-a", "1", "-t", "4", "-r", "60001", "-c", "1", "-1", "-p",
        ])
        .arg(port.to_string())
        .arg(endpoint.ip().to_string())
        .output()
        .await
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(all.to_lowercase().contains("illegal data address"), "{all}");
    fleet.stop().await;
}
