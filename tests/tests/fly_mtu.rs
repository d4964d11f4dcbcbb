//! Fly's interface MTU is 1420 and its private network is IPv6: every datagram a node sends must
//! fit one such link without fragmentation. Two nodes talk over a veth pair with MTU 1420 in
//! network namespaces (IPv6 underlay), with the largest overlay packets there are (bulk TCP
//! segments, the largest overlay UDP payload, which gossip's `max_packet` may not exceed), and the
//! kernel's fragmentation counter must not move.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey, MAX_OVERLAY_UDP_PAYLOAD};
use vantage_tests::netns::{run, unique_tag, Netns};

const FLY_MTU: &str = "1420";

/// Two namespaces joined by a veth pair with Fly's MTU and IPv6 addresses (no DAD wait).
fn fly_link() -> (Netns, Netns, Ipv6Addr, Ipv6Addr) {
    let (a, b) = (Netns::new("vfm-a").unwrap(), Netns::new("vfm-b").unwrap());
    let tag = unique_tag();
    let (ea, eb) = (format!("fa{tag}"), format!("fb{tag}"));
    run(
        "ip",
        &["link", "add", &ea, "type", "veth", "peer", "name", &eb],
    )
    .unwrap();
    let (addr_a, addr_b): (Ipv6Addr, Ipv6Addr) = (
        "fd77:1420::1".parse().unwrap(),
        "fd77:1420::2".parse().unwrap(),
    );
    for (ns, dev, addr) in [(&a, &ea, addr_a), (&b, &eb, addr_b)] {
        run("ip", &["link", "set", dev, "netns", &ns.name]).unwrap();
        ns.ip(&["link", "set", dev, "mtu", FLY_MTU]).unwrap();
        ns.ip(&["addr", "add", &format!("{addr}/64"), "dev", dev, "nodad"])
            .unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    (a, b, addr_a, addr_b)
}

/// IPv6 fragments the namespace's stack created (`Ip6FragCreates` in /proc/net/snmp6).
fn fragments_created(ns: &Netns) -> u64 {
    let snmp = ns.exec("cat", &["/proc/net/snmp6"]).unwrap();
    snmp.lines()
        .find_map(|l| l.strip_prefix("Ip6FragCreates"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Ip6FragCreates in /proc/net/snmp6")
}

fn node_in(ns: &Netns, addr: Ipv6Addr, seed: u8) -> Node {
    let bind = SocketAddr::from((addr, 0));
    let socket = ns
        .spawn(move || std::net::UdpSocket::bind(bind))
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    let mut key = [seed; 32];
    key[0] &= 248;
    let mut cfg = NodeConfig::new(
        PrivateKey::from_bytes(key),
        PresharedKey::from_bytes([7; 32]),
    );
    cfg.seed = u64::from(seed);
    Node::start(cfg, socket).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_datagrams_fit_a_1420_byte_ipv6_link() {
    let gossip_max = vantage_gossip::Config::profile(vantage_gossip::Profile::Fleet).max_packet;
    assert!(
        gossip_max <= MAX_OVERLAY_UDP_PAYLOAD,
        "gossip's max_packet {gossip_max} exceeds the overlay's {MAX_OVERLAY_UDP_PAYLOAD}"
    );
    let (ns_a, ns_b, addr_a, addr_b) = fly_link();
    let a = node_in(&ns_a, addr_a, 11);
    let b = node_in(&ns_b, addr_b, 12);
    for (x, y) in [(&a, &b), (&b, &a)] {
        x.add_peer(y.as_peer()).await.unwrap();
    }
    let before = (fragments_created(&ns_a), fragments_created(&ns_b));

    // full-size UDP datagrams both ways (what gossip sends at most)
    let sock = a.udp_bind(9).await.unwrap();
    let to = SocketAddrV6::new(b.overlay_addr(), 9, 0, 0);
    let peer = b.udp_bind(9).await.unwrap();
    let big = vec![0xabu8; MAX_OVERLAY_UDP_PAYLOAD];
    let mut buf = vec![0u8; 2048];
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            sock.send_to(&big, to).await.unwrap();
            if let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf)).await
            {
                assert_eq!(n, big.len());
                peer.send_to(&buf[..n], from).await.unwrap();
                let (m, _) = sock.recv_from(&mut buf).await.unwrap();
                assert_eq!(m, big.len());
                return;
            }
        }
    })
    .await
    .expect("no full-size overlay UDP datagram crossed the 1420-byte link within 20 s");

    // bulk TCP: full-size segments one way, the echo back the other
    let listener = b.tcp_listen(7).await.unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        vantage_tests::traffic::echo(s).await
    });
    let data: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
    let s = tokio::time::timeout(
        Duration::from_secs(20),
        a.tcp_connect(SocketAddrV6::new(b.overlay_addr(), 7, 0, 0)),
    )
    .await
    .expect("connect within 20 s")
    .unwrap();
    let (mut rd, mut wr) = tokio::io::split(s);
    let expect = data.clone();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; expect.len()];
        rd.read_exact(&mut got).await.map(|_| got == expect)
    });
    tokio::time::timeout(Duration::from_secs(60), async {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    })
    .await
    .expect("2 MiB written within 60 s");
    let same = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("2 MiB echoed within 60 s")
        .unwrap()
        .unwrap();
    assert!(same, "echoed bytes differ");
    let _ = server.await;

    let after = (fragments_created(&ns_a), fragments_created(&ns_b));
    assert_eq!(
        before, after,
        "the nodes' datagrams were fragmented to fit the {FLY_MTU}-byte link (Ip6FragCreates before, after)"
    );
    a.shutdown().await;
    b.shutdown().await;
}
