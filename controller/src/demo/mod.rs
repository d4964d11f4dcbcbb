//! `vantage demo`: the whole fleet on one machine. The WAN emulator, one agent process per
//! region (each with its own Chromium), a controller and, without a URL, the built-in demo site
//! as a mesh member "in" the origin region, so a page load crosses the emulated WAN to it (the
//! agents' egress guard is pinned to it with `--connect-to`). It loads the page from every region
//! at once and prints `vantage load`'s comparison; `--keep` leaves the fleet up.

mod cpu;
pub mod origin;
mod procs;
pub mod site;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand_core::{OsRng, RngCore};
use tokio::sync::oneshot;
use vantage_fleet::tags::ports;
use vantage_fleet::MemberConfig;
use vantage_mesh::{PresharedKey, PrivateKey};
use vantage_proto::api::{MemberInfo, RegionInfo};
use vantage_wan::{Matrix, Wan, WanConfig};

use crate::cli::client::Client;
use crate::cli::error::CliError;
use crate::cli::load::{self, LoadArgs};
use crate::cli::output::OutputArgs;
use procs::Agent;

/// The host name the built-in site is served under; agents are pinned to reach it.
pub use site::HOST as DEMO_HOST;
/// How long the fleet may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Who the agents run Chromium as when the demo runs as root: a user every Debian and Ubuntu
/// system has, which owns nothing (each browser's profile is handed to it and removed after).
const CHROMIUM_USER_WHEN_ROOT: &str = "nobody";

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Flags of `vantage demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The page to load; by default the built-in demo site, hosted in --origin-region.
    pub url: Option<String>,
    /// Regions with an agent, from the matrix.
    #[arg(long, value_delimiter = ',', default_value = "sin,ams,iad,syd")]
    pub regions: Vec<String>,
    /// Where the built-in site and the controller are.
    #[arg(long, default_value = "iad")]
    pub origin_region: String,
    /// An RTT matrix (CSV: `region,a,b,…` then one row per region, milliseconds); by default the
    /// built-in 20-region WonderProxy matrix.
    #[arg(long)]
    pub matrix: Option<PathBuf>,
    /// Runs per region (1 to 9); the table shows the median run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub runs: u32,
    /// Leave the fleet running and print how to reach it, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Where the controller keeps its reports (kept after the demo).
    #[arg(long, env = "VANTAGE_DEMO_DATA")]
    pub data_dir: Option<PathBuf>,
}

/// Runs the demo until it is done (or Ctrl-C), then tears everything down.
pub async fn main(args: DemoArgs) -> Result<(), CliError> {
    let usage = |e: anyhow::Error| CliError::Usage(format!("{e:#}"));
    let plan = Plan::from_args(&args).map_err(usage)?;
    let mut fleet = Fleet::default();
    let result = tokio::select! {
        r = run(&args, &plan, &mut fleet) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted; stopping the fleet");
            Err(CliError::Failed(anyhow::anyhow!("interrupted")))
        }
    };
    fleet.stop().await;
    result
}

/// What the demo will start, checked before anything runs.
#[derive(Debug)]
struct Plan {
    matrix: Matrix,
    regions: Vec<String>,
    origin: String,
    url: String,
    builtin: bool,
    data_dir: PathBuf,
    agent_bin: PathBuf,
}

impl Plan {
    fn from_args(a: &DemoArgs) -> Result<Plan> {
        let matrix = match &a.matrix {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the matrix {}", p.display()))?;
                Matrix::parse(&text)
                    .with_context(|| format!("{} is not an RTT matrix", p.display()))?
            }
            None => Matrix::builtin(),
        };
        let known = matrix.regions().join(", ");
        let mut regions: Vec<String> = Vec::new();
        for r in a.regions.iter().map(|r| r.trim().to_ascii_lowercase()) {
            if matrix.index(&r).is_none() {
                bail!("region `{r}` is not in the matrix; it has: {known}");
            }
            if !regions.contains(&r) {
                regions.push(r);
            }
        }
        if regions.is_empty() {
            bail!("--regions is empty; name one or more of: {known}");
        }
        let origin = a.origin_region.trim().to_ascii_lowercase();
        if matrix.index(&origin).is_none() {
            bail!("--origin-region `{origin}` is not in the matrix; it has: {known}");
        }
        let (url, builtin) = match &a.url {
            Some(u) => {
                vantage_proto::parse_http_url(u).map_err(|e| anyhow::anyhow!("{e}"))?;
                (u.clone(), false)
            }
            None => (format!("http://{DEMO_HOST}/"), true),
        };
        let data_dir = match &a.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()?,
        };
        let agent_bin = std::env::current_exe()
            .context("cannot find this executable")?
            .with_file_name("vantage-agent");
        if !agent_bin.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p vantage-agent` (or run `cargo xtask demo`)",
                agent_bin.display()
            );
        }
        Ok(Plan {
            matrix,
            regions,
            origin,
            url,
            builtin,
            data_dir,
            agent_bin,
        })
    }
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(d).join("vantage/demo"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; give --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/vantage/demo"))
}

/// Everything the demo started, so it can all be stopped.
#[derive(Debug, Default)]
struct Fleet {
    agents: Vec<Agent>,
    controller: Option<(
        oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    origin: Option<origin::OriginHandle>,
    wan: Option<Wan>,
    temp: Option<PathBuf>,
}

impl Fleet {
    async fn stop(&mut self) {
        // the controller first: its job streams close and the agents cancel their jobs, so
        // they have nothing to drain when told to stop
        if let Some((stop, task)) = self.controller.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let mut agents = std::mem::take(&mut self.agents);
        let stopping = tokio::task::spawn_blocking(move || procs::stop_all(&mut agents));
        if let Some(o) = self.origin.take() {
            o.stop().await;
        }
        let _ = stopping.await;
        self.wan.take();
        if let Some(t) = self.temp.take() {
            if let Err(e) = std::fs::remove_dir_all(&t) {
                tracing::warn!(dir = %t.display(), error = %e, "cannot remove the demo's temp dir");
            }
        }
    }
}

impl Drop for Fleet {
    /// The last line of defence when `stop` did not run (a panic, say): the agents' own `Drop`
    /// stops them; the temp dir goes here.
    fn drop(&mut self) {
        procs::stop_all(&mut self.agents);
        if let Some(t) = self.temp.take() {
            let _ = std::fs::remove_dir_all(&t);
        }
    }
}

/// A loopback UDP socket for a member, and the endpoint the emulator gives it in `region`.
fn attach(wan: &mut Wan, name: &str, region: &str) -> Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("cannot bind a loopback UDP socket")?;
    let adv = wan.attach(name, region, socket.local_addr()?)?;
    Ok((socket, adv))
}

/// A member of the demo's cluster at `spot` (its socket and the emulator's endpoint for it).
fn member(
    name: &str,
    region: &str,
    psk: &PresharedKey,
    key: PrivateKey,
    spot: &(UdpSocket, SocketAddr),
    seeds: Vec<String>,
    dir: &Path,
) -> Result<MemberConfig> {
    Ok(MemberConfig {
        psk: psk.clone(),
        private_key: key,
        bind: spot.0.local_addr()?,
        advertise: Some(spot.1),
        seeds,
        fly_seeds: None,
        name: name.into(),
        region: region.into(),
        gossip_port: ports::GOSSIP,
        gossip_profile: vantage_gossip::Profile::Fleet,
        data_dir: dir.to_path_buf(),
        echo_events: false,
    })
}

async fn run(args: &DemoArgs, plan: &Plan, fleet: &mut Fleet) -> Result<(), CliError> {
    let failed = |e: anyhow::Error| CliError::Failed(e);
    let client = start(plan, fleet).await.map_err(failed)?;
    wait_ready(&client, plan, fleet).await?;
    cpu::wait_settled().await;
    let load = LoadArgs {
        url: plan.url.clone(),
        from: plan.regions.join(","),
        runs: args.runs,
        view: None,
        viewport: None,
        screenshot: false,
        timeout: None,
        wait: None,
        strict: true,
        output: args.output.clone(),
        user_agent: None,
    };
    let loaded = load::run(&client, &load).await;
    if !args.output.json {
        eprintln!(
            "reports are kept in {}; see them with `vantage demo --keep` and `vantage reports list`",
            plan.data_dir.join("vantage.db").display()
        );
    }
    if args.keep {
        eprintln!("\nthe fleet stays up until Ctrl-C; try:");
        eprintln!(
            "  export VANTAGE_SERVER={} VANTAGE_TOKEN={}",
            client.base(),
            client.token()
        );
        eprintln!("  vantage members");
        eprintln!("  vantage rtt {} {}", plan.regions[0], plan.origin);
        eprintln!("  vantage load {} --from all", plan.url);
        eprintln!("  vantage connect {} --port 9222", plan.regions[0]);
        std::future::pending::<()>().await;
    }
    loaded
}

/// Starts the emulator, the controller, the origin and the agents; returns a client of the API.
async fn start(plan: &Plan, fleet: &mut Fleet) -> Result<Client> {
    let temp = std::env::temp_dir().join(format!("vantage-demo-{}", std::process::id()));
    std::fs::create_dir_all(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    fleet.temp = Some(temp.clone());
    std::fs::create_dir_all(&plan.data_dir)
        .with_context(|| format!("cannot create {}", plan.data_dir.display()))?;
    let mut wan = Wan::new(plan.matrix.clone(), WanConfig::default())?;
    let psk = PresharedKey::generate(&mut OsRng);
    let token = format!("{:016x}{:016x}", OsRng.next_u64(), OsRng.next_u64());

    // the controller, in this process, next to the origin
    let ctl_key = PrivateKey::generate(&mut OsRng);
    let ctl_pub = ctl_key.public_key();
    let spot = attach(&mut wan, "controller", &plan.origin)?;
    let ctl_adv = spot.1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    let config = crate::serve::ServeConfig {
        member: member(
            "controller",
            &plan.origin,
            &psk,
            ctl_key,
            &spot,
            Vec::new(),
            &plan.data_dir,
        )?,
        listen: api,
        api_token: token.clone(),
        allow: vantage_proto::netpolicy::Policy::default(),
        max_loads: 64,
        max_attempts: 3,
        db_path: plan.data_dir.join("vantage.db"),
        pinned: vec![(DEMO_HOST.into(), 80)],
        // every demo is a new fleet: the last one's members are gone
        rejoin_known: false,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::serve::run(config, spot.0, listener, async move {
        let _ = stop_rx.await;
    }));
    fleet.controller = Some((stop_tx, task));

    // the built-in site, a mesh member in the origin region
    let mut pins = Vec::new();
    if plan.builtin {
        let spot = attach(&mut wan, "origin", &plan.origin)?;
        let cfg = member(
            "origin",
            &plan.origin,
            &psk,
            PrivateKey::generate(&mut OsRng),
            &spot,
            vec![ctl_adv.to_string()],
            &temp,
        )?;
        let o = origin::start(cfg, spot.0, 80)
            .await
            .context("cannot start the demo site")?;
        pins.push(format!(
            "{DEMO_HOST}:80:[{}]:{}",
            o.overlay_addr(),
            o.port()
        ));
        fleet.origin = Some(o);
    }

    for region in &plan.regions {
        let name = format!("agent-{region}");
        let (socket, adv) = attach(&mut wan, &name, region)?;
        let bind = socket.local_addr()?;
        // the agent binds the address itself
        drop(socket);
        let mut a: Vec<String> = vec![
            "--psk".into(),
            psk.to_base64(),
            "--private-key".into(),
            PrivateKey::generate(&mut OsRng).to_base64(),
            "--data-dir".into(),
            temp.join(&name).display().to_string(),
            "--bind".into(),
            bind.to_string(),
            "--advertise".into(),
            adv.to_string(),
            "--name".into(),
            name.clone(),
            "--region".into(),
            region.clone(),
            "--seeds".into(),
            ctl_adv.to_string(),
            "--controller-keys".into(),
            ctl_pub.to_base64(),
            "--health-addr".into(),
            "127.0.0.1:0".into(),
        ];
        for p in &pins {
            a.push("--connect-to".into());
            a.push(p.clone());
        }
        if running_as_root() {
            // Chromium's sandbox cannot run as root: the agents start it as an unprivileged user
            a.extend([
                "--chromium-user".to_owned(),
                CHROMIUM_USER_WHEN_ROOT.to_owned(),
            ]);
        }
        let log = temp.join(format!("{name}.log"));
        fleet
            .agents
            .push(Agent::spawn(region, &plan.agent_bin, &a, log)?);
    }
    fleet.wan = Some(wan);
    Client::new(&format!("http://{api}"), &token).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Waits until every region's agent has joined with a ready browser, showing progress.
async fn wait_ready(client: &Client, plan: &Plan, fleet: &mut Fleet) -> Result<(), CliError> {
    let started = Instant::now();
    let want = plan.regions.len();
    let mut last = String::new();
    loop {
        for a in &mut fleet.agents {
            if let Some(status) = a.exited() {
                return Err(CliError::Failed(anyhow::anyhow!(
                    "the agent in {} exited ({status}); its log: {}",
                    a.region,
                    a.log.display()
                )));
            }
        }
        let members: Vec<MemberInfo> = client
            .get_json("/api/members", &[])
            .await
            .unwrap_or_default();
        let regions: Vec<RegionInfo> = client
            .get_json("/api/regions", &[])
            .await
            .unwrap_or_default();
        let joined = plan
            .regions
            .iter()
            .filter(|r| {
                members.iter().any(|m| {
                    m.tags.get("region") == Some(r)
                        && m.tags.get("role").map(String::as_str) == Some("agent")
                })
            })
            .count();
        let ready: Vec<&String> = plan
            .regions
            .iter()
            .filter(|r| {
                regions
                    .iter()
                    .any(|i| &i.region == *r && i.healthy_agents > 0)
            })
            .collect();
        // the built-in origin's tunnels to the agents; a URL elsewhere needs none
        let tunnels = match &fleet.origin {
            Some(o) => Some(o.warm_tunnels().await.map_err(CliError::Failed)?.0),
            None => None,
        };
        let mut line = format!(
            "waiting for the fleet: {joined}/{want} agents joined, {}/{want} browsers ready",
            ready.len()
        );
        if let Some(up) = tunnels {
            line.push_str(&format!(", {up}/{want} tunnels to the origin up"));
        }
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if ready.len() == want && tunnels.is_none_or(|up| up >= want) {
            eprintln!("fleet ready in {:.1} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            let missing: Vec<String> = plan
                .regions
                .iter()
                .filter(|r| !ready.contains(r))
                .map(|r| {
                    let log = fleet
                        .agents
                        .iter()
                        .find(|a| &a.region == r)
                        .map(|a| a.log.display().to_string())
                        .unwrap_or_default();
                    format!("{r} (log: {log})")
                })
                .collect();
            return Err(CliError::NoAgent(format!(
                "the fleet was not ready within {} s; not ready: {}",
                READY_TIMEOUT.as_secs(),
                missing.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
