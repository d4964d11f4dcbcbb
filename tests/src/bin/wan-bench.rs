//! Overlay TCP goodput across a long, lossy WAN: two Vantage nodes through `vantage-wan`, side by
//! side in the same run with kernel TCP over two wireguard-go instances (network namespaces, veth
//! links to this host) through the same emulator, at each loss rate. Goodput is what the receiver
//! got in a fixed window from its first byte, slow start included. Needs root, wireguard-go, wg.
//!
//! `cargo run --release -p vantage-tests --bin wan-bench -- [--rtt-ms 250] [--secs 15] [--loss 0,0.5,2] [--kernel-cc cubic]`
//!
//! With `WAN_BENCH_DEBUG` set, each overlay run also prints both nodes' WireGuard payload bytes and
//! drop counters and the emulator's link stats (retransmissions show as tx above rx).
//!
//! The last line is the 0.5% loss case:
//! `wan-bench rtt_ms=250 loss_pct=0.5 ours_mbps=<n> kernel_mbps=<n> ratio=<ours/kernel>`

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey};
use vantage_tests::netns::{veth, Netns};
use vantage_tests::traffic::{block_on, goodput_sink, send_until};
use vantage_tests::wggo::WgGo;
use vantage_wan::{Matrix, Wan, WanConfig};

const PORT: u16 = 5001;
const WG_PORT: u16 = 51820;
/// The loss rate the last line reports.
const HEADLINE_LOSS: f64 = 0.5;

struct Args {
    rtt_ms: u32,
    /// Congestion control for kernel TCP in the namespaces; `None` keeps the system default.
    kernel_cc: Option<String>,
    secs: u64,
    losses: Vec<f64>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rtt_ms: 250,
        kernel_cc: None,
        secs: 15,
        losses: vec![0.0, 0.5, 2.0],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--rtt-ms" => {
                let v = val("--rtt-ms")?;
                a.rtt_ms = v
                    .parse()
                    .ok()
                    .filter(|&r| (1..=2000).contains(&r))
                    .with_context(|| format!("--rtt-ms takes 1 to 2000, got `{v}`"))?;
            }
            "--secs" => {
                let v = val("--secs")?;
                a.secs = v
                    .parse()
                    .ok()
                    .filter(|&s| (1..=600).contains(&s))
                    .with_context(|| format!("--secs takes 1 to 600, got `{v}`"))?;
            }
            "--kernel-cc" => {
                let v = val("--kernel-cc")?;
                let known =
                    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
                        .unwrap_or_default();
                if !known.split_whitespace().any(|k| k == v) {
                    bail!(
                        "--kernel-cc `{v}` is not available here; available: {}",
                        known.trim()
                    );
                }
                a.kernel_cc = Some(v);
            }
            "--loss" => {
                let v = val("--loss")?;
                a.losses = v
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|l| (0.0..100.0).contains(l))
                    })
                    .collect::<Option<_>>()
                    .with_context(|| {
                        format!("--loss takes comma-separated percentages in [0, 100), got `{v}`")
                    })?;
            }
            "--help" | "-h" => {
                println!("wan-bench [--rtt-ms N (default 250)] [--secs N (window, default 15)] [--loss 0,0.5,2 (percent)] [--kernel-cc cubic (kernel TCP's congestion control; default: the system's)]");
                std::process::exit(0);
            }
            other => {
                bail!("unknown argument `{other}`; accepted: --rtt-ms, --secs, --loss, --kernel-cc")
            }
        }
    }
    if !a.losses.contains(&HEADLINE_LOSS) {
        a.losses.push(HEADLINE_LOSS);
    }
    Ok(a)
}

/// Two regions `x` and `y`, `rtt_ms` apart.
fn matrix(rtt_ms: u32) -> Matrix {
    Matrix::parse(&format!("region,x,y\nx,0,{rtt_ms}\ny,{rtt_ms},0\n")).expect("valid matrix")
}

fn wan(args: &Args, loss_pct: f64, seed: u64) -> Result<Wan> {
    let cfg = WanConfig {
        loss: loss_pct / 100.0,
        seed,
        ..WanConfig::default()
    };
    Ok(Wan::new(matrix(args.rtt_ms), cfg)?)
}

fn key(seed: u8) -> PrivateKey {
    let mut k = [seed; 32];
    k[0] &= 248;
    PrivateKey::from_bytes(k)
}

/// Goodput of one overlay TCP stream between two Vantage nodes through the emulator.
async fn ours(args: &Args, loss_pct: f64) -> Result<f64> {
    let mut wan = wan(args, loss_pct, 11)?;
    let psk = PresharedKey::from_bytes([3; 32]);
    let mut nodes = Vec::new();
    for (seed, region) in [(1, "x"), (2, "y")] {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let advertise = wan.attach(region, region, socket.local_addr()?)?;
        let mut cfg = NodeConfig::new(key(seed), psk.clone());
        cfg.seed = u64::from(seed);
        cfg.advertise = Some(advertise);
        nodes.push(Node::start(cfg, socket)?);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    a.add_peer(b.as_peer()).await?;
    b.add_peer(a.as_peer()).await?;
    let listener = b.tcp_listen(PORT).await?;
    let to = listener.local_addr();
    let done = Arc::new(AtomicBool::new(false));
    let (flag, window) = (done.clone(), Duration::from_secs(args.secs));
    let receiver = tokio::spawn(async move {
        let (s, _) = listener.accept().await?;
        let mbps = goodput_sink(s, window).await;
        flag.store(true, Ordering::Relaxed);
        mbps
    });
    let s = tokio::time::timeout(Duration::from_secs(30), a.tcp_connect(to))
        .await
        .context("overlay connect through the emulator took over 30 s")??;
    send_until(s, &done).await?;
    let mbps = receiver.await??;
    if std::env::var_os("WAN_BENCH_DEBUG").is_some() {
        for n in &nodes {
            let p = n.peers().await?;
            eprintln!(
                "node {}: tx {} rx {} bytes; {:?}",
                n.public_key().short(),
                p[0].tx_bytes,
                p[0].rx_bytes,
                n.counters().await?
            );
        }
        eprintln!("emulator: {:?}", wan.stats());
    }
    for n in &nodes {
        n.shutdown().await;
    }
    Ok(mbps)
}

/// UDP datagrams this network namespace dropped on a full receive buffer (`/proc/net/snmp`).
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The congestion control kernel TCP uses by default in `ns` (BBR, unlike loss-based CUBIC, does
/// not back off on random loss, which matters when reading the comparison).
fn default_cc(ns: &Netns) -> Result<String> {
    let cc = ns
        .spawn(|| std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control"))
        .join()
        .map_err(|_| anyhow::anyhow!("sysctl reader panicked"))???;
    Ok(cc.trim().to_owned())
}

/// Sets a socket's congestion control (`TCP_CONGESTION`). A namespace's default may only be one of
/// `tcp_allowed_congestion_control`, but a socket of a process with CAP_NET_ADMIN may use any loaded one.
#[allow(unsafe_code)]
fn set_cc(socket: &tokio::net::TcpSocket, cc: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the call's duration and the option value is a valid buffer of
    // the length passed
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            cc.as_ptr().cast(),
            cc.len() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Goodput of kernel TCP over wireguard-go, the WireGuard datagrams through the same emulator:
/// each wireguard-go runs in its own namespace with a veth link to this host, where the emulator
/// endpoints are bound on every address.
async fn kernel(args: &Args, loss_pct: f64, tag: u8) -> Result<(f64, String)> {
    let mut wan = wan(args, loss_pct, 12)?;
    let psk = PresharedKey::from_bytes([4; 32]);
    let prefix = vantage_mesh::OverlayPrefix::from_psk(&psk);
    let (ns_a, ns_b) = (Netns::new("vwb-a")?, Netns::new("vwb-b")?);
    let cc = match &args.kernel_cc {
        Some(cc) => cc.clone(),
        None => default_cc(&ns_a)?,
    };
    let net = |side: u8, host: u8| format!("10.{}.{side}.{host}", 90 + tag);
    veth(
        None,
        &format!("{}/24", net(1, 1)),
        &ns_a,
        &format!("{}/24", net(1, 2)),
    )?;
    veth(
        None,
        &format!("{}/24", net(2, 1)),
        &ns_b,
        &format!("{}/24", net(2, 2)),
    )?;
    let wa = WgGo::start(&ns_a, WG_PORT, &prefix)?;
    let wb = WgGo::start(&ns_b, WG_PORT, &prefix)?;
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let real = |side| -> Result<SocketAddr> { Ok(format!("{}:{WG_PORT}", net(side, 2)).parse()?) };
    let port_a = wan.attach_on("a", "x", real(1)?, any)?.port();
    let port_b = wan.attach_on("b", "y", real(2)?, any)?.port();
    // each side reaches the other's emulator endpoint at this host's address on its own link
    let seen_from =
        |side, port| -> Result<SocketAddr> { Ok(format!("{}:{port}", net(side, 1)).parse()?) };
    wa.pair_with(&wb, seen_from(1, port_b)?, seen_from(2, port_a)?, &psk)?;
    let to = SocketAddrV6::new(wb.overlay, PORT, 0, 0);
    let done = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (flag, window) = (done.clone(), Duration::from_secs(args.secs));
    let server = ns_b.spawn(move || {
        block_on(async move {
            let l = tokio::net::TcpListener::bind(to).await?;
            ready_tx.send(()).expect("bench waits");
            let (s, _) = l.accept().await?;
            let mbps = goodput_sink(s, window).await;
            flag.store(true, Ordering::Relaxed);
            mbps
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("wireguard-go side did not start listening")?;
    let sender_cc = cc.clone();
    let client = ns_a.spawn(move || {
        block_on(async move {
            let socket = tokio::net::TcpSocket::new_v6()?;
            set_cc(&socket, &sender_cc)?;
            let s = tokio::time::timeout(Duration::from_secs(30), socket.connect(to.into()))
                .await
                .map_err(|_| {
                    std::io::Error::other("kernel connect over wireguard-go took over 30 s")
                })??;
            send_until(s, &done).await
        })
    });
    // the emulator's relay tasks run on this runtime: wait without blocking it
    let joined = tokio::task::spawn_blocking(move || (client.join(), server.join())).await?;
    joined
        .0
        .map_err(|_| anyhow::anyhow!("client thread panicked"))???;
    let mbps = joined
        .1
        .map_err(|_| anyhow::anyhow!("server thread panicked"))???;
    if std::env::var_os("WAN_BENCH_DEBUG").is_some() {
        eprintln!("emulator: {:?}", wan.stats());
    }
    drop((wa, wb));
    Ok((mbps, cc))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for (i, &loss) in args.losses.iter().enumerate() {
        eprintln!("wan-bench: {loss}% loss, vantage overlay");
        let drops = udp_rcvbuf_errors();
        let o = rt
            .block_on(ours(&args, loss))
            .with_context(|| format!("vantage overlay run at {loss}% loss"))?;
        let drops = udp_rcvbuf_errors() - drops;
        eprintln!("wan-bench: {loss}% loss, kernel TCP over wireguard-go");
        let (k, cc) = rt
            .block_on(kernel(&args, loss, i as u8))
            .with_context(|| format!("wireguard-go run at {loss}% loss"))?;
        println!(
            "rtt {} ms, loss {loss}%: vantage overlay {o:.2} Mbit/s ({drops} datagrams dropped on full UDP receive buffers), kernel TCP ({cc}) over wireguard-go {k:.2} Mbit/s ({}-second window)",
            args.rtt_ms, args.secs
        );
        rows.push((loss, o, k));
    }
    let &(loss, o, k) = rows
        .iter()
        .find(|r| r.0 == HEADLINE_LOSS)
        .expect("the headline loss always runs");
    println!(
        "wan-bench rtt_ms={} loss_pct={loss} ours_mbps={o:.2} kernel_mbps={k:.2} ratio={:.2}",
        args.rtt_ms,
        o / k
    );
    Ok(())
}
