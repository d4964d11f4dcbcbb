//! The public handle to a mesh node and its configuration.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::addr::OverlayPrefix;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::peers::{Admission, AdmissionConfig};
use crate::tcp::{TcpListener, TcpStream};
use crate::udp::UdpSocket;
use crate::{Counters, MeshError};

/// Everything a node needs; validated by [`Node::start`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub private_key: PrivateKey,
    /// The cluster PSK, mandatory on every handshake.
    pub psk: PresharedKey,
    /// The underlay endpoint other nodes should send to, when it differs from the bound address
    /// (NAT, Fly's public UDP, the WAN emulator). `None` means the bound address.
    pub advertise: Option<SocketAddr>,
    pub admission: AdmissionConfig,
    /// Receive and send buffer of each overlay TCP socket, in bytes (the TCP window); 1–4 MiB.
    pub tcp_buffer: usize,
    /// How long an overlay TCP connect may take, handshake included.
    pub connect_timeout: Duration,
    /// Seeds smoltcp (TCP sequence numbers, ports) and the first receiver index.
    pub seed: u64,
    /// Key lookups answered per second (token bucket, burst twice that).
    pub lookups_per_second: u32,
    /// Handshake initiations processed per second before cookies are demanded.
    pub handshakes_per_second: u64,
    /// Underlay socket send and receive buffer, in bytes.
    pub socket_buffer: usize,
}

impl NodeConfig {
    /// A config with the defaults and a random seed.
    pub fn new(private_key: PrivateKey, psk: PresharedKey) -> Self {
        use rand_core::RngCore;
        Self {
            private_key,
            psk,
            advertise: None,
            admission: AdmissionConfig::default(),
            tcp_buffer: 4 << 20,
            connect_timeout: Duration::from_secs(10),
            seed: rand_core::OsRng.next_u64(),
            lookups_per_second: 10,
            handshakes_per_second: 100,
            socket_buffer: 4 << 20,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), MeshError> {
        let bad = |what: String| Err(MeshError::Config(what));
        if !(1 << 20..=4 << 20).contains(&self.tcp_buffer) {
            return bad(format!(
                "tcp_buffer is {} bytes; accepted is 1 MiB to 4 MiB",
                self.tcp_buffer
            ));
        }
        if self.connect_timeout < Duration::from_millis(100) {
            return bad(format!(
                "connect_timeout is {:?}; it must be at least 100 ms",
                self.connect_timeout
            ));
        }
        if self.admission.enabled
            && (self.admission.max_pending == 0 || self.admission.per_second == 0)
        {
            return bad("admission is enabled but max_pending or per_second is 0".into());
        }
        if let Some(a) = self.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return bad(format!("advertise address {a} is not a reachable endpoint (unspecified address or port 0)"));
            }
        }
        Ok(())
    }
}

/// A peer to add.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub key: PublicKey,
    /// Where to send; `None` for a peer that will contact us first (roaming client).
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive interval in seconds.
    pub keepalive: Option<u16>,
}

impl PeerConfig {
    /// A peer at `endpoint`, without keepalive.
    pub fn new(key: PublicKey, endpoint: Option<SocketAddr>) -> Self {
        Self {
            key,
            endpoint,
            keepalive: None,
        }
    }
}

/// A peer's state as [`Node::peers`] reports it.
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub key: PublicKey,
    pub overlay: Ipv6Addr,
    pub endpoint: Option<SocketAddr>,
    /// Time since the last completed handshake.
    pub last_handshake: Option<Duration>,
    /// Inner payload bytes sent and received.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub admission: Admission,
    /// Handshakes completed with this peer, counted as they happen: initiations from it that this
    /// node answered, and its responses to this node's initiations.
    pub handshakes: u64,
}

pub(crate) enum Command {
    AddPeer(PeerConfig, oneshot::Sender<Result<(), MeshError>>),
    /// The key, and whether to bar it from just-in-time admission.
    RemovePeer(PublicKey, bool, oneshot::Sender<bool>),
    Peers(oneshot::Sender<Vec<PeerStats>>),
    Counters(oneshot::Sender<Counters>),
    Lookup(
        SocketAddr,
        Duration,
        oneshot::Sender<Result<PublicKey, MeshError>>,
    ),
    Rebind(
        tokio::net::UdpSocket,
        oneshot::Sender<Result<SocketAddr, MeshError>>,
    ),
    Listen(u16, oneshot::Sender<Result<TcpListener, MeshError>>),
    Connect(SocketAddrV6, oneshot::Sender<Result<TcpStream, MeshError>>),
    UdpBind(u16, oneshot::Sender<Result<UdpSocket, MeshError>>),
}

/// A running mesh node. Cloning gives another handle to the same node; the node stops when the
/// last handle is dropped or [`Node::shutdown`] is called.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) cmd: mpsc::Sender<Command>,
    pub(crate) info: Arc<NodeInfo>,
}

#[derive(Debug)]
pub(crate) struct NodeInfo {
    pub(crate) public_key: PublicKey,
    pub(crate) overlay: Ipv6Addr,
    pub(crate) prefix: OverlayPrefix,
    pub(crate) advertise: SocketAddr,
    pub(crate) local: std::sync::Mutex<SocketAddr>,
    pub(crate) stop: Notify,
    pub(crate) done: tokio::sync::watch::Receiver<bool>,
}

impl Node {
    /// Starts a node on a socket the caller bound (tests bind their own; binaries bind from config).
    /// Must be called inside a tokio runtime.
    pub fn start(config: NodeConfig, socket: std::net::UdpSocket) -> Result<Node, MeshError> {
        crate::driver::spawn(config, socket)
    }

    /// Binds `addr` and starts a node on it.
    pub fn bind(config: NodeConfig, addr: SocketAddr) -> Result<Node, MeshError> {
        let socket = std::net::UdpSocket::bind(addr).map_err(|e| MeshError::Bind(addr, e))?;
        Self::start(config, socket)
    }

    pub fn public_key(&self) -> PublicKey {
        self.info.public_key
    }

    /// This node's overlay address.
    pub fn overlay_addr(&self) -> Ipv6Addr {
        self.info.overlay
    }

    pub fn prefix(&self) -> OverlayPrefix {
        self.info.prefix
    }

    /// The endpoint others should send to.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.info.advertise
    }

    /// What another node needs to add this one as a peer: its key and advertised endpoint.
    pub fn as_peer(&self) -> PeerConfig {
        PeerConfig::new(self.public_key(), Some(self.advertise_addr()))
    }

    /// The bound underlay address.
    pub fn local_addr(&self) -> SocketAddr {
        *self.info.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| MeshError::Shutdown)?;
        rx.await.map_err(|_| MeshError::Shutdown)
    }

    /// Adds a peer, or updates its endpoint and keepalive if it is already known.
    pub async fn add_peer(&self, peer: PeerConfig) -> Result<(), MeshError> {
        self.call(|tx| Command::AddPeer(peer, tx)).await?
    }

    /// Removes a peer. It will not be admitted just-in-time again unless it is added back.
    /// Returns whether it was known.
    pub async fn remove_peer(&self, key: &PublicKey) -> Result<bool, MeshError> {
        let key = *key;
        self.call(|tx| Command::RemovePeer(key, true, tx)).await
    }

    /// Removes a peer without barring it: it may contact this node again and be admitted
    /// just-in-time (a member that left and comes back). Returns whether it was known.
    pub async fn forget_peer(&self, key: &PublicKey) -> Result<bool, MeshError> {
        let key = *key;
        self.call(|tx| Command::RemovePeer(key, false, tx)).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerStats>, MeshError> {
        self.call(Command::Peers).await
    }

    /// Packet counters (drops and their reasons).
    pub async fn counters(&self) -> Result<Counters, MeshError> {
        self.call(Command::Counters).await
    }

    /// Learns the public key of the node at `addr` with the underlay key lookup.
    pub async fn lookup_key(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<PublicKey, MeshError> {
        self.call(|tx| Command::Lookup(addr, timeout, tx)).await?
    }

    /// Moves the node to a new underlay socket (its peers follow it when they next hear from it).
    pub async fn rebind(&self, socket: std::net::UdpSocket) -> Result<SocketAddr, MeshError> {
        socket.set_nonblocking(true).map_err(MeshError::Io)?;
        let socket = tokio::net::UdpSocket::from_std(socket).map_err(MeshError::Io)?;
        let addr = self.call(|tx| Command::Rebind(socket, tx)).await??;
        *self.info.local.lock().unwrap_or_else(|e| e.into_inner()) = addr;
        Ok(addr)
    }

    pub async fn tcp_listen(&self, port: u16) -> Result<TcpListener, MeshError> {
        self.call(|tx| Command::Listen(port, tx)).await?
    }

    /// Connects to an overlay address. Fails with [`MeshError::HandshakeTimeout`] when the peer never
    /// completes a WireGuard handshake (unreachable, or a different PSK) within the connect timeout.
    pub async fn tcp_connect(&self, to: SocketAddrV6) -> Result<TcpStream, MeshError> {
        self.call(|tx| Command::Connect(to, tx)).await?
    }

    /// Binds an overlay UDP port; 0 picks a free one.
    pub async fn udp_bind(&self, port: u16) -> Result<UdpSocket, MeshError> {
        self.call(|tx| Command::UdpBind(port, tx)).await?
    }

    /// Stops the node and waits until its task has ended. Open streams fail.
    pub async fn shutdown(&self) {
        self.info.stop.notify_one();
        let mut done = self.info.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}
