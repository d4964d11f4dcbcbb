//! `--connect-to HOST:PORT:TARGET_HOST:TARGET_PORT` with real Chromium: a pinned host loads from a
//! loopback origin the guard's policy otherwise refuses, while that origin's own address (and
//! everything else on loopback) stays refused; a host pinned to another mesh member's overlay
//! address is fetched through the WireGuard mesh (the member sees the agent's overlay address as
//! the source), and the guard's log names the overlay address as the remote one. The flag's
//! start-up errors are checked on the parsed and validated configuration.

mod common;

use std::net::{IpAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use vantage_agent::cdp::Cdp;
use vantage_agent::chromium::BrowserState;
use vantage_agent::egress::{ConnectTo, Guard, Policy};
use vantage_agent::executor::{run_job, RunContext};
use vantage_agent::page::PagePool;
use vantage_mesh::{Node, NodeConfig, PresharedKey, PrivateKey};
use vantage_proto::{JobSpec, Report, Wait};
use vantage_tests::origin::Origin;

const PSK: &str = "xiZ+OFpjwYZyd9vAVP0NAzwEDonvVcGmZCEpO9LUfRE=";

fn pin(s: &str) -> ConnectTo {
    s.parse().unwrap()
}

async fn browser(guard: &Guard) -> (vantage_agent::chromium::Supervisor, Cdp) {
    let sup = common::ready(vantage_agent::chromium::ChromiumConfig {
        extra_args: guard.chromium_flags(),
        ..common::chromium()
    })
    .await;
    let BrowserState::Ready { ws_url, .. } = sup.state() else {
        panic!("not ready")
    };
    let cdp = Cdp::connect(&ws_url).await.unwrap();
    (sup, cdp)
}

async fn load(cdp: &Cdp, guard: &Guard, url: &str) -> Report {
    let mut spec = JobSpec::new(url);
    spec.wait = Wait::Load;
    spec.timeout_ms = 20_000;
    let ctx = RunContext {
        region: "local".into(),
        node: "test".into(),
        browser_version: String::new(),
        guard: Some(guard.clone()),
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    run_job(cdp, &spec, &ctx, &PagePool::default(), &tx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_host_loads_from_loopback_and_loopback_itself_stays_refused() {
    let origin = Origin::start().await.unwrap();
    let addr: std::net::SocketAddr = origin
        .url("")
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();
    // the policy allows no loopback at all: only the pin reaches the origin
    let guard = Guard::start_with(
        Policy::default(),
        vec![pin(&format!("pinned.test:80:127.0.0.1:{}", addr.port()))],
        None,
    )
    .await
    .unwrap();
    let (sup, cdp) = browser(&guard).await;

    let since = Instant::now();
    let report = load(&cdp, &guard, "http://pinned.test:80/index.html").await;
    let run = &report.runs[0];
    assert_eq!(run.error, None, "{run:?}");
    assert_eq!(run.status, 200, "{run:?}");
    assert_eq!(run.final_url, "http://pinned.test/index.html");
    let doc = run
        .requests
        .iter()
        .find(|r| r.url == "http://pinned.test/index.html")
        .unwrap_or_else(|| panic!("no document request: {:?}", run.requests));
    assert_eq!(doc.remote_ip.as_deref(), Some("127.0.0.1"), "{doc:?}");
    assert!(
        origin
            .hits()
            .iter()
            .any(|(t, s)| t == "/index.html" && *s == 200),
        "{:?}",
        origin.hits()
    );
    // the page's cross-origin script is on loopback, not pinned: refused as before
    let cross = run
        .requests
        .iter()
        .find(|r| r.url.contains("/widget.js"))
        .unwrap_or_else(|| panic!("no cross-origin request: {:?}", run.requests));
    let why = cross.failed.as_deref().unwrap_or_default();
    assert!(
        why.contains("blocked by the agent's egress guard"),
        "{cross:?}"
    );
    let outcomes = guard.outcomes_since(since);
    assert!(
        outcomes.iter().any(|o| o.host == "pinned.test"
            && o.port == 80
            && o.result == Ok(IpAddr::from([127, 0, 0, 1]))),
        "{outcomes:?}"
    );

    // the pin's target, asked for directly, is judged by the policy
    let report = load(&cdp, &guard, &format!("http://127.0.0.1:{}/", addr.port())).await;
    let error = report.runs[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("blocked by the agent's egress guard")
            && error.contains("127.0.0.1 is a loopback address"),
        "{error}"
    );
    // and so is the pinned host on another port (it does not even resolve)
    let report = load(&cdp, &guard, "http://pinned.test:81/index.html").await;
    let error = report.runs[0].error.clone().unwrap_or_default();
    assert!(error.contains("cannot resolve the host"), "{error}");
    sup.stop().await;
}

fn node(seed: u8) -> Node {
    let mut k = [seed; 32];
    k[0] &= 248;
    let cfg = NodeConfig::new(PrivateKey::from_bytes(k), PresharedKey::from_bytes([9; 32]));
    Node::bind(cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// What the member serving over the overlay saw of each request: source and `Host` header.
type Seen = Arc<Mutex<Vec<(SocketAddrV6, String)>>>;

/// Answers every request on overlay `port` of `node` with a small page.
async fn overlay_site(node: &Node, port: u16) -> (SocketAddrV6, Seen) {
    let listener = node.tcp_listen(port).await.unwrap();
    let addr = listener.local_addr();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, from)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let host = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Host: "))
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push((from, host));
                let body = "<!doctype html><title>far</title><p>served over the mesh";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_pinned_to_an_overlay_address_is_fetched_through_the_mesh() {
    let agent = node(1);
    let far = node(2);
    agent.add_peer(far.as_peer()).await.unwrap();
    far.add_peer(agent.as_peer()).await.unwrap();
    let (site, seen) = overlay_site(&far, 8080).await;
    assert!(agent.prefix().contains(site.ip()));
    let guard = Guard::start_with(
        Policy::default(),
        vec![pin(&format!("far.test:80:[{}]:8080", site.ip()))],
        Some(agent.clone()),
    )
    .await
    .unwrap();
    let (sup, cdp) = browser(&guard).await;

    let since = Instant::now();
    let report = load(&cdp, &guard, "http://far.test/").await;
    let run = &report.runs[0];
    assert_eq!(run.error, None, "{run:?}");
    assert_eq!(run.status, 200, "{run:?}");
    let overlay = site.ip().to_string();
    let doc = run
        .requests
        .iter()
        .find(|r| r.url == "http://far.test/")
        .unwrap_or_else(|| panic!("no document request: {:?}", run.requests));
    assert_eq!(doc.remote_ip.as_deref(), Some(overlay.as_str()), "{doc:?}");
    let outcomes = guard.outcomes_since(since);
    let doc_outcome = outcomes
        .iter()
        .find(|o| o.host == "far.test" && o.port == 80)
        .unwrap_or_else(|| panic!("{outcomes:?}"));
    assert_eq!(doc_outcome.result, Ok(IpAddr::V6(*site.ip())));
    // the member saw the agent's overlay address: the request crossed the mesh, with its host
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for (from, host) in &seen {
        assert_eq!(*from.ip(), agent.overlay_addr());
        assert_eq!(host, "far.test");
    }

    // the overlay address itself, not pinned, is a unique-local address the policy refuses
    let report = load(&cdp, &guard, &format!("http://[{}]:8080/", site.ip())).await;
    let error = report.runs[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("blocked by the agent's egress guard")
            && error.contains("is a unique local address"),
        "{error}"
    );
    sup.stop().await;
    agent.shutdown().await;
    far.shutdown().await;
}

fn validate(args: &[&str]) -> Result<vantage_agent::Config, String> {
    let data = std::env::temp_dir().join(format!("vantage-connect-to-{}", std::process::id()));
    let data = data.to_str().unwrap().to_owned();
    let mut argv = vec!["vantage-agent", "--psk", PSK, "--data-dir", &data];
    argv.extend(args);
    vantage_agent::Args::try_parse_from(&argv)
        .map_err(|e| e.to_string())?
        .validate()
        .map_err(|e| format!("{e:#}"))
}

#[test]
fn the_flag_is_validated_at_start_up() {
    let c = validate(&[
        "--connect-to",
        "demo.test:80:[fdbc::1]:8080",
        "--connect-to",
        "Other.Test:443:127.0.0.1:8443",
    ])
    .unwrap();
    assert_eq!(
        c.connect_to,
        vec![
            pin("demo.test:80:[fdbc::1]:8080"),
            pin("other.test:443:127.0.0.1:8443")
        ]
    );
    // comma-separated, as VANTAGE_CONNECT_TO gives them
    let c = validate(&["--connect-to", "a.test:80:[::1]:1,b.test:80:b.internal:2"]).unwrap();
    assert_eq!(c.connect_to.len(), 2);
    assert_eq!(c.connect_to[1].target_host, "b.internal");

    let e = validate(&["--connect-to", "x"]).unwrap_err();
    assert!(
        e.contains("--connect-to")
            && e.contains(
                "`x` is not HOST:PORT:TARGET_HOST:TARGET_PORT (for example demo.test:80:[fdbc::1]:8080)"
            ),
        "{e}"
    );
    let e = validate(&["--connect-to", "demo.test:80:[fdbc::1]:0"]).unwrap_err();
    assert!(
        e.contains("TARGET_PORT `0` is not a port; accepted is 1 to 65535"),
        "{e}"
    );
    let e = validate(&["--connect-to", "demo.test:99999:1.2.3.4:80"]).unwrap_err();
    assert!(e.contains("PORT `99999` is not a port"), "{e}");
    let e = validate(&[
        "--connect-to",
        "demo.test:80:1.2.3.4:80,DEMO.test:80:[::1]:80",
    ])
    .unwrap_err();
    assert!(
        e.contains("VANTAGE_CONNECT_TO") && e.contains("pins demo.test:80 again"),
        "{e}"
    );
    // the guard must stay in place for pins, even with --allow-private
    let e = validate(&[
        "--allow-private",
        "--connect-to",
        "demo.test:80:1.2.3.4:80",
        "--chrome-arg=--proxy-server=direct://",
    ])
    .unwrap_err();
    assert!(e.contains("--connect-to needs"), "{e}");
}
