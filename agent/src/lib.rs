//! `vantage-agent`: for now, a mesh member that joins its seeds and stays up. Chromium
//! supervision, the load executor and the CDP gateway come with the agent issue.

pub mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::lookup_host;
use vantage_mesh::{Node, NodeConfig, PeerConfig};

pub use config::{Args, Config};

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
        public_key = %node.public_key(),
        overlay = %node.overlay_addr(),
        bind = %node.local_addr(),
        advertise = %node.advertise_addr(),
        "mesh node up"
    );
    for seed in &config.seeds {
        let node = node.clone();
        let seed = seed.clone();
        tokio::spawn(async move { join_seed(&node, &seed).await });
    }
    shutdown.await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

/// Resolves a seed, learns its key with the underlay lookup and adds it, retrying with backoff.
async fn join_seed(node: &Node, seed: &str) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match try_join(node, seed).await {
            Ok(addr) => {
                tracing::info!(%seed, %addr, "seed added as peer");
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

async fn try_join(node: &Node, seed: &str) -> Result<SocketAddr> {
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
    Ok(addr)
}
