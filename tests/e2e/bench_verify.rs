//! `fieldlink bench verify` against a registry that counted a real fleet
//! (called from the fleet tests once the counts are in): it passes on the
//! fleet's own manifest and fails, naming what differs, on manifests with
//! a planted difference — a device the registry lacks, a device the
//! registry has and the manifest does not, a wrong class, and a device
//! that is not where the manifest says (caught by the audit, which asks
//! the devices themselves).

use std::path::Path;
use std::process::Output;

use tokio::process::Command;

async fn verify(manifest: &Path, registry_http: &str, wait: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["bench", "verify", "--manifest"])
        .arg(manifest)
        .args(["--registry", registry_http, "--wait", wait])
        .env("FIELDLINK_LOG", "warn")
        .output()
        .await
        .expect("run fieldlink bench verify")
}

fn text(o: &Output) -> String {
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
