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

/// Flags of `vantage keygen`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// Print a cluster pre-shared key (for VANTAGE_MESH_PSK) instead of a key pair.
    #[arg(long)]
    pub psk: bool,
}

/// `vantage keygen`: a private key (for VANTAGE_MESH_KEY) and its public key, one per line, in
/// `wg`'s base64; with `--psk`, a cluster pre-shared key alone.
pub fn keygen(args: &KeygenArgs) -> String {
    if args.psk {
        return genpsk();
    }
    let key = PrivateKey::generate(&mut rand_core::OsRng);
    format!(
        "private_key = {}\npublic_key = {}",
        key.to_base64(),
        key.public_key()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_prints_a_matching_pair_or_a_psk() {
        let out = keygen(&KeygenArgs { psk: false });
        let (private, public) = out.split_once('\n').unwrap();
        let private: PrivateKey = private
            .strip_prefix("private_key = ")
            .unwrap()
            .parse()
            .unwrap();
        let public: PublicKey = public
            .strip_prefix("public_key = ")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(private.public_key(), public);
        let psk = keygen(&KeygenArgs { psk: true });
        assert!(psk.parse::<PresharedKey>().is_ok(), "{psk}");
        assert_ne!(psk, keygen(&KeygenArgs { psk: true }));
    }
}
