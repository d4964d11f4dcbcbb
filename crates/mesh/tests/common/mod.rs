#![allow(dead_code)]

pub mod forge;

use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey};

/// A deterministic key from a seed, so failures reproduce.
pub fn key(seed: u8) -> PrivateKey {
    let mut b = [seed; 32];
    b[0] &= 248;
    b[31] = (b[31] & 127) | 64;
    PrivateKey::from_bytes(b)
}

pub fn psk() -> PresharedKey {
    PresharedKey::from_bytes([42; 32])
}

pub fn config(seed: u8) -> NodeConfig {
    let mut c = NodeConfig::new(key(seed), psk());
    c.seed = u64::from(seed);
    c
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn start(seed: u8) -> Node {
    Node::bind(config(seed), loopback()).expect("bind")
}

/// Makes every node a configured peer of every other.
pub async fn full_mesh(nodes: &[&Node]) {
    for a in nodes {
        for b in nodes {
            if a.public_key() != b.public_key() {
                a.add_peer(b.as_peer()).await.unwrap();
            }
        }
    }
}

/// Serves TCP echo on `port` until the node stops.
pub async fn tcp_echo(node: &Node, port: u16) -> SocketAddrV6 {
    let listener = node.tcp_listen(port).await.unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Serves UDP echo on `port`.
pub async fn udp_echo(node: &Node, port: u16) -> SocketAddrV6 {
    let sock = node.udp_bind(port).await.unwrap();
    let addr = sock.local_addr();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

pub async fn within<T>(what: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

/// One TCP round trip of `msg` through an echo server.
pub async fn tcp_roundtrip(node: &Node, to: SocketAddrV6, msg: &[u8]) {
    let mut s = node.tcp_connect(to).await.expect("connect");
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

/// One UDP round trip, retried because UDP may drop the first datagram while the handshake runs.
pub async fn udp_roundtrip(node: &Node, to: SocketAddrV6, msg: &[u8]) {
    let sock = node.udp_bind(0).await.unwrap();
    let mut buf = vec![0u8; 2048];
    for _ in 0..50 {
        sock.send_to(msg, to).await.unwrap();
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
        {
            assert_eq!(&buf[..n], msg);
            assert_eq!(from, to);
            return;
        }
    }
    panic!("no UDP echo from {to}");
}

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
