//! `vantage serve`: the controller.

pub mod api;
mod cdp;
mod dashboard;
mod dispatch;
pub mod fleet;
pub mod metrics;
pub mod orchestrator;
pub mod overlay;
mod pages;
pub mod placement;
mod records;
pub mod store;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use vantage_fleet::tags::{self, Role};
use vantage_gossip::Tags;

/// Flags and environment of `vantage serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub member: vantage_fleet::MemberArgs,
    /// HTTP address of the API, the dashboard and `/healthz`.
    #[arg(long, env = "VANTAGE_LISTEN", default_value = "[::]:8080")]
    pub listen: SocketAddr,
    /// Bearer token every API call must carry (`Authorization: Bearer …`); at least 16 bytes.
    #[arg(long, env = "VANTAGE_API_TOKEN", hide_env_values = true)]
    pub api_token: String,
    /// Networks a load's URL may point into although they are private (loopback, RFC 1918,
    /// ULA, Fly 6PN…), as comma-separated CIDRs. The local demo needs `127.0.0.0/8`.
    #[arg(long = "allow-net", env = "VANTAGE_ALLOW_NETS", value_delimiter = ',')]
    pub allow_nets: Vec<String>,
    /// Loads that may be queued or running at once; beyond that, `POST /api/loads` answers 429.
    #[arg(long, env = "VANTAGE_MAX_LOADS", default_value_t = 256)]
    pub max_loads: usize,
    /// Attempts per region before a load fails (the first one included).
    #[arg(long, env = "VANTAGE_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
}

/// The validated configuration of `vantage serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub member: vantage_fleet::MemberConfig,
    pub listen: SocketAddr,
    pub api_token: String,
    pub allow: vantage_proto::netpolicy::Policy,
    pub max_loads: usize,
    pub max_attempts: u32,
    /// `<data dir>/vantage.db`.
    pub db_path: PathBuf,
    /// `host:port`s the agents reach through a pin (`--connect-to`): the URL check does not
    /// resolve them.
    pub pinned: Vec<(String, u16)>,
    /// Rejoin the members the store remembers (off for a fleet that is new every time).
    pub rejoin_known: bool,
}

impl ServeArgs {
    pub fn validate(self) -> Result<ServeConfig> {
        let member = self.member.validate()?;
        if self.api_token.len() < 16 {
            bail!(
                "VANTAGE_API_TOKEN (--api-token) is {} bytes; it must be at least 16 (try `openssl rand -hex 32`)",
                self.api_token.len()
            );
        }
        let allow = self
            .allow_nets
            .iter()
            .map(|n| n.parse())
            .collect::<Result<Vec<vantage_proto::netpolicy::Net>, _>>()
            .context("invalid VANTAGE_ALLOW_NETS (--allow-net)")?;
        if !(1..=100_000).contains(&self.max_loads) {
            bail!("--max-loads is {}; accepted is 1 to 100000", self.max_loads);
        }
        if !(1..=10).contains(&self.max_attempts) {
            bail!(
                "--max-attempts is {}; accepted is 1 to 10",
                self.max_attempts
            );
        }
        let db_path = member.data_dir.join("vantage.db");
        Ok(ServeConfig {
            member,
            listen: self.listen,
            api_token: self.api_token,
            allow: vantage_proto::netpolicy::Policy { allow },
            max_loads: self.max_loads,
            max_attempts: self.max_attempts,
            db_path,
            pinned: Vec::new(),
            rejoin_known: true,
        })
    }
}

/// How long open API connections may take to finish once shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `vantage serve` from its flags: validates, binds, and runs until SIGTERM or SIGINT.
pub async fn main(args: ServeArgs) -> Result<()> {
    let config = args.validate()?;
    let socket = std::net::UdpSocket::bind(config.member.bind)
        .with_context(|| format!("cannot bind underlay UDP {}", config.member.bind))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.listen))?;
    run(config, socket, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Serves the API on the overlay too, at [`tags::ports::API`]: a stock WireGuard client that
/// `vantage peer config` made a peer of this node reaches it there, with the same bearer token.
async fn serve_on_overlay(
    node: &vantage_mesh::Node,
    router: axum::Router,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = node.tcp_listen(tags::ports::API).await.with_context(|| {
        format!(
            "cannot listen for the API on overlay port {}",
            tags::ports::API
        )
    })?;
    tracing::info!(addr = %listener.local_addr(), "controller api listening on the overlay");
    let server =
        axum::serve(overlay::MeshListener(listener), router).with_graceful_shutdown(stopped);
    Ok(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "the overlay api server failed");
        }
    }))
}

/// Runs the controller until `shutdown` resolves: the store, the mesh and gossip member
/// (role=controller), loads left in flight by a previous run, and the API. On shutdown, loads
/// still in flight stay recorded as such and are resumed by the next run.
pub async fn run(
    config: ServeConfig,
    socket: std::net::UdpSocket,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    std::fs::create_dir_all(&config.member.data_dir).with_context(|| {
        format!(
            "cannot create data dir {}",
            config.member.data_dir.display()
        )
    })?;
    let store = store::Store::open(&config.db_path)
        .with_context(|| format!("cannot open the database {}", config.db_path.display()))?;
    // rejoin the members seen in the last day, as Serf does from its snapshot
    let mut member_config = config.member.clone();
    let known = match config.rejoin_known {
        true => store
            .known_peers(unix_ms(), 24 * 3600 * 1000)
            .await
            .context("cannot read the known members")?,
        false => Vec::new(),
    };
    for ep in known {
        if !member_config.seeds.contains(&ep) {
            member_config.seeds.push(ep);
        }
    }
    let mut own = Tags::new();
    own.insert(tags::ROLE.into(), Role::Controller.as_str().into());
    own.insert(tags::MACHINE.into(), config.member.name.clone());
    own.insert(tags::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    let (member, events) =
        vantage_fleet::Membership::start(&config.member, &mut own, socket).await?;
    let _joined = member.join_seeds(&member_config);
    let view = fleet::spawn(member.clone(), events, store.clone()).await;
    let orch = orchestrator::Orchestrator::new(
        store,
        view,
        member.node.clone(),
        orchestrator::Limits {
            max_loads: config.max_loads,
            max_attempts: config.max_attempts,
        },
        Arc::new(metrics::Metrics::default()),
    );
    let resumed = orch
        .resume()
        .await
        .context("cannot read loads left in flight")?;
    if resumed > 0 {
        tracing::info!(loads = resumed, "resumed loads left in flight");
    }
    let state = api::AppState {
        orch: orch.clone(),
        token: config.api_token.as_str().into(),
        policy: Arc::new(config.allow.clone()),
        pinned: Arc::new(config.pinned.clone()),
        node: member.node.clone(),
        name: config.member.name.clone(),
        region: config.member.region.clone(),
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, public_key = %member.node.public_key(), "controller api listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let on_overlay = serve_on_overlay(
        &member.node,
        api::router(state.clone()),
        stopped(stop_rx.clone()),
    )
    .await?;
    let server =
        axum::serve(listener, api::router(state)).with_graceful_shutdown(stopped(stop_rx.clone()));
    // graceful, but bounded: an event stream of a load that will not finish now would
    // otherwise hold the shutdown open
    tokio::select! {
        r = std::future::IntoFuture::into_future(server) => r.context("the api server failed")?,
        _ = async {
            stopped(stop_rx.clone()).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("api connections still open {SHUTDOWN_GRACE:?} after the shutdown began; closing them"),
    }
    // (the loads are stopped after the server, so none is accepted in between)
    // loads in flight stop where they are (recorded as such, resumed by the next run); their
    // job streams close, so the agents cancel the jobs instead of running them for nobody
    on_overlay.abort();
    orch.abort_all();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tracing::info!("shutting down: leaving the cluster");
    member.gossip.leave().await.ok();
    member.node.shutdown().await;
    Ok(())
}
