//! The CDP gateway: the browser's raw DevTools protocol, offered on the overlay to controllers
//! (see [`crate::authority`]). Chromium only listens on 127.0.0.1 and rejects a foreign `Host` or `Origin`,
//! so the gateway rewrites both on the way in, and rewrites the URLs in `/json/*` answers to point
//! back at itself on the way out.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::authority::{Authority, Service};
use crate::chromium::{http_get, Supervisor};

/// Roles of mesh members by overlay address, kept current from gossip.
pub type Roles = Arc<RwLock<HashMap<IpAddr, String>>>;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest request head accepted, in bytes.
const MAX_HEAD: usize = 16 * 1024;

/// Serves one gateway connection from `from`, if `authority` takes it for a controller.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    from: SocketAddr,
    me: SocketAddr,
    authority: &Authority,
    sup: &Supervisor,
) -> Result<()> {
    // a member that connects and never finishes its request must not hold a stream forever
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client))
        .await
        .map_err(|_| anyhow!("no request head within {HEAD_TIMEOUT:?}"))??;
    if let Err(why) = authority.check(from.ip(), Service::Gateway) {
        return respond(&mut client, "403 Forbidden", &why).await;
    }
    let crate::chromium::BrowserState::Ready { port, .. } = sup.state() else {
        return respond(
            &mut client,
            "503 Service Unavailable",
            &format!("browser is {}", sup.state().tag()),
        )
        .await;
    };
    let (method, path) = request_line(&head)?;
    if path.starts_with("/devtools/") {
        return proxy_websocket(client, &head, port).await;
    }
    if path == "/json" || path.starts_with("/json/") {
        let upstream = if path.starts_with("/json/new") {
            // Chromium wants PUT for /json/new; older clients send GET, so accept either
            let _ = method;
            put(port, &path).await?
        } else {
            http_get(port, &path).await?
        };
        // point the URLs back at whatever address the client reached us by (a local forwarder
        // such as `vantage connect`, or the overlay address itself)
        let host = host_header(&head).unwrap_or_else(|| host_of(me));
        let rewritten = upstream
            .replace(&format!("127.0.0.1:{port}"), &host)
            .replace(&format!("localhost:{port}"), &host);
        return respond_json(&mut client, &rewritten).await;
    }
    respond(
        &mut client,
        "404 Not Found",
        "the gateway serves /json/version, /json/list, /json/new and /devtools/*",
    )
    .await
}

fn host_of(a: SocketAddr) -> String {
    match a {
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
        SocketAddr::V4(v) => v.to_string(),
    }
}

/// The request's `Host`, if it is a plain `host[:port]` (no spaces or URL syntax to smuggle in).
fn host_header(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    let v = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("host")
            .then(|| v.trim().to_owned())
    })?;
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    ok.then_some(v)
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut b = [0u8; 1];
    // byte by byte so nothing after the head (WebSocket frames) is consumed here
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            bail!("connection closed before a full request head");
        }
        head.push(b[0]);
        if head.len() > MAX_HEAD {
            bail!("request head larger than {MAX_HEAD} bytes");
        }
    }
    Ok(head)
}

fn request_line(head: &[u8]) -> Result<(String, String)> {
    let text = std::str::from_utf8(head).context("request head is not utf-8")?;
    let mut it = text.lines().next().unwrap_or_default().split_whitespace();
    let (m, p) = (it.next(), it.next());
    Ok((
        m.ok_or_else(|| anyhow!("empty request"))?.to_owned(),
        p.ok_or_else(|| anyhow!("no path"))?.to_owned(),
    ))
}

/// Forwards a WebSocket upgrade with `Host` set to Chromium's own and `Origin` dropped, then
/// splices both directions.
async fn proxy_websocket<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    head: &[u8],
    port: u16,
) -> Result<()> {
    let text = std::str::from_utf8(head)?;
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split("\r\n").enumerate() {
        let lower = line.to_ascii_lowercase();
        if i > 0 && (lower.starts_with("host:") || lower.starts_with("origin:")) {
            continue;
        }
        if line.is_empty() {
            break;
        }
        out.push_str(line);
        out.push_str("\r\n");
        if i == 0 {
            out.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
        }
    }
    out.push_str("\r\n");
    let mut upstream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .context("cannot reach the local browser")?;
    upstream.write_all(out.as_bytes()).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream)
        .await
        .ok();
    Ok(())
}

async fn put(port: u16, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut chunk))
            .await
            .map_err(|_| anyhow!("PUT {path} timed out"))??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if len.is_some_and(|l| buf.len() >= end + 4 + l) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed answer to PUT {path}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("PUT {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

async fn respond<S: AsyncWrite + Unpin>(s: &mut S, status: &str, msg: &str) -> Result<()> {
    let body = serde_json::json!({ "error": msg }).to_string();
    let r = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    s.write_all(r.as_bytes()).await?;
    s.shutdown().await.ok();
    Ok(())
}

async fn respond_json<S: AsyncWrite + Unpin>(s: &mut S, body: &str) -> Result<()> {
    let r = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    s.write_all(r.as_bytes()).await?;
    s.shutdown().await.ok();
    Ok(())
}
