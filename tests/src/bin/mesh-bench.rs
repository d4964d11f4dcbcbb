//! Overlay TCP bulk throughput and small-message ping-pong RTT: two Vantage nodes on loopback,
//! side by side in the same run with wireguard-go plus kernel TCP between two network namespaces.
//! The same traffic code drives both. Needs root, wireguard-go and wg.
//!
//! `cargo run --release -p vantage-tests --bin mesh-bench -- [--mib 256] [--pings 5000] [--rounds 3]`

use std::net::SocketAddrV6;
use std::time::Duration;

use anyhow::{Context, Result};
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey};
use vantage_tests::netns::{veth, Netns};
use vantage_tests::traffic::{block_on, bulk, echo, ping_pong, quantile, sink};
use vantage_tests::wggo::WgGo;

const PING_SIZE: usize = 64;

struct Args {
    mib: u64,
    pings: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        mib: 256,
        pings: 5000,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| -> Result<u64> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name} takes a positive integer, got `{v}`"))
        };
        match flag.as_str() {
            "--mib" => a.mib = val("--mib")?,
            "--pings" => a.pings = val("--pings")? as usize,
            "--rounds" => a.rounds = val("--rounds")? as usize,
            "--help" | "-h" => {
                println!("mesh-bench [--mib N (bulk MiB, default 256)] [--pings N (default 5000)] [--rounds N (default 3)]");
                std::process::exit(0);
            }
            other => {
                anyhow::bail!("unknown argument `{other}`; accepted: --mib, --pings, --rounds")
            }
        }
    }
    anyhow::ensure!(
        a.mib > 0 && a.pings > 0 && a.rounds > 0,
        "--mib, --pings and --rounds must be > 0"
    );
    Ok(a)
}

fn key(seed: u8) -> PrivateKey {
    let mut k = [seed; 32];
    k[0] &= 248;
    PrivateKey::from_bytes(k)
}

/// Median throughput and RTT samples between two Vantage nodes on loopback.
async fn ours(args: &Args) -> Result<(Vec<f64>, Vec<Duration>)> {
    let psk = PresharedKey::from_bytes([3; 32]);
    let loopback = "127.0.0.1:0".parse()?;
    let a = Node::bind(NodeConfig::new(key(1), psk.clone()), loopback)?;
    let b = Node::bind(NodeConfig::new(key(2), psk), loopback)?;
    a.add_peer(b.as_peer()).await?;
    b.add_peer(a.as_peer()).await?;
    let sink_l = b.tcp_listen(5001).await?;
    let echo_l = b.tcp_listen(7).await?;
    let sink_addr = sink_l.local_addr();
    let echo_addr = echo_l.local_addr();
    tokio::spawn(async move {
        while let Ok((s, _)) = sink_l.accept().await {
            tokio::spawn(sink(s));
        }
    });
    tokio::spawn(async move {
        while let Ok((s, _)) = echo_l.accept().await {
            tokio::spawn(echo(s));
        }
    });
    let mut mbps = Vec::new();
    for _ in 0..args.rounds {
        let s = a.tcp_connect(sink_addr).await?;
        mbps.push(bulk(s, args.mib << 20).await?);
    }
    let mut s = a.tcp_connect(echo_addr).await?;
    ping_pong(&mut s, PING_SIZE, 100).await?; // warm-up
    let rtts = ping_pong(&mut s, PING_SIZE, args.pings).await?;
    a.shutdown().await;
    b.shutdown().await;
    Ok((mbps, rtts))
}

/// The same traffic, kernel TCP over two wireguard-go instances in two namespaces.
fn wggo(args: &Args) -> Result<(Vec<f64>, Vec<Duration>)> {
    let psk = PresharedKey::from_bytes([4; 32]);
    let prefix = vantage_mesh::OverlayPrefix::from_psk(&psk);
    let ns_a = Netns::new("vtb-a")?;
    let ns_b = Netns::new("vtb-b")?;
    veth(Some(&ns_a), "10.78.0.1/24", &ns_b, "10.78.0.2/24")?;
    let wa = WgGo::start(&ns_a, 51820, &prefix)?;
    let wb = WgGo::start(&ns_b, 51820, &prefix)?;
    wa.pair_with(
        &wb,
        "10.78.0.2:51820".parse()?,
        "10.78.0.1:51820".parse()?,
        &psk,
    )?;
    let sink_addr = SocketAddrV6::new(wb.overlay, 5001, 0, 0);
    let echo_addr = SocketAddrV6::new(wb.overlay, 7, 0, 0);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rounds = args.rounds;
    let server = ns_b.spawn(move || {
        block_on(async move {
            let sl = tokio::net::TcpListener::bind(sink_addr).await?;
            let el = tokio::net::TcpListener::bind(echo_addr).await?;
            ready_tx.send(()).expect("bench waits");
            for _ in 0..rounds {
                let (s, _) = sl.accept().await?;
                sink(s).await?;
            }
            let (s, _) = el.accept().await?;
            echo(s).await
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("wireguard-go side did not start listening")?;
    let (mib, pings) = (args.mib, args.pings);
    let client = ns_a.spawn(move || {
        block_on(async move {
            let mut mbps = Vec::new();
            for _ in 0..rounds {
                let s = tokio::net::TcpStream::connect(sink_addr).await?;
                s.set_nodelay(true)?;
                mbps.push(bulk(s, mib << 20).await?);
            }
            let mut s = tokio::net::TcpStream::connect(echo_addr).await?;
            s.set_nodelay(true)?;
            ping_pong(&mut s, PING_SIZE, 100).await?;
            let rtts = ping_pong(&mut s, PING_SIZE, pings).await?;
            Ok::<_, std::io::Error>((mbps, rtts))
        })
    });
    let res = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))???;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))???;
    Ok(res)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (ours_mbps, ours_rtt) = rt.block_on(ours(&args)).context("vantage overlay run")?;
    drop(rt);
    let (wg_mbps, wg_rtt) = wggo(&args).context("wireguard-go run")?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (name, mbps, rtt) in [
        ("vantage", &ours_mbps, &ours_rtt),
        ("wireguard-go", &wg_mbps, &wg_rtt),
    ] {
        println!(
            "{name:>12}: bulk {} MiB x{}: {:?} Mbit/s; {}-byte ping-pong x{}: p50 {:.0} us p90 {:.0} us p99 {:.0} us",
            args.mib,
            args.rounds,
            mbps.iter().map(|m| m.round()).collect::<Vec<_>>(),
            PING_SIZE,
            args.pings,
            us(quantile(rtt, 0.5)),
            us(quantile(rtt, 0.9)),
            us(quantile(rtt, 0.99)),
        );
    }
    let (o, w) = (median(ours_mbps), median(wg_mbps));
    println!(
        "mesh-bench ours_mbps={:.0} wggo_mbps={:.0} ratio={:.2} ours_rtt_p50_us={:.0} wggo_rtt_p50_us={:.0}",
        o,
        w,
        o / w,
        us(quantile(&ours_rtt, 0.5)),
        us(quantile(&wg_rtt, 0.5))
    );
    Ok(())
}
