//! `vantage-agent`: what runs in every Fly VM. A mesh member that joins the cluster's gossip with
//! its region, mesh identity, browser state and load in its tags (and makes every member it learns
//! of a WireGuard peer); it supervises Chromium, runs page-load jobs next to it, offers the raw
//! browser to controllers through the CDP gateway, and answers Fly's health checks.

pub mod authority;
pub mod capture;
pub mod cdp;
pub mod chromium;
pub mod config;
pub mod egress;
pub mod executor;
pub mod gateway;
pub mod health;
pub mod jobs;
pub mod load;
pub mod page;
pub mod procs;
pub mod sandbox;
pub mod waterfall;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vantage_fleet::{tags, Membership};
use vantage_gossip::Tags;
use vantage_mesh::Node;

pub use config::{Args, Config};

/// How long running jobs may finish after SIGTERM before they are cancelled.
const DRAIN: Duration = Duration::from_secs(20);

/// The tag saying whether Chromium runs sandboxed (`on (as USER)` or `off: <why>`).
pub const SANDBOX_TAG: &str = "sandbox";

/// How long cancelled jobs have to send their reports.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` resolves, then leaves the cluster, drains or cancels jobs,
/// stops Chromium and the mesh.
pub async fn run(
    config: Config,
    socket: std::net::UdpSocket,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if let Err(e) = chromium::disable_core_dumps() {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    let mut own = own_tags(&config);
    let (member, events) = Membership::start(&config.member, &mut own, socket).await?;
    let node = member.node.clone();
    let guard = egress_guard(&config, &node).await?;
    let browser = start_browser(&config, guard.as_ref());
    let roles: gateway::Roles = Arc::default();
    let authority = Arc::new(authority(&config, &node, browser.is_some(), &roles));
    let (job_done_tx, job_done) = mpsc::unbounded_channel();
    let jobs = match &browser {
        Some(link) => Some(serve_jobs(&config, &node, link, guard, &authority, job_done_tx).await?),
        None => None,
    };
    let gateway = match &browser {
        Some(link) => Some(serve_gateway(&config, &node, link, &authority).await?),
        None => None,
    };
    let health = Status::new(&config, browser.as_deref());
    let (health_tx, health_rx) = watch::channel(health.health.clone());
    let health_task = health::serve(config.health_addr, health_rx).await?;
    let mut joined = member.join_seeds(&config.member);
    let follow = Follow {
        member: &member,
        own,
        roles,
        browser: browser.as_deref(),
        jobs: jobs.as_ref().map(|(j, _)| j.as_ref()),
        capacity: config.capacity,
    };
    follow
        .run(health, health_tx, events, &mut joined, job_done, shutdown)
        .await;
    tracing::info!("shutting down: leaving the cluster");
    member.gossip.leave().await.ok();
    // nothing new is accepted while the running jobs drain
    if let Some(g) = gateway {
        g.abort();
    }
    if let Some((server, listener)) = jobs {
        listener.abort();
        drain_jobs(&server).await;
    }
    if let Some(b) = &browser {
        b.supervisor().stop().await;
    }
    health_task.abort();
    node.shutdown().await;
    // what the browser started outside its process group and that outlived it
    let _ = tokio::task::spawn_blocking(procs::kill_descendants).await;
    tracing::info!("stopped");
    Ok(())
}

/// The tags this agent starts with.
fn own_tags(config: &Config) -> Tags {
    let mut own = Tags::new();
    own.insert(tags::ROLE.into(), tags::Role::Agent.as_str().into());
    own.insert(tags::MACHINE.into(), config.member.name.clone());
    own.insert(tags::CAPACITY.into(), config.capacity.to_string());
    own.insert(tags::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    own
}

/// The egress guard the browser reaches the web through, unless it is turned off; pins
/// (`--connect-to`) need it even then, with a policy that refuses nothing.
async fn egress_guard(config: &Config, node: &Node) -> Result<Option<egress::Guard>> {
    let policy = match (&config.egress, config.connect_to.is_empty()) {
        (Some(policy), _) => Some(policy.clone()),
        (None, false) => Some(egress::Policy {
            allow: vec!["0.0.0.0/0".parse()?, "::/0".parse()?],
        }),
        (None, true) => None,
    };
    let guard = match (&config.chromium, policy) {
        (Some(_), Some(policy)) => Some(
            egress::Guard::start_with(policy, config.connect_to.clone(), Some(node.clone()))
                .await
                .context("cannot start the egress guard")?,
        ),
        _ => None,
    };
    for pin in &config.connect_to {
        if guard.is_some() {
            tracing::info!(%pin, "egress guard pins a host (--connect-to)");
        } else {
            tracing::warn!(%pin, "--connect-to ignored: there is no browser");
        }
    }
    Ok(guard)
}

/// The supervised browser, behind the guard, unless the agent runs without one.
fn start_browser(
    config: &Config,
    guard: Option<&egress::Guard>,
) -> Option<Arc<chromium::BrowserLink>> {
    config.chromium.clone().map(|mut c| {
        c.extra_args
            .extend(guard.iter().flat_map(|g| g.chromium_flags()));
        Arc::new(chromium::BrowserLink::new(chromium::Supervisor::spawn(c)))
    })
}

/// Who may use the job API and the gateway: the configured controller keys, else (loudly) the
/// gossip role tag.
fn authority(
    config: &Config,
    node: &Node,
    has_browser: bool,
    roles: &gateway::Roles,
) -> authority::Authority {
    if config.controller_keys.is_empty() {
        if has_browser {
            tracing::warn!(
                "VANTAGE_CONTROLLER_KEYS is not set: the job API and the CDP gateway serve any member whose gossip tag says role=controller, and any holder of the fleet's PSK can claim that role; set VANTAGE_CONTROLLER_KEYS (--controller-keys) to the controllers' public keys"
            );
        }
        return authority::Authority::Roles(roles.clone());
    }
    tracing::info!(
        controllers = config.controller_keys.len(),
        "job API and CDP gateway serve the configured controller keys only"
    );
    authority::Authority::keys(node.prefix(), &config.controller_keys)
}

/// The job server and the task accepting its connections on the overlay (aborting it closes
/// the listener).
async fn serve_jobs(
    config: &Config,
    node: &Node,
    link: &Arc<chromium::BrowserLink>,
    guard: Option<egress::Guard>,
    authority: &Arc<authority::Authority>,
    job_done: mpsc::UnboundedSender<()>,
) -> Result<(Arc<jobs::JobServer>, JoinHandle<()>)> {
    let ctx = executor::RunContext {
        region: config.member.region.clone(),
        node: config.member.name.clone(),
        browser_version: String::new(),
        guard,
    };
    let (link2, done) = (link.clone(), job_done.clone());
    let server = jobs::JobServer::new(
        link.clone(),
        ctx,
        config.capacity,
        config.queue,
        Box::new(move || {
            link2.supervisor().job_done();
            let _ = done.send(());
        }),
    );
    server.keep_warm();
    let listener = node
        .tcp_listen(config.job_port)
        .await
        .context("cannot listen for jobs on the overlay")?;
    let (s, authority) = (server.clone(), authority.clone());
    let accepting = tokio::spawn(async move {
        while let Ok((stream, from)) = listener.accept().await {
            let (s, progress) = (s.clone(), job_done.clone());
            let allowed =
                authority.check(std::net::IpAddr::V6(*from.ip()), authority::Service::Jobs);
            tokio::spawn(async move {
                let served = match allowed {
                    Ok(()) => {
                        let _ = progress.send(());
                        let r = s.serve(stream).await;
                        let _ = progress.send(());
                        r
                    }
                    Err(why) => {
                        tracing::warn!(%from, "job connection refused: {why}");
                        jobs::refuse(stream, why).await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(%from, error = %format!("{e:#}"), "job connection ended with an error");
                }
            });
        }
    });
    Ok((server, accepting))
}

/// The CDP gateway's accepting task on the overlay.
async fn serve_gateway(
    config: &Config,
    node: &Node,
    link: &chromium::BrowserLink,
    authority: &Arc<authority::Authority>,
) -> Result<JoinHandle<()>> {
    let listener = node
        .tcp_listen(config.cdp_port)
        .await
        .context("cannot listen for CDP on the overlay")?;
    let me = SocketAddr::V6(listener.local_addr());
    let (authority, sup) = (authority.clone(), link.supervisor().clone());
    Ok(tokio::spawn(async move {
        while let Ok((stream, from)) = listener.accept().await {
            let (authority, sup) = (authority.clone(), sup.clone());
            tokio::spawn(async move {
                if let Err(e) =
                    gateway::serve(stream, SocketAddr::V6(from), me, &authority, &sup).await
                {
                    tracing::debug!(%from, error = %format!("{e:#}"), "cdp gateway connection failed");
                }
            });
        }
    }))
}

/// Waits up to [`DRAIN`] for running jobs, then cancels the rest and gives them
/// [`CANCEL_GRACE`] to send their cancelled reports.
async fn drain_jobs(server: &jobs::JobServer) {
    let wait_idle = |limit: Duration| async move {
        let deadline = tokio::time::Instant::now() + limit;
        while server.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_idle(DRAIN).await;
    if server.active() > 0 {
        tracing::warn!(
            active = server.active(),
            "cancelling jobs still running after {DRAIN:?}"
        );
        server.cancel_all();
        wait_idle(CANCEL_GRACE).await;
    }
}

/// What `/healthz` and the tags say, kept current by [`Follow`].
struct Status {
    health: health::Health,
    published: Option<(String, usize)>,
}

impl Status {
    fn new(config: &Config, browser: Option<&chromium::BrowserLink>) -> Self {
        let health = health::Health {
            name: config.member.name.clone(),
            region: config.member.region.clone(),
            members: 1,
            seeds: config.member.seeds.len(),
            joined: false,
            browser: if browser.is_some() {
                "starting"
            } else {
                "none"
            }
            .into(),
            sandbox: browser.map(|b| b.supervisor().sandbox().describe()),
            capacity: config.capacity,
            ..health::Health::default()
        };
        Self {
            health,
            published: None,
        }
    }
}

/// The agent's main loop: follows gossip, the browser and the jobs, and keeps the tags and the
/// health endpoint current, until shutdown.
struct Follow<'a> {
    member: &'a Membership,
    own: Tags,
    roles: gateway::Roles,
    browser: Option<&'a chromium::BrowserLink>,
    jobs: Option<&'a jobs::JobServer>,
    capacity: usize,
}

impl Follow<'_> {
    async fn run(
        mut self,
        mut status: Status,
        health_tx: watch::Sender<health::Health>,
        mut events: mpsc::UnboundedReceiver<vantage_gossip::Event>,
        joined: &mut mpsc::UnboundedReceiver<()>,
        mut job_done: mpsc::UnboundedReceiver<()>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut browser_state = self.browser.map(|b| b.supervisor().watch());
        tokio::pin!(shutdown);
        loop {
            self.publish(&mut status).await;
            let _ = health_tx.send(status.health.clone());
            let browser_changed = async {
                match browser_state.as_mut() {
                    Some(w) => {
                        let _ = w.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => self.follow_gossip(&e, &mut status).await,
                    None => break,
                },
                Some(()) = joined.recv() => status.health.joined = true,
                Some(()) = job_done.recv() => {}
                _ = browser_changed => {}
                _ = &mut shutdown => break,
            }
        }
    }

    /// Refreshes the browser and job figures, and gossips the tags when they changed.
    async fn publish(&mut self, status: &mut Status) {
        let health = &mut status.health;
        if let Some(b) = self.browser {
            let st = b.supervisor().state();
            health.browser = st.tag().to_owned();
            (health.browser_reason, health.browser_pid) = match &st {
                chromium::BrowserState::Restarting { reason }
                | chromium::BrowserState::Failed { reason } => (Some(reason.clone()), None),
                chromium::BrowserState::Ready { pid, version, .. } => {
                    self.own.insert(tags::CHROMIUM.into(), version.clone());
                    (None, Some(*pid))
                }
                chromium::BrowserState::Starting => (None, None),
            };
        }
        health.jobs_active = self.jobs.map_or(0, |j| j.active());
        if let Some(sandbox) = &health.sandbox {
            self.own.insert(SANDBOX_TAG.into(), sandbox.clone());
        }
        let now = (health.browser.clone(), health.jobs_active);
        if status.published.as_ref() != Some(&now) {
            self.own.insert(tags::BROWSER.into(), now.0.clone());
            self.own
                .insert(tags::JOBS.into(), format!("{}/{}", now.1, self.capacity));
            if let Err(e) = self.member.gossip.set_tags(self.own.clone()).await {
                tracing::warn!(error = %e, "cannot publish tags");
            }
            status.published = Some(now);
        }
    }

    /// Makes a gossip event's member a peer, and refreshes the member count and roles.
    async fn follow_gossip(&self, e: &vantage_gossip::Event, status: &mut Status) {
        self.member.follow(e).await;
        if let Ok(m) = self.member.gossip.members().await {
            status.health.members = m.iter().filter(|m| m.state.is_live()).count();
            let mut r = self.roles.write().unwrap_or_else(|e| e.into_inner());
            r.clear();
            for m in m.iter().filter(|m| m.state.is_live()) {
                r.insert(
                    m.addr.ip(),
                    m.tags.get(tags::ROLE).cloned().unwrap_or_default(),
                );
            }
        }
    }
}
