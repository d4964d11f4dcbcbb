//! `vantage-mesh`: a userspace WireGuard mesh.
//!
//! Each node has one UDP socket, a boringtun `Tunn` per peer and a smoltcp IPv6 stack on its
//! overlay address. The rest of the program sees async overlay UDP and TCP ([`Node::udp_bind`],
//! [`Node::tcp_listen`], [`Node::tcp_connect`]); no TUN device, no kernel module. One tokio task
//! owns all protocol state; handles talk to it through commands and per-socket buffers.

mod addr;
mod device;
mod driver;
mod keys;
pub mod lookup;
mod node;
mod peers;
mod tcp;
mod udp;
mod wg;

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

pub use addr::{OverlayPrefix, PREFIX_LEN};
pub use keys::{KeyError, PresharedKey, PrivateKey, PublicKey};
pub use node::{Node, NodeConfig, PeerConfig, PeerStats};
pub use peers::{Admission, AdmissionConfig};
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;

/// The overlay MTU: the IPv6 minimum, so the overlay works over any underlay path. The largest
/// underlay datagram is 1280 + 32 (WireGuard) + 8 (UDP) + 40 (IPv6) = 1360 bytes, within Fly's
/// 1420-byte interface MTU (`tests/tests/fly_mtu.rs`).
pub const OVERLAY_MTU: usize = 1280;
/// The largest UDP payload that fits one overlay packet (1280 − 40 − 8).
pub const MAX_OVERLAY_UDP_PAYLOAD: usize = OVERLAY_MTU - 48;

/// Errors from the mesh.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("invalid mesh config: {0}")]
    Config(String),
    #[error("cannot bind underlay socket {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("underlay socket error: {0}")]
    Io(#[source] std::io::Error),
    #[error("no peer owns overlay address {0}; add the peer first")]
    NoRoute(Ipv6Addr),
    #[error("peer {0} has no known endpoint; give one or wait for it to contact this node")]
    NoEndpoint(String),
    #[error(
        "no WireGuard handshake with peer {peer} at {endpoint} completed within {after:?}: \
         the peer is unreachable or uses a different cluster PSK"
    )]
    HandshakeTimeout {
        peer: String,
        endpoint: SocketAddr,
        after: Duration,
    },
    #[error(
        "overlay TCP connect to {addr} timed out after {after:?} (the WireGuard session is up)"
    )]
    ConnectTimeout { addr: SocketAddrV6, after: Duration },
    #[error("overlay TCP connect to {0} was refused")]
    ConnectionRefused(SocketAddrV6),
    #[error("overlay {0} port {1} is already in use")]
    PortInUse(&'static str, u16),
    #[error("overlay address {0} is not in this cluster's prefix {1}/64")]
    NotInPrefix(Ipv6Addr, Ipv6Addr),
    #[error("cannot add this node's own key as a peer")]
    SelfPeer,
    #[error("no key lookup reply from {addr} within {after:?}: nothing listens there, or it is not a Vantage node")]
    LookupTimeout { addr: SocketAddr, after: Duration },
    #[error("mesh node has shut down")]
    Shutdown,
}

/// Why packets were dropped or refused, for diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Underlay datagrams that were neither WireGuard nor a key lookup.
    pub junk: u64,
    /// WireGuard messages that failed authentication, replay or index checks.
    pub rejected: u64,
    /// Inner packets whose source was not the sending peer's overlay address, or not for us.
    pub spoofed: u64,
    /// Inner packets for an address no peer owns, or a peer with no endpoint.
    pub no_route: u64,
    /// Handshake initiations dropped unexamined because they arrived faster than ten times
    /// the handshake rate limit (a flood).
    pub shed: u64,
    /// Cookie replies sent because the node was under handshake load.
    pub cookies_sent: u64,
    /// Unknown initiators admitted on probation, and those refused (cap, rate, removed key).
    pub admitted: u64,
    pub admission_refused: u64,
    /// Unknown initiators dropped because they never completed.
    pub admission_expired: u64,
    pub lookups_answered: u64,
    pub lookups_refused: u64,
    /// Underlay sends dropped on a full socket buffer, and failed sends.
    pub send_dropped: u64,
    pub send_errors: u64,
}
