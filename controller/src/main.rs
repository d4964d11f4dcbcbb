//! `vantage`: the user's binary. Today it manages keys; `load`, `serve` and `demo` come with
//! their issues.

use std::io::Read;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vantage_mesh::{OverlayPrefix, PresharedKey, PrivateKey, PublicKey};

#[derive(Debug, Parser)]
#[command(
    name = "vantage",
    version,
    about = "Load a page from anywhere and read how it loaded and why"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print a new WireGuard private key (like `wg genkey`).
    Genkey,
    /// Read a private key on stdin and print its public key (like `wg pubkey`).
    Pubkey,
    /// Print a new cluster pre-shared key for VANTAGE_MESH_PSK (like `wg genpsk`).
    Genpsk,
    /// Print the overlay address of a node, given the cluster PSK and the node's public key.
    Addr {
        /// Cluster pre-shared key (base64).
        #[arg(long, env = "VANTAGE_MESH_PSK", hide_env_values = true)]
        psk: String,
        /// The node's public key (base64).
        public_key: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Genkey => println!(
            "{}",
            PrivateKey::generate(&mut rand_core::OsRng).to_base64()
        ),
        Cmd::Pubkey => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the private key from stdin")?;
            let key: PrivateKey = s.parse().context("stdin does not hold a private key")?;
            println!("{}", key.public_key());
        }
        Cmd::Genpsk => println!(
            "{}",
            PresharedKey::generate(&mut rand_core::OsRng).to_base64()
        ),
        Cmd::Addr { psk, public_key } => {
            let psk: PresharedKey = psk.parse().context("invalid --psk")?;
            let key: PublicKey = public_key.parse().context("invalid public key")?;
            println!("{}", OverlayPrefix::from_psk(&psk).address_of(&key));
        }
    }
    Ok(())
}
