//! What every member is configured with: mesh identity, underlay addresses, seeds, name, region
//! and gossip timing. Flags and environment are parsed by the binaries (this struct is flattened
//! into their own), and validated here once.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use vantage_mesh::{PresharedKey, PrivateKey};

use crate::tags::ports;

/// Flags and environment shared by `vantage-agent` and `vantage serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct MemberArgs {
    /// Cluster pre-shared key, base64 of 32 bytes as `wg genpsk` prints it.
    #[arg(long, env = "VANTAGE_MESH_PSK", hide_env_values = true)]
    pub psk: String,
    /// WireGuard private key (base64). Default: generated once and kept in the data dir.
    #[arg(long, env = "VANTAGE_MESH_KEY", hide_env_values = true)]
    pub private_key: Option<String>,
    /// Directory for the generated key and other state.
    #[arg(long, env = "VANTAGE_DATA_DIR", default_value = "/var/lib/vantage")]
    pub data_dir: PathBuf,
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
    /// Region code this member runs in (sin, ams, …).
    #[arg(long, env = "FLY_REGION", default_value = "local")]
    pub region: String,
    /// Overlay port for gossip (UDP and TCP).
    #[arg(long, env = "VANTAGE_GOSSIP_PORT", default_value_t = ports::GOSSIP)]
    pub gossip_port: u16,
    /// Gossip timing profile: lan, wan or fleet.
    #[arg(long, env = "VANTAGE_GOSSIP_PROFILE", default_value = "fleet")]
    pub gossip_profile: String,
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
    #[arg(long, env = "VANTAGE_SEED_PORT", default_value_t = ports::UNDERLAY)]
    pub seed_port: u16,
}

/// Where to look for seeds on Fly.
#[derive(Debug, Clone)]
pub struct FlySeeds {
    pub app: String,
    pub me: Option<std::net::Ipv6Addr>,
    pub port: u16,
    pub dns: SocketAddr,
}

/// The validated membership configuration.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub psk: PresharedKey,
    pub private_key: PrivateKey,
    pub bind: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    /// Seeds to find through Fly's internal DNS.
    pub fly_seeds: Option<FlySeeds>,
    pub name: String,
    pub region: String,
    pub gossip_port: u16,
    pub gossip_profile: vantage_gossip::Profile,
    pub data_dir: PathBuf,
    /// Print membership changes on stdout as Serf's agent does (off for members embedded in a
    /// command whose stdout is its output, such as `vantage demo`).
    pub echo_events: bool,
}

impl MemberArgs {
    pub fn validate(self) -> Result<MemberConfig> {
        let psk: PresharedKey = self
            .psk
            .parse()
            .context("invalid VANTAGE_MESH_PSK (--psk)")?;
        let on_fly = self.fly_app.is_some();
        let bind_text = self.bind.clone().unwrap_or_else(|| {
            if on_fly {
                format!("fly-local-6pn:{}", ports::UNDERLAY)
            } else {
                format!("[::]:{}", ports::UNDERLAY)
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
        Ok(MemberConfig {
            psk,
            private_key,
            bind,
            advertise,
            seeds: self.seeds,
            fly_seeds,
            name,
            region: self.region,
            gossip_port: self.gossip_port,
            gossip_profile,
            data_dir: self.data_dir,
            echo_events: true,
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
