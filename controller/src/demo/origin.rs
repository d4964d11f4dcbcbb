//! The demo site as a mesh member: a gossip member with `role=origin` in its own region, serving
//! [`site::router`] over the overlay. Agents reach it at its overlay address (their egress guard
//! is pinned to it with `--connect-to demo.vantage.test:80:[<overlay>]:<port>`), so a page load
//! crosses the (emulated) WAN between the agent's region and the origin's.
//!
//! Serving: `axum::serve` over the overlay through [`MeshListener`].

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vantage_fleet::{tags, MemberConfig, Membership};
use vantage_gossip::Tags;
use vantage_mesh::{PublicKey, UdpSocket};

use super::site;
use crate::serve::overlay::MeshListener;

/// The `role` tag value of the demo origin (not a [`tags::Role`]: nothing places work on it).
pub const ROLE_ORIGIN: &str = "origin";

/// A session younger than this needs no handshake before the next packet (WireGuard's
/// REKEY_AFTER_TIME is 120 s; its 25 s keepalive keeps member sessions fresh from then on).
const SESSION_FRESH: Duration = Duration::from_secs(100);
/// The overlay port [`OriginHandle::warm_tunnels`] sends to: discard, which no member serves.
const NUDGE_PORT: u16 = 9;

/// How long [`OriginHandle::stop`] waits for open connections to finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running demo origin.
#[derive(Debug)]
pub struct OriginHandle {
    membership: Membership,
    port: u16,
    nudge: UdpSocket,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    follower: JoinHandle<()>,
}

/// Starts the demo origin: a mesh node on `socket`, gossip with `role=origin`, the seeds of
/// `member` joined in the background, every member made a WireGuard peer as gossip reports it,
/// and the demo site served over overlay TCP on `port`.
pub async fn start(
    member: MemberConfig,
    socket: std::net::UdpSocket,
    port: u16,
) -> Result<OriginHandle> {
    let mut own = Tags::new();
    own.insert(tags::ROLE.into(), ROLE_ORIGIN.into());
    own.insert(tags::MACHINE.into(), member.name.clone());
    own.insert(tags::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    let (membership, mut events) = Membership::start(&member, &mut own, socket).await?;
    let listener = match membership.node.tcp_listen(port).await {
        Ok(l) => l,
        Err(e) => {
            membership.gossip.leave().await.ok();
            membership.node.shutdown().await;
            return Err(e).with_context(|| format!("cannot listen on overlay TCP port {port}"));
        }
    };
    let nudge = match membership.node.udp_bind(0).await {
        Ok(u) => u,
        Err(e) => {
            membership.gossip.leave().await.ok();
            membership.node.shutdown().await;
            return Err(e).context("cannot bind an overlay UDP socket");
        }
    };
    let follower = {
        let m = membership.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                m.follow(&e).await;
            }
        })
    };
    let _joined = membership.join_seeds(&member);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(MeshListener(listener), site::router()).with_graceful_shutdown(
            async move {
                let _ = stopped.await;
            },
        );
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "demo origin server failed");
        }
    });
    tracing::info!(
        name = %member.name,
        region = %member.region,
        overlay = %membership.node.overlay_addr(),
        port,
        "demo origin serving"
    );
    Ok(OriginHandle {
        membership,
        port,
        nudge,
        stop,
        server,
        follower,
    })
}

impl OriginHandle {
    /// The overlay address the site is served on.
    pub fn overlay_addr(&self) -> Ipv6Addr {
        self.membership.node.overlay_addr()
    }

    /// The overlay TCP port the site is served on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The overlay socket address the site is served on.
    pub fn site_addr(&self) -> SocketAddrV6 {
        SocketAddrV6::new(self.overlay_addr(), self.port, 0, 0)
    }

    /// The mesh node's WireGuard public key.
    pub fn public_key(&self) -> PublicKey {
        self.membership.node.public_key()
    }

    /// The underlay endpoint others send to (a seed for them).
    pub fn advertise_addr(&self) -> SocketAddr {
        self.membership.node.advertise_addr()
    }

    /// Counts the agents (members with `role=agent`) that have a live WireGuard session with the
    /// origin, and nudges each one that has none with one overlay datagram, which starts a
    /// handshake. A real origin never asks a browser for a WireGuard handshake, so a page load's
    /// first connection must pay the emulated RTT and nothing more: the demo waits for these
    /// tunnels before it loads. Returns `(up, agents)`.
    pub async fn warm_tunnels(&self) -> Result<(usize, usize)> {
        let node = &self.membership.node;
        let members = self.membership.gossip.members().await?;
        let peers = node.peers().await?;
        let mut up = 0;
        let mut agents = 0;
        for m in members.iter().filter(|m| {
            m.state == vantage_gossip::State::Alive
                && m.tags.get(tags::ROLE).map(String::as_str) == Some(tags::Role::Agent.as_str())
        }) {
            let Some(key) = vantage_fleet::member_key(m) else {
                continue;
            };
            agents += 1;
            let live = peers
                .iter()
                .find(|p| p.key == key)
                .and_then(|p| p.last_handshake)
                .is_some_and(|age| age < SESSION_FRESH);
            if live {
                up += 1;
                continue;
            }
            let to = SocketAddrV6::new(node.prefix().address_of(&key), NUDGE_PORT, 0, 0);
            // an unbound port: the datagram only has to make the mesh open a session
            let _ = self.nudge.send_to(b"warm", to).await;
        }
        Ok((up, agents))
    }

    /// The member: its node and gossip.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The agent's `--connect-to` pin for `host` on port 80: `host:80:[<overlay>]:<port>`.
    pub fn connect_to(&self, host: &str) -> String {
        format!("{host}:80:[{}]:{}", self.overlay_addr(), self.port)
    }

    /// Leaves the gossip, stops serving (open connections get [`STOP_GRACE`]) and shuts the
    /// mesh node down.
    pub async fn stop(self) {
        let OriginHandle {
            membership,
            stop,
            mut server,
            follower,
            ..
        } = self;
        membership.gossip.leave().await.ok();
        let _ = stop.send(());
        if tokio::time::timeout(STOP_GRACE, &mut server).await.is_err() {
            server.abort();
        }
        follower.abort();
        membership.node.shutdown().await;
    }
}
