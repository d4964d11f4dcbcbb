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

/// Warm-up probes (the first also runs the WireGuard handshake) before giving up.
const WARMUP_TRIES: u32 = 10;
/// How long one probe waits for its echo.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends probe `seq` and waits for its own echo; echoes of earlier probes that arrive late are
/// skipped, so a slow warm-up can never be read as a sample. `None` if it does not come back.
async fn probe(sock: &vantage_mesh::UdpSocket, to: SocketAddrV6, seq: u32) -> Option<Duration> {
    let t = Instant::now();
    sock.send_to(&seq.to_be_bytes(), to).await.unwrap();
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
    loop {
        let (n, _) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        if buf[..n] == seq.to_be_bytes() {
            return Some(t.elapsed());
        }
    }
}

/// The median overlay UDP RTT to an echo service, after a bounded warm-up.
async fn udp_rtt(from: &Node, to: SocketAddrV6, samples: u32) -> Result<Duration, String> {
    let sock = from.udp_bind(0).await.unwrap();
    let mut seq = 0;
    loop {
        seq += 1;
        if probe(&sock, to, seq).await.is_some() {
            break;
        }
        if seq == WARMUP_TRIES {
            return Err(format!(
                "no echo from {to} in {WARMUP_TRIES} warm-up probes of {PROBE_TIMEOUT:?}"
            ));
        }
    }
    let mut rtts = Vec::new();
    for _ in 0..samples {
        seq += 1;
        let rtt = probe(&sock, to, seq)
            .await
            .ok_or_else(|| format!("probe {seq} to {to} got no echo within {PROBE_TIMEOUT:?}"))?;
        rtts.push(rtt);
    }
    rtts.sort();
    Ok(rtts[rtts.len() / 2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtt_probe_fails_instead_of_hanging_when_nothing_echoes() {
    let mut wan = Wan::new(Matrix::builtin(), WanConfig::default()).unwrap();
    let a = node(21, &mut wan, "sin");
    let b = node(22, &mut wan, "ams");
    a.add_peer(b.as_peer()).await.unwrap();
    b.add_peer(a.as_peer()).await.unwrap();
    let silent = SocketAddrV6::new(b.overlay_addr(), 7, 0, 0);
    let bound = PROBE_TIMEOUT * (WARMUP_TRIES + 5);
    let got = tokio::time::timeout(bound, udp_rtt(&a, silent, 3))
        .await
        .unwrap_or_else(|_| panic!("the RTT probe hung past {bound:?}"));
    assert!(
        got.is_err(),
        "an RTT from a port nothing listens on: {got:?}"
    );
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
        let got = udp_rtt(&nodes[ia], echo_addrs[ib], 9).await.unwrap();
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
