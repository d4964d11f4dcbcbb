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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::sync::{mpsc, watch};

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct ChromiumConfig {
    /// The browser executable (`CHROME`, else Debian's `chromium`).
    pub path: PathBuf,
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
}

impl Default for ChromiumConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("chromium"),
            extra_args: Vec::new(),
            recycle_after_jobs: 100,
            rss_ceiling: 2 << 30,
            health_interval: Duration::from_millis(500),
            start_timeout: Duration::from_secs(20),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            failed_after: 5,
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
        let shared = Arc::new(Shared {
            state: state_tx,
            jobs: AtomicU32::new(0),
            recycle_after: cfg.recycle_after_jobs,
            in_use: AtomicU32::new(0),
        });
        tokio::spawn(supervise(cfg, shared.clone(), rx));
        Self { state, tx, shared }
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
    _profile: TempDir,
}

impl Drop for Browser {
    /// However the supervisor ends (a stop, a panic, its runtime shutting down), the browser's
    /// whole group goes with it; killing an already dead group is harmless.
    fn drop(&mut self) {
        kill_group(self.pid);
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
/// ephemeral loopback port.
pub fn launch_flags(profile: &std::path::Path) -> Vec<String> {
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
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
    ]
}

fn launch(cfg: &ChromiumConfig) -> Result<(Browser, std::process::ChildStderr)> {
    let profile = TempDir::new()?;
    let mut cmd = Command::new(&cfg.path);
    cmd.args(launch_flags(&profile.0))
        .args(&cfg.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Chromium's own temp files (shared memory, crashpad) go into the profile, which is
        // removed with it: a browser killed as a group cleans up nothing itself
        .env("TMPDIR", &profile.0)
        // its own process group, so one signal reaches every renderer and helper
        .process_group(0);
    die_with_parent(&mut cmd);
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
            _profile: profile,
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
    let body = http_get(port, "/json/version").await?;
    let key = "\"Browser\"";
    let at = body
        .find(key)
        .ok_or_else(|| anyhow!("/json/version has no Browser field"))?;
    let rest = &body[at + key.len()..];
    let start = rest
        .find('"')
        .ok_or_else(|| anyhow!("malformed /json/version"))?
        + 1;
    let end = rest[start..]
        .find('"')
        .ok_or_else(|| anyhow!("malformed /json/version"))?;
    Ok(rest[start..start + end].to_owned())
}

/// A minimal HTTP/1.1 GET to the local DevTools server (Host must be an IP for Chromium). The
/// body is read by Content-Length: Chromium keeps the connection open.
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                let have = buf.len() - end - 4;
                match len {
                    Some(len) if have >= len => {
                        let body =
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                        return Ok::<_, std::io::Error>((head, body));
                    }
                    _ => {}
                }
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                let text = String::from_utf8_lossy(&buf).into_owned();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                return Ok((head.to_owned(), body.to_owned()));
            }
            if buf.len() > 1 << 20 {
                return Err(std::io::Error::other("DevTools answer larger than 1 MiB"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let (head, body) = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| anyhow!("GET {path} timed out"))??;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Processes in a process group (Chromium and every helper it started).
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().nth(2).map(str::to_owned))
                })
                .flatten()
                .and_then(|g| g.parse::<i32>().ok())
                == Some(pgid)
        })
        .collect()
}

/// Resident memory of the whole group, in bytes.
fn group_rss(pgid: i32) -> u64 {
    group_members(pgid)
        .into_iter()
        .filter_map(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            s.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * 4096
}

/// Whether the main process has exited (and reaps it if so).
#[allow(unsafe_code)]
fn exited(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on our own child's pid only writes `status`.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    r == pid || r == -1
}

/// SIGKILLs the whole group and reaps every process of it that is our child.
#[allow(unsafe_code)]
fn kill_group(pgid: i32) {
    // SAFETY: plain syscalls on a process group this supervisor created; no memory is shared.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
    // helpers reparent to us (we are a subreaper) only once the main process is gone, so keep
    // reaping until the group is empty, not merely until waitpid runs out of children
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut status = 0;
        // SAFETY: as above; reaps any child in the group, without blocking.
        let r = unsafe { libc::waitpid(-pgid, &mut status, libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if group_members(pgid).is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reap_orphans();
}

/// Reaps zombies that were reparented to us: Chromium helpers that left its process group (the
/// crashpad handler does) are not reached by `waitpid(-pgid)`.
#[allow(unsafe_code)]
pub fn reap_orphans() {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        if f.next() == Some("Z") && f.next().and_then(|p| p.parse::<i32>().ok()) == Some(me) {
            let mut status = 0;
            // SAFETY: waitpid on a specific zombie child of ours; only writes `status`.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        }
    }
}

/// Chromium gets SIGKILL if the agent dies without cleaning up (OOM killer, SIGKILL), so a
/// dead agent never leaves a browser behind. The signal follows the spawning thread, which is a
/// runtime worker that lives as long as the supervisor.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe prctl call.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
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

async fn start(cfg: &ChromiumConfig) -> Result<(Browser, String, String)> {
    let (mut b, stderr) = launch(cfg)?;
    let limit = cfg.start_timeout;
    let url = match tokio::task::spawn_blocking(move || devtools_url(stderr, limit)).await? {
        Ok(u) => u,
        Err(e) => {
            kill_group(b.pid);
            return Err(e);
        }
    };
    b.port = port_of(&url)?;
    match browser_version(b.port).await {
        Ok(v) => Ok((b, url, v)),
        Err(e) => {
            kill_group(b.pid);
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
        let browser = match start(&cfg).await {
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
                    Some(Signal::Recycle) => {
                        // the state is already `restarting`, so no new job starts meanwhile
                        let end = Instant::now() + RECYCLE_DRAIN_MAX;
                        while shared.in_use.load(Ordering::SeqCst) > 0 && Instant::now() < end {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        break format!("recycling after {} jobs", cfg.recycle_after_jobs);
                    }
                    Some(Signal::Stop(done)) => {
                        kill_group(browser.pid);
                        state.send_replace(BrowserState::Failed { reason: "stopped".into() });
                        drop(browser);
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        kill_group(browser.pid);
                        return;
                    }
                },
                _ = tokio::time::sleep(cfg.health_interval) => {
                    reap_orphans();
                    if exited(browser.pid) {
                        break "chromium exited".to_owned();
                    }
                    if let Err(e) = browser_version(browser.port).await {
                        break format!("health check failed: {e:#}");
                    }
                    if cfg.rss_ceiling > 0 {
                        let rss = group_rss(browser.pid);
                        if rss > cfg.rss_ceiling {
                            break format!("recycling at {} MiB RSS", rss >> 20);
                        }
                    }
                }
            }
        };
        tracing::warn!(%reason, "restarting chromium");
        kill_group(browser.pid);
        let stable = browser.started.elapsed() > Duration::from_secs(60);
        drop(browser);
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
