//! Interop with stock WireGuard: `wireguard-go` + `wg` on a TUN in a network namespace peers with a
//! Vantage node. Kernel TCP on the stock side reaches a Vantage overlay service, and a Vantage
//! overlay connect reaches a kernel listener; each test starts fresh so exactly one side initiates
//! the handshake.

use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use vantage_mesh::{Node, NodeConfig, PeerConfig, PresharedKey, PrivateKey};
use vantage_tests::netns::{veth, Netns};
use vantage_tests::traffic::{echo, roundtrip};
use vantage_tests::wggo::{WgGo, WgPeer};

const STOCK_PORT: u16 = 51820;

struct Setup {
    // field order is drop order: stop wireguard-go before its namespace goes
    node: Node,
    wg: WgGo,
    stock_ns: Netns,
    _vantage_ns: Netns,
    psk: PresharedKey,
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn setup(seed: u8) -> Setup {
    let vantage_ns = Netns::new("vti-v").unwrap();
    let stock_ns = Netns::new("vti-s").unwrap();
    veth(Some(&vantage_ns), "10.77.0.1/24", &stock_ns, "10.77.0.2/24").unwrap();
    // the node's underlay socket is made inside its namespace; the node itself runs here
    let socket = vantage_ns
        .spawn(|| std::net::UdpSocket::bind("10.77.0.1:0"))
        .join()
        .unwrap()
        .unwrap()
        .unwrap();
    let psk = PresharedKey::from_bytes([seed; 32]);
    let mut key = [seed.wrapping_add(100); 32];
    key[0] &= 248;
    let mut cfg = NodeConfig::new(PrivateKey::from_bytes(key), psk.clone());
    cfg.seed = u64::from(seed);
    let node = Node::start(cfg, socket).unwrap();
    let wg = WgGo::start(&stock_ns, STOCK_PORT, &node.prefix()).unwrap();
    wg.add_peer(
        &WgPeer {
            key: node.public_key(),
            endpoint: Some(node.local_addr()),
            overlay: node.overlay_addr(),
        },
        &psk,
    )
    .unwrap();
    let stock_endpoint: SocketAddr = format!("10.77.0.2:{STOCK_PORT}").parse().unwrap();
    node.add_peer(PeerConfig {
        key: wg.key.public_key(),
        endpoint: Some(stock_endpoint),
        keepalive: None,
    })
    .await
    .unwrap();
    Setup {
        node,
        wg,
        stock_ns,
        _vantage_ns: vantage_ns,
        psk,
    }
}

fn messages() -> Vec<Vec<u8>> {
    vec![
        b"hello from the other side".to_vec(),
        vec![0xab; 1],
        (0..300_000u32).map(|i| (i % 251) as u8).collect(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_wireguard_initiates_and_reaches_a_vantage_service() {
    let s = setup(1).await;
    let listener = s.node.tcp_listen(7).await.unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    let target = SocketAddrV6::new(s.node.overlay_addr(), 7, 0, 0);
    let client = s.stock_ns.spawn(move || {
        current_thread().block_on(async move {
            let mut stream = tokio::time::timeout(
                Duration::from_secs(15),
                tokio::net::TcpStream::connect(target),
            )
            .await
            .map_err(|_| {
                std::io::Error::other("kernel TCP connect over wireguard-go timed out")
            })??;
            for m in messages() {
                roundtrip(&mut stream, &m).await?;
            }
            Ok::<_, std::io::Error>(())
        })
    });
    let res = tokio::task::spawn_blocking(move || client.join())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    res.expect("kernel TCP from the stock side to the Vantage echo service");
    let hs = s.wg.latest_handshakes().unwrap();
    assert!(
        hs.iter()
            .any(|(k, t)| *k == s.node.public_key().to_base64() && *t > 0),
        "{hs:?}"
    );
    let peers = s.node.peers().await.unwrap();
    assert!(
        peers[0].last_handshake.is_some() && peers[0].rx_bytes > 300_000,
        "{peers:?}"
    );
    let _ = &s.psk;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vantage_initiates_and_reaches_a_stock_listener() {
    let s = setup(2).await;
    let bind = SocketAddrV6::new(s.wg.overlay, 8080, 0, 0);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = s.stock_ns.spawn(move || {
        current_thread().block_on(async move {
            let l = tokio::net::TcpListener::bind(bind).await?;
            ready_tx.send(()).expect("test waits");
            let (stream, _) = l.accept().await?;
            echo(stream).await
        })
    });
    tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let mut stream = tokio::time::timeout(Duration::from_secs(15), s.node.tcp_connect(bind))
        .await
        .expect("connect timed out")
        .expect("vantage overlay connect to the kernel listener");
    for m in messages() {
        roundtrip(&mut stream, &m).await.unwrap();
    }
    drop(stream);
    tokio::task::spawn_blocking(move || server.join())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    let hs = s.wg.latest_handshakes().unwrap();
    assert!(hs.iter().any(|(_, t)| *t > 0), "{hs:?}");
}
