//! The demo origin as a mesh member: a client member joins it over loopback UDP and loads the
//! page over the overlay, with hyper, as an agent's browser would through its egress guard.

use std::net::SocketAddrV6;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rand_core::OsRng;
use vantage::demo::{origin, site};
use vantage_fleet::MemberConfig;
use vantage_mesh::{PresharedKey, PrivateKey};

const PORT: u16 = 80;

fn member(
    name: &str,
    psk: &PresharedKey,
    seeds: Vec<String>,
) -> (MemberConfig, std::net::UdpSocket) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let bind = socket.local_addr().unwrap();
    let config = MemberConfig {
        psk: psk.clone(),
        private_key: PrivateKey::generate(&mut OsRng),
        bind,
        advertise: Some(bind),
        seeds,
        fly_seeds: None,
        name: name.into(),
        region: if name == "origin" { "iad" } else { "sin" }.into(),
        gossip_port: vantage_fleet::tags::ports::GOSSIP,
        gossip_profile: vantage_gossip::Profile::Lan,
        data_dir: PathBuf::from("/nonexistent"),
        echo_events: false,
    };
    (config, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_site_is_served_over_the_mesh() {
    let psk = PresharedKey::generate(&mut OsRng);
    let (cfg, socket) = member("origin", &psk, vec![]);
    let origin = origin::start(cfg, socket, PORT).await.unwrap();
    assert_eq!(origin.port(), PORT);
    assert_eq!(
        origin.connect_to(site::HOST),
        format!("demo.vantage.test:80:[{}]:{PORT}", origin.overlay_addr())
    );

    let (cfg, socket) = member("client", &psk, vec![origin.advertise_addr().to_string()]);
    let mut tags = vantage_gossip::Tags::new();
    let (client, mut events) = vantage_fleet::Membership::start(&cfg, &mut tags, socket)
        .await
        .unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mut joined = client.join_seeds(&cfg);
    tokio::time::timeout(Duration::from_secs(20), joined.recv())
        .await
        .expect("the client joins the origin within 20 s")
        .unwrap();
    // the client sees the origin through gossip: role=origin, and its WireGuard key
    let members = client.gossip.members().await.unwrap();
    let o = members.iter().find(|m| m.name == "origin").unwrap();
    assert_eq!(o.tags.get(vantage_fleet::tags::ROLE).unwrap(), "origin");
    assert_eq!(
        vantage_fleet::member_key(o),
        Some(origin.public_key()),
        "the origin's wg tag is its key"
    );

    let stream = client
        .node
        .tcp_connect(SocketAddrV6::new(
            origin.overlay_addr(),
            origin.port(),
            0,
            0,
        ))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let get = |path: &str| {
        hyper::Request::get(path)
            .header(hyper::header::HOST, site::HOST)
            .body(Empty::<hyper::body::Bytes>::new())
            .unwrap()
    };
    let started = Instant::now();
    let res = send.send_request(get("/")).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let took = started.elapsed();
    assert_eq!(status, 200);
    let html = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        html.contains(&format!("src=\"{}\"", site::HERO_PATH)),
        "the hero is referenced"
    );
    assert!(
        took >= Duration::from_millis(site::DOC_THINK_MS),
        "the document thinks {} ms; answered in {took:?}",
        site::DOC_THINK_MS
    );

    // the same connection (keep-alive) serves the hero
    send.ready().await.unwrap();
    let res = send.send_request(get(site::HERO_PATH)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[hyper::header::CONTENT_TYPE], "image/png");
    let hero = res.into_body().collect().await.unwrap().to_bytes();
    assert!(hero.starts_with(b"\x89PNG"));
    assert!(hero.len() > 100 << 10);

    origin.stop().await;
    client.gossip.leave().await.ok();
    client.node.shutdown().await;
}
