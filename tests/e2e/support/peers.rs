//! Interop peers nobody here wrote: found on the machine, or the test says
//! loudly why it cannot run — and with `CI=true` that is a failure.
//!
//! Python peers live in two venvs that `scripts/test` makes: `target/peers/venv`
//! (pymodbus, paho-mqtt 2, asyncua) and `target/peers/venv-sparkplug`
//! (pysparkplug, which needs paho-mqtt 1). `FIELDLINK_PYTHON` and
//! `FIELDLINK_PYTHON_SPARKPLUG` override them.

use std::path::PathBuf;

/// Whether missing peers must fail the run.
fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn missing(what: &str, how: &str) -> Option<PathBuf> {
    assert!(
        !required(),
        "interop peer {what} is missing (CI=true): {how}"
    );
    eprintln!("SKIPPED (peer missing): {what}; {how}");
    None
}

/// The Python interpreter with pymodbus.
pub fn python_with_pymodbus() -> Option<PathBuf> {
    python_with("pymodbus", "pymodbus", "FIELDLINK_PYTHON", "venv")
}

/// The Python interpreter with asyncua.
pub fn python_with_asyncua() -> Option<PathBuf> {
    python_with("asyncua", "asyncua", "FIELDLINK_PYTHON", "venv")
}

/// The Python interpreter with paho-mqtt 2.
pub fn python_with_paho() -> Option<PathBuf> {
    python_with("paho.mqtt.client", "paho-mqtt", "FIELDLINK_PYTHON", "venv")
}

/// The Python interpreter with pysparkplug (and the paho-mqtt 1 it needs).
pub fn python_with_pysparkplug() -> Option<PathBuf> {
    python_with(
        "pysparkplug",
        "pysparkplug",
        "FIELDLINK_PYTHON_SPARKPLUG",
        "venv-sparkplug",
    )
}

fn python_with(module: &str, package: &str, env: &str, venv: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os(env).map(PathBuf::from),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/peers")
                .join(venv)
                .join("bin/python"),
        ),
    ];
    for python in candidates.into_iter().flatten() {
        let ok = std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(python);
        }
    }
    missing(
        package,
        &format!("run scripts/test, which installs it in target/peers/{venv}"),
    )
}

/// A command of a Debian package, found by running it with `args`.
fn command(name: &str, args: &[&str], package: &str) -> Option<PathBuf> {
    let found = std::process::Command::new(name)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if found {
        Some(PathBuf::from(name))
    } else {
        missing(
            name,
            &format!("apt-get install {package} (scripts/test does)"),
        )
    }
}

/// The `mosquitto` broker (Debian package mosquitto).
pub fn mosquitto() -> Option<PathBuf> {
    command("mosquitto", &["-h"], "mosquitto")
}

/// `mosquitto_pub` (Debian package mosquitto-clients).
pub fn mosquitto_pub() -> Option<PathBuf> {
    command("mosquitto_pub", &["--help"], "mosquitto-clients")
}

/// `mosquitto_sub` (Debian package mosquitto-clients).
pub fn mosquitto_sub() -> Option<PathBuf> {
    command("mosquitto_sub", &["--help"], "mosquitto-clients")
}

/// `mosquitto_passwd` (Debian package mosquitto).
pub fn mosquitto_passwd() -> Option<PathBuf> {
    command("mosquitto_passwd", &["-h"], "mosquitto")
}

/// The `mbpoll` command (Debian package mbpoll).
pub fn mbpoll() -> Option<PathBuf> {
    command("mbpoll", &["-V"], "mbpoll")
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The first of `n` consecutive loopback TCP ports free right now (all
/// bound at once, then released), for a command that listens on a base
/// port and the ones after it. Taken below the kernel's ephemeral range
/// (32768 and up), so that no test's outgoing connection takes one of them
/// in the meantime, and from a base that differs between processes and
/// moves on with every call within one.
pub fn free_port_block(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..1000 {
        let step = NEXT.fetch_add(n.max(1), Ordering::Relaxed);
        let base = LOW + (seed.wrapping_add(step) % (SPAN - n));
        let held: Result<Vec<_>, _> = (base..base + n)
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no {n} consecutive free ports in {LOW}..{}", LOW + SPAN);
}
