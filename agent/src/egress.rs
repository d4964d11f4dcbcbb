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
use std::str::FromStr;
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

/// An IP network, `10.1.0.0/16` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a network: expected an address and a prefix length, like 10.1.0.0/16 or fd00::/8"
)]
pub struct BadNet(String);

impl FromStr for Net {
    type Err = BadNet;
    fn from_str(s: &str) -> Result<Self, BadNet> {
        let bad = || BadNet(s.to_owned());
        let (a, p) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(&n.octets(), &a.octets(), self.prefix.into())
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                prefix_eq(&n.octets(), &a.octets(), self.prefix.into())
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: usize) -> bool {
    let (whole, rest) = (bits / 8, bits % 8);
    a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0)
}

/// The IPv4 address an IPv6 address stands for (mapped, IPv4-compatible, NAT64 or 6to4), so it
/// is judged and allowed as what it reaches.
fn unwrap_v4(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let low = |hi: u16, lo: u16| IpAddr::V4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    match s {
        // IPv4-compatible (deprecated, but still routed by some stacks); not :: and ::1
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => low(hi, lo),
        // NAT64, well-known and local-use prefixes
        [0x64, 0xff9b, 0, 0, 0, 0, ..] | [0x64, 0xff9b, 1, ..] => low(s[6], s[7]),
        // 6to4 carries the IPv4 address right after the prefix
        [0x2002, hi, lo, ..] => low(hi, lo),
        _ => ip,
    }
}

/// Why `ip` belongs to the agent's own networks rather than the public web, if it does.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match unwrap_v4(ip) {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "a cloud metadata address",
        (0, _) => "an unspecified address",
        (127, _) => "a loopback address",
        (10, _) | (192, 168) => "a private address",
        (172, 16..=31) => "a private address",
        (100, 64..=127) => "a carrier-grade NAT address",
        (192, 0) if ip.octets()[2] == 0 => "an IETF protocol address",
        (198, 18..=19) => "a benchmarking address",
        (169, 254) => "a link-local address",
        (224..=239, _) => "a multicast address",
        (240..=255, _) => "a reserved address",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        _ if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => "a cloud metadata address",
        0xfdaa => "a Fly private network (6PN) address",
        x if x & 0xffc0 == 0xfec0 => "a site-local address",
        x if x & 0xfe00 == 0xfc00 => "a unique local address",
        x if x & 0xffc0 == 0xfe80 => "a link-local address",
        x if x & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// Which addresses the browser may reach.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Networks reachable even though they are the agent's own (a staging site on 6PN, the local
    /// demo's sites on loopback).
    pub allow: Vec<Net>,
}

impl Policy {
    /// Why the browser may not connect to `ip`, if it may not.
    pub fn refuse(&self, ip: IpAddr) -> Option<&'static str> {
        let ip4 = unwrap_v4(ip);
        if self.allow.iter().any(|n| n.contains(ip) || n.contains(ip4)) {
            return None;
        }
        forbidden(ip)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_agents_own_networks_are_forbidden_and_the_public_web_is_not() {
        for (a, why) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fdaa:0:1::3", "6PN"),
            ("fd12::1", "unique local"),
            ("100.64.0.1", "carrier-grade"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("::7f00:1", "loopback"),
            ("2002:a00:1::1", "private"),
            ("64:ff9b:1::a9fe:a9fe", "metadata"),
            ("fec0::1", "site-local"),
            ("192.0.0.8", "IETF"),
            ("198.18.0.1", "benchmarking"),
            ("ff02::1", "multicast"),
        ] {
            let got = forbidden(ip(a)).unwrap_or_else(|| panic!("{a} was allowed"));
            assert!(got.contains(why), "{a}: {got}");
        }
        for a in [
            "1.1.1.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "192.0.2.1",
        ] {
            assert_eq!(forbidden(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn allowed_networks_override_and_bad_ones_are_named() {
        let p = Policy {
            allow: vec![
                "127.0.0.1/32".parse().unwrap(),
                "fdaa::/16".parse().unwrap(),
            ],
        };
        assert_eq!(p.refuse(ip("127.0.0.1")), None);
        assert_eq!(p.refuse(ip("::ffff:127.0.0.1")), None);
        assert!(p.refuse(ip("127.0.0.2")).is_some());
        assert_eq!(p.refuse(ip("fdaa:0:1::3")), None);
        assert!(p.refuse(ip("10.0.0.1")).is_some());
        let n: Net = "10.0.0.0/9".parse().unwrap();
        assert!(n.contains(ip("10.127.0.1")) && !n.contains(ip("10.128.0.1")));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/-1",
        ] {
            let e = bad.parse::<Net>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("like 10.1.0.0/16"), "{e}");
        }
    }
}
