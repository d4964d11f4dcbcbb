//! The agent's configuration: flags and environment, validated once at startup.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use vantage_mesh::{PresharedKey, PrivateKey};

/// Command line and environment of `vantage-agent`.
#[derive(Debug, Parser)]
#[command(
    name = "vantage-agent",
    version,
    about = "Vantage agent: joins the WireGuard mesh of a Vantage fleet"
)]
pub struct Args {
    /// Cluster pre-shared key, base64 of 32 bytes as `wg genpsk` prints it.
    #[arg(long, env = "VANTAGE_MESH_PSK", hide_env_values = true)]
    pub psk: String,
    /// WireGuard private key (base64). Default: generated once and kept in the data dir.
    #[arg(long, env = "VANTAGE_MESH_KEY", hide_env_values = true)]
    pub private_key: Option<String>,
    /// Directory for the generated key and other state.
    #[arg(long, env = "VANTAGE_DATA_DIR", default_value = "/var/lib/vantage")]
    pub data_dir: PathBuf,
    /// Underlay UDP address to bind.
    /// Underlay UDP address to bind, `host:port`. Default: `[::]:51820`; on Fly
    /// `fly-local-6pn:51820` (the machine's 6PN address).
    #[arg(long, env = "VANTAGE_BIND")]
    pub bind: Option<String>,
    /// Underlay endpoint other nodes should send to, when it differs from --bind (NAT, emulator).
    #[arg(long, env = "VANTAGE_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// Seeds to join, as a comma-separated `host:port` list.
    #[arg(long, env = "VANTAGE_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Member name in the cluster. Default: FLY_MACHINE_ID, else the hostname.
    #[arg(long, env = "VANTAGE_NAME")]
    pub name: Option<String>,
    /// Region code this agent runs in (sin, ams, …).
    #[arg(long, env = "FLY_REGION", default_value = "local")]
    pub region: String,
    /// Overlay port for gossip (UDP and TCP).
    #[arg(long, env = "VANTAGE_GOSSIP_PORT", default_value_t = 7946)]
    pub gossip_port: u16,
    /// Gossip timing profile: lan, wan or fleet.
    #[arg(long, env = "VANTAGE_GOSSIP_PROFILE", default_value = "fleet")]
    pub gossip_profile: String,
    /// The Chromium executable.
    #[arg(long, env = "CHROME", default_value = "chromium")]
    pub chrome: std::path::PathBuf,
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
    #[arg(long, env = "VANTAGE_JOB_PORT", default_value_t = 7947)]
    pub job_port: u16,
    /// Fly app name; with no seeds given, the seeds are the other machines of `<app>.internal`.
    #[arg(long, env = "FLY_APP_NAME")]
    pub fly_app: Option<String>,
    /// This machine's 6PN address on Fly: advertised, and left out of the seeds.
    #[arg(long, env = "FLY_PRIVATE_IP")]
    pub fly_private_ip: Option<std::net::Ipv6Addr>,
    /// DNS server for the Fly seed lookup. Default: the first nameserver of /etc/resolv.conf.
    #[arg(long, env = "VANTAGE_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,
    /// Underlay port of the other machines, for seeds found through DNS.
    #[arg(long, env = "VANTAGE_SEED_PORT", default_value_t = 51820)]
    pub seed_port: u16,
    /// Overlay TCP port of the CDP gateway (controllers only).
    #[arg(long, env = "VANTAGE_CDP_PORT", default_value_t = 9222)]
    pub cdp_port: u16,
    /// HTTP address of the health endpoint (`/healthz`) for Fly checks.
    #[arg(long, env = "VANTAGE_HEALTH_ADDR", default_value = "[::]:8080")]
    pub health_addr: SocketAddr,
}

/// Where to look for seeds on Fly.
#[derive(Debug, Clone)]
pub struct FlySeeds {
    pub app: String,
    pub me: Option<std::net::Ipv6Addr>,
    pub port: u16,
    pub dns: SocketAddr,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    pub psk: PresharedKey,
    pub private_key: PrivateKey,
    pub bind: SocketAddr,
    /// Seeds to find through Fly's internal DNS.
    pub fly_seeds: Option<FlySeeds>,
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub name: String,
    pub region: String,
    pub gossip_port: u16,
    pub gossip_profile: vantage_gossip::Profile,
    /// `None` without a browser.
    pub chromium: Option<crate::chromium::ChromiumConfig>,
    /// What the browser may connect to; `None` lets it reach everything (`--allow-private`).
    pub egress: Option<crate::egress::Policy>,
    pub capacity: usize,
    pub queue: usize,
    pub job_port: u16,
    pub cdp_port: u16,
    pub health_addr: SocketAddr,
}

impl Args {
    pub fn validate(self) -> Result<Config> {
        let psk: PresharedKey = self
            .psk
            .parse()
            .context("invalid VANTAGE_MESH_PSK (--psk)")?;
        let on_fly = self.fly_app.is_some();
        let bind_text = self.bind.clone().unwrap_or_else(|| {
            if on_fly {
                "fly-local-6pn:51820".into()
            } else {
                "[::]:51820".into()
            }
        });
        let bind = std::net::ToSocketAddrs::to_socket_addrs(bind_text.as_str())
            .with_context(|| {
                format!(
                    "cannot resolve bind address `{bind_text}` (--bind or VANTAGE_BIND; host:port)"
                )
            })?
            .next()
            .with_context(|| format!("bind address `{bind_text}` resolved to nothing"))?;
        let advertise = match (self.advertise, self.fly_private_ip) {
            (Some(a), _) => Some(a),
            (None, Some(ip)) if bind.port() != 0 => Some(SocketAddr::new(ip.into(), bind.port())),
            _ => None,
        };
        let fly_seeds = match (&self.fly_app, self.seeds.is_empty()) {
            (Some(app), true) => {
                let dns = self.dns_server.or_else(crate::fly::system_resolver).context(
                    "FLY_APP_NAME is set but no DNS server is known: set VANTAGE_DNS_SERVER or /etc/resolv.conf",
                )?;
                Some(FlySeeds {
                    app: app.clone(),
                    me: self.fly_private_ip,
                    port: self.seed_port,
                    dns,
                })
            }
            _ => None,
        };
        let private_key = match &self.private_key {
            Some(k) => k
                .parse()
                .context("invalid VANTAGE_MESH_KEY (--private-key)")?,
            None => load_or_create_key(&self.data_dir)?,
        };
        if let Some(a) = advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                bail!(
                    "--advertise {a} is not reachable: give a concrete address and a non-zero port"
                );
            }
        }
        for s in &self.seeds {
            if s.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                bail!("seed `{s}` must be `host:port` (for example `10.0.0.2:51820` or `[fd00::1]:51820`)");
            }
        }
        let name = match self.name.or_else(|| std::env::var("FLY_MACHINE_ID").ok()) {
            Some(n) => n,
            None => hostname()?,
        };
        if name.is_empty() || name.len() > 255 {
            bail!("member name `{name}` must be 1 to 255 bytes (--name or VANTAGE_NAME)");
        }
        if self.region.is_empty() || self.region.len() > 32 {
            bail!(
                "region `{}` must be 1 to 32 characters (--region or FLY_REGION)",
                self.region
            );
        }
        let gossip_profile = self.gossip_profile.parse().map_err(anyhow::Error::msg)?;
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
        if self.job_port == self.gossip_port {
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
        if egress.is_some() {
            let conflicting = self.chrome_args.iter().find(|a| {
                crate::egress::Guard::CONFLICTING_FLAGS
                    .iter()
                    .any(|f| a.split('=').next() == Some(f))
            });
            if let Some(a) = conflicting {
                bail!("--chrome-arg {a} would let Chromium around the egress guard; drop it, or turn the guard off with --allow-private");
            }
        }
        Ok(Config {
            egress,
            psk,
            private_key,
            bind,
            fly_seeds,
            advertise,
            seeds: self.seeds,
            name,
            region: self.region,
            gossip_port: self.gossip_port,
            gossip_profile,
            chromium: (!self.no_browser).then(|| crate::chromium::ChromiumConfig {
                path: self.chrome,
                extra_args: self.chrome_args,
                recycle_after_jobs: self.recycle_after,
                rss_ceiling: self.rss_ceiling_mib << 20,
                ..crate::chromium::ChromiumConfig::default()
            }),
            capacity: self.capacity,
            queue: self.queue,
            job_port: self.job_port,
            cdp_port: self.cdp_port,
            health_addr: self.health_addr,
        })
    }
}

fn hostname() -> Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("cannot read the hostname; give --name")?;
    Ok(h.trim().to_owned())
}

/// Reads `mesh.key` from the data dir, or writes a fresh one (mode 0600).
fn load_or_create_key(dir: &std::path::Path) -> Result<PrivateKey> {
    let path = dir.join("mesh.key");
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .parse()
            .with_context(|| format!("{} does not hold a valid private key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create data dir {}", dir.display()))?;
            let key = PrivateKey::generate(&mut rand_core::OsRng);
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(f, "{}", key.to_base64())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
