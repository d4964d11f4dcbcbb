//! What the driver needs from a network: datagrams and request/reply streams. One implementation
//! runs over the `vantage-mesh` overlay, one over plain UDP/TCP (the Serf comparison, debugging).

use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};

pub trait Transport: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The address others reach this node at (what goes into its alive messages).
    fn local_addr(&self) -> SocketAddr;
    /// Sends one datagram without waiting. A full send queue is `ErrorKind::WouldBlock`: the
    /// driver drops the datagram (gossip tolerates loss) rather than stall the core.
    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()>;
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    fn connect(&self, to: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

/// Plain UDP and TCP on the same port.
#[derive(Debug)]
pub struct PlainTransport {
    udp: tokio::net::UdpSocket,
    /// The same socket for sending: a non-blocking send says `WouldBlock` only when the kernel's
    /// buffer is full, whereas tokio's `try_send_to` also says so before its reactor has seen the
    /// socket writable.
    send: std::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl PlainTransport {
    /// Binds UDP and TCP on `addr` (port 0 picks one free for both).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let send = udp_clone(&udp)?;
        Ok(Self {
            udp,
            send,
            tcp,
            addr,
        })
    }
}

/// A second, non-blocking handle on `udp`'s socket.
fn udp_clone(udp: &tokio::net::UdpSocket) -> io::Result<std::net::UdpSocket> {
    let fd = std::os::fd::AsFd::as_fd(udp).try_clone_to_owned()?;
    let send = std::net::UdpSocket::from(fd);
    send.set_nonblocking(true)?;
    Ok(send)
}

impl Transport for PlainTransport {
    type Stream = tokio::net::TcpStream;

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        self.send.send_to(data, to).map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.udp.recv_from(buf).await
    }

    async fn connect(&self, to: SocketAddr) -> io::Result<Self::Stream> {
        let s = tokio::net::TcpStream::connect(to).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        self.tcp.accept().await
    }
}

/// The overlay of a `vantage-mesh` node: gossip never touches the underlay.
#[derive(Debug)]
pub struct MeshTransport {
    node: vantage_mesh::Node,
    udp: vantage_mesh::UdpSocket,
    tcp: vantage_mesh::TcpListener,
    addr: SocketAddr,
}

impl MeshTransport {
    pub async fn bind(
        node: vantage_mesh::Node,
        port: u16,
    ) -> Result<Self, vantage_mesh::MeshError> {
        let tcp = node.tcp_listen(port).await?;
        let port = tcp.local_addr().port();
        let udp = node.udp_bind(port).await?;
        let addr = SocketAddr::V6(SocketAddrV6::new(node.overlay_addr(), port, 0, 0));
        Ok(Self {
            node,
            udp,
            tcp,
            addr,
        })
    }
}

fn v6(a: SocketAddr) -> io::Result<SocketAddrV6> {
    match a {
        SocketAddr::V6(a) => Ok(a),
        SocketAddr::V4(a) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{a} is not an overlay address"),
        )),
    }
}

impl Transport for MeshTransport {
    type Stream = vantage_mesh::TcpStream;

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        // the mesh socket's send only waits while its queue is full: one poll either queues the
        // datagram or finds the queue full, and dropping the future then leaves nothing queued
        let send = std::pin::pin!(self.udp.send_to(data, v6(to)?));
        match send.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r.map(|_| ()),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self.udp.recv_from(buf).await?;
        Ok((n, SocketAddr::V6(from)))
    }

    async fn connect(&self, to: SocketAddr) -> io::Result<Self::Stream> {
        self.node
            .tcp_connect(v6(to)?)
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    }

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (s, from) = self.tcp.accept().await?;
        Ok((s, SocketAddr::V6(from)))
    }
}
