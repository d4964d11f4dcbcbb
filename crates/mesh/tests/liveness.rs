//! A peer's liveness settings: persistent keepalive set after just-in-time admission goes out on
//! the wire, and a re-add from gossip does not undo an endpoint learned from authenticated traffic.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_mesh::{Admission, PeerConfig};

/// A UDP relay between a client and one server, so the test sees every datagram on the wire.
/// The client sends to `front`; the server sees the relay's other socket as the client.
struct Relay {
    front: SocketAddr,
    /// Server-to-client WireGuard keepalives (empty data packets: 32 bytes, type 4).
    keepalives: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(server: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = Self {
            front: front.local_addr().unwrap(),
            keepalives: Arc::default(),
            stop: Arc::default(),
        };
        let client: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        for (from, to, upstream) in [
            (front.try_clone().unwrap(), back.try_clone().unwrap(), true),
            (back, front, false),
        ] {
            let (client, stop, keepalives) =
                (client.clone(), relay.stop.clone(), relay.keepalives.clone());
            from.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, src)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    let dst = if upstream {
                        *client.lock().unwrap() = Some(src);
                        Some(server)
                    } else {
                        if n == 32 && buf[0] == 4 {
                            keepalives.fetch_add(1, Ordering::Relaxed);
                        }
                        *client.lock().unwrap()
                    };
                    if let Some(dst) = dst {
                        let _ = to.send_to(&buf[..n], dst);
                    }
                }
            });
        }
        relay
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_set_after_admission_goes_out_on_the_wire() {
    let a = start(91);
    let b = start(92);
    let echo = tcp_echo(&a, 7).await;
    let relay = Relay::start(a.local_addr());
    // only b knows a (through the relay); a admits b just-in-time
    b.add_peer(PeerConfig::new(a.public_key(), Some(relay.front)))
        .await
        .unwrap();
    within("echo via admission", 10, tcp_roundtrip(&b, echo, b"hi")).await;
    let seen = a.peers().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].admission, Admission::Admitted);
    // then gossip adds b with a keepalive, as the agent does
    a.add_peer(PeerConfig {
        key: b.public_key(),
        endpoint: None,
        keepalive: Some(1),
    })
    .await
    .unwrap();
    let before = relay.keepalives.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let sent = relay.keepalives.load(Ordering::Relaxed) - before;
    // one at once, then one a second; WireGuard's own passive keepalive accounts for at most one
    assert!(
        sent >= 3,
        "{sent} keepalives from a in 4.5 s with a 1 s persistent keepalive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_add_from_gossip_keeps_the_roamed_endpoint() {
    let a = start(93);
    let b = start(94);
    full_mesh(&[&a, &b]).await;
    let echo = tcp_echo(&a, 7).await;
    let mut s = within("connect", 10, b.tcp_connect(echo)).await.unwrap();
    let advertised = b.as_peer();
    let moved = b
        .rebind(UdpSocket::bind(loopback()).unwrap())
        .await
        .unwrap();
    let mut back = [0u8; 4];
    within("echo after the move", 10, async {
        s.write_all(b"roam").await.unwrap();
        s.read_exact(&mut back).await.unwrap();
    })
    .await;
    let endpoint = |peers: Vec<vantage_mesh::PeerStats>| {
        peers
            .into_iter()
            .find(|p| p.key == b.public_key())
            .and_then(|p| p.endpoint)
    };
    assert_eq!(endpoint(a.peers().await.unwrap()), Some(moved));
    // gossip's Updated event re-adds b from its (stale) advertised endpoint
    a.add_peer(advertised).await.unwrap();
    assert_eq!(
        endpoint(a.peers().await.unwrap()),
        Some(moved),
        "a re-add undid the endpoint learned from b's traffic"
    );
    within("echo after the re-add", 10, async {
        s.write_all(b"stay").await.unwrap();
        s.read_exact(&mut back).await.unwrap();
    })
    .await;
    assert_eq!(&back, b"stay");
}
