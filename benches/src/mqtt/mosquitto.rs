//! The peer: Debian's `mosquitto`, found on the machine (a missing one is
//! reported, never skipped in silence), with files written for the run:
//!
//! - a password file of the same users with the same passwords as the
//!   fieldlink broker's (`mosquitto_passwd -H sha512 -U`: `$6$`, one salted
//!   SHA-512 per CONNECT, as cheap as the fieldlink broker's `$sha256$`
//!   device hashes), and no anonymous access;
//! - an ACL file with the fieldlink broker's default tenant rules for the
//!   bench's one tenant: a device reads and writes only
//!   `{tenant}/{its user name}/#`, the gateway's service user the whole
//!   tenant, the bench's observer only `$SYS/#`;
//! - `mosquitto.conf`: one loopback listener, no persistence, `$SYS` every
//!   second, `TCP_NODELAY` (the fieldlink broker sets it too).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::Command;

/// Where Debian puts the broker, in case `/usr/sbin` is not on `PATH`.
const DEBIAN_MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Where Debian puts the password tool.
const DEBIAN_PASSWD: &str = "/usr/bin/mosquitto_passwd";

/// The mosquitto programs the peer needs.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    /// The broker.
    pub(crate) mosquitto: PathBuf,
    /// `mosquitto_passwd`.
    pub(crate) passwd: PathBuf,
    /// `mosquitto version 2.0.11`, as it says.
    pub(crate) version: String,
}

/// Finds mosquitto (`program`, else `mosquitto` on `PATH`, else
/// `/usr/sbin/mosquitto`) and `mosquitto_passwd`.
///
/// # Errors
/// Why the peer cannot run, for the report.
pub(crate) async fn find(program: Option<&Path>) -> Result<Programs, String> {
    let candidates: Vec<PathBuf> = match program {
        Some(p) => vec![p.to_owned()],
        None => vec![PathBuf::from("mosquitto"), PathBuf::from(DEBIAN_MOSQUITTO)],
    };
    let mut tried = Vec::new();
    let mut found = None;
    for candidate in candidates {
        match version(&candidate).await {
            Ok(v) => {
                found = Some((candidate, v));
                break;
            }
            Err(why) => tried.push(why),
        }
    }
    let Some((mosquitto, version)) = found else {
        return Err(format!(
            "mosquitto not found ({}); apt-get install mosquitto, or pass --mosquitto PATH",
            tried.join("; ")
        ));
    };
    let mut passwd_candidates = vec![PathBuf::from("mosquitto_passwd")];
    if let Some(dir) = mosquitto.parent().filter(|d| !d.as_os_str().is_empty()) {
        passwd_candidates.push(dir.join("mosquitto_passwd"));
    }
    passwd_candidates.push(PathBuf::from(DEBIAN_PASSWD));
    for passwd in passwd_candidates {
        let ran = Command::new(&passwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if ran.is_ok() {
            return Ok(Programs {
                mosquitto,
                passwd,
                version,
            });
        }
    }
    Err(format!(
        "mosquitto_passwd not found beside {} (it comes with the mosquitto package)",
        mosquitto.display()
    ))
}

/// `mosquitto -h`'s first line, when it says it is mosquitto.
async fn version(program: &Path) -> Result<String, String> {
    let out = Command::new(program)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{}: {e}", program.display()))?;
    // `-h` exits non-zero; what it prints tells.
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("mosquitto version"));
    line.map(str::to_owned).ok_or_else(|| {
        format!(
            "{} does not say `mosquitto version` on -h",
            program.display()
        )
    })
}

/// A broker user for mosquitto's files.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// User name (and client id).
    pub(crate) username: String,
    /// Password.
    pub(crate) password: String,
    /// What it may do.
    pub(crate) access: Access,
}

/// A user's ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// `{tenant}/{user name}/#` only.
    Device,
    /// The whole tenant.
    Service,
    /// `$SYS/#`, read only.
    Observer,
    /// `$SYS/#` and every other topic, read only: the consumer of what the
    /// devices publish.
    Consumer,
    /// The login a lean fleet's devices of this tenant share: the tenant's
    /// topics (mosquitto's patterns are for every user, so the fieldlink
    /// broker's `%t/%c/#` for just these users is written as the tenant).
    Fleet(String),
}

/// Writes the password file (hashed by `mosquitto_passwd`), the ACL file
/// and `mosquitto.conf` for a listener on `listen` into `dir`; returns the
/// config's path.
///
/// # Errors
/// When a file cannot be written or `mosquitto_passwd` fails.
pub(crate) async fn write_files(
    programs: &Programs,
    dir: &Path,
    listen: SocketAddr,
    tenant: &str,
    users: &[User],
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let passwords = dir.join("mosquitto.passwd");
    let mut plain = String::new();
    for u in users {
        if u.username.contains(':') || u.password.contains(['\n', '\r']) {
            bail!("user `{}` cannot be written to a password file", u.username);
        }
        plain.push_str(&format!("{}:{}\n", u.username, u.password));
    }
    write(&passwords, &plain)?;
    let out = Command::new(&programs.passwd)
        .args(["-H", "sha512", "-U"])
        .arg(&passwords)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", programs.passwd.display()))?;
    if !out.status.success() {
        bail!(
            "{} -H sha512 -U failed ({}): {}",
            programs.passwd.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let acl = dir.join("mosquitto.acl");
    write(&acl, &acl_text(tenant, users))?;
    let config = dir.join("mosquitto.conf");
    write(
        &config,
        &config_text(listen, &passwords, &acl, effective_uid() == Some(0)),
    )?;
    Ok(config)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The ACL file: pattern lines first (they apply to every user), then one
/// block per user that is not a device.
fn acl_text(tenant: &str, users: &[User]) -> String {
    let mut text = format!(
        "# Devices: their own topics (the fieldlink broker's default device ACL, MQTT JSON part).\n\
         pattern readwrite {tenant}/%u/#\n"
    );
    for u in users {
        match &u.access {
            Access::Device => {}
            Access::Service => {
                text.push_str(&format!(
                    "user {}\ntopic readwrite {tenant}/#\n",
                    u.username
                ));
            }
            Access::Observer => {
                text.push_str(&format!("user {}\ntopic read $SYS/#\n", u.username));
            }
            Access::Consumer => {
                text.push_str(&format!(
                    "user {}\ntopic read $SYS/#\ntopic read #\n",
                    u.username
                ));
            }
            Access::Fleet(of) => {
                text.push_str(&format!("user {}\ntopic readwrite {of}/#\n", u.username));
            }
        }
    }
    text
}

/// `mosquitto.conf`. As root, mosquitto drops to user `mosquitto` before it
/// reads the password and ACL files, which then cannot be read in the
/// bench's private temporary directory: `as_root` keeps it root.
fn config_text(listen: SocketAddr, passwords: &Path, acl: &Path, as_root: bool) -> String {
    let mut text = format!(
        "listener {} {}\n\
         allow_anonymous false\n\
         password_file {}\n\
         acl_file {}\n\
         persistence false\n\
         max_connections -1\n\
         sys_interval 1\n\
         set_tcp_nodelay true\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n",
        listen.port(),
        listen.ip(),
        passwords.display(),
        acl.display()
    );
    if as_root {
        text.push_str("user root\n");
    }
    text
}

/// This process's effective user id (`Uid:` of `/proc/self/status`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<User> {
        vec![
            User {
                username: "sim-cnc-000001".into(),
                password: "p1".into(),
                access: Access::Device,
            },
            User {
                username: "sim-gw-t".into(),
                password: "p2".into(),
                access: Access::Service,
            },
            User {
                username: "bench-observer".into(),
                password: "p3".into(),
                access: Access::Observer,
            },
        ]
    }

    #[test]
    fn the_acl_mirrors_the_tenant_rules() {
        let text = acl_text("t", &users());
        assert!(text.contains("pattern readwrite t/%u/#\n"));
        assert!(text.contains("user sim-gw-t\ntopic readwrite t/#\n"));
        assert!(text.contains("user bench-observer\ntopic read $SYS/#\n"));
        assert!(!text.contains("user sim-cnc-000001"));
    }

    #[test]
    fn the_config_listens_on_loopback_with_auth() {
        let text = config_text(
            "127.0.0.1:18830".parse().unwrap(),
            Path::new("/d/p"),
            Path::new("/d/a"),
            true,
        );
        assert!(text.starts_with("listener 18830 127.0.0.1\n"), "{text}");
        assert!(text.contains("allow_anonymous false\npassword_file /d/p\nacl_file /d/a\n"));
        assert!(text.ends_with("user root\n"));
        assert!(effective_uid().is_some());
    }
}
