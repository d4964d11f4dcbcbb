//! Self-certifying overlay addresses: a ULA /64 derived from the cluster secret, plus 64 bits of a
//! hash of the node's public key. No allocator, no coordination: anyone holding the PSK and a peer's
//! public key knows the peer's address.

use std::net::Ipv6Addr;

use blake2::{Blake2s256, Digest};

use crate::keys::{PresharedKey, PublicKey};

/// The overlay prefix length.
pub const PREFIX_LEN: u8 = 64;

/// The cluster's overlay /64: `fd` followed by 56 bits of BLAKE2s over the PSK (RFC 4193 style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OverlayPrefix([u8; 8]);

impl OverlayPrefix {
    pub fn from_psk(psk: &PresharedKey) -> Self {
        let mut h = Blake2s256::new();
        h.update(b"vantage overlay prefix v1");
        h.update(psk.as_bytes());
        let digest = h.finalize();
        let mut p = [0u8; 8];
        p[0] = 0xfd;
        p[1..].copy_from_slice(&digest[..7]);
        Self(p)
    }

    /// The address of the node holding `key` in this cluster.
    pub fn address_of(&self, key: &PublicKey) -> Ipv6Addr {
        let mut h = Blake2s256::new();
        h.update(b"vantage interface id v1");
        h.update(key.as_bytes());
        let digest = h.finalize();
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.0);
        a[8..].copy_from_slice(&digest[..8]);
        Ipv6Addr::from(a)
    }

    pub fn contains(&self, addr: &Ipv6Addr) -> bool {
        addr.octets()[..8] == self.0
    }

    /// The prefix as an address with a zero interface id.
    pub fn network(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.0);
        Ipv6Addr::from(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_ula_and_addresses_are_stable_and_distinct() {
        let psk = PresharedKey::from_bytes([7; 32]);
        let prefix = OverlayPrefix::from_psk(&psk);
        assert_eq!(prefix.network().octets()[0], 0xfd);
        let a = PublicKey::from_bytes([1; 32]);
        let b = PublicKey::from_bytes([2; 32]);
        assert_eq!(prefix.address_of(&a), prefix.address_of(&a));
        assert_ne!(prefix.address_of(&a), prefix.address_of(&b));
        assert!(prefix.contains(&prefix.address_of(&a)));
        let other = OverlayPrefix::from_psk(&PresharedKey::from_bytes([8; 32]));
        assert!(!other.contains(&prefix.address_of(&a)));
    }
}
