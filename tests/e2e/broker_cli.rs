//! `fieldlink broker passwd` and a bad broker config, through the binary.

use std::io::Write;
use std::process::{Command, Stdio};

use fieldlink_broker::auth::{HashKind, PasswordHash};

fn passwd(kind: &str, user: &str, stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["broker", "passwd", "--kind", kind, user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn passwd_prints_a_hash_line_for_the_password_on_stdin() {
    for (kind, expected, password) in [
        ("sha256", HashKind::Sha256, "a-random-device-token-0001"),
        ("pbkdf2", HashKind::Pbkdf2, "chosen by a person"),
    ] {
        let out = passwd(kind, "dev-1", &format!("{password}\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let hash = line.trim().strip_prefix("dev-1:").expect("USER:HASH");
        assert!(!line.contains(password), "the password is never printed");
        let hash: PasswordHash = hash.parse().unwrap();
        assert_eq!(hash.kind(), expected);
        assert!(hash.verify(password.as_bytes()));
        assert!(!hash.verify(b"something else"));
    }
    // A fast hash needs a long random token.
    let out = passwd("sha256", "dev-1", "short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 20"));
}

#[test]
fn a_bad_broker_config_exits_2_naming_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_packet_size = 1\n[[tenants]]\nname = \"a b\"\n[[users]]\nusername = \"d\"\npassword_hash = \"secret\"\ntenant = \"x\"\nrole = \"device\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["broker", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "limits.max_packet_size",
        "tenants[0] (a b).name",
        "users[0] (d).password_hash",
        "users[0] (d).tenant",
    ] {
        assert!(err.contains(key), "missing {key} in {err}");
    }
    assert!(!err.contains("secret"), "{err}");
}

/// Every fieldlink process turns transparent huge pages off for itself
/// (see `disable_transparent_huge_pages` in src/main.rs); the kernel shows
/// it as `THP_enabled: 0` in the process's status.
#[test]
fn a_fieldlink_process_runs_without_transparent_huge_pages() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fieldlink"))
        .args(["broker", "passwd", "--kind", "sha256", "dev-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process waits for the password on stdin, so it is alive while
    // its status is read; main turns huge pages off before parsing flags.
    let status_path = format!("/proc/{}/status", child.id());
    let thp_line = |status: &str| {
        status
            .lines()
            .find(|line| line.starts_with("THP_enabled:"))
            .map(|line| line["THP_enabled:".len()..].trim().to_string())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        let status = std::fs::read_to_string(&status_path).unwrap();
        seen = thp_line(&status);
        if seen.as_deref() == Some("0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-random-device-token-0001\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        seen.as_deref(),
        Some("0"),
        "the kernel reports THP_enabled {seen:?} for a fieldlink process"
    );
}
