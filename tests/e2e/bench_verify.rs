//! `fieldlink bench verify` against a registry that counted a real fleet
//! (called from the fleet tests once the counts are in): it passes on the
//! fleet's own manifest and fails, naming what differs, on manifests with
//! a planted difference — a device the registry lacks, a device the
//! registry has and the manifest does not, a wrong class, and a device
//! that is not where the manifest says (caught by the audit, which asks
//! the devices themselves). For OPC UA, MQTT JSON and Sparkplug fleets the
//! audit probes each sampled device through its own protocol, and a row
//! pointing at another device, or at a device that is not there, fails
//! naming the row's device.

use std::path::Path;
use std::process::Output;

use tokio::process::Command;

async fn verify(manifest: &Path, registry_http: &str, wait: &str) -> Output {
    verify_with(manifest, registry_http, wait, &[]).await
}

/// `fieldlink bench verify` with `extra` flags.
pub async fn verify_with(
    manifest: &Path,
    registry_http: &str,
    wait: &str,
    extra: &[&str],
) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["bench", "verify", "--manifest"])
        .arg(manifest)
        .args(["--registry", registry_http, "--wait", wait])
        .args(extra)
        .env("FIELDLINK_LOG", "warn")
        .output()
        .await
        .expect("run fieldlink bench verify")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the checks; `manifest` is the fleet's, `dir` a scratch directory.
pub async fn assert_verify_equals_and_catches_planted_differences(
    manifest: &Path,
    registry_http: &str,
    dir: &Path,
) {
    let ok = verify(manifest, registry_http, "10s").await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("equals"), "{}", text(&ok));
    assert!(
        text(&ok).contains("audit: 20 of 20 sampled devices answered through their own protocol as the manifest says; 0 skipped"),
        "{}",
        text(&ok)
    );

    let original = std::fs::read_to_string(manifest).expect("read the manifest");
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let header = lines.remove(0);
    let first = lines[0].clone();
    let first_id = first.split(',').next().expect("an id").to_owned();
    let plant = async |name: &str, rows: Vec<String>| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{header}\n{}\n", rows.join("\n"))).expect("write");
        // A planted difference never settles: no waiting.
        let out = verify(&path, registry_http, "0s").await;
        assert!(!out.status.success(), "{name} must fail:\n{}", text(&out));
        text(&out)
    };

    // A manifest device the registry never saw.
    let mut ghost = lines.clone();
    ghost.push(first.replacen(&first_id, "ghost-device-1", 1));
    let out = plant("missing.csv", ghost).await;
    assert!(
        out.contains("1 manifest device(s) missing from the registry:\n  ghost-device-1"),
        "{out}"
    );

    // A device the registry has and the manifest does not.
    let out = plant("extra.csv", lines[1..].to_vec()).await;
    assert!(
        out.contains(&format!(
            "1 device(s) in the registry and not in the manifest:\n  {first_id}"
        )),
        "{out}"
    );

    // The wrong class (and so the wrong counts).
    let mut fields: Vec<String> = first.split(',').map(str::to_owned).collect();
    let (class, category) = if fields[1] == "other" {
        ("operating", "power")
    } else {
        ("other", "safety")
    };
    let registered_class = fields[1].clone();
    fields[1] = class.to_owned();
    fields[2] = category.to_owned();
    let mut wrong = lines.clone();
    wrong[0] = fields.join(",");
    let out = plant("wrong-class.csv", wrong).await;
    assert!(
        out.contains(&format!(
            "{first_id}: class is `{class}` in the manifest, `{registered_class}` in the registry"
        )),
        "{out}"
    );
    assert!(out.contains("count(s) that differ"), "{out}");

    // The registry agrees, but the device is not where the manifest says:
    // only the audit, asking the device itself, can tell.
    let mut fields: Vec<String> = first.split(',').map(str::to_owned).collect();
    fields[8] = "127.0.0.1:1".to_owned();
    let mut moved = lines.clone();
    moved[0] = fields.join(",");
    let out = plant("moved.csv", moved).await;
    assert!(out.contains("equals"), "the registry part agrees: {out}");
    assert!(
        out.contains(&format!("{first_id} at `127.0.0.1:1`: cannot connect")),
        "{out}"
    );
}

/// The endpoint of a manifest line (its last field: endpoints have no
/// commas).
fn endpoint(line: &str) -> &str {
    line.rsplit_once(',').expect("a manifest line").1
}

fn with_endpoint(line: &str, endpoint: &str) -> String {
    format!(
        "{},{endpoint}",
        line.rsplit_once(',').expect("a manifest line").0
    )
}

/// The endpoint `e` naming device `ghost` where it names its device.
fn ghost_endpoint(e: &str, ghost: &str) -> String {
    match e.rsplit_once("s=") {
        Some((server, _)) if e.starts_with("opc.tcp://") => format!("{server}s={ghost}"),
        _ => format!("{}/{ghost}", e.rsplit_once('/').expect("a path").0),
    }
}

/// For a fleet of `protocol` (OPC UA, MQTT JSON or Sparkplug) that the
/// registry counted: verify passes with every sampled device answering
/// through its own protocol, and the audit fails, naming the row's device,
/// when a row points at a device that is not there, and (OPC UA and MQTT
/// JSON, whose devices say who they are) at another device. The planted
/// manifests are written beside the fleet's, where its broker users are.
pub async fn assert_audit_probes_protocol(manifest: &Path, registry_http: &str, protocol: &str) {
    let dir = manifest.parent().expect("the fleet's directory");
    let original = std::fs::read_to_string(manifest).expect("read the manifest");
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let header = lines.remove(0);
    let n = lines.len();
    assert!(lines.iter().all(|l| l.contains(&format!(",{protocol},"))));
    let flags = ["--audit", "1000", "--probe-timeout", "3s"];

    let ok = verify_with(manifest, registry_http, "10s", &flags).await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains(&format!(
            "audit: {n} of {n} sampled devices answered through their own protocol as the manifest says; 0 skipped (no probe for their protocol) [{protocol} {n}/{n}]"
        )),
        "{}",
        text(&ok)
    );

    let first_id = lines[0].split(',').next().expect("an id").to_owned();
    let plant = async |name: &str, rows: Vec<String>| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{header}\n{}\n", rows.join("\n"))).expect("write");
        let out = verify_with(&path, registry_http, "0s", &flags).await;
        assert!(!out.status.success(), "{name} must fail:\n{}", text(&out));
        let out = text(&out);
        assert!(out.contains("equals"), "the registry part agrees: {out}");
        assert!(
            out.contains(&format!("1 sampled device(s) of {}", path.display())),
            "only the planted row fails: {out}"
        );
        out
    };

    // The device the row names is not there.
    let ghost = ghost_endpoint(endpoint(&lines[0]), "ghost-device-1");
    let mut rows = lines.clone();
    rows[0] = with_endpoint(&lines[0], &ghost);
    let out = plant(&format!("{protocol}-ghost.csv"), rows).await;
    let why = match protocol {
        "opc-ua" => "BadNodeIdUnknown",
        "mqtt-json" => "no retained status on",
        _ => "no DBIRTH or DDATA from",
    };
    assert!(
        out.contains(&format!("{first_id} at `{ghost}`: ")) && out.contains(why),
        "{out}"
    );

    if protocol == "sparkplug-b" {
        // Sparkplug data does not say who sent it beyond its topic: a
        // device at an edge node that does not hold it is not heard.
        let e = endpoint(&lines[0]);
        let (front, device) = e.rsplit_once('/').expect("a device");
        let (group, _) = front.rsplit_once('/').expect("an edge");
        let moved = format!("{group}/sim-edge-nowhere/{device}");
        let mut rows = lines.clone();
        rows[0] = with_endpoint(&lines[0], &moved);
        let out = plant("sparkplug-moved.csv", rows).await;
        assert!(
            out.contains(&format!("{first_id} at `{moved}`: no DBIRTH or DDATA from")),
            "{out}"
        );
        return;
    }
    // The row points at another device: it answers with its own identity.
    let other = endpoint(&lines[1]).to_owned();
    let mut rows = lines.clone();
    rows[0] = with_endpoint(&lines[0], &other);
    let out = plant(&format!("{protocol}-borrowed.csv"), rows).await;
    assert!(
        out.contains(&format!("{first_id} at `{other}`: it says ")),
        "{out}"
    );
}
