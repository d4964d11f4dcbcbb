//! The peer table: sessions by receiver index, by public key and by overlay address, plus the
//! just-in-time admission of initiators the node has not met.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::keys::PublicKey;
use crate::wg::Session;

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
    /// Completed handshakes seen so far, and the session age at the last look.
    pub(crate) handshakes: u64,
    pub(crate) last_age: Option<Duration>,
}

impl Peer {
    /// Counts a handshake when the session got younger since the last look (called every tick).
    pub(crate) fn observe_handshake(&mut self) {
        let age = self.session.since_handshake();
        let renewed = match (self.last_age, age) {
            (None, Some(_)) => true,
            (Some(before), Some(now)) => now < before,
            _ => false,
        };
        if renewed {
            self.handshakes += 1;
        }
        self.last_age = age;
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
