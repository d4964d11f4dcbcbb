//! `vantage-fleet`: what makes a process a member of a Vantage fleet, shared by the agent and the
//! controller. The mesh node, gossip over the overlay, seed joining (underlay key lookup, then a
//! gossip join; or Fly's `<app>.internal`), members made WireGuard peers, and the tag keys.

pub mod config;
pub mod fly;
pub mod tags;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::lookup_host;
use tokio::sync::mpsc;
use vantage_gossip::transport::MeshTransport;
use vantage_gossip::{Event, GossipHandle, Member, Tags};
use vantage_mesh::{Node, NodeConfig, PeerConfig, PublicKey};

use crate::tags as tag;

pub use config::{FlySeeds, MemberArgs, MemberConfig};

/// Persistent keepalive for every member peer, in seconds (NAT and Fly's UDP proxy).
const KEEPALIVE_S: u16 = 25;

/// A running member: its mesh node and its gossip.
#[derive(Debug, Clone)]
pub struct Membership {
    pub node: Node,
    pub gossip: GossipHandle,
    pub name: String,
    echo: bool,
    /// Each member's WireGuard key by name: Left and Reaped events carry only the name.
    keys: Arc<Mutex<HashMap<String, PublicKey>>>,
}

impl Membership {
    /// Starts the mesh node on `socket` and gossip on the overlay with `tags` (the mesh's own
    /// `region`, `wg` and `ep` tags are added to `tags`). Events go to the returned channel.
    pub async fn start(
        config: &MemberConfig,
        tags: &mut Tags,
        socket: std::net::UdpSocket,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>)> {
        let mut mesh = NodeConfig::new(config.private_key.clone(), config.psk.clone());
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
        tags.insert(tag::REGION.into(), config.region.clone());
        tags.insert(tag::WG.into(), node.public_key().to_base64());
        tags.insert(tag::EP.into(), node.advertise_addr().to_string());
        let transport = MeshTransport::bind(node.clone(), config.gossip_port)
            .await
            .context("cannot bind gossip on the overlay")?;
        let (tx, events) = mpsc::unbounded_channel();
        let gossip_cfg = vantage_gossip::Config::profile(config.gossip_profile);
        let seed = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
        let gossip = vantage_gossip::spawn(gossip_cfg, &config.name, tags, transport, seed, tx)?;
        Ok((
            Self {
                node,
                gossip,
                name: config.name.clone(),
                echo: config.echo_events,
                keys: Arc::default(),
            },
            events,
        ))
    }

    /// Joins through the configured seeds (or Fly's DNS), each retried with backoff in the
    /// background. The returned channel gets one message per seed joined.
    pub fn join_seeds(&self, config: &MemberConfig) -> mpsc::UnboundedReceiver<()> {
        let (joined_tx, joined_rx) = mpsc::unbounded_channel();
        let port = config.gossip_port;
        for seed in &config.seeds {
            let (me, seed, joined) = (self.clone(), seed.clone(), joined_tx.clone());
            tokio::spawn(async move {
                join_seed(&me.node, &me.gossip, &seed, port).await;
                let _ = joined.send(());
            });
        }
        if let Some(fly) = config.fly_seeds.clone() {
            let me = self.clone();
            tokio::spawn(async move {
                for seed in fly_seeds(&fly).await {
                    let (me, joined) = (me.clone(), joined_tx.clone());
                    tokio::spawn(async move {
                        join_seed(&me.node, &me.gossip, &seed.to_string(), port).await;
                        let _ = joined.send(());
                    });
                }
            });
        }
        joined_rx
    }

    /// Keeps the mesh in step with one membership event, and reports it on stdout in the form
    /// Serf's agent logs it.
    pub async fn follow(&self, e: &Event) {
        if self.echo {
            echo_event(e);
        }
        match e {
            Event::Conflict {
                name,
                addr,
                claimed,
            } => {
                tracing::warn!(%name, %addr, %claimed, "refused a claim to a live member's name from another address");
            }
            Event::Joined(m) | Event::Updated(m) if m.name != self.name => {
                let replaced = member_key(m).and_then(|k| self.remember(&m.name, Some(k)));
                if let Some(old) = replaced {
                    // same name, new key: the member restarted with a new identity
                    self.forget_peer(&m.name, &old).await;
                }
                add_member_peer(&self.node, m).await;
            }
            // a failed member keeps its peer: it may come back, and gossip tries to reconnect
            Event::Left { name } | Event::Reaped { name } if *name != self.name => {
                if let Some(key) = self.remember(name, None) {
                    self.forget_peer(name, &key).await;
                }
            }
            _ => {}
        }
    }

    /// Records (or with `None` drops) a member's key; returns the key it replaced, if different.
    fn remember(&self, name: &str, key: Option<PublicKey>) -> Option<PublicKey> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let old = match key {
            Some(k) => keys.insert(name.to_owned(), k),
            None => keys.remove(name),
        };
        old.filter(|o| Some(*o) != key)
    }

    /// Drops a departed member's WireGuard session (no more keepalives or handshake retries),
    /// without barring it: if it comes back it is admitted and re-added as before.
    async fn forget_peer(&self, name: &str, key: &PublicKey) {
        match self.node.forget_peer(key).await {
            Ok(true) => tracing::debug!(member = %name, "mesh peer removed"),
            Ok(false) => {}
            Err(e) => tracing::warn!(member = %name, error = %e, "cannot remove mesh peer"),
        }
    }
}

/// Waits for the other machines of a Fly app to appear in `<app>.internal`.
async fn fly_seeds(fly: &FlySeeds) -> Vec<std::net::SocketAddr> {
    let mut backoff = Duration::from_secs(1);
    let found = loop {
        match fly::seeds(&fly.app, fly.me, fly.port, fly.dns).await {
            Ok(s) if !s.is_empty() => break s,
            Ok(_) => {
                tracing::info!(app = %fly.app, "no other machines in {}.internal yet", fly.app)
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "fly seed lookup failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    };
    tracing::info!(seeds = ?found, "seeds from fly dns");
    found
}

/// Prints a membership change on stdout in the form Serf's agent logs it.
pub fn echo_event(e: &Event) {
    match e {
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
                m.tags.get(tag::REGION).map_or("?", |s| s)
            );
        }
        Event::Failed { name } => println!("EventMemberFailed: {name}"),
        Event::Left { name } => println!("EventMemberLeave: {name}"),
        Event::Reaped { name } => println!("EventMemberReap: {name}"),
        Event::User { ltime, name, .. } => println!("EventUser: {name} ltime={ltime}"),
        Event::Conflict { name, .. } => println!("EventMemberConflict: {name}"),
        Event::Suspect { .. } | Event::CoordinateUpdated { .. } => {}
    }
}

/// A member's WireGuard public key, from its `wg` tag.
pub fn member_key(m: &Member) -> Option<PublicKey> {
    m.tags
        .get(tag::WG)
        .and_then(|k| k.parse::<PublicKey>().ok())
}

/// Makes a member reachable over the mesh, from its `wg` and `ep` tags.
pub async fn add_member_peer(node: &Node, m: &Member) {
    let endpoint = m
        .tags
        .get(tag::EP)
        .and_then(|e| e.parse::<SocketAddr>().ok());
    let Some(key) = member_key(m) else {
        tracing::warn!(member = %m.name, "member has no valid `{}` tag; cannot reach it over the mesh", tag::WG);
        return;
    };
    if let Err(e) = node
        .add_peer(PeerConfig {
            key,
            endpoint,
            keepalive: Some(KEEPALIVE_S),
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
        keepalive: Some(KEEPALIVE_S),
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
