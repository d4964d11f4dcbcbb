//! The egress guard: the browser reaches the web only through this local SOCKS5 proxy, which
//! resolves names itself and will not connect to the agent's own networks (loopback, private,
//! link-local, unique-local and Fly 6PN, cloud metadata) unless they are allowed. The check is made
//! on the address actually connected to, after resolution, so DNS rebinding, IP literals in
//! subresources and `localhost` names are all caught, which a URL check is not.
//!
//! What it costs a report: the browser resolves nothing itself, so DNS time is part of the connect
//! phase, the browser sees the guard as the remote address (the executor puts the real one back
//! from its context's [`Lane`]), and HTTP/3 is not used.
//!
//! **Lanes.** Each job's browser context gets its own port on the guard ([`Guard::lane`], given to
//! Chromium as the context's `proxyServer`), with the guard's rules and an outcome log of its own:
//! a report is annotated with exactly its own context's connections, never with those of a job
//! running next to it, however many connections that job makes. The browser-wide
//! `--proxy-server` still names the guard's main port, so a context opened without a lane (a
//! controller's, through the CDP gateway) is guarded all the same.
//!
//! **Pins** (`--connect-to HOST:PORT:TARGET_HOST:TARGET_PORT`, [`ConnectTo`]), as curl's
//! `--connect-to` and WebPageTest's `setDns`: when the browser asks for exactly HOST:PORT (the host
//! compared case-insensitively), the guard connects to TARGET_HOST:TARGET_PORT instead; the page
//! still sees HOST in its URL, `Host` header and TLS name. A pin is chosen by whoever runs the
//! agent, so its target is exempt from the address policy (it may be loopback, private or the
//! overlay); nothing else is: every other host and port, the same host on another port included,
//! is resolved and checked as before. A target inside the node's overlay prefix is reached through
//! the mesh ([`vantage_mesh::Node::tcp_connect`]), so the connection crosses WireGuard and whatever
//! WAN emulation lies under it, handshake and every byte paying its RTT: that is how a page served
//! by another member can be made to feel as far away as that member's region. The outcome log
//! names the target's address as the remote address.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// Outcomes the guard keeps of every connection through it, lanes included, for audits.
const LOG_LEN: usize = 1024;
/// Outcomes a lane keeps: a context runs a cold and a warm view of up to the waterfall's 2000
/// requests each, so only a page that connects again and again for the same requests loses any.
const LANE_LOG_LEN: usize = 4096;
/// How a lane's context reaches the guard for loopback too (Chromium bypasses a proxy for it
/// unless told not to).
pub const PROXY_BYPASS: &str = "<-loopback>";
/// The longest the guard waits for a client's handshake, a name lookup or a connect.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A connect attempt while other addresses remain to try: short enough that a dead first address
/// (an AAAA record with no route, say) leaves time for the rest before Chromium gives up.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one direction of a spliced connection may go on after the other has finished.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(10);

pub use pins::{BadConnectTo, ConnectTo};
pub use vantage_proto::netpolicy::{forbidden, BadNet, Net, Policy};

mod pins;

/// How one connection the browser asked for went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub host: String,
    pub port: u16,
    pub at: Instant,
    pub result: Result<IpAddr, Refusal>,
}

/// Why the guard did not connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Every address of the host is one the browser may not reach.
    Blocked { ip: IpAddr, why: &'static str },
    /// The name did not resolve.
    Unresolved(String),
    /// No allowed address accepted the connection.
    Unreachable(String),
}

impl Refusal {
    /// The error Chromium would have reported without the guard in between, so reports read
    /// the same either way.
    pub fn net_error(&self) -> &'static str {
        match self {
            Refusal::Blocked { .. } => "net::ERR_ACCESS_DENIED",
            Refusal::Unresolved(_) => "net::ERR_NAME_NOT_RESOLVED",
            Refusal::Unreachable(e) if e.contains("refused") => "net::ERR_CONNECTION_REFUSED",
            Refusal::Unreachable(e) if e.contains("timed out") => "net::ERR_CONNECTION_TIMED_OUT",
            Refusal::Unreachable(_) => "net::ERR_CONNECTION_FAILED",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Blocked { ip, why } => write!(
                f,
                "blocked by the agent's egress guard: {ip} is {why}; pages may only reach public addresses (the agent's --allow-net lists exceptions)"
            ),
            Refusal::Unresolved(e) => write!(f, "cannot resolve the host: {e}"),
            Refusal::Unreachable(e) => write!(f, "cannot connect: {e}"),
        }
    }
}

/// The running guard: a SOCKS5 proxy on 127.0.0.1 for the agent's browser.
#[derive(Debug, Clone)]
pub struct Guard {
    port: u16,
    log: Arc<Log>,
    rules: Arc<Rules>,
}

/// One browser context's own port on the guard: the guard's rules, its own outcome log. Dropping
/// it stops accepting; connections already made run on.
#[derive(Debug)]
pub struct Lane {
    port: u16,
    log: Arc<Log>,
    accepting: AbortHandle,
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Lane {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy a context goes through to use this lane (`Target.createBrowserContext`'s
    /// `proxyServer`; its `proxyBypassList` is [`PROXY_BYPASS`]).
    pub fn proxy_server(&self) -> String {
        proxy_server(self.port)
    }

    /// Every connection asked for through this lane, oldest first.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.log.since(None)
    }
}

/// A bounded log of outcomes, oldest first.
#[derive(Debug)]
struct Log {
    cap: usize,
    entries: Mutex<VecDeque<Outcome>>,
}

impl Log {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            entries: Mutex::default(),
        }
    }

    fn record(&self, o: Outcome) {
        let mut log = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == self.cap {
            log.pop_front();
        }
        log.push_back(o);
    }

    /// The outcomes asked for since `t` (all of them without one).
    fn since(&self, t: Option<Instant>) -> Vec<Outcome> {
        let log = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        log.iter()
            .filter(|o| t.is_none_or(|t| o.at >= t))
            .cloned()
            .collect()
    }
}

fn proxy_server(port: u16) -> String {
    format!("socks5://127.0.0.1:{port}")
}

/// What the guard connects by.
#[derive(Debug)]
struct Rules {
    policy: Policy,
    pins: Vec<ConnectTo>,
    /// For pins whose target is on the overlay.
    node: Option<vantage_mesh::Node>,
}

/// A connection the guard made for the browser.
enum Upstream {
    Kernel(TcpStream),
    Mesh(vantage_mesh::TcpStream),
}

impl Guard {
    /// Binds 127.0.0.1 on an ephemeral port and serves until the runtime ends.
    pub async fn start(policy: Policy) -> std::io::Result<Self> {
        Self::start_with(policy, Vec::new(), None).await
    }

    /// [`Guard::start`] with `--connect-to` pins (the first matching pin wins). `node` is the
    /// mesh node that reaches pin targets inside its overlay prefix; without one, such a target is
    /// connected to like any other address (and the kernel has no route to it).
    pub async fn start_with(
        policy: Policy,
        pins: Vec<ConnectTo>,
        node: Option<vantage_mesh::Node>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let guard = Self {
            port: listener.local_addr()?.port(),
            log: Arc::new(Log::new(LOG_LEN)),
            rules: Arc::new(Rules { policy, pins, node }),
        };
        // the main port serves for as long as the runtime: the browser-wide default proxy
        drop(accept(listener, guard.clone(), None));
        Ok(guard)
    }

    /// A new port on 127.0.0.1 for one browser context, judged by the same rules, whose outcomes
    /// go to its own log (and the guard's).
    pub async fn lane(&self) -> std::io::Result<Lane> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let log = Arc::new(Log::new(LANE_LOG_LEN));
        let accepting = accept(listener, self.clone(), Some(log.clone())).abort_handle();
        Ok(Lane {
            port,
            log,
            accepting,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Chromium flags that send all of its traffic through the guard: loopback included
    /// (Chromium would otherwise bypass a proxy for it), no WebRTC UDP around it, and no name
    /// resolution of its own.
    pub fn chromium_flags(&self) -> Vec<String> {
        vec![
            format!("--proxy-server={}", proxy_server(self.port)),
            format!("--proxy-bypass-list={PROXY_BYPASS}"),
            "--force-webrtc-ip-handling-policy=disable_non_proxied_udp".into(),
            // names are the guard's to resolve; this stops even DNS prefetching from leaking them
            // (the exclusion is the guard's own address, which Chromium must still reach)
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".into(),
            "--disable-quic".into(),
        ]
    }

    /// Chromium flags that would undo [`Guard::chromium_flags`].
    pub const CONFLICTING_FLAGS: [&'static str; 6] = [
        "--proxy-server",
        "--no-proxy-server",
        "--proxy-pac-url",
        "--proxy-auto-detect",
        "--proxy-bypass-list",
        "--host-resolver-rules",
    ];

    /// Connections asked for since `t`, oldest first, through the main port and every lane (a
    /// report takes its own from its [`Lane`] instead).
    pub fn outcomes_since(&self, t: Instant) -> Vec<Outcome> {
        self.log.since(Some(t))
    }

    /// Serves one client of the main port or of `lane`, recording the outcome in both logs.
    async fn serve(&self, mut client: TcpStream, lane: Option<&Log>) {
        let _ = client.set_nodelay(true);
        let Ok(Ok((host, port))) = tokio::time::timeout(STEP_TIMEOUT, handshake(&mut client)).await
        else {
            return;
        };
        let at = Instant::now();
        let rules = &*self.rules;
        let result = match rules.pins.iter().find(|p| p.matches(&host, port)) {
            Some(pin) => connect_pinned(pin, rules.node.as_ref()).await,
            None => connect(&host, port, &rules.policy).await,
        };
        // RFC 1928 replies: succeeded, not allowed by ruleset, host unreachable, refused
        let reply = match &result {
            Ok(_) => 0,
            Err(Refusal::Blocked { .. }) => 2,
            Err(Refusal::Unresolved(_)) => 4,
            Err(Refusal::Unreachable(_)) => 5,
        };
        let outcome = Outcome {
            host,
            port,
            at,
            result: result.as_ref().map(|(ip, _)| *ip).map_err(Clone::clone),
        };
        if let Some(lane) = lane {
            lane.record(outcome.clone());
        }
        self.log.record(outcome);
        // VER REP RSV ATYP=IPv4 0.0.0.0:0: Chromium does not use the bound address
        if client
            .write_all(&[5, reply, 0, 1, 0, 0, 0, 0, 0, 0])
            .await
            .is_err()
        {
            return;
        }
        match result {
            Ok((_, Upstream::Kernel(upstream))) => splice(client, upstream).await,
            Ok((_, Upstream::Mesh(upstream))) => splice(client, upstream).await,
            Err(_) => {}
        }
    }
}

/// Serves every client `listener` accepts, for the guard's main port or for a lane, until the
/// task is aborted (a lane dropped) or the runtime ends.
fn accept(listener: TcpListener, guard: Guard, lane: Option<Arc<Log>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    let (g, lane) = (guard.clone(), lane.clone());
                    tokio::spawn(async move { g.serve(client, lane.as_deref()).await });
                }
                // out of descriptors, most likely: the browser's next try may well succeed,
                // but a guard that stopped accepting would fail every page from now on
                Err(e) => {
                    tracing::warn!(error = %e, "egress guard cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Copies both ways until both are done. Once one side has finished, the other gets
/// [`HALF_CLOSE_GRACE`] to finish too: a server that never closes after the browser has gone
/// must not hold a task and a descriptor forever.
async fn splice<A, B>(client: A, upstream: B)
where
    A: AsyncRead + AsyncWrite + Send,
    B: AsyncRead + AsyncWrite + Send,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(HALF_CLOSE_GRACE, down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(HALF_CLOSE_GRACE, up).await; }
    }
}

/// Puts what the guard saw back into a run: each request's real remote address (the browser only
/// saw the guard's), and the guard's reason where the browser only knows the proxy refused.
pub fn annotate(run: &mut vantage_proto::Run, outcomes: &[Outcome]) {
    let latest = |url: &str, ok: bool| -> Option<&Outcome> {
        let e = vantage_proto::parse_http_url(url).ok()?;
        outcomes.iter().rev().find(|o| {
            o.port == e.port && o.host.eq_ignore_ascii_case(&e.host) && o.result.is_ok() == ok
        })
    };
    let refusal = |url: &str| match latest(url, false) {
        Some(Outcome {
            result: Err(why), ..
        }) => Some(why.to_string()),
        _ => None,
    };
    for r in &mut run.requests {
        if r.failed.as_deref().is_some_and(proxy_error) {
            if let Some(why) = refusal(&r.url) {
                r.failed = Some(why);
            }
        } else if let Some(Outcome { result: Ok(ip), .. }) = latest(&r.url, true) {
            r.remote_ip = Some(ip.to_string());
        }
    }
    if run.error.as_deref().is_some_and(proxy_error) {
        // the refusal may have been of the last redirect's target, not of the URL asked for
        let last = run.redirects.last().map(|r| r.to.as_str());
        let why = last.into_iter().chain([run.url.as_str()]).find_map(refusal);
        if let Some(why) = why {
            run.error = Some(format!("navigation failed: {why}"));
        }
    }
}

/// Chromium's errors for a proxy that would not connect.
fn proxy_error(e: &str) -> bool {
    ["ERR_SOCKS", "ERR_PROXY", "ERR_TUNNEL"]
        .iter()
        .any(|p| e.contains(p))
}

/// Reads a SOCKS5 greeting and CONNECT request (RFC 1928, no authentication) and returns the
/// host and port asked for.
async fn handshake(c: &mut TcpStream) -> std::io::Result<(String, u16)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut head = [0u8; 2];
    c.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(bad("not SOCKS5"));
    }
    let mut methods = vec![0u8; head[1].into()];
    c.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        c.write_all(&[5, 0xff]).await?;
        return Err(bad("no acceptable authentication method"));
    }
    c.write_all(&[5, 0]).await?;
    let mut req = [0u8; 4];
    c.read_exact(&mut req).await?;
    let refuse = |code: u8| [5, code, 0, 1, 0, 0, 0, 0, 0, 0];
    if req[0] != 5 || req[1] != 1 {
        c.write_all(&refuse(7)).await?;
        return Err(bad("only CONNECT is supported"));
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a).await?;
            Ipv4Addr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a).await?;
            Ipv6Addr::from(a).to_string()
        }
        3 => {
            let len = c.read_u8().await?;
            let mut name = vec![0u8; len.into()];
            c.read_exact(&mut name).await?;
            String::from_utf8(name).map_err(|_| bad("host name is not utf-8"))?
        }
        _ => {
            c.write_all(&refuse(8)).await?;
            return Err(bad("unknown address type"));
        }
    };
    let port = c.read_u16().await?;
    Ok((host, port))
}

/// Resolves `host` (an IP literal is taken as it is).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Refusal::Unresolved(format!("looking up {host} timed out")))?
            .map_err(|e| Refusal::Unresolved(format!("{host}: {e}")))?
            .collect(),
    })
}

/// Connects to a pin's target, every address of it allowed: through the mesh for an address in
/// `node`'s overlay prefix, through the kernel otherwise. Addresses are tried in order.
async fn connect_pinned(
    pin: &ConnectTo,
    node: Option<&vantage_mesh::Node>,
) -> Result<(IpAddr, Upstream), Refusal> {
    let addrs = resolve(&pin.target_host, pin.target_port).await?;
    let mut last_error = None;
    for (i, &a) in addrs.iter().enumerate() {
        let limit = if i + 1 < addrs.len() {
            ATTEMPT_TIMEOUT
        } else {
            STEP_TIMEOUT
        };
        let overlay = match (a, node) {
            (SocketAddr::V6(v6), Some(n)) if n.prefix().contains(v6.ip()) => Some((v6, n)),
            _ => None,
        };
        let attempt = async {
            match overlay {
                Some((v6, n)) => n
                    .tcp_connect(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0))
                    .await
                    .map(Upstream::Mesh)
                    .map_err(|e| format!("{a} over the mesh: {e}")),
                None => match TcpStream::connect(a).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        Ok(Upstream::Kernel(s))
                    }
                    Err(e) => Err(format!("{a}: {e}")),
                },
            }
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(Ok(s)) => return Ok((a.ip(), s)),
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => last_error = Some(format!("{a}: timed out")),
        }
    }
    Err(match last_error {
        Some(e) => Refusal::Unreachable(format!("{e} (pinned by --connect-to {pin})")),
        None => Refusal::Unresolved(format!("{} has no addresses", pin.target_host)),
    })
}

/// Resolves `host` and connects to the first address the policy allows.
async fn connect(host: &str, port: u16, policy: &Policy) -> Result<(IpAddr, Upstream), Refusal> {
    let addrs = resolve(host, port).await?;
    let mut first_refused = None;
    let mut last_error = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match policy.refuse(a.ip()) {
            Some(why) => {
                first_refused.get_or_insert(Refusal::Blocked { ip: a.ip(), why });
                false
            }
            None => true,
        })
        .collect();
    for (i, &a) in allowed.iter().enumerate() {
        let limit = if i + 1 < allowed.len() {
            ATTEMPT_TIMEOUT
        } else {
            STEP_TIMEOUT
        };
        match tokio::time::timeout(limit, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((a.ip(), Upstream::Kernel(s)));
            }
            Ok(Err(e)) => last_error = Some(format!("{a}: {e}")),
            Err(_) => last_error = Some(format!("{a}: timed out")),
        }
    }
    Err(match (last_error, first_refused) {
        (Some(e), _) => Refusal::Unreachable(e),
        (None, Some(r)) => r,
        (None, None) => Refusal::Unresolved(format!("{host} has no addresses")),
    })
}
