//! The peer table: sessions by receiver index, by public key and by overlay address, plus the
//! just-in-time admission of initiators the node has not met.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::keys::PublicKey;
use crate::wg::Session;

/// How long an endpoint learned from authenticated traffic outranks a configured one: WireGuard's
/// own "the peer went silent" time (keepalive timeout + rekey timeout). Gossip re-adds peers from
/// their advertised endpoint on every tag change, which must not undo roaming behind NAT.
pub(crate) const LEARNED_ENDPOINT_HOLD: Duration = Duration::from_secs(15);

/// How a peer came to be in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Added by the application.
    Configured,
    /// An unknown initiator that must complete a handshake and send data before the deadline.
    Pending { deadline: Instant },
    /// An unknown initiator that proved it holds the cluster PSK.
    Admitted,
}

pub(crate) struct Peer {
    pub(crate) key: PublicKey,
    pub(crate) overlay: Ipv6Addr,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) keepalive: Option<u16>,
    pub(crate) session: Session,
    pub(crate) admission: Admission,
    /// Handshakes completed: initiations from the peer we answered, and responses to ours.
    pub(crate) handshakes: u64,
    /// When authenticated traffic last arrived (from `endpoint`).
    pub(crate) heard: Option<Instant>,
    /// When the next persistent keepalive is due; the driver's tick sends it.
    pub(crate) next_keepalive: Option<Instant>,
}

impl Peer {
    pub(crate) fn new(
        key: PublicKey,
        overlay: Ipv6Addr,
        endpoint: Option<SocketAddr>,
        session: Session,
        admission: Admission,
    ) -> Self {
        Self {
            key,
            overlay,
            endpoint,
            keepalive: None,
            session,
            admission,
            handshakes: 0,
            heard: None,
            next_keepalive: None,
        }
    }

    /// Applies the application's endpoint and keepalive. A configured endpoint does not replace
    /// one learned from authenticated traffic until that traffic stops.
    pub(crate) fn configure(
        &mut self,
        endpoint: Option<SocketAddr>,
        keepalive: Option<u16>,
        now: Instant,
    ) {
        let learned = self
            .heard
            .is_some_and(|t| now.saturating_duration_since(t) < LEARNED_ENDPOINT_HOLD);
        if endpoint.is_some() && !learned {
            self.endpoint = endpoint;
        }
        let keepalive = keepalive.filter(|&k| k > 0);
        if keepalive != self.keepalive {
            // like wg(8): a newly set keepalive goes out at once
            self.next_keepalive = keepalive.map(|_| now);
            self.keepalive = keepalive;
        }
    }

    /// Records authenticated traffic from `src`; returns the old endpoint if the peer roamed.
    pub(crate) fn heard_from(
        &mut self,
        src: SocketAddr,
        now: Instant,
    ) -> Option<Option<SocketAddr>> {
        self.heard = Some(now);
        (self.endpoint != Some(src)).then(|| self.endpoint.replace(src))
    }

    /// Whether a persistent keepalive is due now; if so, schedules the next one.
    pub(crate) fn keepalive_due(&mut self, now: Instant) -> bool {
        match (self.keepalive, self.next_keepalive) {
            (Some(k), Some(due)) if due <= now => {
                self.next_keepalive = Some(now + Duration::from_secs(u64::from(k)));
                true
            }
            _ => false,
        }
    }
}

#[derive(Default)]
pub(crate) struct Peers {
    by_index: HashMap<u32, Peer>,
    by_key: HashMap<PublicKey, u32>,
    by_addr: HashMap<Ipv6Addr, u32>,
    /// Keys removed by the application; they are not admitted just-in-time again until re-added.
    blocked: HashSet<PublicKey>,
    next_index: u32,
    pending: usize,
}

impl Peers {
    pub(crate) fn new(first_index: u32) -> Self {
        Self {
            next_index: first_index & 0x00ff_ffff,
            ..Self::default()
        }
    }

    /// A receiver index no live peer uses, below 2^24.
    pub(crate) fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.next_index;
            self.next_index = (self.next_index + 1) & 0x00ff_ffff;
            if !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }

    pub(crate) fn insert(&mut self, index: u32, peer: Peer) {
        if matches!(peer.admission, Admission::Pending { .. }) {
            self.pending += 1;
        }
        self.blocked.remove(&peer.key);
        self.by_key.insert(peer.key, index);
        self.by_addr.insert(peer.overlay, index);
        self.by_index.insert(index, peer);
    }

    pub(crate) fn remove(&mut self, key: &PublicKey, block: bool) -> Option<Peer> {
        let index = self.by_key.remove(key)?;
        let peer = self.by_index.remove(&index)?;
        self.by_addr.remove(&peer.overlay);
        if matches!(peer.admission, Admission::Pending { .. }) {
            self.pending -= 1;
        }
        if block {
            self.blocked.insert(*key);
        }
        Some(peer)
    }

    pub(crate) fn is_blocked(&self, key: &PublicKey) -> bool {
        self.blocked.contains(key)
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    pub(crate) fn index_of(&self, key: &PublicKey) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    pub(crate) fn index_for_addr(&self, addr: &Ipv6Addr) -> Option<u32> {
        self.by_addr.get(addr).copied()
    }

    pub(crate) fn get_mut(&mut self, index: u32) -> Option<&mut Peer> {
        self.by_index.get_mut(&index)
    }

    pub(crate) fn get(&self, index: u32) -> Option<&Peer> {
        self.by_index.get(&index)
    }

    /// Marks a pending peer admitted once it has proved itself.
    pub(crate) fn confirm(&mut self, index: u32) -> bool {
        let Some(p) = self.by_index.get_mut(&index) else {
            return false;
        };
        if matches!(p.admission, Admission::Pending { .. }) {
            p.admission = Admission::Admitted;
            self.pending -= 1;
            return true;
        }
        false
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.by_index.values_mut()
    }

    /// Pending peers whose deadline has passed.
    pub(crate) fn overdue(&self, now: Instant) -> Vec<PublicKey> {
        self.by_index
            .values()
            .filter(|p| matches!(p.admission, Admission::Pending { deadline } if deadline <= now))
            .map(|p| p.key)
            .collect()
    }
}

/// Limits on just-in-time admission of unknown initiators.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Admit initiators that are not configured peers at all. Default true: a node learns the
    /// rest of the mesh from whoever contacts it.
    pub enabled: bool,
    /// Unconfirmed initiators held at once.
    pub max_pending: usize,
    /// New unknown initiators taken per second (token bucket rate).
    pub per_second: u32,
    /// Burst size of that bucket.
    pub burst: u32,
    /// How long an unknown initiator has to complete a handshake and send data.
    pub timeout: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_pending: 64,
            per_second: 20,
            burst: 40,
            timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{PresharedKey, PrivateKey};
    use crate::wg::Identity;

    fn peer() -> Peer {
        let ident = Identity::new(
            PrivateKey::from_bytes([1; 32]),
            PresharedKey::from_bytes([2; 32]),
            100,
        );
        let key = PrivateKey::from_bytes([3; 32]).public_key();
        let configured = "192.0.2.1:51820".parse().unwrap();
        Peer::new(
            key,
            Ipv6Addr::LOCALHOST,
            Some(configured),
            ident.session(&key, 1),
            Admission::Configured,
        )
    }

    #[test]
    fn learned_endpoint_wins_until_its_traffic_stops() {
        let t0 = Instant::now();
        let mut p = peer();
        let configured = p.endpoint;
        let roamed: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        assert_eq!(p.heard_from(roamed, t0), Some(configured));
        // a re-add from gossip while the peer is heard from keeps the learned endpoint
        p.configure(configured, None, t0 + LEARNED_ENDPOINT_HOLD / 2);
        assert_eq!(p.endpoint, Some(roamed));
        // once its traffic has stopped for the hold time, the configured endpoint applies again
        p.configure(configured, None, t0 + LEARNED_ENDPOINT_HOLD);
        assert_eq!(p.endpoint, configured);
    }

    #[test]
    fn a_changed_keepalive_is_due_at_once_then_every_interval() {
        let t0 = Instant::now();
        let mut p = peer();
        assert!(!p.keepalive_due(t0));
        p.configure(None, Some(5), t0);
        assert!(p.keepalive_due(t0));
        assert!(!p.keepalive_due(t0 + Duration::from_secs(4)));
        assert!(p.keepalive_due(t0 + Duration::from_secs(5)));
        p.configure(None, Some(0), t0 + Duration::from_secs(6));
        assert!(!p.keepalive_due(t0 + Duration::from_secs(60)));
    }
}
