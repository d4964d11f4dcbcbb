//! Members that go away take their WireGuard sessions with them: three real members (mesh and
//! gossip on loopback) follow each other's events, two leave, and the first one's mesh peer count
//! falls back to zero.

use std::time::Duration;

use vantage_fleet::{try_join, MemberConfig, Membership};
use vantage_gossip::{Profile, Tags};
use vantage_mesh::{PresharedKey, PrivateKey};

const GOSSIP_PORT: u16 = 7946;

fn config(seed: u8) -> MemberConfig {
    let mut key = [seed; 32];
    key[0] &= 248;
    MemberConfig {
        psk: PresharedKey::from_bytes([9; 32]),
        private_key: PrivateKey::from_bytes(key),
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        seeds: Vec::new(),
        fly_seeds: None,
        name: format!("m{seed}"),
        region: "local".into(),
        gossip_port: GOSSIP_PORT,
        gossip_profile: Profile::Lan,
        data_dir: std::env::temp_dir(),
        echo_events: false,
    }
}

/// A member whose events drive its mesh, as the agent's and controller's loops do.
async fn member(seed: u8) -> Membership {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (m, mut events) = Membership::start(&config(seed), &mut Tags::new(), socket)
        .await
        .unwrap();
    let follower = m.clone();
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            follower.follow(&e).await;
        }
    });
    m
}

async fn wait_for_peers(m: &Membership, want: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = m.node.peers().await.unwrap().len();
        if n == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} still has {n} mesh peers after 60 s, expected {want}",
            m.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_leave_are_removed_from_the_mesh() {
    let a = member(1).await;
    let b = member(2).await;
    let c = member(3).await;
    let seed = a.node.local_addr().to_string();
    for m in [&b, &c] {
        try_join(&m.node, &m.gossip, &seed, GOSSIP_PORT)
            .await
            .unwrap();
    }
    wait_for_peers(&a, 2, "after the joins").await;
    for (gone, left) in [(&c, 1), (&b, 0)] {
        gone.gossip.leave().await.unwrap();
        gone.node.shutdown().await;
        wait_for_peers(&a, left, &format!("after {} left", gone.name)).await;
    }
}
