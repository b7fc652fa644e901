//! Interop peers nobody here wrote: found on the machine, or the test says
//! loudly why it cannot run — and with `CI=true` that is a failure.

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

/// The Python interpreter with pymodbus (`scripts/test` installs it).
pub fn python_with_pymodbus() -> Option<PathBuf> {
    python_with("pymodbus")
}

/// The Python interpreter with asyncua (`scripts/test` installs it).
pub fn python_with_asyncua() -> Option<PathBuf> {
    python_with("asyncua")
}

fn python_with(module: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("FIELDLINK_PYTHON").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/peers/venv/bin/python"
        ))),
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
        module,
        "run scripts/test, which installs it in target/peers/venv",
    )
}

/// The `mbpoll` command (Debian package mbpoll).
pub fn mbpoll() -> Option<PathBuf> {
    let found = std::process::Command::new("mbpoll")
        .arg("-V")
        .output()
        .is_ok();
    if found {
        Some(PathBuf::from("mbpoll"))
    } else {
        missing("mbpoll", "apt-get install mbpoll (scripts/test does)")
    }
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
