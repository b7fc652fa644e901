//! `GET /clients/{tenant}/{client_id}` on a shard's metrics server: an
//! EMQX-style lookup of one client in the shard's session table, for
//! tools that check a fleet against its manifest (`fieldlink bench
//! verify --mqtt-api`; the ingress keeps no retained status to read).
//!
//! - 200 `{"connected":true,"peer":"127.0.0.5:40112","connected_at_ms":...}`
//!   while the client holds a connection on this shard whose `Connected`
//!   the links were told (and not yet its `Disconnected`): connected as
//!   the gateway sees it. `peer` is `null` when the socket no longer
//!   tells; `connected_at_ms` is Unix milliseconds of its CONNECT;
//! - 404 `{"connected":false}` when it holds none here (it may be on
//!   another shard), or is being told to stop (taken over, silent,
//!   shutdown).
//!
//! Read-only: the table's lock is held for one lookup and one
//! `getpeername(2)`, nothing else.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{Kick, Shared};

/// What the lookup answers.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct ClientView {
    connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connected_at_ms: Option<i64>,
}

/// The lookup's routes, to merge into the shard's metrics server.
pub(super) fn routes(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/clients/{tenant}/{client_id}", axum::routing::get(lookup))
        .with_state(shared)
}

async fn lookup(
    State(shared): State<Arc<Shared>>,
    Path((tenant, client_id)): Path<(String, String)>,
) -> Response {
    let found = {
        let sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .find(&tenant, &client_id)
            .filter(|p| p.announced.load(Relaxed) && p.kicked() == Kick::None)
            // The fd is the connection's socket while it is in the table
            // (it leaves the table before its socket closes).
            .map(|p| (peer_of(p.fd), p.info.time_unix_nano / 1_000_000))
    };
    match found {
        Some((peer, at_ms)) => Json(ClientView {
            connected: true,
            peer: Some(peer.map(|a| a.to_string())),
            connected_at_ms: Some(at_ms),
        })
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(ClientView {
                connected: false,
                peer: None,
                connected_at_ms: None,
            }),
        )
            .into_response(),
    }
}

/// The remote address of socket `fd`, if it still has one.
fn peer_of(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is a valid value of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).ok()?;
    // SAFETY: getpeername(2) writes at most `len` bytes into `storage`,
    // which is that large; an fd that is not a socket only makes it fail.
    let rc = unsafe {
        libc::getpeername(
            fd,
            (&raw mut storage).cast::<libc::sockaddr>(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { *(&raw const storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { *(&raw const storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_peer_of_a_socket_is_its_remote_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert_eq!(peer_of(server.as_raw_fd()), client.local_addr().ok());
        // Not a connected socket: no peer.
        assert_eq!(peer_of(listener.as_raw_fd()), None);
    }
}
