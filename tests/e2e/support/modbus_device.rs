//! A minimal Modbus TCP device for tests: fixed holding registers, an
//! exception for anything else.

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

#[derive(Clone)]
struct Registers(Arc<Vec<u16>>);

impl tokio_modbus::server::Service for Registers {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        ready(match req {
            Request::ReadHoldingRegisters(start, count) => {
                let (start, end) = (usize::from(start), usize::from(start) + usize::from(count));
                match self.0.get(start..end) {
                    Some(words) => Ok(Response::ReadHoldingRegisters(words.to_vec())),
                    None => Err(ExceptionCode::IllegalDataAddress),
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// Serves `registers` as holding registers on a free loopback port until
/// the returned handle is dropped or aborted.
pub async fn serve(registers: Vec<u16>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind modbus");
    let addr = listener.local_addr().expect("addr");
    let registers = Registers(Arc::new(registers));
    let task = tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = |stream, peer| {
            let registers = registers.clone();
            async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(registers.clone()))) }
        };
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    (addr, task)
}
