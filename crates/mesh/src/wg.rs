//! The seam around the WireGuard engine. Everything boringtun-specific lives here, so a fork (for
//! example gotatun, if boringtun#363's spurious rekeys bite) can replace it without touching the
//! driver.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};

use crate::keys::{PresharedKey, PrivateKey, PublicKey};

/// Scratch buffers must also fit a handshake initiation (148 bytes).
pub(crate) const SCRATCH_LEN: usize = 2048;

/// What an underlay datagram is, found without any cryptography.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A handshake initiation: the sender is found by public key.
    Initiation,
    /// A handshake response for our receiver index; it passes the shared rate limiter first.
    Response(u32),
    /// A cookie reply or data: routed by our receiver index.
    ForIndex(u32),
    /// A key lookup message.
    Lookup,
    /// Anything else; the underlay answers nothing but WireGuard and the lookup.
    Junk,
}

pub(crate) fn classify(datagram: &[u8]) -> Kind {
    if crate::lookup::is_lookup(datagram) {
        return Kind::Lookup;
    }
    match Tunn::parse_incoming_packet(datagram) {
        Ok(Packet::HandshakeInit(_)) => Kind::Initiation,
        Ok(Packet::HandshakeResponse(p)) => Kind::Response(p.receiver_idx >> 8),
        Ok(Packet::PacketCookieReply(p)) => Kind::ForIndex(p.receiver_idx >> 8),
        Ok(Packet::PacketData(p)) => Kind::ForIndex(p.receiver_idx >> 8),
        Err(_) => Kind::Junk,
    }
}

/// The node's own identity and the state shared by all its sessions.
pub(crate) struct Identity {
    private: PrivateKey,
    public: boringtun::x25519::PublicKey,
    psk: PresharedKey,
    /// Counts every handshake message once, in [`Identity::screen`].
    limiter: Arc<RateLimiter>,
    /// What sessions check with: mac1 only, never "under load", so no message is counted twice
    /// and a session never answers with a cookie reply.
    pass: Arc<RateLimiter>,
}

/// A handshake message after mac1 and the load check.
pub(crate) enum Screened<'a, 'd> {
    Pass(Packet<'d>),
    /// We are under load and the sender has no valid cookie: send this reply instead.
    CookieReply(&'a [u8]),
    Rejected(WireGuardError),
}

/// The outcome of looking at a handshake initiation from someone.
pub(crate) enum Initiator<'a> {
    /// mac1 checked, and the static key decrypted.
    Known(PublicKey),
    /// We are under load and the sender has no valid cookie: send this reply instead.
    CookieReply(&'a [u8]),
    Rejected(WireGuardError),
}

impl Identity {
    /// `handshakes_per_sec` is how many initiations are processed each second before the node
    /// demands cookies (WireGuard's "under load" mode).
    pub(crate) fn new(private: PrivateKey, psk: PresharedKey, handshakes_per_sec: u64) -> Self {
        let public = boringtun::x25519::PublicKey::from(private.secret());
        let limiter = Arc::new(RateLimiter::new(&public, handshakes_per_sec));
        let pass = Arc::new(RateLimiter::new(&public, u64::MAX));
        Self {
            private,
            public,
            psk,
            limiter,
            pass,
        }
    }

    /// Must be called about once a second.
    pub(crate) fn reset_rate_limiter(&self) {
        self.limiter.reset_count();
    }

    /// Checks mac1 of a handshake message, and its cookie (mac2) under load. This is the one
    /// place a message meets the shared rate limiter.
    pub(crate) fn screen<'a, 'd>(
        &self,
        src: SocketAddr,
        datagram: &'d [u8],
        scratch: &'a mut [u8],
    ) -> Screened<'a, 'd> {
        match self
            .limiter
            .verify_packet(Some(src.ip()), datagram, scratch)
        {
            Ok(p) => Screened::Pass(p),
            Err(TunnResult::WriteToNetwork(cookie)) => Screened::CookieReply(cookie),
            Err(TunnResult::Err(e)) => Screened::Rejected(e),
            Err(_) => Screened::Rejected(WireGuardError::InvalidPacket),
        }
    }

    /// Screens an initiation, then does the Diffie-Hellman that reveals the initiator's claimed
    /// static key. The claim is not proof: only the session's own handshake checks it.
    pub(crate) fn identify<'a>(
        &self,
        src: SocketAddr,
        datagram: &[u8],
        scratch: &'a mut [u8],
    ) -> Initiator<'a> {
        let packet = match self.screen(src, datagram, scratch) {
            Screened::Pass(p) => p,
            Screened::CookieReply(cookie) => return Initiator::CookieReply(cookie),
            Screened::Rejected(e) => return Initiator::Rejected(e),
        };
        let Packet::HandshakeInit(init) = packet else {
            return Initiator::Rejected(WireGuardError::WrongPacketType);
        };
        match parse_handshake_anon(self.private.secret(), &self.public, &init) {
            Ok(half) => Initiator::Known(PublicKey::from_bytes(half.peer_static_public)),
            Err(e) => Initiator::Rejected(e),
        }
    }

    /// A session with `peer`. Persistent keepalive is the driver's job (it can change later).
    pub(crate) fn session(&self, peer: &PublicKey, index: u32) -> Session {
        debug_assert!(
            index < 1 << 24,
            "boringtun routes replies by receiver_idx >> 8"
        );
        Session {
            tunn: Tunn::new(
                self.private.secret().clone(),
                peer.to_x25519(),
                Some(*self.psk.as_bytes()),
                None,
                index,
                Some(self.pass.clone()),
            ),
        }
    }
}

/// One peer's WireGuard state.
pub(crate) struct Session {
    tunn: Tunn,
}

/// What came out of a datagram given to a session.
#[derive(Debug)]
pub(crate) enum Decap<'a> {
    /// A handshake message the session accepted. Send this back to the peer, then call
    /// [`Session::flush`] until it returns `None`.
    Network(&'a [u8]),
    /// A cookie reply to send back. It proves nothing about the sender, whose mac1 anyone can
    /// compute from our public key.
    Cookie(&'a [u8]),
    /// An authenticated inner IPv6 packet and its source address.
    Tunnel(&'a [u8], Ipv6Addr),
    /// An authenticated keepalive (empty data packet).
    Keepalive,
    /// Consumed without proving anything about the sender (a cookie reply it sent us).
    Done,
    Failed(WireGuardError),
}

impl Decap<'_> {
    /// Whether the session authenticated the datagram: only then may the peer's endpoint move.
    pub(crate) fn authenticated(&self) -> bool {
        matches!(self, Self::Network(_) | Self::Tunnel(..) | Self::Keepalive)
    }
}

/// What a timer tick asks for.
#[derive(Debug)]
pub(crate) enum Tick<'a> {
    Idle,
    Network(&'a [u8]),
    /// The peer failed to complete a handshake for the whole retry period.
    Expired,
}

impl Session {
    /// Encrypts an inner packet. Returns the datagram to send, if any: with no session yet the
    /// packet is queued and a handshake initiation comes back instead.
    pub(crate) fn encapsulate<'a>(&mut self, packet: &[u8], dst: &'a mut [u8]) -> Option<&'a [u8]> {
        match self.tunn.encapsulate(packet, dst) {
            TunnResult::WriteToNetwork(out) => Some(out),
            TunnResult::Err(e) => {
                tracing::trace!(error = ?e, "encapsulate failed");
                None
            }
            _ => None,
        }
    }

    pub(crate) fn decapsulate<'a>(
        &mut self,
        src: IpAddr,
        datagram: &[u8],
        dst: &'a mut [u8],
    ) -> Decap<'a> {
        let is_data = matches!(
            Tunn::parse_incoming_packet(datagram),
            Ok(Packet::PacketData(_))
        );
        map_decap(self.tunn.decapsulate(Some(src), datagram, dst), is_data)
    }

    /// A keepalive (an empty data packet); with no session yet it starts a handshake instead,
    /// which is what a persistent keepalive is for.
    pub(crate) fn keepalive<'a>(&mut self, dst: &'a mut [u8]) -> Option<&'a [u8]> {
        self.encapsulate(&[], dst)
    }

    /// Drains packets queued while the handshake was in flight.
    pub(crate) fn flush<'a>(&mut self, dst: &'a mut [u8]) -> Option<&'a [u8]> {
        match self.tunn.decapsulate(None, &[], dst) {
            TunnResult::WriteToNetwork(out) => Some(out),
            _ => None,
        }
    }

    pub(crate) fn tick<'a>(&mut self, dst: &'a mut [u8]) -> Tick<'a> {
        match self.tunn.update_timers(dst) {
            TunnResult::WriteToNetwork(out) => Tick::Network(out),
            TunnResult::Err(WireGuardError::ConnectionExpired) => Tick::Expired,
            _ => Tick::Idle,
        }
    }

    /// Time since the last completed handshake; `None` if none ever completed.
    pub(crate) fn since_handshake(&self) -> Option<Duration> {
        self.tunn.time_since_last_handshake()
    }

    /// Payload bytes (sent, received) through this session.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        let (_, tx, rx, _, _) = self.tunn.stats();
        (tx as u64, rx as u64)
    }
}

fn map_decap(r: TunnResult<'_>, is_data: bool) -> Decap<'_> {
    match r {
        // a data packet that decrypts to nothing is a keepalive
        TunnResult::Done if is_data => Decap::Keepalive,
        TunnResult::Done => Decap::Done,
        TunnResult::Err(e) => Decap::Failed(e),
        TunnResult::WriteToNetwork(out) if is_cookie_reply(out) => Decap::Cookie(out),
        TunnResult::WriteToNetwork(out) => Decap::Network(out),
        TunnResult::WriteToTunnelV6(p, src) => Decap::Tunnel(p, src),
        // the overlay is IPv6-only; an IPv4 inner packet is never ours
        TunnResult::WriteToTunnelV4(..) => Decap::Failed(WireGuardError::InvalidPacket),
    }
}

/// WireGuard message type 3; sessions screen with a limiter that is never under load, so this only
/// guards against a future change there.
fn is_cookie_reply(datagram: &[u8]) -> bool {
    matches!(
        Tunn::parse_incoming_packet(datagram),
        Ok(Packet::PacketCookieReply(_))
    )
}
