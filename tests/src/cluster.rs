//! Gossip clusters of real processes on loopback: stock HashiCorp Serf agents, or our own gossip
//! node binary. Both kinds print Serf-style membership event lines on stdout, so one parser
//! observes either:
//!
//! ```text
//!     2026/11/27 17:50:56 [INFO] serf: EventMemberJoin: n3 127.0.0.1
//!     2026/11/27 17:51:05 [INFO] serf: EventMemberFailed: n7 127.0.0.1
//! ```
//!
//! `EventMember<Kind>: <name> [<addr>]` may appear anywhere in a line (ANSI colour codes are
//! stripped first); `<Kind>` is `Join`, `Update`, `Leave`, `Failed` or `Reap`. A process's view of
//! the alive members is the set of names it has reported joined (or updated) and not since
//! reported failed, left or reaped. Both kinds report their own join.
//!
//! Every child gets `PR_SET_PDEATHSIG` = `SIGKILL`, and `Drop` kills and reaps all of them, so a
//! benchmark never leaves agents behind.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// How long the seed may take to start listening before the others are spawned.
const SEED_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of output kept per process for error messages.
const TAIL_LINES: usize = 12;
/// Serf's RPC listener of node `i` is at `base_port + RPC_PORT_OFFSET + i`.
pub const RPC_PORT_OFFSET: u16 = 5000;

/// Which gossip implementation a cluster runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Stock HashiCorp Serf, `serf` on `PATH`.
    Serf,
    /// Our node binary (`vantage-gossip-node`).
    Ours { binary: PathBuf },
}

impl Kind {
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Serf => "serf",
            Kind::Ours { .. } => "ours",
        }
    }
}

/// What a membership event line says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Join,
    Update,
    Leave,
    Failed,
    Reap,
}

/// One parsed membership event line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    pub kind: EventKind,
    pub name: String,
    pub addr: Option<String>,
}

/// Parses `EventMember<Kind>: <name> [<addr>]` anywhere in `line`.
pub fn parse_event(line: &str) -> Option<MemberEvent> {
    let line = strip_ansi(line);
    let at = line.find("EventMember")?;
    let rest = &line[at + "EventMember".len()..];
    let colon = rest.find(':')?;
    let kind = match &rest[..colon] {
        "Join" => EventKind::Join,
        "Update" => EventKind::Update,
        "Leave" => EventKind::Leave,
        "Failed" => EventKind::Failed,
        "Reap" => EventKind::Reap,
        _ => return None,
    };
    let mut words = rest[colon + 1..].split_whitespace();
    let name = words.next()?.to_string();
    let addr = words.next().map(str::to_string);
    Some(MemberEvent { kind, name, addr })
}

/// Removes ANSI escape sequences (`ESC [ … final-byte`), as a coloured logger may emit.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// What the harness has learned about one process from its output.
#[derive(Debug, Default)]
struct NodeState {
    /// Names this process currently considers alive.
    alive: BTreeSet<String>,
    /// When `alive` last became the full cluster (`None` while it is not).
    complete_since: Option<Instant>,
    /// When this process first reported each name failed.
    first_failed: HashMap<String, Instant>,
    /// Every failure report, in order (a name may repeat if it rejoined and failed again).
    failed_reports: Vec<String>,
    /// Its stdout reached end of file: the process exited (or was killed).
    exited: bool,
    /// Last lines of stdout and stderr, for error messages.
    tail: VecDeque<String>,
}

#[derive(Debug)]
struct Shared {
    names: Vec<String>,
    nodes: Mutex<Vec<NodeState>>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<NodeState>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_tail(node: &mut NodeState, line: &str) {
        if node.tail.len() == TAIL_LINES {
            node.tail.pop_front();
        }
        node.tail.push_back(line.trim_end().to_string());
    }

    fn on_line(&self, i: usize, line: &str, at: Instant, parse: bool) {
        let mut nodes = self.lock();
        let node = &mut nodes[i];
        Self::push_tail(node, line);
        if !parse {
            return;
        }
        let Some(ev) = parse_event(line) else { return };
        match ev.kind {
            EventKind::Join | EventKind::Update => {
                node.alive.insert(ev.name);
            }
            EventKind::Failed => {
                node.first_failed.entry(ev.name.clone()).or_insert(at);
                node.failed_reports.push(ev.name.clone());
                node.alive.remove(&ev.name);
            }
            EventKind::Leave | EventKind::Reap => {
                node.alive.remove(&ev.name);
            }
        }
        let complete = self.names.iter().all(|n| node.alive.contains(n));
        node.complete_since = match (complete, node.complete_since) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(at),
            (false, _) => None,
        };
        drop(nodes);
        self.changed.notify_all();
    }

    fn on_eof(&self, i: usize) {
        self.lock()[i].exited = true;
        self.changed.notify_all();
    }
}

/// A running cluster of `n` gossip processes named `n0..n{n-1}` on `127.0.0.1`.
#[derive(Debug)]
pub struct Cluster {
    kind: Kind,
    n: usize,
    base_port: u16,
    /// `None` once the child has been killed and reaped.
    children: Vec<Option<Child>>,
    pids: Vec<u32>,
    started: Instant,
    killed: HashMap<usize, Instant>,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Starts `n` processes: `n0` (the seed) on `base_port`, then, as soon as the seed reports its
    /// own join (it is listening; `serf agent -join` exits if the seed is not up yet), all others
    /// at once, each joining the seed. Node `i` binds `127.0.0.1:<base_port + i>`; a Serf agent's
    /// RPC listener is `127.0.0.1:<base_port + RPC_PORT_OFFSET + i>`. Join time counts from the
    /// moment the seed is spawned.
    pub fn spawn(kind: Kind, n: usize, base_port: u16) -> Result<Cluster> {
        ensure!(n >= 2, "a cluster needs at least 2 nodes, got {n}");
        let last = usize::from(base_port) + RPC_PORT_OFFSET as usize + n;
        ensure!(
            last <= 65535,
            "ports from {base_port} for {n} nodes overflow"
        );
        if let Kind::Ours { binary } = &kind {
            ensure!(
                binary.is_file(),
                "our gossip node binary {} does not exist; build it with \
                 `cargo build --release -p vantage-tests --bin vantage-gossip-node`",
                binary.display()
            );
        }
        check_ports_free(&kind, n, base_port)?;
        let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let shared = Arc::new(Shared {
            names,
            nodes: Mutex::new((0..n).map(|_| NodeState::default()).collect()),
            changed: Condvar::new(),
        });
        let mut me = Cluster {
            kind,
            n,
            base_port,
            children: Vec::with_capacity(n),
            pids: Vec::with_capacity(n),
            started: Instant::now(),
            killed: HashMap::new(),
            shared,
            readers: Vec::new(),
        };
        me.start_node(0)?;
        me.wait_seed_ready()?;
        for i in 1..n {
            me.start_node(i)?;
        }
        Ok(me)
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The name of node `i` (`n<i>`).
    pub fn name(&self, i: usize) -> &str {
        &self.shared.names[i]
    }

    fn command(&self, i: usize) -> Command {
        let port = self.base_port + i as u16;
        let seed = format!("127.0.0.1:{}", self.base_port);
        let name = self.name(i).to_string();
        let mut cmd = match &self.kind {
            Kind::Serf => {
                let mut c = Command::new("serf");
                c.arg("agent")
                    .arg(format!("-node={name}"))
                    .arg(format!("-bind=127.0.0.1:{port}"))
                    .arg(format!(
                        "-rpc-addr=127.0.0.1:{}",
                        self.base_port + RPC_PORT_OFFSET + i as u16
                    ))
                    .arg("-log-level=info");
                if i > 0 {
                    c.arg(format!("-join={seed}"));
                }
                c
            }
            Kind::Ours { binary } => {
                let mut c = Command::new(binary);
                c.args(["--name", &name])
                    .args(["--bind", &format!("127.0.0.1:{port}")])
                    .args(["--profile", "lan"]);
                if i > 0 {
                    c.args(["--join", &seed]);
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        die_with_parent(&mut cmd);
        cmd
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        let mut child = self.command(i).spawn().with_context(|| match &self.kind {
            Kind::Serf => {
                "cannot start `serf`; is HashiCorp Serf installed (apt install serf)?".to_string()
            }
            Kind::Ours { binary } => format!("cannot start {}", binary.display()),
        })?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stderr = child.stderr.take().context("child stderr")?;
        self.pids.push(child.id());
        self.children.push(Some(child));
        let (a, b) = (self.shared.clone(), self.shared.clone());
        let label = format!("{}-{}", self.kind.label(), self.name(i));
        self.readers.push(
            std::thread::Builder::new()
                .name(format!("{label}-out"))
                .spawn(move || {
                    read_lines(stdout, |l, at| a.on_line(i, l, at, true), || a.on_eof(i))
                })
                .context("spawn stdout reader")?,
        );
        self.readers.push(
            std::thread::Builder::new()
                .name(format!("{label}-err"))
                .spawn(move || read_lines(stderr, |l, at| b.on_line(i, l, at, false), || {}))
                .context("spawn stderr reader")?,
        );
        Ok(())
    }

    fn wait_seed_ready(&self) -> Result<()> {
        let seed = self.name(0).to_string();
        self.wait_until(SEED_READY_TIMEOUT, |nodes| {
            if nodes[0].alive.contains(&seed) {
                Ok(Some(()))
            } else if nodes[0].exited {
                bail!("the seed {seed} exited at start:\n{}", tail(&nodes[0]))
            } else {
                Ok(None)
            }
        })
        .with_context(|| {
            format!(
                "the seed {seed} did not report its own join (`EventMemberJoin: {seed} …`) \
                 within {SEED_READY_TIMEOUT:?}:\n{}",
                tail(&self.shared.lock()[0])
            )
        })
    }

    /// Calls `check` under the lock each time something changes, until it returns a value, fails,
    /// or `timeout` passes (an error).
    fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[NodeState]) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut nodes = self.shared.lock();
        loop {
            if let Some(v) = check(&nodes)? {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("timed out after {timeout:?}");
            }
            nodes = self
                .shared
                .changed
                .wait_timeout(nodes, (deadline - now).min(Duration::from_millis(250)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A process that exited although it was not killed.
    fn check_unexpected_exit(&self, nodes: &[NodeState]) -> Result<()> {
        for (i, node) in nodes.iter().enumerate() {
            if node.exited && !self.killed.contains_key(&i) {
                bail!(
                    "{} {} exited unexpectedly:\n{}",
                    self.kind.label(),
                    self.name(i),
                    tail(node)
                );
            }
        }
        Ok(())
    }

    /// Waits until every live process sees all `n` members alive; returns the time from the
    /// seed's spawn until the last of them got there.
    pub fn wait_converged(&self, timeout: Duration) -> Result<Duration> {
        let res = self.wait_until(timeout, |nodes| {
            self.check_unexpected_exit(nodes)?;
            let mut latest = self.started;
            for (i, node) in nodes.iter().enumerate() {
                if self.killed.contains_key(&i) {
                    continue;
                }
                match node.complete_since {
                    Some(t) => latest = latest.max(t),
                    None => return Ok(None),
                }
            }
            Ok(Some(latest - self.started))
        });
        res.with_context(|| {
            let nodes = self.shared.lock();
            let behind: Vec<String> = nodes
                .iter()
                .enumerate()
                .filter(|(i, node)| !self.killed.contains_key(i) && node.complete_since.is_none())
                .map(|(i, node)| {
                    let missing: Vec<&str> = self
                        .shared
                        .names
                        .iter()
                        .filter(|n| !node.alive.contains(*n))
                        .map(String::as_str)
                        .collect();
                    format!(
                        "{} sees {}/{} (missing {})",
                        self.name(i),
                        self.n - missing.len(),
                        self.n,
                        abbreviate(&missing)
                    )
                })
                .collect();
            format!(
                "{} cluster of {} did not converge; {} node(s) behind: {}",
                self.kind.label(),
                self.n,
                behind.len(),
                behind.join("; ")
            )
        })
    }

    /// Sends SIGKILL to node `i` and reaps it; returns how long the reaping took.
    pub fn kill(&mut self, i: usize) -> Result<Duration> {
        let mut child = self
            .children
            .get_mut(i)
            .and_then(Option::take)
            .with_context(|| format!("node {i} does not exist or was already killed"))?;
        let at = Instant::now();
        self.killed.insert(i, at);
        child
            .kill()
            .with_context(|| format!("SIGKILL {}", self.name(i)))?;
        child
            .wait()
            .with_context(|| format!("reap {}", self.name(i)))?;
        Ok(at.elapsed())
    }

    /// Waits until every live process reports the killed node `victim` failed; returns the time
    /// from the kill to the first report and to the last.
    pub fn wait_failed(&self, victim: usize, timeout: Duration) -> Result<(Duration, Duration)> {
        let killed_at = *self
            .killed
            .get(&victim)
            .with_context(|| format!("{} was not killed", self.name(victim)))?;
        let vname = self.name(victim).to_string();
        let res = self.wait_until(timeout, |nodes| {
            self.check_unexpected_exit(nodes)?;
            let (mut first, mut last) = (None::<Instant>, None::<Instant>);
            for (i, node) in nodes.iter().enumerate() {
                if self.killed.contains_key(&i) {
                    continue;
                }
                let Some(&t) = node.first_failed.get(&vname) else {
                    return Ok(None);
                };
                first = Some(first.map_or(t, |f| f.min(t)));
                last = Some(last.map_or(t, |l| l.max(t)));
            }
            Ok(first.zip(last).map(|(f, l)| {
                (
                    f.saturating_duration_since(killed_at),
                    l.saturating_duration_since(killed_at),
                )
            }))
        });
        res.with_context(|| {
            let nodes = self.shared.lock();
            let pending: Vec<&str> = nodes
                .iter()
                .enumerate()
                .filter(|(i, n)| {
                    !self.killed.contains_key(i) && !n.first_failed.contains_key(&vname)
                })
                .map(|(i, _)| self.name(i))
                .collect();
            format!(
                "{} cluster of {}: {} node(s) never reported {vname} failed: {}",
                self.kind.label(),
                self.n,
                pending.len(),
                abbreviate(&pending)
            )
        })
    }

    /// VmRSS in KiB of every live process, in node order.
    pub fn rss_kib(&self) -> Result<Vec<u64>> {
        self.children
            .iter()
            .zip(&self.pids)
            .filter(|(c, _)| c.is_some())
            .map(|(_, &pid)| vm_rss_kib(pid))
            .collect()
    }

    /// Failure reports, by any process, about a node other than `victim` (pass `None` before any
    /// kill). Every report counts: one wrongly failed node seen by five processes counts five.
    pub fn false_positives(&self, victim: Option<usize>) -> usize {
        let vname = victim.map(|v| self.name(v).to_string());
        self.shared
            .lock()
            .iter()
            .flat_map(|n| &n.failed_reports)
            .filter(|name| Some(*name) != vname.as_ref())
            .count()
    }

    /// The distinct (reporter, reported) pairs behind [`Cluster::false_positives`], for messages.
    pub fn false_positive_pairs(&self, victim: Option<usize>) -> Vec<(String, String)> {
        let vname = victim.map(|v| self.name(v).to_string());
        let nodes = self.shared.lock();
        let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
        for (i, node) in nodes.iter().enumerate() {
            for name in &node.failed_reports {
                if Some(name) != vname.as_ref() {
                    pairs.insert((self.name(i).to_string(), name.clone()));
                }
            }
        }
        pairs.into_iter().collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        // the readers end at end of file, now that every child is gone
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// Reads `src` line by line (lossy UTF-8), timestamping each line as it arrives.
fn read_lines(src: impl Read, mut on_line: impl FnMut(&str, Instant), on_eof: impl FnOnce()) {
    let mut src = BufReader::new(src);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match src.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => on_line(&String::from_utf8_lossy(&buf), Instant::now()),
        }
    }
    on_eof();
}

fn tail(node: &NodeState) -> String {
    if node.tail.is_empty() {
        return "    (no output)".to_string();
    }
    node.tail
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn abbreviate(names: &[&str]) -> String {
    const MAX: usize = 12;
    if names.len() <= MAX {
        names.join(",")
    } else {
        format!("{},… ({} more)", names[..MAX].join(","), names.len() - MAX)
    }
}

/// Fails early and clearly if a port the cluster needs is taken (a leftover agent, say).
fn check_ports_free(kind: &Kind, n: usize, base_port: u16) -> Result<()> {
    let mut ports: Vec<u16> = (0..n as u16).map(|i| base_port + i).collect();
    if *kind == Kind::Serf {
        ports.extend((0..n as u16).map(|i| base_port + RPC_PORT_OFFSET + i));
    }
    for port in ports {
        let addr = ("127.0.0.1", port);
        std::net::TcpListener::bind(addr)
            .map(drop)
            .and_then(|_| std::net::UdpSocket::bind(addr).map(drop))
            .with_context(|| {
                format!(
                    "port 127.0.0.1:{port} is in use; is an agent from an earlier run still \
                     alive? (`ss -tulpn | grep {port}`)"
                )
            })?;
    }
    Ok(())
}

/// `VmRSS` of `pid` from `/proc/<pid>/status`, in KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .with_context(|| format!("no VmRSS in {path}"))?;
    let kib = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim();
    kib.parse()
        .with_context(|| format!("cannot parse `{line}` in {path}"))
}

/// Makes the kernel SIGKILL the child if the thread that spawned it dies, so a crashed or killed
/// benchmark leaves no agents behind.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and calls only prctl, which is
    // async-signal-safe, allocates nothing and touches no state shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_serf_lines() {
        let ev =
            parse_event("    2026/11/27 17:50:56 [INFO] serf: EventMemberJoin: n3 127.0.0.1\n");
        assert_eq!(
            ev,
            Some(MemberEvent {
                kind: EventKind::Join,
                name: "n3".into(),
                addr: Some("127.0.0.1".into())
            })
        );
        let ev = parse_event("[INFO] serf: EventMemberFailed: n7 127.0.0.1").unwrap();
        assert_eq!((ev.kind, ev.name.as_str()), (EventKind::Failed, "n7"));
        assert_eq!(
            parse_event("EventMemberLeave: n1").map(|e| e.kind),
            Some(EventKind::Leave)
        );
        assert_eq!(
            parse_event("[INFO] agent: Received event: member-join"),
            None
        );
        assert_eq!(parse_event("EventMemberFoo: n1 127.0.0.1"), None);
        assert_eq!(parse_event("EventMemberJoin:"), None);
    }

    #[test]
    fn strips_colour() {
        let ev = parse_event(
            "\u{1b}[32m INFO\u{1b}[0m gossip: EventMemberUpdate: \u{1b}[1mn2\u{1b}[0m 127.0.0.1",
        )
        .unwrap();
        assert_eq!((ev.kind, ev.name.as_str()), (EventKind::Update, "n2"));
    }
}
