//! `vantage-agent`: what runs in every Fly VM. A mesh member that joins the cluster's gossip with
//! its region, mesh identity, browser state and load in its tags (and makes every member it learns
//! of a WireGuard peer); it supervises Chromium, runs page-load jobs next to it, offers the raw
//! browser to controllers through the CDP gateway, and answers Fly's health checks.

pub mod capture;
pub mod cdp;
pub mod chromium;
pub mod config;
pub mod egress;
pub mod executor;
pub mod fly;
pub mod gateway;
pub mod health;
pub mod jobs;
pub mod page;
pub mod waterfall;

use std::future::Future;
use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use anyhow::{Context, Result};
use std::sync::Arc;
use tokio::net::lookup_host;
use tokio::sync::{mpsc, watch};
use vantage_gossip::transport::MeshTransport;
use vantage_gossip::{Event, GossipHandle, Member, Tags};
use vantage_mesh::{Node, NodeConfig, PeerConfig, PublicKey};

pub use config::{Args, Config};

/// Tag keys every member carries (what the mesh needs to reach it).
pub const TAG_KEY: &str = "wg";
pub const TAG_ENDPOINT: &str = "ep";
pub const TAG_REGION: &str = "region";
pub const TAG_ROLE: &str = "role";

/// How long running jobs may finish after SIGTERM before they are cancelled.
const DRAIN: Duration = Duration::from_secs(20);

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
    let mut mesh = NodeConfig::new(config.private_key.clone(), config.psk.clone());
    mesh.advertise = config.advertise;
    let node = Node::start(mesh, socket).context("cannot start the mesh node")?;
    tracing::info!(
        name = %config.name,
        region = %config.region,
        public_key = %node.public_key(),
        overlay = %node.overlay_addr(),
        bind = %node.local_addr(),
        advertise = %node.advertise_addr(),
        "mesh node up"
    );
    // the browser reaches the web only through the egress guard, unless it is turned off
    let guard = match (&config.chromium, &config.egress) {
        (Some(_), Some(policy)) => Some(
            egress::Guard::start(policy.clone())
                .await
                .context("cannot start the egress guard")?,
        ),
        _ => None,
    };
    let browser = config.chromium.clone().map(|mut c| {
        c.extra_args
            .extend(guard.iter().flat_map(egress::Guard::chromium_flags));
        Arc::new(chromium::BrowserLink::new(chromium::Supervisor::spawn(c)))
    });
    let mut tags = Tags::new();
    tags.insert(TAG_ROLE.into(), "agent".into());
    tags.insert(TAG_REGION.into(), config.region.clone());
    tags.insert("machine".into(), config.name.clone());
    tags.insert("capacity".into(), config.capacity.to_string());
    tags.insert(TAG_KEY.into(), node.public_key().to_base64());
    tags.insert(TAG_ENDPOINT.into(), node.advertise_addr().to_string());
    tags.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let transport = MeshTransport::bind(node.clone(), config.gossip_port)
        .await
        .context("cannot bind gossip on the overlay")?;
    let (tx, mut events) = mpsc::unbounded_channel();
    let gossip_cfg = vantage_gossip::Config::profile(config.gossip_profile);
    let seed = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let gossip = vantage_gossip::spawn(gossip_cfg, &config.name, &tags, transport, seed, tx)?;
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
    for seed in &config.seeds {
        let (node, gossip, seed, port, joined) = (
            node.clone(),
            gossip.clone(),
            seed.clone(),
            config.gossip_port,
            joined_tx.clone(),
        );
        tokio::spawn(async move {
            join_seed(&node, &gossip, &seed, port).await;
            let _ = joined.send(());
        });
    }
    if let Some(fly) = config.fly_seeds.clone() {
        let (node, gossip, port, joined) = (
            node.clone(),
            gossip.clone(),
            config.gossip_port,
            joined_tx.clone(),
        );
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            let found = loop {
                match fly::seeds(&fly.app, fly.me, fly.port, fly.dns).await {
                    Ok(s) if !s.is_empty() => break s,
                    Ok(_) => {
                        tracing::info!(app = %fly.app, "no other machines in {}.internal yet", fly.app)
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "fly seed lookup failed"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            };
            tracing::info!(seeds = ?found, "seeds from fly dns");
            for seed in found {
                let (node, gossip, joined) = (node.clone(), gossip.clone(), joined.clone());
                tokio::spawn(async move {
                    join_seed(&node, &gossip, &seed.to_string(), port).await;
                    let _ = joined.send(());
                });
            }
        });
    }
    let (job_done_tx, mut job_done) = mpsc::unbounded_channel();
    let jobs = match &browser {
        Some(link) => {
            let ctx = executor::RunContext {
                region: config.region.clone(),
                node: config.name.clone(),
                browser_version: String::new(),
                guard: guard.clone(),
            };
            let link2 = link.clone();
            let done = job_done_tx.clone();
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
            let s = server.clone();
            let progress = job_done_tx.clone();
            tokio::spawn(async move {
                while let Ok((stream, from)) = listener.accept().await {
                    let (s, progress) = (s.clone(), progress.clone());
                    tokio::spawn(async move {
                        let _ = progress.send(());
                        if let Err(e) = s.serve(stream).await {
                            tracing::debug!(%from, error = %format!("{e:#}"), "job connection ended with an error");
                        }
                        let _ = progress.send(());
                    });
                }
            });
            Some(server)
        }
        None => None,
    };
    let roles: gateway::Roles = Arc::default();
    if let Some(link) = &browser {
        let listener = node
            .tcp_listen(config.cdp_port)
            .await
            .context("cannot listen for CDP on the overlay")?;
        let me = SocketAddr::V6(listener.local_addr());
        let (roles, sup) = (roles.clone(), link.supervisor().clone());
        tokio::spawn(async move {
            while let Ok((stream, from)) = listener.accept().await {
                let (roles, sup) = (roles.clone(), sup.clone());
                tokio::spawn(async move {
                    if let Err(e) =
                        gateway::serve(stream, SocketAddr::V6(from), me, &roles, &sup).await
                    {
                        tracing::debug!(%from, error = %format!("{e:#}"), "cdp gateway connection failed");
                    }
                });
            }
        });
    }
    let mut health = health::Health {
        name: config.name.clone(),
        region: config.region.clone(),
        members: 1,
        seeds: config.seeds.len(),
        joined: false,
        browser: if browser.is_some() {
            "starting".into()
        } else {
            "none".into()
        },
        capacity: config.capacity,
        ..health::Health::default()
    };
    let (health_tx, health_rx) = watch::channel(health.clone());
    let health_task = health::serve(config.health_addr, health_rx).await?;
    let mut browser_state = browser.as_ref().map(|b| b.supervisor().watch());
    let mut published: Option<(String, usize)> = None;
    tokio::pin!(shutdown);
    loop {
        // keep the tags and the health endpoint current
        if let Some(b) = &browser {
            let st = b.supervisor().state();
            health.browser = st.tag().to_owned();
            (health.browser_reason, health.browser_pid) = match &st {
                chromium::BrowserState::Restarting { reason }
                | chromium::BrowserState::Failed { reason } => (Some(reason.clone()), None),
                chromium::BrowserState::Ready { pid, version, .. } => {
                    tags.insert("chromium".into(), version.clone());
                    (None, Some(*pid))
                }
                chromium::BrowserState::Starting => (None, None),
            };
        }
        health.jobs_active = jobs.as_ref().map_or(0, |j| j.active());
        let now = (health.browser.clone(), health.jobs_active);
        if published.as_ref() != Some(&now) {
            tags.insert("browser".into(), now.0.clone());
            tags.insert("jobs".into(), format!("{}/{}", now.1, config.capacity));
            if let Err(e) = gossip.set_tags(tags.clone()).await {
                tracing::warn!(error = %e, "cannot publish tags");
            }
            published = Some(now);
        }
        let _ = health_tx.send(health.clone());
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
                Some(e) => {
                    on_event(&node, &config.name, e).await;
                    if let Ok(m) = gossip.members().await {
                        health.members = m.iter().filter(|m| m.state.is_live()).count();
                        let mut r = roles.write().unwrap_or_else(|e| e.into_inner());
                        r.clear();
                        for m in m.iter().filter(|m| m.state.is_live()) {
                            r.insert(m.addr.ip(), m.tags.get(TAG_ROLE).cloned().unwrap_or_default());
                        }
                    }
                }
                None => break,
            },
            Some(()) = joined_rx.recv() => health.joined = true,
            Some(()) = job_done.recv() => {}
            _ = browser_changed => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: leaving the cluster");
    gossip.leave().await.ok();
    if let Some(j) = &jobs {
        let deadline = tokio::time::Instant::now() + DRAIN;
        while j.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if j.active() > 0 {
            tracing::warn!(
                active = j.active(),
                "cancelling jobs still running after {DRAIN:?}"
            );
        }
    }
    if let Some(b) = &browser {
        b.supervisor().stop().await;
    }
    health_task.abort();
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Keeps the mesh in step with the membership, and reports changes on stdout in the form Serf's
/// agent logs them.
async fn on_event(node: &Node, me: &str, e: Event) {
    match &e {
        Event::Joined(m) | Event::Updated(m) => {
            let kind = if matches!(e, Event::Joined(_)) {
                "Join"
            } else {
                "Update"
            };
            println!(
                "EventMember{kind}: {} {} region={}",
                m.name,
                m.addr.ip(),
                m.tags.get(TAG_REGION).map_or("?", |s| s)
            );
            if m.name != me {
                add_member_peer(node, m).await;
            }
        }
        Event::Failed { name } => println!("EventMemberFailed: {name}"),
        Event::Left { name } => println!("EventMemberLeave: {name}"),
        Event::Reaped { name } => println!("EventMemberReap: {name}"),
        Event::User { ltime, name, .. } => println!("EventUser: {name} ltime={ltime}"),
        Event::Suspect { .. } | Event::CoordinateUpdated { .. } => {}
    }
}

/// Makes a member reachable over the mesh, from its `wg` and `ep` tags.
pub async fn add_member_peer(node: &Node, m: &Member) {
    let key = m
        .tags
        .get(TAG_KEY)
        .and_then(|k| k.parse::<PublicKey>().ok());
    let endpoint = m
        .tags
        .get(TAG_ENDPOINT)
        .and_then(|e| e.parse::<SocketAddr>().ok());
    let Some(key) = key else {
        tracing::warn!(member = %m.name, "member has no valid `{TAG_KEY}` tag; cannot reach it over the mesh");
        return;
    };
    if let Err(e) = node
        .add_peer(PeerConfig {
            key,
            endpoint,
            keepalive: Some(25),
        })
        .await
    {
        tracing::warn!(member = %m.name, error = %e, "cannot add member as a mesh peer");
    }
}

/// Learns a seed's key with the underlay lookup, makes it a peer and joins its gossip, retrying
/// with backoff.
async fn join_seed(node: &Node, gossip: &GossipHandle, seed: &str, port: u16) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match try_join(node, gossip, seed, port).await {
            Ok(addr) => {
                tracing::info!(%seed, %addr, "joined through seed");
                return;
            }
            Err(e) => {
                tracing::warn!(%seed, error = %format!("{e:#}"), retry_in = ?backoff, "cannot join seed")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Learns a seed's key, makes it a peer and joins its gossip (one attempt).
pub async fn try_join(
    node: &Node,
    gossip: &GossipHandle,
    seed: &str,
    port: u16,
) -> Result<SocketAddr> {
    let addr = lookup_host(seed)
        .await
        .with_context(|| format!("cannot resolve {seed}"))?
        .next()
        .with_context(|| format!("{seed} resolved to no address"))?;
    let key = node.lookup_key(addr, Duration::from_secs(3)).await?;
    node.add_peer(PeerConfig {
        key,
        endpoint: Some(addr),
        keepalive: Some(25),
    })
    .await?;
    let overlay = SocketAddr::V6(SocketAddrV6::new(
        node.prefix().address_of(&key),
        port,
        0,
        0,
    ));
    gossip.join(vec![overlay]).await?;
    Ok(addr)
}
