//! Fault injection for simulator faces: per device, switch it off, hang it
//! (connection kept, nothing answered) or make it send garbage; and restart
//! the whole face (every connection dropped). The driver conformance kit and
//! the demo's misbehaving devices use it.
//!
//! [`Faults`] is shared by a face's connections; [`FaultStream`] wraps one
//! connection and applies its device's fault on every read and write, so a
//! face gets the faults without knowing about them. A face whose server
//! owns its sockets (a library server that binds its own listener) sits
//! behind a [`FaultProxy`], which relays every connection through a
//! [`FaultStream`].

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What is wrong with a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Nothing: it works.
    #[default]
    None,
    /// Switched off: connections are closed and new ones dropped at once.
    Off,
    /// Hung: connections stay open, nothing is read or answered.
    Hung,
    /// Answers garbage: every byte written to the client is replaced.
    Garbage,
}

#[derive(Debug, Default)]
struct Inner {
    faults: Mutex<HashMap<u32, Fault>>,
    /// Pending reads, by stream, woken when a fault changes (one entry per
    /// open stream, replaced on every poll).
    wakers: Mutex<HashMap<u64, Waker>>,
    generation: AtomicU64,
    next_stream: AtomicU64,
}

/// The faults of a face's devices, by device index. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl Faults {
    /// Sets device `index`'s fault.
    pub fn set(&self, index: u32, fault: Fault) {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(index, fault);
        self.wake();
    }

    /// Device `index`'s fault.
    pub fn get(&self, index: u32) -> Fault {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&index)
            .copied()
            .unwrap_or_default()
    }

    /// Drops every connection opened before now (a server restart); new
    /// connections are served as usual.
    pub fn restart(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.wake();
    }

    /// How many restarts there have been: a face that keeps client
    /// connections (MQTT) reconnects all of them when it changes.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst)
    }

    fn wake(&self) {
        let wakers =
            std::mem::take(&mut *self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in wakers.into_values() {
            w.wake();
        }
    }

    fn park(&self, stream: u64, waker: &Waker) {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|p| p.into_inner());
        match wakers.get_mut(&stream) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            None => {
                wakers.insert(stream, waker.clone());
            }
        }
    }

    fn forget(&self, stream: u64) {
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&stream);
    }

    /// Wraps a connection of device `index`.
    pub fn wrap<S>(&self, index: u32, stream: S) -> FaultStream<S> {
        FaultStream {
            stream,
            index,
            id: self.inner.next_stream.fetch_add(1, Ordering::Relaxed),
            faults: self.clone(),
            generation: self.generation(),
        }
    }
}

/// A connection that obeys its device's fault.
#[derive(Debug)]
pub struct FaultStream<S> {
    stream: S,
    index: u32,
    id: u64,
    faults: Faults,
    generation: u64,
}

impl<S> Drop for FaultStream<S> {
    fn drop(&mut self) {
        self.faults.forget(self.id);
    }
}

impl<S> FaultStream<S> {
    /// `Err` when the connection must end (device off, face restarted).
    fn check(&self) -> io::Result<Fault> {
        if self.faults.generation() != self.generation {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "face restarted",
            ));
        }
        match self.faults.get(self.index) {
            Fault::Off => Err(io::Error::new(io::ErrorKind::ConnectionReset, "device off")),
            fault => Ok(fault),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FaultStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.check() {
            Err(e) => Poll::Ready(Err(e)),
            Ok(Fault::Hung) => {
                this.faults.park(this.id, cx.waker());
                // Re-check: the fault may have changed before we parked.
                match this.check() {
                    Ok(Fault::Hung) => Poll::Pending,
                    _ => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
            Ok(_) => {
                // A fault set while a read is pending must end it: park too.
                this.faults.park(this.id, cx.waker());
                Pin::new(&mut this.stream).poll_read(cx, buf)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FaultStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.check() {
            Err(e) => Poll::Ready(Err(e)),
            // A hung device answers nothing: what it would write waits (and
            // goes out intact if it recovers).
            Ok(Fault::Hung) => {
                this.faults.park(this.id, cx.waker());
                match this.check() {
                    Ok(Fault::Hung) => Poll::Pending,
                    _ => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
            Ok(Fault::Garbage) => {
                let garbage: Vec<u8> = buf.iter().map(|b| b ^ 0xA5).collect();
                Pin::new(&mut this.stream).poll_write(cx, &garbage)
            }
            Ok(_) => Pin::new(&mut this.stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A TCP relay in front of a server: every accepted connection is relayed
/// to the current target through a [`FaultStream`] of key `key`, so the
/// faults of `key` apply to it (off: refused; hung: nothing relayed;
/// garbage: answers corrupted; restart: dropped). The target can change
/// (a restarted server listens elsewhere).
#[derive(Debug)]
pub struct FaultProxy {
    target: watch::Sender<std::net::SocketAddr>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Relays connections accepted on `listener` to `target`.
    pub fn start(
        listener: TcpListener,
        target: std::net::SocketAddr,
        faults: Faults,
        key: u32,
    ) -> FaultProxy {
        let (tx, rx) = watch::channel(target);
        let task = tokio::spawn(relay_loop(listener, rx, faults, key));
        FaultProxy { target: tx, task }
    }

    /// Relays new connections to `target` from now on.
    pub fn retarget(&self, target: std::net::SocketAddr) {
        self.target.send_replace(target);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_loop(
    listener: TcpListener,
    target: watch::Receiver<std::net::SocketAddr>,
    faults: Faults,
    key: u32,
) {
    let mut relays = tokio::task::JoinSet::new();
    loop {
        let (inbound, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("proxy accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        while relays.try_join_next().is_some() {}
        if faults.get(key) == Fault::Off {
            continue; // dropped at once: switched off
        }
        let to = *target.borrow();
        let faults = faults.clone();
        relays.spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let mut inbound = faults.wrap(key, inbound);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn faults_apply_to_open_connections() {
        let faults = Faults::default();
        let (client, server) = tokio::io::duplex(64);
        let mut server = faults.wrap(7, server);
        let mut client = client;
        client.write_all(b"ab").await.unwrap();
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ab");

        faults.set(7, Fault::Garbage);
        server.write_all(&[0x00, 0xFF]).await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [0xA5, 0x5A]);

        // A hung read wakes up and fails when the device is switched off.
        faults.set(7, Fault::Hung);
        let reader = tokio::spawn(async move {
            let mut one = [0u8; 1];
            server.read(&mut one).await
        });
        client.write_all(b"x").await.unwrap();
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "a hung device reads nothing");
        faults.set(7, Fault::Off);
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);

        let (_c, s) = tokio::io::duplex(8);
        faults.set(7, Fault::None);
        let mut s = faults.wrap(7, s);
        faults.restart();
        let mut one = [0u8; 1];
        assert!(
            s.read(&mut one).await.is_err(),
            "connections from before a restart end"
        );
    }
}
