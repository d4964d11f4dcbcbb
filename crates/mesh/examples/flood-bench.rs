//! What a handshake flood costs an established peer: echo round trips per second on an open
//! overlay stream, quiet and then while an off-path sender floods the node with initiations (from
//! random keys, and forged ones claiming the peer's key). The admission test asserts only what a
//! flood must not do; the speed lives here.
//!
//! `cargo run --release -p vantage-mesh --example flood-bench -- [--secs 5]`
//!
//! Last line: `mesh-flood-bench quiet_rounds_per_s=<n> flood_rounds_per_s=<n> ratio=<flood/quiet>`

#[path = "../tests/common/forge.rs"]
mod forge;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey, TcpStream};

fn node(seed: u8) -> Node {
    let mut k = [seed; 32];
    k[0] &= 248;
    let mut cfg = NodeConfig::new(PrivateKey::from_bytes(k), PresharedKey::from_bytes([8; 32]));
    cfg.seed = u64::from(seed);
    Node::bind(cfg, "127.0.0.1:0".parse().expect("literal")).expect("bind")
}

/// Echo round trips per second of a 16-byte message over `secs`.
async fn rounds_per_s(s: &mut TcpStream, secs: u64) -> f64 {
    let (msg, mut back) = ([7u8; 16], [0u8; 16]);
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        s.write_all(&msg).await.expect("write");
        s.read_exact(&mut back).await.expect("read");
        rounds += 1;
    }
    rounds as f64 / start.elapsed().as_secs_f64()
}

fn parse_secs() -> u64 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => 5,
        [flag, v] if flag == "--secs" => v
            .parse()
            .ok()
            .filter(|s| (1..=300).contains(s))
            .unwrap_or_else(|| {
                eprintln!("--secs takes 1 to 300, got `{v}`");
                std::process::exit(2)
            }),
        _ => {
            eprintln!("usage: flood-bench [--secs N (default 5)]");
            std::process::exit(2)
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = parse_secs();
    let (a, b) = (node(1), node(2));
    a.add_peer(b.as_peer()).await.expect("peer");
    b.add_peer(a.as_peer()).await.expect("peer");
    let listener = a.tcp_listen(7).await.expect("listen");
    let to = listener.local_addr();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 16];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut s = b.tcp_connect(to).await.expect("connect");
    let quiet = rounds_per_s(&mut s, secs).await;

    let (a_key, b_key) = (*a.public_key().as_bytes(), *b.public_key().as_bytes());
    let packets: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let claimed = if i % 2 == 0 { b_key } else { [i as u8; 32] };
            forge::initiation_claiming(&a_key, &claimed, i)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, target) = (stop.clone(), a.local_addr());
    let flooder = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut sent = 0u64;
        while !flag.load(Ordering::Relaxed) {
            for p in &packets {
                let _ = sock.send_to(p, target);
                sent += 1;
            }
        }
        sent
    });
    let flood = rounds_per_s(&mut s, secs).await;
    stop.store(true, Ordering::Relaxed);
    let sent = flooder.join().expect("flooder");
    let c = a.counters().await.expect("counters");
    println!(
        "flood: {sent} initiations in {secs} s; shed {} cookies {} rejected {}",
        c.shed, c.cookies_sent, c.rejected
    );
    println!(
        "mesh-flood-bench quiet_rounds_per_s={quiet:.0} flood_rounds_per_s={flood:.0} ratio={:.2}",
        flood / quiet
    );
}
