//! The key commands (`genkey`, `pubkey`, `genpsk`, `addr`), worded like `wg`'s.

use std::io::Read;

use anyhow::{Context, Result};
use vantage_mesh::{OverlayPrefix, PresharedKey, PrivateKey, PublicKey};

pub fn genkey() -> String {
    PrivateKey::generate(&mut rand_core::OsRng).to_base64()
}

/// Reads a private key on stdin and gives its public key.
pub fn pubkey() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read the private key from stdin")?;
    let key: PrivateKey = s.parse().context("stdin does not hold a private key")?;
    Ok(key.public_key().to_string())
}

pub fn genpsk() -> String {
    PresharedKey::generate(&mut rand_core::OsRng).to_base64()
}

/// The overlay address of a node, from the cluster PSK and the node's public key.
pub fn addr(psk: &str, public_key: &str) -> Result<String> {
    let psk: PresharedKey = psk.parse().context("invalid --psk")?;
    let key: PublicKey = public_key.parse().context("invalid public key")?;
    Ok(OverlayPrefix::from_psk(&psk).address_of(&key).to_string())
}
