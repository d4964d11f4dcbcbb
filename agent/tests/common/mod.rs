#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vantage_agent::cdp::Cdp;
use vantage_agent::chromium::BrowserState;
use vantage_agent::executor::run_job as execute;
use vantage_proto::Report;

use vantage_agent::chromium::{BrowserLink, ChromiumConfig, Supervisor};
use vantage_agent::executor::RunContext;
use vantage_agent::jobs::{submit, JobServer};
use vantage_agent::page::PagePool;
use vantage_proto::wire::JobEvent;
use vantage_proto::JobSpec;

/// The browser the tests use: `CHROME`, else Debian's `chromium` (CI installs it), sandboxed
/// as [`chromium_user`] (tests run as root).
pub fn chromium() -> ChromiumConfig {
    ChromiumConfig {
        path: std::env::var_os("CHROME")
            .map(Into::into)
            .unwrap_or_else(|| "chromium".into()),
        user: Some(chromium_user().into()),
        ..ChromiumConfig::default()
    }
}

/// A UDP port on 127.0.0.1 free a moment ago (an agent's underlay).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The unprivileged user Chromium runs as in tests, created if missing.
pub fn chromium_user() -> &'static str {
    const USER: &str = "vantage-chromium";
    static MADE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let exists = || {
            std::process::Command::new("id")
                .arg(USER)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !exists() {
            // several test binaries may race here; status 9 is "already exists"
            let s = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    USER,
                ])
                .status()
                .expect("useradd runs");
            assert!(s.success() || s.code() == Some(9), "useradd {USER}: {s}");
        }
        assert!(exists(), "the user {USER} exists");
    });
    USER
}

/// A job server on `sup`'s browser.
pub fn job_server(
    sup: &Supervisor,
    capacity: usize,
    queue: usize,
    on_done: Box<dyn Fn() + Send + Sync>,
) -> Arc<JobServer> {
    job_server_with(sup, None, capacity, queue, on_done)
}

/// [`job_server`], its jobs' contexts going through `guard` (which `sup`'s browser must be
/// started behind).
pub fn job_server_with(
    sup: &Supervisor,
    guard: Option<vantage_agent::egress::Guard>,
    capacity: usize,
    queue: usize,
    on_done: Box<dyn Fn() + Send + Sync>,
) -> Arc<JobServer> {
    let ctx = RunContext {
        region: "local".into(),
        node: "test".into(),
        browser_version: String::new(),
        guard,
    };
    JobServer::new(
        Arc::new(BrowserLink::new(sup.clone())),
        ctx,
        capacity,
        queue,
        on_done,
    )
}

/// Submits `spec` over an in-memory stream and returns every event.
pub async fn run_job(server: &Arc<JobServer>, spec: &JobSpec) -> Vec<JobEvent> {
    let (client, agent_side) = tokio::io::duplex(1 << 20);
    let s = server.clone();
    let serving = tokio::spawn(async move { s.serve(agent_side).await });
    let events = submit(client, spec).await.unwrap();
    serving.await.unwrap().unwrap();
    events
}

/// A supervisor for `cfg` whose browser is ready.
pub async fn ready(cfg: ChromiumConfig) -> Supervisor {
    let sup = Supervisor::spawn(cfg);
    sup.ready(Duration::from_secs(60)).await.unwrap();
    sup
}

/// A supervised browser that is ready, a CDP connection to it, and its version.
pub async fn browser() -> (Supervisor, Cdp, String) {
    browser_with(Vec::new()).await
}

/// [`browser`], with extra Chromium flags.
pub async fn browser_with(extra_args: Vec<String>) -> (Supervisor, Cdp, String) {
    let sup = ready(ChromiumConfig {
        extra_args,
        ..chromium()
    })
    .await;
    let BrowserState::Ready {
        ws_url, version, ..
    } = sup.state()
    else {
        panic!("not ready")
    };
    let cdp = Cdp::connect(&ws_url).await.unwrap();
    (sup, cdp, version)
}

/// Runs `spec` directly with the executor.
pub async fn load(cdp: &Cdp, version: &str, spec: &JobSpec) -> Report {
    load_with(cdp, version, spec, None).await
}

/// [`load`], through an egress guard.
pub async fn load_with(
    cdp: &Cdp,
    version: &str,
    spec: &JobSpec,
    guard: Option<vantage_agent::egress::Guard>,
) -> Report {
    let (tx, _rx) = mpsc::unbounded_channel();
    let ctx = RunContext {
        region: "local".into(),
        node: "test".into(),
        browser_version: version.into(),
        guard,
    };
    execute(cdp, spec, &ctx, &PagePool::default(), &tx).await
}
