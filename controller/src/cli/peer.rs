//! `vantage peer config`: a wg-quick configuration that makes a stock WireGuard client (a laptop,
//! another cloud's VM) a peer of one mesh node.
//!
//! The client joins as any member does: with the cluster PSK, at the overlay address its own
//! public key gives it in the cluster prefix, which the node admits just in time (no change on
//! the node). It is a peer of that one node only: its AllowedIPs is the node's overlay address,
//! and nodes do not forward packets between peers, so it reaches that node (the controller's API
//! on the overlay, for instance) and nothing else of the mesh.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use vantage_mesh::{OverlayPrefix, PresharedKey, PrivateKey, PublicKey, OVERLAY_MTU};

/// Persistent keepalive of the client, in seconds: keeps NAT mappings and Fly's UDP proxy open,
/// and lets the node reach a client it cannot initiate to.
const KEEPALIVE_S: u16 = 25;

/// Subcommands of `vantage peer`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PeerCmd {
    /// Print a wg-quick config for a stock WireGuard client to join the mesh through one node.
    /// The client reaches only that node (its overlay address), not the rest of the mesh.
    Config(PeerConfigArgs),
}

/// Flags of `vantage peer config`.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerConfigArgs {
    /// Cluster pre-shared key (base64).
    #[arg(long, env = "VANTAGE_MESH_PSK", hide_env_values = true)]
    pub psk: String,
    /// Public key of the node to join through (its `wg` tag in `vantage members --json`).
    #[arg(long)]
    pub node_key: String,
    /// The node's underlay endpoint, `host:port` (its `ep` tag; on Fly its 6PN address, reached
    /// through `fly wireguard create`).
    #[arg(long)]
    pub endpoint: String,
    /// The client's private key (base64). Default: a new one, written into the config.
    #[arg(long, env = "VANTAGE_PEER_KEY", hide_env_values = true)]
    pub private_key: Option<String>,
}

/// `vantage peer config`: the wg-quick text.
pub fn config(args: &PeerConfigArgs) -> Result<String> {
    let psk: PresharedKey = args
        .psk
        .parse()
        .context("invalid --psk (VANTAGE_MESH_PSK)")?;
    let node: PublicKey = args.node_key.parse().context("invalid --node-key")?;
    let key: PrivateKey = match &args.private_key {
        Some(k) => k
            .parse()
            .context("invalid --private-key (VANTAGE_PEER_KEY)")?,
        None => PrivateKey::generate(&mut rand_core::OsRng),
    };
    check_endpoint(&args.endpoint)?;
    if key.public_key() == node {
        bail!("--private-key is the node's own key: the client needs a key of its own");
    }
    Ok(render(&psk, &node, &args.endpoint, &key))
}

/// `host:port`, with an IPv6 host in brackets, as wg-quick's `Endpoint` takes it.
fn check_endpoint(endpoint: &str) -> Result<()> {
    let bad = || {
        format!(
            "--endpoint `{endpoint}` is not host:port: expected e.g. 203.0.113.7:51820, \
             [fdaa:0:1::2]:51820 or node.example:51820"
        )
    };
    let (host, port) = endpoint.rsplit_once(':').with_context(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let bare_v6 = host.contains(':') && !(host.starts_with('[') && host.ends_with(']'));
    if host.is_empty() || !port_ok || bare_v6 {
        bail!(bad());
    }
    Ok(())
}

fn render(psk: &PresharedKey, node: &PublicKey, endpoint: &str, key: &PrivateKey) -> String {
    let prefix = OverlayPrefix::from_psk(psk);
    let me = prefix.address_of(&key.public_key());
    let node_addr = prefix.address_of(node);
    let mut s = String::new();
    // (writing to a String cannot fail)
    let _ = writeln!(
        s,
        "# Vantage mesh: a stock WireGuard client of node {node} ({node_addr}).\n\
         # It reaches only that node, at {node_addr}: nodes do not route between their peers.\n\
         # If that node is the controller, its API is at http://[{node_addr}]:{api}/ (with VANTAGE_TOKEN).\n\
         # Keep this file secret: it holds the cluster's PSK.\n\
         [Interface]\n\
         PrivateKey = {private}\n\
         # the address the mesh derives from this client's public key {public}\n\
         Address = {me}/128\n\
         MTU = {OVERLAY_MTU}\n\
         \n\
         [Peer]\n\
         PublicKey = {node}\n\
         PresharedKey = {psk}\n\
         Endpoint = {endpoint}\n\
         AllowedIPs = {node_addr}/128\n\
         PersistentKeepalive = {KEEPALIVE_S}",
        api = vantage_fleet::tags::ports::API,
        private = key.to_base64(),
        public = key.public_key(),
        psk = psk.to_base64(),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(endpoint: &str) -> PeerConfigArgs {
        PeerConfigArgs {
            psk: PresharedKey::from_bytes([1; 32]).to_base64(),
            node_key: PrivateKey::from_bytes([2; 32]).public_key().to_base64(),
            endpoint: endpoint.into(),
            private_key: Some(PrivateKey::from_bytes([3; 32]).to_base64()),
        }
    }

    #[test]
    fn endpoints_must_be_host_port() {
        for good in [
            "203.0.113.7:51820",
            "[fdaa:0:1::2]:51820",
            "node.example:51820",
        ] {
            assert!(config(&args(good)).is_ok(), "{good}");
        }
        for bad in [
            "fdaa::2:51820",
            "203.0.113.7",
            "host:0",
            ":51820",
            "host:port",
        ] {
            let e = config(&args(bad)).unwrap_err().to_string();
            assert!(e.contains("is not host:port"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_keys_are_named() {
        let mut a = args("h:1");
        a.node_key = "nope".into();
        assert!(format!("{:#}", config(&a).unwrap_err()).contains("--node-key"));
        let mut a = args("h:1");
        a.private_key = Some(PrivateKey::from_bytes([2; 32]).to_base64());
        assert!(config(&a)
            .unwrap_err()
            .to_string()
            .contains("node's own key"));
    }
}
