//! The egress guard: the browser reaches the web only through this local SOCKS5 proxy, which
//! resolves names itself and will not connect to the agent's own networks (loopback, private,
//! link-local, unique-local and Fly 6PN, cloud metadata) unless they are allowed. The check is made
//! on the address actually connected to, after resolution, so DNS rebinding, IP literals in
//! subresources and `localhost` names are all caught, which a URL check is not.
//!
//! What it costs a report: the browser resolves nothing itself, so DNS time is part of the connect
//! phase, the browser sees the guard as the remote address (the executor puts the real one back
//! from [`Guard::outcomes_since`]), and HTTP/3 is not used.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Outcomes kept for the executor to explain failures with.
const LOG_LEN: usize = 1024;
/// The longest the guard waits for a client's handshake, a name lookup or a connect.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A connect attempt while other addresses remain to try: short enough that a dead first address
/// (an AAAA record with no route, say) leaves time for the rest before Chromium gives up.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one direction of a spliced connection may go on after the other has finished.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(10);

pub use vantage_proto::netpolicy::{forbidden, BadNet, Net, Policy};

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
    log: Arc<Mutex<VecDeque<Outcome>>>,
}

impl Guard {
    /// Binds 127.0.0.1 on an ephemeral port and serves until the runtime ends.
    pub async fn start(policy: Policy) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let guard = Self {
            port: listener.local_addr()?.port(),
            log: Arc::default(),
        };
        let (g, policy) = (guard.clone(), Arc::new(policy));
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, _)) => {
                        let (g, policy) = (g.clone(), policy.clone());
                        tokio::spawn(async move { g.serve(client, &policy).await });
                    }
                    // out of descriptors, most likely: the browser's next try may well succeed,
                    // but a guard that stopped accepting would fail every page from now on
                    Err(e) => {
                        tracing::warn!(error = %e, "egress guard cannot accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(guard)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Chromium flags that send all of its traffic through the guard: loopback included
    /// (Chromium would otherwise bypass a proxy for it), no WebRTC UDP around it, and no name
    /// resolution of its own.
    pub fn chromium_flags(&self) -> Vec<String> {
        vec![
            format!("--proxy-server=socks5://127.0.0.1:{}", self.port),
            "--proxy-bypass-list=<-loopback>".into(),
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

    /// Connections asked for since `t`, oldest first.
    pub fn outcomes_since(&self, t: Instant) -> Vec<Outcome> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|o| o.at >= t).cloned().collect()
    }

    fn record(&self, o: Outcome) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_LEN {
            log.pop_front();
        }
        log.push_back(o);
    }

    async fn serve(&self, mut client: TcpStream, policy: &Policy) {
        let _ = client.set_nodelay(true);
        let Ok(Ok((host, port))) = tokio::time::timeout(STEP_TIMEOUT, handshake(&mut client)).await
        else {
            return;
        };
        let at = Instant::now();
        let result = connect(&host, port, policy).await;
        // RFC 1928 replies: succeeded, not allowed by ruleset, host unreachable, refused
        let reply = match &result {
            Ok(_) => 0,
            Err(Refusal::Blocked { .. }) => 2,
            Err(Refusal::Unresolved(_)) => 4,
            Err(Refusal::Unreachable(_)) => 5,
        };
        self.record(Outcome {
            host,
            port,
            at,
            result: result.as_ref().map(|(ip, _)| *ip).map_err(Clone::clone),
        });
        // VER REP RSV ATYP=IPv4 0.0.0.0:0: Chromium does not use the bound address
        if client
            .write_all(&[5, reply, 0, 1, 0, 0, 0, 0, 0, 0])
            .await
            .is_err()
        {
            return;
        }
        if let Ok((_, upstream)) = result {
            splice(client, upstream).await;
        }
    }
}

/// Copies both ways until both are done. Once one side has finished, the other gets
/// [`HALF_CLOSE_GRACE`] to finish too: a server that never closes after the browser has gone
/// must not hold a task and a descriptor forever.
async fn splice(client: TcpStream, upstream: TcpStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
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

/// Resolves `host` and connects to the first address the policy allows.
async fn connect(host: &str, port: u16, policy: &Policy) -> Result<(IpAddr, TcpStream), Refusal> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Refusal::Unresolved(format!("looking up {host} timed out")))?
            .map_err(|e| Refusal::Unresolved(format!("{host}: {e}")))?
            .collect(),
    };
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
                return Ok((a.ip(), s));
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
