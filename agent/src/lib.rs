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
pub mod waterfall;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use vantage_fleet::tags;
use vantage_gossip::Tags;

pub use config::{Args, Config};

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
    let mut own = Tags::new();
    own.insert(tags::ROLE.into(), tags::Role::Agent.as_str().into());
    own.insert(tags::MACHINE.into(), config.member.name.clone());
    own.insert(tags::CAPACITY.into(), config.capacity.to_string());
    own.insert(tags::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    let (member, mut events) =
        vantage_fleet::Membership::start(&config.member, &mut own, socket).await?;
    let (node, gossip) = (member.node.clone(), member.gossip.clone());
    // the browser reaches the web only through the egress guard, unless it is turned off; pins
    // (--connect-to) need it even then, with a policy that refuses nothing
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
    let browser = config.chromium.clone().map(|mut c| {
        c.extra_args
            .extend(guard.iter().flat_map(egress::Guard::chromium_flags));
        Arc::new(chromium::BrowserLink::new(chromium::Supervisor::spawn(c)))
    });
    let mut joined_rx = member.join_seeds(&config.member);
    let roles: gateway::Roles = Arc::default();
    let authority = Arc::new(if config.controller_keys.is_empty() {
        if browser.is_some() {
            tracing::warn!(
                "VANTAGE_CONTROLLER_KEYS is not set: the job API and the CDP gateway serve any member whose gossip tag says role=controller, and any holder of the fleet's PSK can claim that role; set VANTAGE_CONTROLLER_KEYS (--controller-keys) to the controllers' public keys"
            );
        }
        authority::Authority::Roles(roles.clone())
    } else {
        tracing::info!(
            controllers = config.controller_keys.len(),
            "job API and CDP gateway serve the configured controller keys only"
        );
        authority::Authority::keys(node.prefix(), &config.controller_keys)
    });
    let (job_done_tx, mut job_done) = mpsc::unbounded_channel();
    let jobs = match &browser {
        Some(link) => {
            let ctx = executor::RunContext {
                region: config.member.region.clone(),
                node: config.member.name.clone(),
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
            let authority = authority.clone();
            tokio::spawn(async move {
                while let Ok((stream, from)) = listener.accept().await {
                    let (s, progress) = (s.clone(), progress.clone());
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
            Some(server)
        }
        None => None,
    };
    if let Some(link) = &browser {
        let listener = node
            .tcp_listen(config.cdp_port)
            .await
            .context("cannot listen for CDP on the overlay")?;
        let me = SocketAddr::V6(listener.local_addr());
        let (authority, sup) = (authority.clone(), link.supervisor().clone());
        tokio::spawn(async move {
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
        });
    }
    let mut health = health::Health {
        name: config.member.name.clone(),
        region: config.member.region.clone(),
        members: 1,
        seeds: config.member.seeds.len(),
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
                    own.insert(tags::CHROMIUM.into(), version.clone());
                    (None, Some(*pid))
                }
                chromium::BrowserState::Starting => (None, None),
            };
        }
        health.jobs_active = jobs.as_ref().map_or(0, |j| j.active());
        let now = (health.browser.clone(), health.jobs_active);
        if published.as_ref() != Some(&now) {
            own.insert(tags::BROWSER.into(), now.0.clone());
            own.insert(tags::JOBS.into(), format!("{}/{}", now.1, config.capacity));
            if let Err(e) = gossip.set_tags(own.clone()).await {
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
                    member.follow(&e).await;
                    if let Ok(m) = gossip.members().await {
                        health.members = m.iter().filter(|m| m.state.is_live()).count();
                        let mut r = roles.write().unwrap_or_else(|e| e.into_inner());
                        r.clear();
                        for m in m.iter().filter(|m| m.state.is_live()) {
                            r.insert(m.addr.ip(), m.tags.get(tags::ROLE).cloned().unwrap_or_default());
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
