//! The CLI: what a user types against a controller (`load`, `members`, `rtt`, `regions`,
//! `reports`, `connect`), plus `serve` (the controller itself), the key commands and `peer config`.
//!
//! Exit codes, the same for every command (see [`EXIT_CODES`]):
//!
//! - 0: it worked.
//! - 1: `serve` stopped with an error.
//! - 2: usage: bad flags (clap's own), or the controller refused the request as bad input
//!   (400 bad_request / unknown_region / forbidden_target, 401, 404, 413).
//! - 3: no eligible agent (503 `no_agent`, or a load that failed with `no_agent`).
//! - 4: the page failed: a region's report has every run failed, or the load failed with
//!   `page` or `rejected`.
//! - 5: the controller or the network failed: 5xx, 429, unreachable, `agent_lost`,
//!   `controller_restart`, `internal`.
//!
//! When a load goes wrong in several ways, the highest code wins.

pub mod args;
pub mod client;
pub mod connect;
pub mod error;
pub mod keys;
pub mod load;
pub mod members;
pub mod output;
pub mod peer;
pub mod progress;
pub mod reports;
pub mod table;

use clap::{Parser, Subcommand};

pub use client::Client;
pub use error::CliError;

/// The exit codes, as `vantage --help` shows them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  `serve` stopped with an error
  2  usage: bad flags, or the controller refused the request (400, 401, 404, 413)
  3  no eligible agent (503 no_agent, or a load that failed with no_agent)
  4  the page failed (every run of a region failed, or failure page/rejected)
  5  the controller or the network failed (5xx, 429, unreachable, agent_lost,
     controller_restart, internal)";

#[derive(Debug, Parser)]
#[command(
    name = "vantage",
    version,
    about = "Load a page from anywhere and read how it loaded and why",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The controller's URL.
    #[arg(
        long,
        global = true,
        display_order = 900,
        env = "VANTAGE_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The controller's API token (its VANTAGE_API_TOKEN).
    #[arg(
        long,
        global = true,
        display_order = 901,
        env = "VANTAGE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the controller: a mesh member with the HTTP API, placement and the report store.
    // boxed: the controller's flags dwarf every other command's
    Serve(Box<crate::serve::ServeArgs>),
    /// Run a whole fleet on this machine (agents "in" several regions behind an emulated WAN),
    /// load a page from every region and compare them.
    Demo(crate::demo::DemoArgs),
    /// Load a page from one or more regions and compare them.
    Load(load::LoadArgs),
    /// List the cluster's members (like `serf members`).
    Members(members::MembersArgs),
    /// Estimated round-trip time between two members or regions (like `serf rtt`).
    Rtt {
        /// A member name or a region code.
        a: String,
        /// A member name or a region code; the controller itself if left out.
        b: Option<String>,
    },
    /// Regions with agents, and how many can take a job now.
    Regions {
        #[arg(long)]
        json: bool,
    },
    /// Reports the controller kept.
    #[command(subcommand)]
    Reports(reports::ReportsCmd),
    /// Serve a local CDP endpoint whose browser is an agent's (for Playwright, Puppeteer…).
    Connect(connect::ConnectArgs),
    /// Print a new WireGuard private key (like `wg genkey`).
    Genkey,
    /// Read a private key on stdin and print its public key (like `wg pubkey`).
    Pubkey,
    /// Print a new cluster pre-shared key for VANTAGE_MESH_PSK (like `wg genpsk`).
    Genpsk,
    /// Print a new key pair for a member (`private_key = …`, `public_key = …`), or with --psk a
    /// new cluster pre-shared key.
    Keygen(keys::KeygenArgs),
    /// Stock WireGuard clients of the mesh.
    #[command(subcommand)]
    Peer(peer::PeerCmd),
    /// Print the overlay address of a node, given the cluster PSK and the node's public key.
    Addr {
        /// Cluster pre-shared key (base64).
        #[arg(long, env = "VANTAGE_MESH_PSK", hide_env_values = true)]
        psk: String,
        /// The node's public key (base64).
        public_key: String,
    },
}

impl Cmd {
    /// The log level without `RUST_LOG`: a server says what it does, a client stays quiet.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Cmd::Serve(_) => "info",
            _ => "warn",
        }
    }
}

impl Cli {
    /// A client of `--server` with `--token`; a command that talks to the controller needs both.
    pub fn client(&self) -> Result<Client, CliError> {
        let token = self.token.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
            CliError::Usage(
                "no API token: set VANTAGE_TOKEN or pass --token (the controller's VANTAGE_API_TOKEN)"
                    .into(),
            )
        })?;
        Client::new(&self.server, token)
    }
}

/// Runs one command. Output goes to stdout, progress and logs to stderr; the error carries the
/// exit code ([`CliError::exit_code`]).
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let usage = |e: anyhow::Error| CliError::Usage(format!("{e:#}"));
    match &cli.cmd {
        Cmd::Serve(args) => crate::serve::main(args.as_ref().clone())
            .await
            .map_err(CliError::Failed),
        Cmd::Demo(args) => crate::demo::main(args.clone()).await,
        Cmd::Genkey => {
            println!("{}", keys::genkey());
            Ok(())
        }
        Cmd::Pubkey => {
            println!("{}", keys::pubkey().map_err(usage)?);
            Ok(())
        }
        Cmd::Genpsk => {
            println!("{}", keys::genpsk());
            Ok(())
        }
        Cmd::Keygen(args) => {
            println!("{}", keys::keygen(args));
            Ok(())
        }
        Cmd::Peer(peer::PeerCmd::Config(args)) => {
            print!("{}", peer::config(args).map_err(usage)?);
            Ok(())
        }
        Cmd::Addr { psk, public_key } => {
            println!("{}", keys::addr(psk, public_key).map_err(usage)?);
            Ok(())
        }
        Cmd::Load(args) => load::run(&cli.client()?, args).await,
        Cmd::Members(args) => members::members(&cli.client()?, args).await,
        Cmd::Rtt { a, b } => members::rtt(&cli.client()?, a, b.as_deref()).await,
        Cmd::Regions { json } => members::regions(&cli.client()?, *json).await,
        Cmd::Reports(cmd) => reports::run(&cli.client()?, cmd).await,
        Cmd::Connect(args) => connect::run(&cli.client()?, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("3  no eligible agent"), "{help}");
    }

    #[test]
    fn global_flags_and_defaults() {
        let cli = Cli::try_parse_from(["vantage", "rtt", "sin", "--token", "t0k"]).unwrap();
        assert_eq!(cli.server, "http://127.0.0.1:8080");
        assert_eq!(cli.token.as_deref(), Some("t0k"));
        assert_eq!(cli.cmd.default_log_level(), "warn");
        let cli = Cli::try_parse_from(["vantage", "connect", "sin", "--port", "0"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Connect(ref c) if c.port == 0));
        let cli = Cli::try_parse_from(["vantage", "reports", "show", "12", "--json"]).unwrap();
        assert!(matches!(
            cli.cmd,
            Cmd::Reports(reports::ReportsCmd::Show { id: 12, json: true })
        ));
    }

    #[test]
    fn no_token_is_a_usage_error() {
        let mut cli = Cli::try_parse_from(["vantage", "members"]).unwrap();
        cli.token = None;
        assert_eq!(cli.client().unwrap_err().exit_code(), error::EXIT_USAGE);
    }
}
