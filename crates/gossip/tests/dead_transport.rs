//! A gossip node whose mesh node has shut down must stop reading, not spin: mesh sockets answer
//! every call at once with `NotConnected` after shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vantage_gossip::transport::{MeshTransport, Transport};
use vantage_gossip::{Config, Profile, Tags};
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey};

/// The real mesh transport, counting the calls the driver's loops make.
struct Counted {
    inner: MeshTransport,
    calls: Arc<AtomicU64>,
}

impl Transport for Counted {
    type Stream = vantage_mesh::TcpStream;

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        self.inner.try_send_to(data, to)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.recv_from(buf).await
    }

    async fn connect(&self, to: SocketAddr) -> std::io::Result<Self::Stream> {
        self.inner.connect(to).await
    }

    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.accept().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_transport_ends_the_loops_instead_of_spinning() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut key = [5u8; 32];
    key[0] &= 248;
    let node = Node::start(
        NodeConfig::new(
            PrivateKey::from_bytes(key),
            PresharedKey::from_bytes([1; 32]),
        ),
        socket,
    )
    .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let transport = Counted {
        inner: MeshTransport::bind(node.clone(), 7946).await.unwrap(),
        calls: calls.clone(),
    };
    let (tx, _events) = mpsc::unbounded_channel();
    let _gossip = vantage_gossip::spawn(
        Config::profile(Profile::Lan),
        "n",
        &Tags::new(),
        transport,
        1,
        tx,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = calls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = calls.load(Ordering::Relaxed) - before;
    // a spinning loop makes hundreds of thousands of calls in half a second; a stopped one none,
    // and one that backs off at most ten per loop
    assert!(
        during <= 20,
        "{during} transport calls in 500 ms after shutdown"
    );
}
