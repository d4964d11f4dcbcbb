//! The Chromium supervisor: launches headless Chromium with container-safe flags, reads its
//! DevTools port from its own "DevTools listening on" line, checks its health over `/json/version`,
//! restarts it with exponential backoff, recycles it after N jobs or above an RSS ceiling, and
//! always kills the whole process group and reaps every child.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper::Method;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::procs;
pub use crate::procs::{group_members, reap_orphans};
use crate::sandbox::{self, Sandbox};

/// The browser's default niceness. The agent carries the browser's traffic (egress guard, overlay
/// TCP, WireGuard): a renderer busy with layout must not hold a connection's packets in the
/// agent, any more than it can hold them in a kernel's network stack, or the report's connect
/// and wait phases would carry the page's own CPU time (and, on one machine, other regions').
pub const DEFAULT_NICE: u8 = 10;

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct ChromiumConfig {
    /// The browser executable (`CHROME`, else Debian's `chromium`).
    pub path: PathBuf,
    /// Who runs the browser when the agent is root (the sandbox cannot run as root); see
    /// [`crate::sandbox`].
    pub user: Option<String>,
    pub extra_args: Vec<String>,
    /// Restart the browser after this many jobs (0 = never).
    pub recycle_after_jobs: u32,
    /// Restart the browser when its processes together use more than this, in bytes (0 = never).
    pub rss_ceiling: u64,
    /// Time between health checks.
    pub health_interval: Duration,
    /// How long a launch may take until DevTools answers.
    pub start_timeout: Duration,
    /// First and largest restart delay.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Consecutive failed launches before the state is `failed` (it keeps retrying at the max).
    pub failed_after: u32,
    /// The CPU niceness the browser and its helpers run at (0 to 19, higher yields more).
    pub nice: u8,
}

impl Default for ChromiumConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("chromium"),
            user: None,
            extra_args: Vec::new(),
            recycle_after_jobs: 100,
            rss_ceiling: 2 << 30,
            health_interval: Duration::from_millis(500),
            start_timeout: Duration::from_secs(20),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            failed_after: 5,
            nice: DEFAULT_NICE,
        }
    }
}

/// What the rest of the agent (and its tags) see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowserState {
    Starting,
    Ready {
        port: u16,
        ws_url: String,
        version: String,
        pid: u32,
    },
    Restarting {
        reason: String,
    },
    Failed {
        reason: String,
    },
}

impl BrowserState {
    /// The tag value: `starting|ready|restarting|failed`.
    pub fn tag(&self) -> &'static str {
        match self {
            BrowserState::Starting => "starting",
            BrowserState::Ready { .. } => "ready",
            BrowserState::Restarting { .. } => "restarting",
            BrowserState::Failed { .. } => "failed",
        }
    }
}

/// A handle to the supervisor task.
#[derive(Debug, Clone)]
pub struct Supervisor {
    state: watch::Receiver<BrowserState>,
    tx: mpsc::UnboundedSender<Signal>,
    shared: Arc<Shared>,
}

/// What the handle and the supervising task both touch.
#[derive(Debug)]
struct Shared {
    state: watch::Sender<BrowserState>,
    /// Jobs finished on the current browser.
    jobs: AtomicU32,
    recycle_after: u32,
    /// Jobs using the browser right now ([`Lease`]s).
    in_use: AtomicU32,
    /// Whether the browser runs sandboxed, decided at start-up.
    sandbox: Sandbox,
}

/// Held by a job while it uses the browser: a recycle waits until every lease has ended, so a
/// job that is still loading is never killed because another one finished.
#[derive(Debug)]
pub struct Lease(Arc<Shared>);

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The longest a recycle waits for running jobs to finish.
const RECYCLE_DRAIN_MAX: Duration = Duration::from_secs(600);

enum Signal {
    Recycle,
    Stop(tokio::sync::oneshot::Sender<()>),
}

impl Supervisor {
    /// Starts supervising; the first launch begins at once.
    pub fn spawn(cfg: ChromiumConfig) -> Self {
        become_subreaper();
        let (state_tx, state) = watch::channel(BrowserState::Starting);
        let (tx, rx) = mpsc::unbounded_channel();
        // once, at start-up: a short-lived probe process
        let sandbox = sandbox::probe(cfg.user.as_deref());
        match &sandbox {
            Sandbox::On { user, .. } => tracing::info!(%user, "chromium runs sandboxed"),
            Sandbox::Off { reason } => {
                tracing::warn!(%reason, "chromium runs WITHOUT its sandbox (--no-sandbox)")
            }
        }
        let shared = Arc::new(Shared {
            state: state_tx,
            jobs: AtomicU32::new(0),
            recycle_after: cfg.recycle_after_jobs,
            in_use: AtomicU32::new(0),
            sandbox,
        });
        tokio::spawn(supervise(cfg, shared.clone(), rx));
        Self { state, tx, shared }
    }

    /// Whether the browser runs with its sandbox (and as whom), or why not.
    pub fn sandbox(&self) -> &Sandbox {
        &self.shared.sandbox
    }

    pub fn state(&self) -> BrowserState {
        self.state.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<BrowserState> {
        self.state.clone()
    }

    /// Waits until the browser is ready (or `limit` passes) and returns its DevTools port.
    pub async fn ready(&self, limit: Duration) -> Result<u16> {
        let mut w = self.state.clone();
        let got = tokio::time::timeout(
            limit,
            w.wait_for(|s| matches!(s, BrowserState::Ready { .. })),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "chromium not ready within {limit:?}; state: {:?}",
                self.state()
            )
        })?
        .map_err(|_| anyhow!("chromium supervisor has stopped"))?;
        match &*got {
            BrowserState::Ready { port, .. } => Ok(*port),
            _ => unreachable!("waited for ready"),
        }
    }

    /// Counts a finished job toward recycling. When the count is reached the state turns
    /// `restarting` at once, before this returns, so the next job waits for the fresh browser
    /// instead of racing the old one's shutdown.
    pub fn job_done(&self) {
        let n = self.shared.jobs.fetch_add(1, Ordering::SeqCst) + 1;
        if self.shared.recycle_after > 0 && n == self.shared.recycle_after {
            self.shared.state.send_replace(BrowserState::Restarting {
                reason: format!("recycling after {n} jobs"),
            });
            let _ = self.tx.send(Signal::Recycle);
        }
    }

    /// Marks the browser in use until the lease is dropped.
    pub fn lease(&self) -> Lease {
        self.shared.in_use.fetch_add(1, Ordering::SeqCst);
        Lease(self.shared.clone())
    }

    /// Kills the browser (whole process group), reaps it, and stops supervising.
    pub async fn stop(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Signal::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// A DevTools connection that follows the supervisor: after a restart it reconnects to the new
/// browser the next time it is asked for.
#[derive(Debug)]
pub struct BrowserLink {
    sup: Supervisor,
    current: tokio::sync::Mutex<Option<(u32, crate::cdp::Cdp)>>,
}

impl BrowserLink {
    pub fn new(sup: Supervisor) -> Self {
        Self {
            sup,
            current: tokio::sync::Mutex::new(None),
        }
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// The connection to the browser that is ready now (waiting up to `limit` for one).
    pub async fn cdp(&self, limit: Duration) -> Result<crate::cdp::Cdp> {
        self.sup.ready(limit).await?;
        let BrowserState::Ready { pid, ws_url, .. } = self.sup.state() else {
            bail!("chromium is not ready: {:?}", self.sup.state());
        };
        let mut cur = self.current.lock().await;
        if let Some((p, cdp)) = cur.as_ref() {
            if *p == pid && !cdp.is_closed() {
                return Ok(cdp.clone());
            }
        }
        let cdp = crate::cdp::Cdp::connect(&ws_url).await?;
        *cur = Some((pid, cdp.clone()));
        Ok(cdp)
    }
}

/// A running browser process group.
struct Browser {
    pid: i32,
    port: u16,
    started: Instant,
    profile: TempDir,
}

impl Browser {
    /// `TMPDIR=<profile>`: every process the browser starts inherits it, so it marks the ones that
    /// left its group too.
    fn marker(&self) -> Vec<u8> {
        let mut m = b"TMPDIR=".to_vec();
        m.extend_from_slice(self.profile.0.as_os_str().as_encoded_bytes());
        m
    }

    /// Kills the browser's whole tree and reaps it, off the runtime.
    async fn kill(self) {
        let (pid, marker) = (self.pid, self.marker());
        let killed = tokio::task::spawn_blocking(move || {
            let tree = procs::browser_tree(pid, &marker);
            procs::kill_and_reap(pid, &tree);
        })
        .await;
        if let Err(e) = killed {
            tracing::warn!(error = %e, "killing chromium's processes failed");
        }
        drop(self);
    }

    /// The resident memory of the browser's tree, read off the runtime.
    async fn rss(&self) -> u64 {
        let (pid, marker) = (self.pid, self.marker());
        tokio::task::spawn_blocking(move || procs::rss(procs::browser_tree(pid, &marker)))
            .await
            .unwrap_or(0)
    }
}

impl Drop for Browser {
    /// However the supervisor ends (a panic, its runtime shutting down), the browser's group goes
    /// with it: one signal, no waiting and no `/proc` scan here, since this may run on a runtime
    /// thread. Helpers outside the group are swept when the agent stops.
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: killpg on the group this supervisor created; killing a dead group is harmless.
        unsafe {
            libc::killpg(self.pid, libc::SIGKILL);
        }
    }
}

/// A fresh user-data-dir, removed on drop. Its name is short because Chromium also makes its
/// temp files in it (TMPDIR), sockets among them, and a socket path may not exceed 107 bytes.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vch-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The flags every launch uses: headless in a container, quiet on the network, DevTools on an
/// ephemeral loopback port; `--no-sandbox` only when the sandbox cannot work.
pub fn launch_flags(profile: &std::path::Path, sandboxed: bool) -> Vec<String> {
    let no_sandbox = (!sandboxed).then(|| "--no-sandbox".to_owned());
    let flags: Vec<String> = vec![
        "--headless".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-gpu".into(),
        format!("--user-data-dir={}", profile.display()),
        "--remote-debugging-port=0".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--no-first-run".into(),
        "--metrics-recording-only".into(),
        "--disable-default-apps".into(),
        "--disable-breakpad".into(),
        "about:blank".into(),
    ];
    no_sandbox.into_iter().chain(flags).collect()
}

fn launch(cfg: &ChromiumConfig, sandbox: &Sandbox) -> Result<(Browser, std::process::ChildStderr)> {
    let profile = TempDir::new()?;
    let mut cmd = Command::new(&cfg.path);
    if let Sandbox::On {
        uid,
        gid,
        switch: true,
        ..
    } = *sandbox
    {
        // the browser's user owns its profile (and its temp files, which go there)
        std::os::unix::fs::chown(&profile.0, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid}", profile.0.display()))?;
        cmd.uid(uid).gid(gid);
    }
    cmd.args(launch_flags(&profile.0, sandbox.is_on()))
        .args(&cfg.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Chromium's own temp files (shared memory, crashpad) go into the profile, which is
        // removed with it: a browser killed as a group cleans up nothing itself
        .env("TMPDIR", &profile.0)
        // and so does what it keeps in its home (crash reports, config)
        .env("HOME", &profile.0)
        // its own process group, so one signal reaches every renderer and helper
        .process_group(0);
    in_child(&mut cmd, cfg.nice);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", cfg.path.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let pid = child.id() as i32;
    // the child is reaped with waitpid on its pid (see `reap`), not through `Child`
    std::mem::forget(child);
    Ok((
        Browser {
            pid,
            port: 0,
            started: Instant::now(),
            profile,
        },
        stderr,
    ))
}

/// Reads stderr until "DevTools listening on ws://127.0.0.1:PORT/…"; keeps draining it afterwards
/// so Chromium never blocks on a full pipe.
fn devtools_url(stderr: std::process::ChildStderr, limit: Duration) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(limit)
        .map_err(|_| anyhow!("chromium printed no \"DevTools listening on\" line within {limit:?}"))
}

fn port_of(ws_url: &str) -> Result<u16> {
    let rest = ws_url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("unexpected DevTools url {ws_url}"))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let port = hostport.rsplit(':').next().unwrap_or_default();
    port.parse()
        .map_err(|_| anyhow!("no port in DevTools url {ws_url}"))
}

/// `GET /json/version` on the DevTools port; returns the "Browser" field.
pub async fn browser_version(port: u16) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "Browser")]
        browser: String,
    }
    let body = http_get(port, "/json/version").await?;
    let v: Version = serde_json::from_str(&body)
        .context("/json/version is not an object with a \"Browser\" string")?;
    Ok(v.browser)
}

/// `GET path` on a loopback HTTP server (see [`devtools_http`]).
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    devtools_http(port, Method::GET, path).await
}

/// Largest answer read from a loopback HTTP server.
const MAX_ANSWER: usize = 1 << 20;

/// One HTTP/1.1 request to a server on 127.0.0.1 (Chromium's DevTools wants an IP in `Host`),
/// with a deadline; the body of a 2xx answer, else an error naming the status.
pub async fn devtools_http(port: u16, method: Method, path: &str) -> Result<String> {
    let ask = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // the connection task ends with the request: it is aborted below, or fails with the stream
        let conn = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            resp.into_body(),
            MAX_ANSWER,
        ))
        .await
        .map_err(|e| anyhow!("cannot read the answer: {e}"))?
        .to_bytes();
        conn.abort();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .map_err(|_| anyhow!("{method} {path} timed out"))??;
    let body = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        bail!("{method} {path}: {status}: {body}");
    }
    Ok(body)
}

/// Whether the main process has exited (and reaps it if so).
#[allow(unsafe_code)]
fn exited(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on our own child's pid only writes `status`.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    r == pid || r == -1
}

/// Chromium gets SIGKILL if the agent dies without cleaning up (OOM killer, SIGKILL), so a
/// dead agent never leaves a browser behind. The signal follows the spawning thread, which is a
/// runtime worker that lives as long as the supervisor. It also starts at niceness `nice`, which
/// every renderer and helper inherits.
#[allow(unsafe_code)]
fn in_child(cmd: &mut Command, nice: u8) {
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe prctl and setpriority calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // raising one's own niceness needs no privilege, also after the switch of user
            if libc::setpriority(libc::PRIO_PROCESS, 0, libc::c_int::from(nice)) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes orphaned descendants (Chromium's helpers) children of this process, so they are reaped
/// here even when the agent is PID 1 of a container.
#[allow(unsafe_code)]
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// No core files from Chromium (inherited by everything the agent starts).
#[allow(unsafe_code)]
pub fn disable_core_dumps() -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn start(cfg: &ChromiumConfig, sandbox: &Sandbox) -> Result<(Browser, String, String)> {
    let (mut b, stderr) = launch(cfg, sandbox)?;
    let limit = cfg.start_timeout;
    let url = match tokio::task::spawn_blocking(move || devtools_url(stderr, limit)).await? {
        Ok(u) => u,
        Err(e) => {
            b.kill().await;
            return Err(e);
        }
    };
    b.port = match port_of(&url) {
        Ok(p) => p,
        Err(e) => {
            b.kill().await;
            return Err(e);
        }
    };
    match browser_version(b.port).await {
        Ok(v) => Ok((b, url, v)),
        Err(e) => {
            b.kill().await;
            Err(e.context("chromium started but /json/version did not answer"))
        }
    }
}

async fn supervise(
    cfg: ChromiumConfig,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Signal>,
) {
    let state = &shared.state;
    let mut backoff = cfg.backoff_min;
    let mut failures = 0u32;
    loop {
        let browser = match start(&cfg, &shared.sandbox).await {
            Ok((b, ws_url, version)) => {
                tracing::info!(port = b.port, %version, pid = b.pid, "chromium ready");
                shared.jobs.store(0, Ordering::SeqCst);
                state.send_replace(BrowserState::Ready {
                    port: b.port,
                    ws_url,
                    version,
                    pid: b.pid as u32,
                });
                b
            }
            Err(e) => {
                failures += 1;
                let reason = format!("{e:#}");
                tracing::warn!(%reason, retry_in = ?backoff, "chromium failed to start");
                let s = if failures >= cfg.failed_after {
                    BrowserState::Failed { reason }
                } else {
                    BrowserState::Restarting { reason }
                };
                state.send_replace(s);
                if wait_or_stop(&mut rx, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
        };
        let reason = loop {
            tokio::select! {
                s = rx.recv() => match s {
                    Some(Signal::Recycle) => match drain(&shared, &mut rx).await {
                        Drained::Idle => {
                            break format!("recycling after {} jobs", cfg.recycle_after_jobs)
                        }
                        Drained::Stop(done) => return stop(browser, state, done).await,
                    },
                    Some(Signal::Stop(done)) => return stop(browser, state, Some(done)).await,
                    None => return stop(browser, state, None).await,
                },
                _ = tokio::time::sleep(cfg.health_interval) => {
                    let _ = tokio::task::spawn_blocking(procs::reap_orphans).await;
                    if exited(browser.pid) {
                        break "chromium exited".to_owned();
                    }
                    if let Err(e) = browser_version(browser.port).await {
                        break format!("health check failed: {e:#}");
                    }
                    if cfg.rss_ceiling > 0 {
                        let rss = browser.rss().await;
                        if rss > cfg.rss_ceiling {
                            break format!("recycling at {} MiB RSS", rss >> 20);
                        }
                    }
                }
            }
        };
        tracing::warn!(%reason, "restarting chromium");
        let stable = browser.started.elapsed() > Duration::from_secs(60);
        browser.kill().await;
        let recycle = reason.starts_with("recycling");
        state.send_replace(BrowserState::Restarting { reason });
        if recycle || stable {
            backoff = cfg.backoff_min;
            failures = 0;
            continue;
        }
        if wait_or_stop(&mut rx, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

/// How a recycle's wait for running jobs ended.
enum Drained {
    /// No job holds a lease any more (or the longest wait passed).
    Idle,
    /// Asked to stop meanwhile: the jobs are being cancelled, so the browser goes now.
    Stop(Option<tokio::sync::oneshot::Sender<()>>),
}

/// Waits until no job holds a lease, for at most [`RECYCLE_DRAIN_MAX`], while still taking a
/// stop: a shutdown must not wait out a recycle. The state is already `restarting`, so no new
/// job starts meanwhile.
async fn drain(shared: &Shared, rx: &mut mpsc::UnboundedReceiver<Signal>) -> Drained {
    let end = tokio::time::Instant::now() + RECYCLE_DRAIN_MAX;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while shared.in_use.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < end {
        tokio::select! {
            s = rx.recv() => match s {
                Some(Signal::Recycle) => {}
                Some(Signal::Stop(done)) => return Drained::Stop(Some(done)),
                None => return Drained::Stop(None),
            },
            _ = poll.tick() => {}
        }
    }
    Drained::Idle
}

/// Ends supervision: the browser's whole process tree is killed and reaped (off the runtime),
/// the state turns `failed: stopped`, and the stopper is told.
async fn stop(
    browser: Browser,
    state: &watch::Sender<BrowserState>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
) {
    browser.kill().await;
    state.send_replace(BrowserState::Failed {
        reason: "stopped".into(),
    });
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// Sleeps for `d` unless asked to stop; returns true when stopping.
async fn wait_or_stop(rx: &mut mpsc::UnboundedReceiver<Signal>, d: Duration) -> bool {
    let end = tokio::time::Instant::now() + d;
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(Signal::Recycle) => continue,
                Some(Signal::Stop(done)) => {
                    let _ = done.send(());
                    return true;
                }
                None => return true,
            },
            _ = tokio::time::sleep_until(end) => return false,
        }
    }
}
