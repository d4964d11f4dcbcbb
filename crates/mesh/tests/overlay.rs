//! Two and three nodes over real UDP on loopback.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_echo_both_directions() {
    let a = start(1);
    let b = start(2);
    full_mesh(&[&a, &b]).await;
    let ea = tcp_echo(&a, 7).await;
    let eb = tcp_echo(&b, 7).await;
    let ua = udp_echo(&a, 7).await;
    let ub = udp_echo(&b, 7).await;
    within("a→b tcp", 10, tcp_roundtrip(&a, eb, b"hello from a")).await;
    within("b→a tcp", 10, tcp_roundtrip(&b, ea, b"hello from b")).await;
    within("a→b udp", 10, udp_roundtrip(&a, ub, b"udp from a")).await;
    within("b→a udp", 10, udp_roundtrip(&b, ua, b"udp from b")).await;
    let peers = a.peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert!(peers[0].last_handshake.is_some());
    assert!(peers[0].rx_bytes > 0 && peers[0].tx_bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_every_pair() {
    let nodes = [start(11), start(12), start(13)];
    full_mesh(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    let mut tcp = Vec::new();
    let mut udp = Vec::new();
    for n in &nodes {
        tcp.push(tcp_echo(n, 7).await);
        udp.push(udp_echo(n, 9).await);
    }
    for (i, from) in nodes.iter().enumerate() {
        for (j, _) in nodes.iter().enumerate() {
            if i != j {
                let msg = format!("{i} to {j}");
                within("tcp pair", 10, tcp_roundtrip(from, tcp[j], msg.as_bytes())).await;
                within("udp pair", 10, udp_roundtrip(from, udp[j], msg.as_bytes())).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_transfer_hash_matches() {
    use blake2::{Blake2s256, Digest};
    let a = start(21);
    let b = start(22);
    full_mesh(&[&a, &b]).await;
    let listener = b.tcp_listen(5001).await.unwrap();
    let to = listener.local_addr();
    let data = payload(10 << 20, 7);
    let want = Blake2s256::digest(&data);
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        (got.len(), Blake2s256::digest(&got))
    });
    within("10 MiB upload", 60, async {
        let mut s = a.tcp_connect(to).await.unwrap();
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
    })
    .await;
    let (len, got) = within("server read", 60, server).await.unwrap();
    assert_eq!(len, data.len());
    assert_eq!(got, want);
}

/// On Fly the underlay is the 6PN IPv6 network; a dual-stack socket must also reach IPv4 peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_and_dual_stack_underlay() {
    let v6 = |seed| vantage_mesh::Node::bind(config(seed), "[::1]:0".parse().unwrap()).unwrap();
    let a = v6(91);
    let b = v6(92);
    full_mesh(&[&a, &b]).await;
    let echo = tcp_echo(&b, 7).await;
    within(
        "tcp over an ipv6 underlay",
        10,
        tcp_roundtrip(&a, echo, b"over ::1"),
    )
    .await;

    // bound to [::] but talking to an IPv4 peer: sends go out v4-mapped, replies are recognised
    let dual = vantage_mesh::Node::bind(config(93), "[::]:0".parse().unwrap()).unwrap();
    let v4 = start(94);
    let port = dual.local_addr().port();
    let dual_peer =
        vantage_mesh::PeerConfig::new(dual.public_key(), Some(([127, 0, 0, 1], port).into()));
    v4.add_peer(dual_peer).await.unwrap();
    dual.add_peer(v4.as_peer()).await.unwrap();
    let echo = tcp_echo(&v4, 7).await;
    within(
        "dual-stack to ipv4",
        10,
        tcp_roundtrip(&dual, echo, b"mapped"),
    )
    .await;
    let seen = dual.peers().await.unwrap().remove(0);
    assert_eq!(
        seen.endpoint,
        Some(v4.local_addr()),
        "endpoints are kept in canonical IPv4 form"
    );
}

/// A browser opens six connections at once, and several agents do so together: a burst of SYNs
/// larger than the listening sockets kept ready must be accepted, not reset (the demo's origin
/// refused some of a page's first connections before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_is_accepted() {
    const BURST: usize = 24;
    let a = start(31);
    let b = start(32);
    full_mesh(&[&a, &b]).await;
    let listener = b.tcp_listen(5002).await.unwrap();
    let to = listener.local_addr();
    // a first connection completes the handshake, so the burst meets the listener all at once
    within("warm-up", 10, tcp_roundtrip_accepting(&a, &listener, to)).await;
    let connects: Vec<_> = (0..BURST)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.tcp_connect(to).await })
        })
        .collect();
    let mut refused = Vec::new();
    for (i, c) in connects.into_iter().enumerate() {
        if let Err(e) = within("connect", 20, c).await.unwrap() {
            refused.push(format!("connection {i}: {e}"));
        }
    }
    assert!(
        refused.is_empty(),
        "{} of {BURST} connections failed: {refused:#?}",
        refused.len()
    );
    for _ in 0..BURST {
        within("accept", 10, listener.accept()).await.unwrap();
    }
}

/// Connects once to `to` and accepts it on `listener`.
async fn tcp_roundtrip_accepting(
    from: &vantage_mesh::Node,
    listener: &vantage_mesh::TcpListener,
    to: std::net::SocketAddrV6,
) {
    let (c, s) = tokio::join!(from.tcp_connect(to), listener.accept());
    c.unwrap();
    s.unwrap();
}
