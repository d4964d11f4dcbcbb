//! Overlay TCP's congestion window over a long emulated WAN: a bulk transfer must open its window
//! exponentially, as slow start does, and not by one segment per round trip.

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_mesh::Node;
use vantage_wan::{Matrix, Wan, WanConfig};

const RTT_MS: u64 = 200;
const TOTAL: usize = 2 << 20;
/// Bytes of one full-sized segment's payload (the overlay MTU less IPv6 and TCP headers).
const SEGMENT: usize = vantage_mesh::OVERLAY_MTU - 60;

/// Reads everything, noting when each read returned and how many bytes it brought.
async fn receive(mut s: vantage_mesh::TcpStream) -> Vec<(Instant, usize)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut reads = Vec::new();
    let mut got = 0;
    while got < TOTAL {
        let n = s.read(&mut buf).await.expect("overlay read");
        assert_ne!(n, 0, "stream ended after {got} of {TOTAL} bytes");
        got += n;
        reads.push((Instant::now(), n));
    }
    reads
}

/// Splits the reads into round trips: data that arrives after a silence of more than half an RTT
/// starts a new round (within a round the segments arrive back to back, then the sender waits a
/// full RTT for the ACKs that release the next window). Returns the bytes of each round.
fn rounds(reads: &[(Instant, usize)], rtt: Duration) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    let mut last: Option<Instant> = None;
    for &(at, n) in reads {
        match (last, out.last_mut()) {
            (Some(prev), Some(cur)) if at.duration_since(prev) <= rtt / 2 => *cur += n,
            _ => out.push(n),
        }
        last = Some(at);
    }
    out
}

/// Without loss, slow start from smoltcp's two-segment initial window reaches 2 MiB within ~15
/// round trips when every second segment is ACKed (+50% per round), or ~10 with an ACK per
/// segment. A receiver that ACKs a whole window at once lets the window grow by one segment
/// per round trip: some 55 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_doubles_per_round_trip_over_a_long_wan() {
    let matrix = Matrix::parse(&format!("region,x,y\nx,0,{RTT_MS}\ny,{RTT_MS},0\n")).unwrap();
    let mut wan = Wan::new(matrix, WanConfig::default()).unwrap();
    let mut nodes = Vec::new();
    for (seed, region) in [(1u8, "x"), (2, "y")] {
        let socket = std::net::UdpSocket::bind(common::loopback()).unwrap();
        let advertise = wan
            .attach(region, region, socket.local_addr().unwrap())
            .unwrap();
        let mut cfg = common::config(seed);
        cfg.advertise = Some(advertise);
        nodes.push(Node::start(cfg, socket).unwrap());
    }
    common::full_mesh(&[&nodes[0], &nodes[1]]).await;
    let listener = nodes[1].tcp_listen(5001).await.unwrap();
    let to = listener.local_addr();
    let receiver = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        receive(s).await
    });
    let mut s = nodes[0].tcp_connect(to).await.unwrap();
    s.write_all(&vec![7u8; TOTAL]).await.unwrap();
    let reads = tokio::time::timeout(Duration::from_secs(120), receiver)
        .await
        .expect("2 MiB did not arrive within 120 s")
        .unwrap();
    let rounds = rounds(&reads, Duration::from_millis(RTT_MS));
    let segments: Vec<usize> = rounds.iter().map(|b| b.div_ceil(SEGMENT)).collect();
    let stats = format!(
        "segments per round trip: {segments:?}; emulator {:?}",
        wan.stats()
    );
    eprintln!("{stats}");
    assert!(
        rounds.len() <= 25,
        "2 MiB took {} round trips; slow start should need about 15. {stats}",
        rounds.len()
    );
    let widest = segments.iter().max().copied().unwrap_or(0);
    assert!(
        widest >= 256,
        "the widest round trip carried {widest} segments; 2 MiB in slow start reaches several \
         hundred. {stats}"
    );
}
