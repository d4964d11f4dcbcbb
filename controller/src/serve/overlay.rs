//! Serving HTTP over the mesh's overlay: the mesh's [`TcpListener`] wrapped in an
//! [`axum::serve::Listener`], so `axum::serve` runs hyper's HTTP/1.1 server over overlay TCP
//! streams unchanged. The controller serves its API there too (for a stock WireGuard client
//! configured by `vantage peer config`), and `vantage demo`'s origin serves its site.

use std::net::SocketAddrV6;

use vantage_mesh::{TcpListener, TcpStream};

/// The mesh's overlay TCP listener as an [`axum::serve::Listener`].
#[derive(Debug)]
pub struct MeshListener(pub TcpListener);

impl axum::serve::Listener for MeshListener {
    type Io = TcpStream;
    type Addr = SocketAddrV6;

    async fn accept(&mut self) -> (TcpStream, SocketAddrV6) {
        match self.0.accept().await {
            Ok(c) => c,
            Err(e) => {
                // the only failure is a node that has shut down: no connection will come again,
                // and the server ends through its graceful shutdown
                tracing::debug!(error = %e, "overlay listener closed");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddrV6> {
        Ok(self.0.local_addr())
    }
}
