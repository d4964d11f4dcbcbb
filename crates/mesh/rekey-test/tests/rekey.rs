//! A long-lived overlay stream across many WireGuard rekey periods, with boringtun's clock mocked
//! (REKEY_AFTER_TIME is 120 s). boringtun 0.7.1 still has cloudflare/boringtun#363 (spurious
//! rekeys); this pins the rekey count exactly: every handshake message on the wire is counted, by
//! direction, in a UDP relay between the two nodes, and each node's own count must agree.
//!
//! The expected count comes from WireGuard's rule, not from a run: the initiator starts a new
//! handshake at the first send once its session is REKEY_AFTER_TIME old; the responder never
//! rekeys on its own. The clock only moves between echo rounds, so each handshake completes at one
//! mock instant and nothing is retransmitted.
//!
//! Everything runs on one thread because the mock clock is thread-local.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mock_instant::MockClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_mesh::{Node, NodeConfig, PeerConfig, PresharedKey, PrivateKey};

const REKEY_AFTER_TIME: u64 = 120;

fn node(seed: u8) -> Node {
    let mut k = [seed; 32];
    k[0] &= 248;
    let mut cfg = NodeConfig::new(PrivateKey::from_bytes(k), PresharedKey::from_bytes([9; 32]));
    cfg.seed = u64::from(seed);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Node::bind(cfg, addr).unwrap()
}

/// WireGuard messages by type (index 1..=4), per direction: `[a to b, b to a]`.
type Wire = Arc<[[AtomicU64; 5]; 2]>;

/// A relay between `a` and `b` on two sockets: each node's peer endpoint is the relay's socket
/// facing it, so every datagram crosses the relay and is counted.
struct Relay {
    facing_a: SocketAddr,
    facing_b: SocketAddr,
    wire: Wire,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(a: SocketAddr, b: SocketAddr) -> Self {
        let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = Self {
            facing_a: sa.local_addr().unwrap(),
            facing_b: sb.local_addr().unwrap(),
            wire: Arc::default(),
            stop: Arc::default(),
        };
        for (dir, from, to, dst) in [
            (0, sa.try_clone().unwrap(), sb.try_clone().unwrap(), b),
            (1, sb, sa, a),
        ] {
            let (wire, stop) = (relay.wire.clone(), relay.stop.clone());
            from.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = from.recv_from(&mut buf) {
                        if let Some(c) = wire[dir].get(usize::from(buf[0])) {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = to.send_to(&buf[..n], dst);
                    }
                }
            });
        }
        relay
    }

    fn count(&self, dir: usize, kind: usize) -> u64 {
        self.wire[dir][kind].load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Handshakes WireGuard's rule predicts for sends at `0, step, 2·step, …` (`rounds` of them).
fn expected_handshakes(step: u64, rounds: u64) -> u64 {
    let mut established = 0;
    let mut handshakes = 1;
    for t in (0..rounds).map(|r| r * step) {
        if t - established >= REKEY_AFTER_TIME {
            established = t;
            handshakes += 1;
        }
    }
    handshakes
}

#[tokio::test(flavor = "current_thread")]
async fn stream_survives_rekeys_with_exactly_the_expected_handshakes() {
    let a = node(1);
    let b = node(2);
    let relay = Relay::start(a.local_addr(), b.local_addr());
    a.add_peer(PeerConfig::new(b.public_key(), Some(relay.facing_a)))
        .await
        .unwrap();
    b.add_peer(PeerConfig::new(a.public_key(), Some(relay.facing_b)))
        .await
        .unwrap();
    let listener = b.tcp_listen(7).await.unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let mut s = tokio::time::timeout(Duration::from_secs(10), a.tcp_connect(listener_addr(&b)))
        .await
        .unwrap()
        .unwrap();
    let step = Duration::from_secs(50);
    let rounds = 24u64; // 20 mock minutes: ten REKEY_AFTER_TIME periods
    let msg: Vec<u8> = (0..32 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut back = vec![0u8; msg.len()];
    for round in 0..rounds {
        if round > 0 {
            MockClock::advance(step);
            // boringtun stamps events with the time of its last timer tick: let the 250 ms tick
            // see the new instant before any packet moves, or every stamp of this round is 50 s
            // stale and a spurious "no reply for 15 s" handshake follows
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        tokio::time::timeout(Duration::from_secs(20), async {
            s.write_all(&msg).await.unwrap();
            s.read_exact(&mut back).await.unwrap();
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "echo stalled in round {round} ({} mock s)",
                round * step.as_secs()
            )
        });
        assert_eq!(back, msg, "round {round}");
        // and let it run after the round, at this same instant, before the clock jumps again
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let expected = expected_handshakes(step.as_secs(), rounds);
    let pa = a.peers().await.unwrap().remove(0);
    let pb = b.peers().await.unwrap().remove(0);
    let wire = |dir, kind| relay.count(dir, kind);
    println!(
        "rekey: {} mock s, expected {expected} handshakes; wire: a->b initiations {} responses {}, \
         b->a initiations {} responses {}; counted by a={} b={}",
        rounds * step.as_secs(),
        wire(0, 1),
        wire(0, 2),
        wire(1, 1),
        wire(1, 2),
        pa.handshakes,
        pb.handshakes
    );
    assert_eq!(wire(0, 1), expected, "initiations a sent");
    assert_eq!(wire(1, 2), expected, "responses b sent");
    assert_eq!(wire(1, 1), 0, "the responder initiated");
    assert_eq!(wire(0, 2), 0, "the initiator responded");
    assert_eq!(pa.handshakes, expected, "handshakes a counted");
    assert_eq!(pb.handshakes, expected, "handshakes b counted");
}

fn listener_addr(b: &Node) -> std::net::SocketAddrV6 {
    std::net::SocketAddrV6::new(b.overlay_addr(), 7, 0, 0)
}
