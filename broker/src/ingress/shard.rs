//! One shard's listener: every shard process binds the same address with
//! `SO_REUSEPORT`, and the kernel spreads new connections over them by
//! hashing each connection's addresses. A shard that exits loses only its
//! own connections; their clients reconnect to the others (or to it,
//! restarted).

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::BrokerError;

/// Connections the kernel queues per shard before they are accepted
/// (capped by `net.core.somaxconn`): a fleet connecting at 20 000/s needs
/// more than tokio's default of 1024.
pub const BACKLOG: u32 = 8192;

/// Binds `addr` so that other processes may bind it too.
///
/// # Errors
/// `BrokerError::Listen` naming the address.
pub fn bind_shared(addr: SocketAddr) -> Result<TcpListener, BrokerError> {
    crate::bind_listener(addr, BACKLOG, true)
}

/// The `/metrics` address of shard `index` when shards serve from `base`
/// on consecutive ports.
pub fn metrics_addr(base: SocketAddr, index: usize) -> Option<SocketAddr> {
    let port = u16::try_from(usize::from(base.port()) + index).ok()?;
    Some(SocketAddr::new(base.ip(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_shards_share_one_port() {
        let first = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_shared(addr).expect("a second shard binds the same port");
        assert_eq!(second.local_addr().unwrap(), addr);
    }
}
