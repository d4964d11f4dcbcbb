//! Overlay RTT between mesh nodes placed in regions by the WAN emulator matches the measured
//! matrix within ±10% + 1 ms.

use std::net::SocketAddrV6;
use std::time::{Duration, Instant};

use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey};
use vantage_wan::{Matrix, Wan, WanConfig};

fn node(seed: u8, wan: &mut Wan, region: &str) -> Node {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let real = socket.local_addr().unwrap();
    let advertise = wan
        .attach(&format!("{region}-{seed}"), region, real)
        .unwrap();
    let mut key = [seed; 32];
    key[0] &= 248;
    let mut cfg = NodeConfig::new(
        PrivateKey::from_bytes(key),
        PresharedKey::from_bytes([5; 32]),
    );
    cfg.seed = u64::from(seed);
    cfg.advertise = Some(advertise);
    Node::start(cfg, socket).unwrap()
}

async fn udp_rtt(from: &Node, to: SocketAddrV6, samples: usize) -> Duration {
    let sock = from.udp_bind(0).await.unwrap();
    let mut buf = [0u8; 64];
    // the first exchange also runs the WireGuard handshake; retry until it answers
    loop {
        sock.send_to(b"warm", to).await.unwrap();
        if tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .is_ok()
        {
            break;
        }
    }
    let mut rtts = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        sock.send_to(&[i as u8], to).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &[i as u8]);
        rtts.push(t.elapsed());
    }
    rtts.sort();
    rtts[samples / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlay_rtt_matches_the_matrix() {
    let matrix = Matrix::builtin();
    let mut wan = Wan::new(matrix.clone(), WanConfig::default()).unwrap();
    let regions = ["sin", "ams", "syd", "iad", "ord"];
    let nodes: Vec<Node> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| node(i as u8 + 1, &mut wan, r))
        .collect();
    for a in &nodes {
        for b in &nodes {
            if a.public_key() != b.public_key() {
                a.add_peer(b.as_peer()).await.unwrap();
            }
        }
    }
    let mut echo_addrs = Vec::new();
    for n in &nodes {
        let sock = n.udp_bind(7).await.unwrap();
        echo_addrs.push(sock.local_addr());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((len, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&buf[..len], from).await;
            }
        });
    }
    let mut failures = Vec::new();
    for (a, b) in [("sin", "ams"), ("sin", "syd"), ("iad", "ord")] {
        let ia = regions.iter().position(|r| *r == a).unwrap();
        let ib = regions.iter().position(|r| *r == b).unwrap();
        let want = matrix.rtt(a, b).unwrap();
        let got = udp_rtt(&nodes[ia], echo_addrs[ib], 9).await;
        let lo = want.mul_f64(0.9).saturating_sub(Duration::from_millis(1));
        let hi = want.mul_f64(1.1) + Duration::from_millis(1);
        println!(
            "overlay rtt {a}-{b}: {:.1} ms (matrix {:.1} ms)",
            got.as_secs_f64() * 1e3,
            want.as_secs_f64() * 1e3
        );
        if got < lo || got > hi {
            failures.push(format!("{a}-{b}: {got:?} outside [{lo:?}, {hi:?}]"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
