//! The agent's configuration: flags and environment, validated once at startup.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use clap::Parser;

/// Command line and environment of `vantage-agent`.
#[derive(Debug, Parser)]
#[command(
    name = "vantage-agent",
    version,
    about = "Vantage agent: joins the WireGuard mesh of a Vantage fleet"
)]
pub struct Args {
    #[command(flatten)]
    pub member: vantage_fleet::MemberArgs,
    /// The Chromium executable.
    #[arg(long, env = "CHROME", default_value = "chromium")]
    pub chrome: std::path::PathBuf,
    /// The user Chromium runs as when the agent runs as root, so it keeps its sandbox (which
    /// cannot run as root); a non-root agent runs it as itself.
    #[arg(long = "chromium-user", env = "VANTAGE_CHROMIUM_USER")]
    pub chromium_user: Option<String>,
    /// The CPU niceness Chromium runs at, 0 (the agent's own) to 19 (yields the most). The agent
    /// carries the browser's traffic, so a busy renderer must not delay its packets.
    #[arg(long = "chromium-nice", env = "VANTAGE_CHROMIUM_NICE", default_value_t = crate::chromium::DEFAULT_NICE)]
    pub chromium_nice: u8,
    /// Extra Chromium flag (repeatable).
    #[arg(long = "chrome-arg", allow_hyphen_values = true)]
    pub chrome_args: Vec<String>,
    /// Run without a browser: a mesh and gossip member only (debugging, membership tests).
    #[arg(long)]
    pub no_browser: bool,
    /// Let the browser reach every address, the agent's own networks included (loopback,
    /// private, link-local, unique-local, Fly 6PN, cloud metadata). This turns the egress guard
    /// off: for local use, never on a shared fleet.
    #[arg(long, env = "VANTAGE_ALLOW_PRIVATE")]
    pub allow_private: bool,
    /// Networks the browser may reach although they are the agent's own, as comma-separated CIDRs
    /// (e.g. `fdaa:0:1::/48` for a staging app on the same Fly organization).
    #[arg(long = "allow-net", env = "VANTAGE_ALLOW_NETS", value_delimiter = ',')]
    pub allow_nets: Vec<String>,
    /// Pin a host: `HOST:PORT:TARGET_HOST:TARGET_PORT` (repeatable, or comma-separated in the
    /// environment), as curl's `--connect-to` and WebPageTest's `setDns`. When the browser asks
    /// for HOST:PORT (host compared case-insensitively), the egress guard connects to
    /// TARGET_HOST:TARGET_PORT instead: an IP literal (IPv6 in brackets) or a name the guard
    /// resolves, e.g. `demo.test:80:[fdbc::1]:8080`. The page keeps HOST in its URL, Host header and
    /// TLS name. The target may be one of the agent's own networks (the address policy does not
    /// apply to it); every other host and port stays checked. A target in the mesh's overlay
    /// prefix is reached through the mesh, so it pays the WAN's RTT. Pins need the guard; with
    /// --allow-private the guard still runs for them, refusing nothing.
    #[arg(long = "connect-to", env = "VANTAGE_CONNECT_TO", value_delimiter = ',')]
    pub connect_to: Vec<String>,
    /// Page-load jobs run at once.
    #[arg(long, env = "VANTAGE_CAPACITY", default_value_t = 2)]
    pub capacity: usize,
    /// Jobs that may wait for a slot; beyond that, clients are told the agent is busy.
    #[arg(long, env = "VANTAGE_QUEUE", default_value_t = 4)]
    pub queue: usize,
    /// Restart Chromium after this many jobs (0 = never).
    #[arg(long, default_value_t = 100)]
    pub recycle_after: u32,
    /// Restart Chromium when its processes use more than this many MiB together (0 = never).
    #[arg(long, default_value_t = 2048)]
    pub rss_ceiling_mib: u64,
    /// Overlay TCP port of the job API.
    #[arg(long, env = "VANTAGE_JOB_PORT", default_value_t = vantage_fleet::tags::ports::JOBS)]
    pub job_port: u16,
    /// Overlay TCP port of the CDP gateway (controllers only).
    #[arg(long, env = "VANTAGE_CDP_PORT", default_value_t = vantage_fleet::tags::ports::CDP)]
    pub cdp_port: u16,
    /// HTTP address of the health endpoint (`/healthz`) for Fly checks.
    #[arg(long, env = "VANTAGE_HEALTH_ADDR", default_value = "[::]:8080")]
    pub health_addr: SocketAddr,
    /// WireGuard public keys (base64, comma-separated) of the controllers: only they may submit
    /// jobs or use the CDP gateway. Unset, any member whose gossip tag says role=controller may,
    /// and any holder of the fleet's PSK can say that.
    #[arg(
        long = "controller-keys",
        env = "VANTAGE_CONTROLLER_KEYS",
        value_delimiter = ','
    )]
    pub controller_keys: Vec<String>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Mesh identity, addresses, seeds, name, region, gossip.
    pub member: vantage_fleet::MemberConfig,
    /// `None` without a browser.
    pub chromium: Option<crate::chromium::ChromiumConfig>,
    /// What the browser may connect to; `None` lets it reach everything (`--allow-private`).
    pub egress: Option<crate::egress::Policy>,
    /// `--connect-to` pins, handled by the egress guard.
    pub connect_to: Vec<crate::egress::ConnectTo>,
    pub capacity: usize,
    pub queue: usize,
    pub job_port: u16,
    pub cdp_port: u16,
    pub health_addr: SocketAddr,
    /// Who may use the job API and the CDP gateway; empty: members with role=controller.
    pub controller_keys: Vec<vantage_mesh::PublicKey>,
}

impl Args {
    pub fn validate(self) -> Result<Config> {
        let member = self.member.validate()?;
        if !(1..=64).contains(&self.capacity) {
            bail!(
                "--capacity is {}; accepted is 1 to 64 concurrent jobs",
                self.capacity
            );
        }
        if self.queue > 1024 {
            bail!(
                "--queue is {}; accepted is 0 to 1024 waiting jobs",
                self.queue
            );
        }
        if self.job_port == member.gossip_port {
            bail!(
                "--job-port and --gossip-port must differ (both are {})",
                self.job_port
            );
        }
        let allow = self
            .allow_nets
            .iter()
            .map(|n| n.parse())
            .collect::<Result<Vec<crate::egress::Net>, _>>()
            .context("invalid VANTAGE_ALLOW_NETS (--allow-net)")?;
        let egress = (!self.allow_private).then_some(crate::egress::Policy { allow });
        let connect_to = crate::egress::ConnectTo::parse_all(&self.connect_to)
            .context("invalid VANTAGE_CONNECT_TO (--connect-to)")?;
        if egress.is_some() || !connect_to.is_empty() {
            let conflicting = self.chrome_args.iter().find(|a| {
                crate::egress::Guard::CONFLICTING_FLAGS
                    .iter()
                    .any(|f| a.split('=').next() == Some(f))
            });
            if let Some(a) = conflicting {
                if egress.is_some() {
                    bail!("--chrome-arg {a} would let Chromium around the egress guard; drop it, or turn the guard off with --allow-private");
                }
                bail!("--chrome-arg {a} would let Chromium around the egress guard, which --connect-to needs; drop one of them");
            }
        }
        if self.chromium_nice > 19 {
            bail!(
                "--chromium-nice is {}; accepted is 0 (as the agent) to 19 (yields the most CPU)",
                self.chromium_nice
            );
        }
        let controller_keys = parse_controller_keys(&self.controller_keys)?;
        Ok(Config {
            member,
            egress,
            connect_to,
            chromium: (!self.no_browser).then(|| crate::chromium::ChromiumConfig {
                path: self.chrome,
                user: self.chromium_user,
                extra_args: self.chrome_args,
                recycle_after_jobs: self.recycle_after,
                rss_ceiling: self.rss_ceiling_mib << 20,
                nice: self.chromium_nice,
                ..crate::chromium::ChromiumConfig::default()
            }),
            capacity: self.capacity,
            queue: self.queue,
            job_port: self.job_port,
            cdp_port: self.cdp_port,
            health_addr: self.health_addr,
            controller_keys,
        })
    }
}

/// Parses the controller keys, naming the entry that is not a key. Empty entries (a trailing
/// comma) are skipped.
fn parse_controller_keys(entries: &[String]) -> Result<Vec<vantage_mesh::PublicKey>> {
    entries
        .iter()
        .map(|e| e.trim())
        .enumerate()
        .filter(|(_, e)| !e.is_empty())
        .map(|(i, e)| {
            e.parse().map_err(|err| {
                anyhow::anyhow!(
                    "invalid VANTAGE_CONTROLLER_KEYS (--controller-keys): entry {} `{e}` is not a WireGuard public key ({err}); accepted is a comma-separated list of public keys as `wg pubkey` or `vantage pubkey` print them",
                    i + 1
                )
            })
        })
        .collect()
}
