//! WireGuard keys in the textual form `wg genkey`, `wg pubkey` and `wg genpsk` use: 32 bytes,
//! standard base64 with padding (44 characters).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{CryptoRng, RngCore};
use x25519_dalek as x25519;

/// Why a key string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{what} is not valid base64 ({detail}); expected 44 characters of base64 (32 bytes), as `wg genkey` and `wg genpsk` print"
    )]
    Base64 { what: &'static str, detail: String },
    #[error("{what} decodes to {len} bytes; a WireGuard key is exactly 32 bytes")]
    Length { what: &'static str, len: usize },
}

fn decode32(what: &'static str, s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD.decode(s.trim()).map_err(|e| KeyError::Base64 {
        what,
        detail: e.to_string(),
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length {
        what,
        len: bytes.len(),
    })
}

/// A Curve25519 private key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct PrivateKey(x25519::StaticSecret);

impl PrivateKey {
    /// A fresh key from `rng`, clamped like `wg genkey`.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self(x25519::StaticSecret::from(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(x25519::StaticSecret::from(bytes))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.0).to_bytes())
    }

    /// The base64 form, as `wg genkey` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    pub(crate) fn secret(&self) -> &x25519::StaticSecret {
        &self.0
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32("private key", s).map(Self::from_bytes)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(pub={})", self.public_key())
    }
}

/// A Curve25519 public key; `Display` gives the base64 form `wg pubkey` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The first characters of the base64 form, enough to tell peers apart in logs.
    pub fn short(&self) -> String {
        self.to_base64()[..8].to_owned()
    }

    pub(crate) fn to_x25519(self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32("public key", s).map(Self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// The cluster pre-shared key (`VANTAGE_MESH_PSK`, as `wg genpsk` prints it). It admits a node to
/// the mesh and also seeds the overlay prefix. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode32("pre-shared key", s).map(Self)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_length_and_garbage() {
        let short = STANDARD.encode([1u8; 16]);
        assert_eq!(
            short.parse::<PresharedKey>().unwrap_err(),
            KeyError::Length {
                what: "pre-shared key",
                len: 16
            }
        );
        let err = "not base64!".parse::<PublicKey>().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("public key is not valid base64"),
            "{err}"
        );
    }

    #[test]
    fn generated_keys_are_clamped_and_round_trip() {
        let key = PrivateKey::generate(&mut rand_core::OsRng);
        let bytes = STANDARD.decode(key.to_base64()).unwrap();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
        let back: PrivateKey = key.to_base64().parse().unwrap();
        assert_eq!(back.public_key(), key.public_key());
    }
}
