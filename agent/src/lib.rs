//! `vantage-agent`: a mesh member that joins the cluster's gossip with its region and mesh
//! identity in its tags, and turns every member it learns of into a WireGuard peer. Chromium
//! supervision, the load executor and the CDP gateway come with the agent issue.

pub mod capture;
pub mod cdp;
pub mod chromium;
pub mod config;
pub mod executor;
pub mod jobs;
pub mod waterfall;

use std::future::Future;
use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::lookup_host;
use tokio::sync::mpsc;
use vantage_gossip::transport::MeshTransport;
use vantage_gossip::{Event, GossipHandle, Member, Tags};
use vantage_mesh::{Node, NodeConfig, PeerConfig, PublicKey};

pub use config::{Args, Config};

/// Tag keys every member carries (what the mesh needs to reach it).
pub const TAG_KEY: &str = "wg";
pub const TAG_ENDPOINT: &str = "ep";
pub const TAG_REGION: &str = "region";
pub const TAG_ROLE: &str = "role";

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: Config,
    socket: std::net::UdpSocket,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut mesh = NodeConfig::new(config.private_key, config.psk);
    mesh.advertise = config.advertise;
    let node = Node::start(mesh, socket).context("cannot start the mesh node")?;
    tracing::info!(
        name = %config.name,
        region = %config.region,
        public_key = %node.public_key(),
        overlay = %node.overlay_addr(),
        bind = %node.local_addr(),
        advertise = %node.advertise_addr(),
        "mesh node up"
    );
    let mut tags = Tags::new();
    tags.insert(TAG_ROLE.into(), "agent".into());
    tags.insert(TAG_REGION.into(), config.region.clone());
    tags.insert(TAG_KEY.into(), node.public_key().to_base64());
    tags.insert(TAG_ENDPOINT.into(), node.advertise_addr().to_string());
    tags.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let transport = MeshTransport::bind(node.clone(), config.gossip_port)
        .await
        .context("cannot bind gossip on the overlay")?;
    let (tx, mut events) = mpsc::unbounded_channel();
    let gossip_cfg = vantage_gossip::Config::profile(config.gossip_profile);
    let seed = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let gossip = vantage_gossip::spawn(gossip_cfg, &config.name, &tags, transport, seed, tx)?;
    for seed in &config.seeds {
        let (node, gossip, seed, port) = (
            node.clone(),
            gossip.clone(),
            seed.clone(),
            config.gossip_port,
        );
        tokio::spawn(async move { join_seed(&node, &gossip, &seed, port).await });
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => on_event(&node, &config.name, e).await,
                None => break,
            },
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("leaving the cluster");
    gossip.leave().await.ok();
    node.shutdown().await;
    Ok(())
}

/// Keeps the mesh in step with the membership, and reports changes on stdout in the form Serf's
/// agent logs them.
async fn on_event(node: &Node, me: &str, e: Event) {
    match &e {
        Event::Joined(m) | Event::Updated(m) => {
            let kind = if matches!(e, Event::Joined(_)) {
                "Join"
            } else {
                "Update"
            };
            println!(
                "EventMember{kind}: {} {} region={}",
                m.name,
                m.addr.ip(),
                m.tags.get(TAG_REGION).map_or("?", |s| s)
            );
            if m.name != me {
                add_member_peer(node, m).await;
            }
        }
        Event::Failed { name } => println!("EventMemberFailed: {name}"),
        Event::Left { name } => println!("EventMemberLeave: {name}"),
        Event::Reaped { name } => println!("EventMemberReap: {name}"),
        Event::User { ltime, name, .. } => println!("EventUser: {name} ltime={ltime}"),
        Event::Suspect { .. } | Event::CoordinateUpdated { .. } => {}
    }
}

/// Makes a member reachable over the mesh, from its `wg` and `ep` tags.
pub async fn add_member_peer(node: &Node, m: &Member) {
    let key = m
        .tags
        .get(TAG_KEY)
        .and_then(|k| k.parse::<PublicKey>().ok());
    let endpoint = m
        .tags
        .get(TAG_ENDPOINT)
        .and_then(|e| e.parse::<SocketAddr>().ok());
    let Some(key) = key else {
        tracing::warn!(member = %m.name, "member has no valid `{TAG_KEY}` tag; cannot reach it over the mesh");
        return;
    };
    if let Err(e) = node
        .add_peer(PeerConfig {
            key,
            endpoint,
            keepalive: Some(25),
        })
        .await
    {
        tracing::warn!(member = %m.name, error = %e, "cannot add member as a mesh peer");
    }
}

/// Learns a seed's key with the underlay lookup, makes it a peer and joins its gossip, retrying
/// with backoff.
async fn join_seed(node: &Node, gossip: &GossipHandle, seed: &str, port: u16) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match try_join(node, gossip, seed, port).await {
            Ok(addr) => {
                tracing::info!(%seed, %addr, "joined through seed");
                return;
            }
            Err(e) => {
                tracing::warn!(%seed, error = %format!("{e:#}"), retry_in = ?backoff, "cannot join seed")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Learns a seed's key, makes it a peer and joins its gossip (one attempt).
pub async fn try_join(
    node: &Node,
    gossip: &GossipHandle,
    seed: &str,
    port: u16,
) -> Result<SocketAddr> {
    let addr = lookup_host(seed)
        .await
        .with_context(|| format!("cannot resolve {seed}"))?
        .next()
        .with_context(|| format!("{seed} resolved to no address"))?;
    let key = node.lookup_key(addr, Duration::from_secs(3)).await?;
    node.add_peer(PeerConfig {
        key,
        endpoint: Some(addr),
        keepalive: Some(25),
    })
    .await?;
    let overlay = SocketAddr::V6(SocketAddrV6::new(
        node.prefix().address_of(&key),
        port,
        0,
        0,
    ));
    gossip.join(vec![overlay]).await?;
    Ok(addr)
}
