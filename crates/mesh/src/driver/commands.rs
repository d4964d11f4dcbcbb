//! Commands from [`Node`](crate::Node) handles.

use std::net::SocketAddrV6;
use std::sync::Arc;
use std::time::Instant;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::storage::PacketMetadata;
use tokio::sync::oneshot;

use super::{Driver, ListenerEntry, PendingConnect, PendingLookup, StreamEntry};
use crate::node::{Command, PeerConfig, PeerStats};
use crate::peers::{Admission, Peer};
use crate::tcp::{ListenerState, StreamState, TcpListener, TcpStream};
use crate::udp::{UdpSocket, UdpState};
use crate::MeshError;

/// Datagram slots and payload bytes of each overlay UDP socket's smoltcp buffers.
const UDP_SLOTS: usize = 256;
const UDP_BYTES: usize = 256 * 1024;

impl Driver {
    pub(super) fn command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::AddPeer(p, reply) => {
                let _ = reply.send(self.add_peer(p, now));
            }
            Command::RemovePeer(key, block, reply) => {
                let known = self.peers.remove(&key, block).is_some();
                let _ = reply.send(known);
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_stats());
            }
            Command::Counters(reply) => {
                let _ = reply.send(self.counters.clone());
            }
            Command::Lookup(addr, after, reply) => {
                let mut nonce = [0u8; 24];
                for chunk in nonce.chunks_mut(8) {
                    chunk.copy_from_slice(&self.random().to_le_bytes());
                }
                self.lookups.push(PendingLookup {
                    nonce,
                    addr,
                    deadline: now + after,
                    after,
                    next_send: now,
                    reply,
                });
                self.expire_lookups(now);
            }
            Command::Rebind(socket, reply) => {
                let res = socket.local_addr().map_err(MeshError::Io);
                if let Ok(addr) = res {
                    super::set_buffers(&socket, self.cfg.socket_buffer);
                    self.underlay.v6 = addr.is_ipv6();
                    self.underlay.socket = socket;
                    tracing::debug!(%addr, "underlay rebound");
                }
                let _ = reply.send(res);
            }
            Command::Listen(port, reply) => {
                let _ = reply.send(self.listen(port));
            }
            Command::Connect(to, reply) => self.connect(to, reply, now),
            Command::UdpBind(port, reply) => {
                let _ = reply.send(self.udp_bind(port));
            }
        }
    }

    fn add_peer(&mut self, p: PeerConfig, now: Instant) -> Result<(), MeshError> {
        if p.key == self.info.public_key {
            return Err(MeshError::SelfPeer);
        }
        if let Some(i) = self.peers.index_of(&p.key) {
            let peer = self.peers.get_mut(i).expect("indexed peer exists");
            peer.configure(p.endpoint, p.keepalive, now);
            if matches!(peer.admission, Admission::Pending { .. }) {
                // the table's probation count must drop with it
                let old = self.peers.remove(&p.key, false).expect("present");
                self.peers.insert(
                    i,
                    Peer {
                        admission: Admission::Configured,
                        ..old
                    },
                );
            } else {
                peer.admission = Admission::Configured;
            }
            return Ok(());
        }
        let index = self.peers.fresh_index();
        let mut peer = Peer::new(
            p.key,
            self.info.prefix.address_of(&p.key),
            p.endpoint,
            self.ident.session(&p.key, index),
            Admission::Configured,
        );
        peer.configure(None, p.keepalive, now);
        self.peers.insert(index, peer);
        Ok(())
    }

    fn peer_stats(&mut self) -> Vec<PeerStats> {
        self.peers
            .iter_mut()
            .map(|p| {
                let (tx_bytes, rx_bytes) = p.session.bytes();
                PeerStats {
                    key: p.key,
                    overlay: p.overlay,
                    endpoint: p.endpoint,
                    last_handshake: p.session.since_handshake(),
                    tx_bytes,
                    rx_bytes,
                    admission: p.admission,
                    handshakes: p.handshakes,
                }
            })
            .collect()
    }

    fn tcp_port_in_use(&self, port: u16) -> bool {
        self.listeners.contains_key(&port)
            || self.streams.keys().any(|h| {
                let s = self.sockets.get::<tcp::Socket<'_>>(*h);
                s.local_endpoint().is_some_and(|e| e.port == port)
            })
    }

    fn udp_port_in_use(&self, port: u16) -> bool {
        self.udps.values().any(|(_, p)| *p == port)
    }

    fn ephemeral_port(&mut self) -> u16 {
        for _ in 0..=16384 {
            let port = self.next_port;
            self.next_port = if port == *super::EPHEMERAL.end() {
                *super::EPHEMERAL.start()
            } else {
                port + 1
            };
            if !self.tcp_port_in_use(port) && !self.udp_port_in_use(port) {
                return port;
            }
        }
        0
    }

    pub(super) fn tcp_socket(&self) -> tcp::Socket<'static> {
        let n = self.cfg.tcp_buffer;
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; n]),
            tcp::SocketBuffer::new(vec![0; n]),
        );
        s.set_congestion_control(tcp::CongestionControl::Cubic);
        // the handle-side buffer already coalesces small writes
        s.set_nagle_enabled(false);
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(60)));
        s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(20)));
        s
    }

    pub(super) fn new_listen_socket(&mut self, port: u16) -> Option<SocketHandle> {
        let mut s = self.tcp_socket();
        s.listen(port).ok()?;
        Some(self.sockets.add(s))
    }

    fn listen(&mut self, port: u16) -> Result<TcpListener, MeshError> {
        let port = if port == 0 {
            self.ephemeral_port()
        } else {
            port
        };
        if self.tcp_port_in_use(port) {
            return Err(MeshError::PortInUse("tcp", port));
        }
        let mut sockets = Vec::new();
        for _ in 0..super::BACKLOG {
            sockets.extend(self.new_listen_socket(port));
        }
        let shared = Arc::new(std::sync::Mutex::new(ListenerState::default()));
        self.listeners.insert(
            port,
            ListenerEntry {
                shared: shared.clone(),
                port,
                sockets,
            },
        );
        let local = SocketAddrV6::new(self.info.overlay, port, 0, 0);
        Ok(TcpListener::new(shared, self.wake.clone(), local))
    }

    fn connect(
        &mut self,
        to: SocketAddrV6,
        reply: oneshot::Sender<Result<TcpStream, MeshError>>,
        now: Instant,
    ) {
        let ip = *to.ip();
        if !self.info.prefix.contains(&ip) {
            let _ = reply.send(Err(MeshError::NotInPrefix(ip, self.info.prefix.network())));
            return;
        }
        let Some(peer) = self.peers.index_for_addr(&ip) else {
            let _ = reply.send(Err(MeshError::NoRoute(ip)));
            return;
        };
        if self.peers.get(peer).is_some_and(|p| p.endpoint.is_none()) {
            let key = self
                .peers
                .get(peer)
                .map(|p| p.key.to_base64())
                .unwrap_or_default();
            let _ = reply.send(Err(MeshError::NoEndpoint(key)));
            return;
        }
        let port = self.ephemeral_port();
        let mut s = self.tcp_socket();
        if let Err(e) = s.connect(self.iface.context(), (ip, to.port()), port) {
            let _ = reply.send(Err(MeshError::Config(format!(
                "cannot connect to {to}: {e}"
            ))));
            return;
        }
        let h = self.sockets.add(s);
        let local = SocketAddrV6::new(self.info.overlay, port, 0, 0);
        self.streams.insert(
            h,
            StreamEntry {
                shared: Arc::new(std::sync::Mutex::new(StreamState::default())),
                fin_sent: false,
                established: false,
                connect: Some(PendingConnect {
                    reply,
                    deadline: now + self.cfg.connect_timeout,
                    peer,
                    addr: to,
                    local,
                }),
            },
        );
    }

    fn udp_bind(&mut self, port: u16) -> Result<UdpSocket, MeshError> {
        let port = if port == 0 {
            self.ephemeral_port()
        } else {
            port
        };
        if self.udp_port_in_use(port) {
            return Err(MeshError::PortInUse("udp", port));
        }
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; UDP_SLOTS], vec![0; UDP_BYTES]),
            udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; UDP_SLOTS], vec![0; UDP_BYTES]),
        );
        s.bind(port)
            .map_err(|e| MeshError::Config(format!("cannot bind overlay udp port {port}: {e}")))?;
        let h = self.sockets.add(s);
        let shared = Arc::new(std::sync::Mutex::new(UdpState::default()));
        self.udps.insert(h, (shared.clone(), port));
        Ok(UdpSocket::new(
            shared,
            self.wake.clone(),
            SocketAddrV6::new(self.info.overlay, port, 0, 0),
        ))
    }
}
