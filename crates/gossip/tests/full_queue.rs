//! A full send queue must not stall the driver: datagrams are dropped and counted, and every
//! other input (calls, incoming push-pull) is still served. Real UDP and TCP on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vantage_gossip::transport::{PlainTransport, Transport};
use vantage_gossip::{Config, Event, GossipHandle, Profile, Tags};

/// Plain UDP/TCP whose datagram send queue is full while `full` is set, as the mesh socket's
/// is when the overlay falls behind.
struct Congested {
    inner: PlainTransport,
    full: Arc<AtomicBool>,
}

impl Transport for Congested {
    type Stream = tokio::net::TcpStream;

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn try_send_to(&self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        if self.full.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.inner.try_send_to(data, to)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }

    async fn connect(&self, to: SocketAddr) -> std::io::Result<Self::Stream> {
        self.inner.connect(to).await
    }

    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        self.inner.accept().await
    }
}

/// A node whose events nobody reads (the receiver is kept so the channel stays open).
fn start<T: Transport>(
    name: &str,
    transport: T,
    seed: u64,
) -> (GossipHandle, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = vantage_gossip::spawn(
        Config::profile(Profile::Lan),
        name,
        &Tags::new(),
        transport,
        seed,
        tx,
    )
    .unwrap();
    (handle, rx)
}

/// Generous: this only has to tell "answers" from "never answers" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_send_queue_drops_datagrams_instead_of_stalling_the_core() {
    let full = Arc::new(AtomicBool::new(true));
    let congested = Congested {
        inner: PlainTransport::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap(),
        full: full.clone(),
    };
    let a_addr = congested.local_addr();
    let (a, _a_events) = start("a", congested, 1);
    let b_transport = PlainTransport::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (b, _b_events) = start("b", b_transport, 2);

    // b joins a over TCP: a's core must serve the push-pull while its datagrams cannot leave
    tokio::time::timeout(PATIENCE, b.join(vec![a_addr]))
        .await
        .expect("a's core stalled: the join's push-pull was never answered")
        .unwrap();
    // a probes and gossips to b every second or so: let it try a few times, then it must still
    // answer a call
    tokio::time::sleep(Duration::from_secs(3)).await;
    let members = tokio::time::timeout(PATIENCE, a.members())
        .await
        .expect("a's core stalled behind the full queue")
        .unwrap();
    assert!(members.iter().any(|m| m.name == "b"), "{members:?}");
    assert!(a.send_dropped() > 0, "no datagram was dropped and counted");

    // the queue drains: a's datagrams flow again and b hears from a directly (its probes acked)
    full.store(false, Ordering::Relaxed);
    let dropped = a.send_dropped();
    let until = tokio::time::Instant::now() + PATIENCE;
    let mut coords = b.coordinates().await.unwrap();
    while !coords.members.contains_key("a") && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        coords = b.coordinates().await.unwrap();
    }
    assert!(
        coords.members.contains_key("a"),
        "b never got an ack from a after the queue drained"
    );
    assert_eq!(
        a.send_dropped(),
        dropped,
        "drops went on after the queue drained"
    );
}
