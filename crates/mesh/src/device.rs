//! The smoltcp device: inner packets in from decapsulation, and out straight into encryption and
//! the underlay socket, with no queue in between.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};

use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;
use tokio::net::UdpSocket;

use crate::peers::Peers;
use crate::Counters;

/// The underlay socket and how to address it.
pub(crate) struct Underlay {
    pub(crate) socket: UdpSocket,
    /// An IPv6 socket needs IPv4 destinations in mapped form.
    pub(crate) v6: bool,
}

impl Underlay {
    pub(crate) fn send(&self, data: &[u8], to: SocketAddr, counters: &mut Counters) {
        let to = match (self.v6, to) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => to,
        };
        match self.socket.try_send_to(data, to) {
            Ok(_) => {}
            // a full send buffer is congestion: drop, as a router would, and let TCP recover
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => counters.send_dropped += 1,
            Err(e) => {
                counters.send_errors += 1;
                tracing::debug!(%to, error = %e, "underlay send failed");
            }
        }
    }
}

/// Whether an inner IPv6 packet is a TCP segment with payload (one a receiver must ACK).
pub(crate) fn carries_tcp_data(packet: &[u8]) -> bool {
    const TCP: u8 = 6;
    if packet.len() < 60 || packet[6] != TCP {
        return false;
    }
    let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let header = usize::from(packet[52] >> 4) * 4;
    payload > header
}

/// Encrypts one inner packet for the peer that owns its destination and sends it.
pub(crate) fn send_inner(
    peers: &mut Peers,
    underlay: &Underlay,
    packet: &[u8],
    enc: &mut [u8],
    counters: &mut Counters,
) {
    if packet.len() < 40 {
        return;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&packet[24..40]);
    let dst = Ipv6Addr::from(dst);
    let Some(peer) = peers.index_for_addr(&dst).and_then(|i| peers.get_mut(i)) else {
        counters.no_route += 1;
        return;
    };
    let Some(endpoint) = peer.endpoint else {
        counters.no_route += 1;
        return;
    };
    if let Some(dgram) = peer.session.encapsulate(packet, enc) {
        underlay.send(dgram, endpoint, counters);
    }
}

pub(crate) struct Out<'a> {
    pub(crate) peers: &'a mut Peers,
    pub(crate) underlay: &'a Underlay,
    pub(crate) inner: &'a mut [u8],
    pub(crate) enc: &'a mut [u8],
    pub(crate) counters: &'a mut Counters,
}

pub(crate) struct Wire<'a> {
    pub(crate) rx: &'a mut VecDeque<Vec<u8>>,
    pub(crate) pool: &'a mut Vec<Vec<u8>>,
    pub(crate) out: Out<'a>,
}

pub(crate) struct Rx<'a> {
    buf: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

pub(crate) struct Tx<'a, 'b> {
    out: &'a mut Out<'b>,
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.buf);
        if self.pool.len() < POOL_MAX {
            self.pool.push(self.buf);
        }
        r
    }
}

impl phy::TxToken for Tx<'_, '_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let out = self.out;
        let r = f(&mut out.inner[..len]);
        send_inner(
            out.peers,
            out.underlay,
            &out.inner[..len],
            out.enc,
            out.counters,
        );
        r
    }
}

/// Spare receive buffers kept for reuse.
pub(crate) const POOL_MAX: usize = 512;

impl<'w> phy::Device for Wire<'w> {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a, 'w>
    where
        Self: 'a;

    fn receive(&mut self, _now: SmolInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let buf = self.rx.pop_front()?;
        Some((
            Rx {
                buf,
                pool: self.pool,
            },
            Tx { out: &mut self.out },
        ))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<Self::TxToken<'_>> {
        Some(Tx { out: &mut self.out })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities()
    }
}

pub(crate) fn capabilities() -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = crate::OVERLAY_MTU;
    // bounds what one poll emits in a row, so one stream cannot monopolise the socket buffer
    caps.max_burst_size = Some(64);
    // WireGuard's AEAD already authenticates every inner byte; checksums are still written so
    // that stock WireGuard peers' kernels accept our packets
    caps.checksum.ipv4 = Checksum::Tx;
    caps.checksum.tcp = Checksum::Tx;
    caps.checksum.udp = Checksum::Tx;
    caps.checksum.icmpv6 = Checksum::Tx;
    caps
}

/// Gives smoltcp the capabilities when the interface is created; carries no packets.
pub(crate) struct Probe;

impl phy::Device for Probe {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a, 'static>;

    fn receive(&mut self, _now: SmolInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<Self::TxToken<'_>> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities()
    }
}
